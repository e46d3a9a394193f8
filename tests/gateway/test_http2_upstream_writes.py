"""Requests to an HTTP/2 upstream leave once per event-loop turn: whatever part of a request arrives in a
later turn than the rest (a body chunk, the end of the stream, trailers) must still be written then."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.gateway.h2_peers import RawH2Client, RawH2Server
from tests.gateway.helpers import running
from tests.gateway.test_http2_lifecycle import h2_upstream_doc
from tests.ports import free_port


@pytest.fixture
async def h2_upstream():
    server = await RawH2Server().start(free_port())
    yield server
    await server.close()


async def test_a_body_and_its_end_arriving_turns_apart_both_reach_the_upstream(pki, h2_upstream):
    async with running(h2_upstream_doc(pki, h2_upstream)) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        stream = client.request("/post", method="POST", end_stream=False)
        await asyncio.sleep(0.1)
        client.send(stream, b"first")
        await asyncio.sleep(0.1)
        client.send(stream, b"second")
        await asyncio.sleep(0.1)
        client.send(stream, b"", end_stream=True)  # nothing else follows to carry it out
        await client.wait_for(lambda: client.ended(stream), timeout=5)
        assert client.status(stream) == 200
        assert json.loads(client.body(stream))["body"] == len(b"firstsecond")
        await client.close()


async def test_trailers_arriving_after_the_body_reach_the_upstream(pki, h2_upstream):
    async with running(h2_upstream_doc(pki, h2_upstream)) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        stream = client.request("/post", method="POST", end_stream=False)
        client.send(stream, b"body")
        await asyncio.sleep(0.1)
        client.send_trailers(stream, (("x-checksum", "1"),))
        await client.wait_for(lambda: client.ended(stream), timeout=5)
        received = json.loads(client.body(stream))
        assert received["body"] == 4 and ["x-checksum", "1"] in received["trailers"]
        await client.close()


async def test_a_bodyless_request_is_one_headers_frame_with_end_stream(pki, h2_upstream):
    async with running(h2_upstream_doc(pki, h2_upstream)) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        stream = client.request("/get")
        await client.wait_for(lambda: client.ended(stream), timeout=5)
        assert client.status(stream) == 200 and json.loads(client.body(stream))["body"] == 0
        await client.close()

"""WebSocket (HTTP/1.1 Upgrade) through a running gateway with the ``websockets`` library on both ends:
messages both ways, large frames, the upstream closing, the idle timeout, byte counts in the audit."""

from __future__ import annotations

import asyncio
import os

import pytest
import websockets
from websockets.asyncio.client import connect

from gateway.echo import EchoService
from tests.gateway.helpers import RecordingAudit, base_doc, running
from tests.ports import free_port


def ws_doc(pki, port: int, **hcm: object) -> dict:
    doc = base_doc(pki, port, listener_port=free_port())
    doc["listeners"][0]["filter_chains"][0]["filters"][0].update(hcm)
    return doc


async def test_messages_both_ways_and_the_audit_record(pki, ws_upstream):
    audit = RecordingAudit()
    async with running(ws_doc(pki, ws_upstream), audit=audit) as gw:
        url = f"ws://127.0.0.1:{gw.listener_port('main')}/chat"
        async with connect(url, max_size=None) as ws:
            for message in ("hello", b"\x00\x01binary", os.urandom(200_000)):  # random: no deflate gain
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send("close-please")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4000
        await asyncio.sleep(0.1)
    (record,) = [r for r in audit.of("http.request") if r["path"] == "/chat"]
    assert record["status"] == 101 and record["reason"] == "upgrade"
    assert record["bytes_received"] > 200_000 and record["bytes_sent"] > 200_000


async def test_tls_listener_and_idle_timeout(pki, ws_upstream):
    doc = ws_doc(pki, ws_upstream, upgrade_idle_timeout=0.3)
    async with running(doc) as gw:
        from tests.gateway.helpers import client_context

        url = f"wss://localhost:{gw.listener_port('main')}/idle"
        async with connect(url, ssl=client_context(pki)) as ws:
            await ws.send("ping?")
            assert await ws.recv() == "ping?"
            await asyncio.sleep(0.8)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.send("too late")
                await ws.recv()


async def test_upstream_refusing_the_upgrade_is_relayed(pki):
    echo = await EchoService(name="plain").start()
    try:
        async with running(ws_doc(pki, echo.port)) as gw:
            url = f"ws://127.0.0.1:{gw.listener_port('main')}/status/403"
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with connect(url):
                    pass
            assert refused.value.response.status_code == 403  # the upstream's refusal, relayed
            url = f"ws://127.0.0.1:{gw.listener_port('main')}/"
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with connect(url):
                    pass
            assert refused.value.response.status_code == 200  # an answer, but not 101: no tunnel
    finally:
        await echo.close()

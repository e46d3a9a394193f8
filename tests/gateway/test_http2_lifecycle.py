"""HTTP/2 stream and connection lifecycle through a running gateway, seen by a raw ``h2`` client: GOAWAY
when the gateway drains, per-stream request timeouts, request trailers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from h2.errors import ErrorCodes

from gateway.echo import EchoService
from tests.gateway.h2_client import RawH2Client
from tests.gateway.helpers import RecordingAudit, base_doc, running
from tests.ports import free_port

MAX_STREAM_ID = 2**31 - 1


@pytest.fixture
async def echo():
    service = await EchoService(name="a").start()
    yield service
    await service.close()


def h2c_doc(pki, upstream_port: int, **hcm: object) -> dict:
    doc = base_doc(pki, upstream_port, listener_port=free_port())
    doc["listeners"][0]["filter_chains"][0]["filters"][0].update({"h2c_prior_knowledge": True, **hcm})
    return doc


# -- drain -----------------------------------------------------------------------------------------


async def test_drain_sends_a_notice_then_the_final_goaway_and_lets_streams_finish(pki, echo):
    audit = RecordingAudit()
    doc = h2c_doc(pki, echo.port, http2_drain_notice=0.3)
    doc["drain_timeout"] = 10
    async with running(doc, audit=audit) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        slow = client.request("/delay/800")
        await asyncio.sleep(0.1)
        stop = asyncio.create_task(gw.stop())
        await client.wait_for(lambda: len(client.goaways) == 1)
        notice = client.goaways[0]
        assert (notice.error_code, notice.last_stream_id) == (ErrorCodes.NO_ERROR, MAX_STREAM_ID)
        racing = client.request("/raced")  # sent before the final GOAWAY: still served
        await client.wait_for(lambda: len(client.goaways) == 2)
        final = client.goaways[1]
        assert (final.error_code, final.last_stream_id) == (ErrorCodes.NO_ERROR, racing)
        late = client.request("/late")  # after the final GOAWAY: refused, safe to retry elsewhere
        await client.wait_for(lambda: client.ended(late) and client.ended(slow) and client.ended(racing))
        assert client.reset_code(late) == ErrorCodes.REFUSED_STREAM
        assert client.status(slow) == 200 and client.status(racing) == 200
        await client.wait_for(lambda: client.closed)  # closed once idle, not at drain_timeout
        await stop
        await client.close()
    paths = sorted(r["path"] for r in audit.of("http.request"))
    assert paths == ["/delay/800", "/raced"]
    assert all(r["status"] == 200 for r in audit.of("http.request"))


async def test_drain_without_notice_and_an_idle_connection(pki, echo):
    doc = h2c_doc(pki, echo.port, http2_drain_notice=None)
    async with running(doc) as gw:
        busy = await RawH2Client.open(gw.listener_port("main"))
        idle = await RawH2Client.open(gw.listener_port("main"))
        done = idle.request("/one")
        await idle.wait_for(lambda: idle.ended(done))
        slow = busy.request("/delay/500")
        await asyncio.sleep(0.1)
        stop = asyncio.create_task(gw.stop())
        await idle.wait_for(lambda: idle.closed)
        assert [(g.error_code, g.last_stream_id) for g in idle.goaways] == [(ErrorCodes.NO_ERROR, done)]
        await busy.wait_for(lambda: busy.goaways != [])
        assert busy.goaways[0].last_stream_id == slow and not busy.ended(slow)
        await busy.wait_for(lambda: busy.closed)
        assert busy.status(slow) == 200
        await stop
        for client in (busy, idle):
            await client.close()


async def test_drain_timeout_aborts_streams_still_in_flight(pki, echo):
    audit = RecordingAudit()
    doc = h2c_doc(pki, echo.port, http2_drain_notice=0.1)
    doc["drain_timeout"] = 0.5
    async with running(doc, audit=audit) as gw:
        client = await RawH2Client.open(gw.listener_port("main"))
        stuck = client.request("/delay/5000")
        await asyncio.sleep(0.1)
        await gw.stop()
        await client.wait_for(lambda: client.closed)
        assert [g.last_stream_id for g in client.goaways] == [MAX_STREAM_ID, stuck]
        assert client.status(stuck) is None
        await client.close()
    (record,) = audit.of("http.request")
    assert record["path"] == "/delay/5000" and record["status"] != 200


def test_config_refuses_a_drain_notice_longer_than_the_drain(pki):
    from gateway.config import ConfigError, parse_config

    doc = h2c_doc(pki, 1, http2_drain_notice=30)
    with pytest.raises(ConfigError) as refused:
        parse_config(doc, Path.cwd())
    assert "listeners[0].filter_chains[0].filters[0].http2_drain_notice: 30.0 s leaves no time" in str(
        refused.value
    )

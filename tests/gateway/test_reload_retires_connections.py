"""A reload retires the HTTP connections of the previous generation, so what it changed (here: an access
rule) reaches every client's next request; TCP tunnels keep their connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

from h2.errors import ErrorCodes

from gateway.config import parse_config
from gateway.echo import EchoService, start_tcp_echo
from tests.gateway.h2_peers import RawH2Client
from tests.gateway.helpers import HttpClient, base_doc, running
from tests.gateway.test_http2_lifecycle import MAX_STREAM_ID, h2c_doc
from tests.gateway.test_tcp_proxy import _tcp_doc
from tests.ports import free_port

DENY_ALL = [{"name": "all", "match": {"prefix": "/"}, "route": {"cluster": "echo"}, "access": {"deny": [{}]}}]


def denying(doc: dict) -> dict:
    doc["route_configs"][0]["virtual_hosts"][0]["routes"] = DENY_ALL
    return doc


async def test_an_idle_http1_connection_is_closed_and_the_next_one_meets_the_new_rules(pki):
    echo = await EchoService(name="a").start()
    doc = base_doc(pki, echo.port, listener_port=free_port())
    async with running(doc) as gw:
        port = gw.listener_port("main")
        old = await HttpClient.open(port)
        assert (await old.request("GET", "/before"))[0] == 200
        busy = await HttpClient.open(port)
        in_flight = asyncio.create_task(busy.request("GET", "/delay/500"))
        await asyncio.sleep(0.1)
        assert (
            await gw.reload(parse_config(denying(base_doc(pki, echo.port, listener_port=port)), Path.cwd()))
            == []
        )
        assert await asyncio.wait_for(old.reader.read(), 5) == b""  # the idle keep-alive one: closed
        status, headers, _ = await in_flight  # the busy one: its response, then closed
        assert status == 200 and dict(headers).get("connection") == "close"
        new = await HttpClient.open(port)
        assert (await new.request("GET", "/after"))[0] == 403
        await new.close()
    await echo.close()


async def test_an_http2_connection_gets_goaway_and_finishes_its_streams(pki):
    echo = await EchoService(name="a").start()
    doc = h2c_doc(pki, echo.port, http2_drain_notice=0.2)
    async with running(doc) as gw:
        port = gw.listener_port("main")
        client = await RawH2Client.open(port)
        slow = client.request("/delay/500")
        await asyncio.sleep(0.1)
        reload_doc = denying(h2c_doc(pki, echo.port, http2_drain_notice=0.2))
        reload_doc["listeners"][0]["port"] = port
        assert await gw.reload(parse_config(reload_doc, Path.cwd())) == []
        await client.wait_for(lambda: len(client.goaways) == 2 and client.ended(slow))
        notice, final = client.goaways
        assert (notice.error_code, notice.last_stream_id) == (ErrorCodes.NO_ERROR, MAX_STREAM_ID)
        assert (final.error_code, final.last_stream_id) == (ErrorCodes.NO_ERROR, slow)
        assert client.status(slow) == 200  # in flight before the reload: served under the old rules
        await client.close()
        fresh = await RawH2Client.open(port)
        denied = fresh.request("/after")
        await fresh.wait_for(lambda: fresh.ended(denied))
        assert fresh.status(denied) == 403
        await fresh.close()
    await echo.close()


async def test_a_tcp_tunnel_keeps_its_connection(pki):
    server = await start_tcp_echo(port=free_port())
    upstream = server.sockets[0].getsockname()[1]
    doc = _tcp_doc(pki, upstream)
    doc["listeners"][0]["port"] = free_port()
    async with running(doc) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(b"before")
        assert await asyncio.wait_for(reader.readexactly(6), 5) == b"before"
        assert await gw.reload(parse_config(doc, Path.cwd())) == []
        writer.write(b"after")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"after"
        writer.close()
    server.close()

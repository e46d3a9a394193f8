"""TCP proxy: both directions, half-close, idle timeout, unreachable upstream."""

from __future__ import annotations

import asyncio

from gateway.echo import start_tcp_echo
from tests.gateway.helpers import base_doc, running


def _tcp_doc(pki, port, idle=300.0):
    doc = base_doc(pki, port)
    doc["listeners"][0]["filter_chains"] = [
        {"name": "tcp", "filters": [{"name": "tcp_proxy", "cluster": "echo", "idle_timeout": idle}]}
    ]
    return doc


async def test_tcp_proxy_plain(pki):
    server = await start_tcp_echo()
    port = server.sockets[0].getsockname()[1]
    async with running(_tcp_doc(pki, port)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        payload = bytes(range(256)) * 4096  # 1 MiB, binary
        writer.write(b"PING" + payload)
        await writer.drain()
        writer.write_eof()  # half-close: the echo still answers everything
        data = await asyncio.wait_for(reader.read(-1), 10)
        assert data == b"PING" + payload
        writer.close()
        stats = gw.stats.as_json()
        assert stats["smgate_bytes_total{direction=upstream_tx,listener=main}"] == len(data)
    server.close()


async def test_tcp_idle_timeout_closes(pki):
    server = await start_tcp_echo()
    port = server.sockets[0].getsockname()[1]
    async with running(_tcp_doc(pki, port, idle=0.3)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(b"GET x")  # any first bytes: plain is allowed on this listener
        await writer.drain()
        assert await reader.read(5) == b"GET x"
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()
    server.close()


async def test_unreachable_upstream_closes_downstream(pki):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with running(_tcp_doc(pki, dead)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()

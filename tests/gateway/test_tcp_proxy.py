"""TCP proxy: both directions, half-close, idle timeout, unreachable upstream."""

from __future__ import annotations

import asyncio

from gateway.echo import start_tcp_echo
from tests.gateway.helpers import RecordingAudit, base_doc, running
from tests.ports import free_port


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
    dead = free_port()
    audit = RecordingAudit()
    async with running(_tcp_doc(pki, dead), audit=audit) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("main"))
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()
    (failure,) = audit.of("upstream.fail")
    assert failure["upstream"] == f"127.0.0.1:{dead}" and failure["reason"].startswith("connect_failure")
    (decision,) = audit.of("route.decision")
    assert (decision["route"], decision["cluster"], decision["upstream"], decision["reason"]) == (
        "filter_chain:tcp",
        "echo",
        None,
        "no_upstream",
    )
    (close,) = audit.of("conn.close")
    assert close["reason"] == "no_upstream" and close["conn_id"] == decision["conn_id"]


async def test_tcp_routes_by_sni(pki):
    import ssl

    first, second = await start_tcp_echo(), await start_tcp_echo()
    doc = base_doc(pki, first.sockets[0].getsockname()[1], protocols=("tls1.3",))
    doc["clusters"].append(
        {"name": "other", "endpoints": [{"address": "127.0.0.1", "port": second.sockets[0].getsockname()[1]}]}
    )
    doc["listeners"][0]["filter_chains"] = [
        {
            "name": "other",
            "filter_chain_match": {"server_names": ["other.test"]},
            "filters": [{"name": "tcp_proxy", "cluster": "other"}],
        },
        {"name": "default", "filters": [{"name": "tcp_proxy", "cluster": "echo"}]},
    ]
    async with running(doc) as gw:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        for name in ("other.test", "localhost"):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", gw.listener_port("main"), ssl=ctx, server_hostname=name
            )
            writer.write(name.encode())
            assert await reader.readexactly(len(name)) == name.encode()
            writer.close()
        opened = gw.stats.as_json()
        assert opened["smgate_upstream_connections_total{cluster=other,result=success}"] == 1
        assert opened["smgate_upstream_connections_total{cluster=echo,result=success}"] == 1
    first.close()
    second.close()

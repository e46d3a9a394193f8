"""TLCP half-close through the gateway's tcp_proxy: the client's close_notify ends its request, and
every byte the upstream still sends back arrives before the gateway closes the TLCP session."""

from __future__ import annotations

import asyncio

from gateway.echo import start_tcp_echo
from tests.gateway.helpers import running
from tests.gateway.test_tlcp import client_config, tlcp_listener
from tls.tlcp import TLCPConfiguration
from tls.tlcp.aio import TLCPStream, start_tlcp_server, tlcp_connect

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, larger than every buffer on the path


def tcp_proxy_config(demo, upstream_port: int, transport: dict | None = None) -> dict:
    listener = tlcp_listener(demo)
    listener["filter_chains"] = [
        {"name": "tcp", "filters": [{"name": "tcp_proxy", "cluster": "up", "idle_timeout": 30}]}
    ]
    return {
        "listeners": [listener],
        "clusters": [
            {
                "name": "up",
                "endpoints": [{"address": "127.0.0.1", "port": upstream_port}],
                "transport_socket": transport or {"type": "plain"},
            }
        ],
        "admin": None,
    }


async def send_then_half_close_and_read_all(gateway_port: int, demo) -> None:
    stream = await tlcp_connect("127.0.0.1", gateway_port, client_config(demo), handshake_timeout=5)

    async def send() -> None:
        for offset in range(0, len(PAYLOAD), 65536):
            stream.write(PAYLOAD[offset : offset + 65536])
            await stream.drain()
        stream.write_eof()

    sender = asyncio.create_task(send())
    echoed = await asyncio.wait_for(stream.read(), 30)
    await sender
    assert stream.close_notify_sent
    assert len(echoed) == len(PAYLOAD)
    assert echoed == PAYLOAD
    assert stream.close_notify_received, "the gateway must end the session with close_notify, not a cut"
    await stream.aclose()


async def test_tlcp_client_half_close_to_plain_upstream(demo_pki):
    upstream = await start_tcp_echo()
    port = upstream.sockets[0].getsockname()[1]
    try:
        async with running(tcp_proxy_config(demo_pki, port)) as gateway:
            await send_then_half_close_and_read_all(gateway.listener_port("main"), demo_pki)
    finally:
        upstream.close()


async def test_tlcp_client_half_close_to_tlcp_upstream(demo_pki):
    async def echo(stream: TLCPStream) -> None:
        while data := await stream.read(65536):
            stream.write(data)
            await stream.drain()

    configuration = TLCPConfiguration(
        is_client=False, certificate_set=demo_pki.server_certificate_set(), verify_peer=False
    )
    upstream = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, echo)
    port = upstream.sockets[0].getsockname()[1]
    transport = {"type": "tlcp", "server_name": "localhost", "trust_anchors": str(demo_pki.sm2.ca_bundle)}
    try:
        async with running(tcp_proxy_config(demo_pki, port, transport)) as gateway:
            await send_then_half_close_and_read_all(gateway.listener_port("main"), demo_pki)
    finally:
        upstream.close()

"""The asyncio adapter on uvloop (the optional ``fast`` extra), whose transports are not asyncio classes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.interop.identities import TONGSUO_PKI, client_configuration, server_configuration
from tls.tlcp.aio import TLCPStream, start_tlcp_server, tlcp_accept, tlcp_connect
from tls.tlcp.suites import CipherSuite

uvloop = pytest.importorskip("uvloop")

SUITES = (CipherSuite.ECDHE_SM4_GCM_SM3,)


def run_on_uvloop(coroutine_function: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coroutine_function())


def test_loopback_with_resumption_and_a_large_write_on_uvloop() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB

    async def scenario() -> None:
        configuration = server_configuration(TONGSUO_PKI, suites=SUITES, client_auth=True)

        async def echo(stream: TLCPStream) -> None:
            while data := await stream.read(1 << 20):
                stream.write(data)
                await stream.drain()

        server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, echo)
        port = server.sockets[0].getsockname()[1]
        try:
            session = None
            for expect_resumed in (False, True):
                client = client_configuration(TONGSUO_PKI, suites=SUITES, client_cert=True, session=session)
                stream = await tlcp_connect("127.0.0.1", port, client)
                assert stream.handshake.session_resumed is expect_resumed
                stream.write(payload)
                await stream.drain()
                assert await stream.readexactly(len(payload)) == payload
                stream.write_eof()
                assert await stream.read() == b""
                assert stream.close_notify_received
                await stream.aclose()
                session = stream.session
        finally:
            server.close()
            await server.wait_closed()

    run_on_uvloop(scenario)


def test_tlcp_accept_takes_over_a_uvloop_stream() -> None:
    async def scenario() -> None:
        configuration = server_configuration(TONGSUO_PKI, suites=SUITES, client_auth=True)

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            first = await reader.readexactly(5)
            stream = await tlcp_accept(reader, writer, configuration, initial_data=first)
            async with stream:
                stream.write(await stream.readexactly(3))
                await stream.drain()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            client = client_configuration(TONGSUO_PKI, suites=SUITES, client_cert=True)
            stream = await tlcp_connect("127.0.0.1", port, client)
            stream.write(b"abc")
            assert await stream.readexactly(3) == b"abc"
            assert await stream.read() == b""
            await stream.aclose()
        finally:
            server.close()
            await server.wait_closed()

    run_on_uvloop(scenario)

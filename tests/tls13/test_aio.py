"""The asyncio adapter: the entry points a gateway transport uses, errors that name their alert, half-close."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import pytest

from tls.tls13 import CipherSuite, ClientAuth
from tls.tls13.aio import (
    TLS13HandshakeError,
    TLS13Stream,
    TLS13StreamError,
    start_tls13_server,
    tls13_accept,
    tls13_accept_socket,
    tls13_connect,
)

from .conftest import client_config, client_credential, free_port, server_config


async def test_accept_after_a_sniffer_read_the_first_bytes() -> None:
    """tls13_accept takes the bytes a protocol sniffer already consumed (``initial_data``)."""
    configuration = server_config(alpn_protocols=("h2",))
    accepted: asyncio.Future[TLS13Stream] = asyncio.get_running_loop().create_future()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(5)  # what a sniffer looks at: the record header
        accepted.set_result(await tls13_accept(reader, writer, configuration, initial_data=head))

    port = free_port()
    server = await asyncio.start_server(on_connection, "127.0.0.1", port)
    try:
        client = await tls13_connect("127.0.0.1", port, client_config(alpn_protocols=("h2",)))
        stream = await accepted
        assert stream.get_extra_info("alpn_protocol") == "h2"
        assert stream.get_extra_info("cipher_suite") == CipherSuite.TLS_SM4_GCM_SM3
        client.write(b"hello")
        await client.drain()
        assert await stream.readexactly(5) == b"hello"
        # half-close: the client's close_notify is EOF for the server, which can still answer
        client.write_eof()
        assert await stream.read() == b"" and stream.close_notify_received
        stream.write(b"late answer")
        await stream.drain()
        stream.close()
        assert await client.read() == b"late answer"
        assert client.close_notify_received
        await client.aclose()
    finally:
        server.close()
        await server.wait_closed()


async def test_server_answers_each_client_flight_with_one_write() -> None:
    """ServerHello..Finished leave in one transport write, the tickets in one more, close_notify in one."""
    writes: list[bytes] = []
    accepted: asyncio.Future[TLS13Stream] = asyncio.get_running_loop().create_future()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        real_write = transport.write

        def counting_write(data: Any) -> None:
            writes.append(bytes(data))
            real_write(data)

        transport.write = counting_write  # type: ignore[method-assign]
        accepted.set_result(await tls13_accept(reader, writer, server_config()))

    port = free_port()
    server = await asyncio.start_server(on_connection, "127.0.0.1", port)
    try:
        client = await tls13_connect("127.0.0.1", port, client_config())
        stream = await accepted
        assert await client.wait_for_session() is not None
        assert len(writes) == 2  # the server flight, then the ticket after the client's Finished
        assert writes[0][0] == 0x16 and writes[1][0] == 0x17  # a plaintext ServerHello, then a record
        stream.close()
        assert await client.read() == b""
        assert len(writes) == 3
        await client.aclose()
    finally:
        server.close()
        await server.wait_closed()


async def test_reads_of_any_size_across_record_and_write_boundaries() -> None:
    """The read buffer keeps records as they arrive; reads of any size cut across them exactly."""
    rng = random.Random(14)
    payload = rng.randbytes(300_000)
    sizes = [1, 7, 16383, 16384, 16385, 40_000, 3, 100_000]
    accepted: asyncio.Future[TLS13Stream] = asyncio.get_running_loop().create_future()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(await tls13_accept(reader, writer, server_config()))

    port = free_port()
    server = await asyncio.start_server(on_connection, "127.0.0.1", port)
    try:
        client = await tls13_connect("127.0.0.1", port, client_config())
        stream = await accepted
        offset = 0
        for size in (5, 70_000, 1, 16384, 200_000):
            stream.write(payload[offset : offset + size])
            offset += size
        await stream.drain()
        stream.write_eof()
        received = b""
        for size in sizes:
            received += await client.readexactly(size)
        partial = await client.read(10)
        assert 1 <= len(partial) <= 10
        received += partial + await client.read()
        assert received == payload[:offset] and client.at_eof()
        await client.aclose()
        await stream.aclose()
    finally:
        server.close()
        await server.wait_closed()


async def test_accept_socket_and_session_resumption() -> None:
    configuration = server_config()
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        session = None
        for expect_resumed in (False, True):
            connecting = asyncio.create_task(tls13_connect("127.0.0.1", port, client_config(session=session)))
            sock, _ = await loop.sock_accept(listener)
            stream = await tls13_accept_socket(sock, configuration)
            client = await connecting
            assert stream.handshake.session_resumed is expect_resumed
            session = await client.wait_for_session()
            assert session is not None
            await client.aclose()
            await stream.aclose()
    finally:
        listener.close()


@pytest.mark.parametrize("server_verifies", [True, False])
async def test_peer_verified_reaches_the_stream_in_full_and_resumed_handshakes(server_verifies: bool) -> None:
    settings: dict[str, Any] = {} if server_verifies else {"verify_peer": False, "trust_store": None}
    configuration = server_config(client_auth=ClientAuth.OPTIONAL, **settings)
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        session = None
        for expect_resumed in (False, True):
            connecting = asyncio.create_task(
                tls13_connect(
                    "127.0.0.1", port, client_config(session=session, credential=client_credential())
                )
            )
            sock, _ = await loop.sock_accept(listener)
            stream = await tls13_accept_socket(sock, configuration)
            client = await connecting
            assert stream.get_extra_info("session_resumed") is expect_resumed
            assert stream.get_extra_info("peer_certificate") is not None
            assert stream.get_extra_info("peer_verified") is server_verifies
            assert client.get_extra_info("peer_verified") is True
            session = await client.wait_for_session()
            await client.aclose()
            await stream.aclose()
    finally:
        listener.close()


async def test_handshake_errors_name_the_alert_and_who_sent_it() -> None:
    configuration = server_config(client_auth=ClientAuth.REQUIRED)
    port = free_port()
    server = await start_tls13_server("127.0.0.1", port, lambda: configuration, lambda stream: None)
    try:
        client = await tls13_connect("127.0.0.1", port, client_config())
        # a TLS 1.3 client completes before the server has judged its (missing) certificate
        with pytest.raises(TLS13StreamError) as verdict:
            await client.read()
        assert verdict.value.alert == "certificate_required" and verdict.value.alert_sent is False
        with pytest.raises(TLS13HandshakeError) as failure:
            await tls13_connect("127.0.0.1", port, client_config(server_name="elsewhere.example"))
        assert failure.value.alert == "bad_certificate" and failure.value.alert_sent is True
        stream = await tls13_connect("127.0.0.1", port, client_config(credential=client_credential()))
        await stream.aclose()
    finally:
        server.close()
        await server.wait_closed()


async def test_handshake_timeout() -> None:
    port = free_port()
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", port)
    try:
        with pytest.raises(TLS13HandshakeError, match="timed out"):
            await tls13_connect("127.0.0.1", port, client_config(), handshake_timeout=0.3)
    finally:
        silent.close()
        await silent.wait_closed()

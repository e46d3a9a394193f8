"""Behaviour of the asyncio adapter: accept with sniffed bytes, flow control, half-close, timeouts, errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from certs import TrustStore
from tests.conftest import SHARED
from tests.interop.identities import TONGSUO_PKI, client_configuration, server_configuration
from tls.tlcp.aio import (
    TLCPHandshakeError,
    TLCPStream,
    TLCPStreamError,
    start_tlcp_server,
    tlcp_accept,
    tlcp_accept_socket,
    tlcp_connect,
    tlcp_request,
)
from tls.tlcp.config import TLCPConfiguration
from tls.tlcp.suites import CipherSuite

GCM = (CipherSuite.ECC_SM4_GCM_SM3,)


async def serve(callback, *, half_close: bool = True, **options: object) -> tuple[asyncio.Server, int]:
    configuration = server_configuration(TONGSUO_PKI, suites=GCM, **options)  # type: ignore[arg-type]
    server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, callback, half_close=half_close)
    return server, server.sockets[0].getsockname()[1]


async def stop(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


async def test_tlcp_accept_takes_over_a_sniffed_stream() -> None:
    configuration = server_configuration(TONGSUO_PKI, suites=GCM)
    sniffed: list[bytes] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(3)  # a protocol sniffer: content type + record version
        sniffed.append(first)
        stream = await tlcp_accept(reader, writer, configuration, initial_data=first)
        async with stream:
            stream.write((await stream.readexactly(5)).upper())
            await stream.drain()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        stream.write(b"hello")
        assert await stream.readexactly(5) == b"HELLO"
        assert await stream.read() == b""
        assert stream.close_notify_received
        await stream.aclose()
    finally:
        await stop(server)
    assert sniffed == [b"\x16\x01\x01"]


@pytest.mark.parametrize("consumed", [0, 5])
async def test_tlcp_accept_socket_after_a_peek_or_a_read(consumed: int) -> None:
    configuration = server_configuration(TONGSUO_PKI, suites=GCM)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept_one() -> bytes:
        sock, _ = await loop.sock_accept(listener)
        while True:  # the gateway's sniffer: peek at the record header without consuming it
            with contextlib.suppress(BlockingIOError):
                if len(sock.recv(5, socket.MSG_PEEK)) == 5:
                    break
            await asyncio.sleep(0.01)
        initial = sock.recv(consumed) if consumed else b""
        stream = await tlcp_accept_socket(sock, configuration, initial_data=initial)
        async with stream:
            stream.write(await stream.readexactly(4))
            await stream.drain()
        return initial

    try:
        port = listener.getsockname()[1]
        server_task = asyncio.create_task(accept_one())
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        stream.write(b"ping")
        assert await stream.readexactly(4) == b"ping"
        await stream.aclose()
        initial = await server_task
    finally:
        listener.close()
    assert len(initial) == consumed


async def test_slow_reader_bounds_buffering_and_blocks_the_writer() -> None:
    total = 8 * 1024 * 1024
    writer_done = asyncio.Event()

    async def flood(stream: TLCPStream) -> None:
        chunk = bytes(range(256)) * 256
        for _ in range(total // len(chunk)):
            stream.write(chunk)
            await stream.drain()
        writer_done.set()
        await stream.read()

    server, port = await serve(flood)
    try:
        high_water = 64 * 1024
        stream = await tlcp_connect(
            "127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM), read_high_water=high_water
        )
        # Give the server ample opportunity to push everything if nothing held it back.
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert not writer_done.is_set()
        buffered = stream._protocol.buffered
        # Reading pauses once the buffer passes the high-water mark; the read that crossed it may add one
        # transport read (asyncio reads up to 256 KiB at a time), far below the 8 MiB on offer.
        assert buffered <= high_water + 256 * 1024 + 16 * 1024
        received = 0
        while received < total:
            chunk = await stream.read(1 << 20)
            assert chunk
            received += len(chunk)
        await writer_done.wait()
        await stream.aclose()
    finally:
        await stop(server)
    assert received == total


async def test_write_eof_is_close_notify_and_the_peer_reads_eof() -> None:
    seen: list[tuple[bytes, bool]] = []

    async def collect(stream: TLCPStream) -> None:
        seen.append((await stream.read(), stream.close_notify_received))

    server, port = await serve(collect)
    try:
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        stream.write(b"last words")
        stream.write_eof()
        with pytest.raises(TLCPStreamError):
            stream.write(b"after close_notify")
        assert await stream.read() == b""
        assert stream.close_notify_received
        assert stream.at_eof()
        await stream.aclose()
    finally:
        await stop(server)
    assert seen == [(b"last words", True)]


async def test_transport_eof_without_close_notify_is_reported_as_truncation() -> None:
    async def hang_up(stream: TLCPStream) -> None:
        stream.abort()

    server, port = await serve(hang_up)
    try:
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        with pytest.raises((TLCPStreamError, asyncio.IncompleteReadError)):
            await stream.readexactly(1)
        assert not stream.close_notify_received
        stream.close()
        await stream.wait_closed()
    finally:
        await stop(server)


async def test_client_handshake_timeout_against_a_silent_server() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(TLCPHandshakeError, match="timed out"):
            await tlcp_connect(
                "127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM), handshake_timeout=0.2
            )
    finally:
        await stop(server)


async def test_server_drops_a_client_that_never_finishes_the_handshake() -> None:
    configuration = server_configuration(TONGSUO_PKI, suites=GCM)
    server = await start_tlcp_server("127.0.0.1", 0, lambda: configuration, print, handshake_timeout=0.2)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
    finally:
        await stop(server)


async def test_untrusted_server_fails_the_handshake_with_an_alert() -> None:
    connected: list[TLCPStream] = []
    server, port = await serve(connected.append)
    try:
        gmssl_ca = TrustStore.from_pem_file(SHARED / "tlcp" / "gmssl" / "certs" / "root_ca_cert.pem")
        configuration = TLCPConfiguration(
            is_client=True, cipher_suites=GCM, trust_store=gmssl_ca, server_name="localhost"
        )
        with pytest.raises(TLCPHandshakeError) as failure:
            await tlcp_connect("127.0.0.1", port, configuration)
        assert failure.value.alert_sent is True
        assert failure.value.alert in {"unknown_ca", "bad_certificate"}
    finally:
        await stop(server)
    assert connected == []


async def test_server_requiring_client_auth_rejects_a_client_without_certificate() -> None:
    server, port = await serve(print, client_auth=True)
    try:
        with pytest.raises(TLCPHandshakeError) as failure:
            await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        assert failure.value.alert_sent is False
        assert failure.value.alert is not None
    finally:
        await stop(server)


async def test_tlcp_request_reads_the_response_until_the_server_closes() -> None:
    async def respond(stream: TLCPStream) -> None:
        request = await stream.readexactly(7)
        stream.write(b"reply to " + request)
        await stream.drain()

    server, port = await serve(respond)
    try:
        response = await asyncio.to_thread(
            tlcp_request, "127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM), b"request"
        )
    finally:
        await stop(server)
    assert response == b"reply to request"


async def test_connect_fills_server_name_from_a_dns_host() -> None:
    names: list[str | None] = []

    async def record(stream: TLCPStream) -> None:
        names.append(stream.handshake.server_name)

    server, port = await serve(record)
    try:
        configuration = client_configuration(TONGSUO_PKI, suites=GCM, server_name=None)
        stream = await tlcp_connect("localhost", port, configuration)
        assert await stream.read() == b""
        await stream.aclose()
    finally:
        await stop(server)
    assert names == ["localhost"]


async def test_a_forged_record_fails_both_ends_with_bad_record_mac() -> None:
    server_errors: list[TLCPStreamError] = []

    async def read_forever(stream: TLCPStream) -> None:
        try:
            await stream.read()
        except TLCPStreamError as exc:
            server_errors.append(exc)

    server, port = await serve(read_forever)
    try:
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        forged = bytes([23, 1, 1, 0, 40]) + bytes(40)  # application_data: nonce, ciphertext, tag of zeros
        stream._transport.write(forged)  # bypass the engine: raw bytes on the wire
        with pytest.raises(TLCPStreamError) as failure:
            await stream.read()
        assert (failure.value.alert, failure.value.alert_sent) == ("bad_record_mac", False)
        await stream.wait_closed()
    finally:
        await stop(server)
    assert [(error.alert, error.alert_sent) for error in server_errors] == [("bad_record_mac", True)]


async def test_two_concurrent_readers_are_refused() -> None:
    async def hold(stream: TLCPStream) -> None:
        await stream.read()

    server, port = await serve(hold)
    try:
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        first = asyncio.create_task(stream.read(10))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already reading"):
            await stream.read(10)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        stream.write(b"still usable")
        await stream.aclose()
    finally:
        await stop(server)


# half-close: close_notify closes one direction, like a TCP FIN


async def echo_until_eof(stream: TLCPStream) -> None:
    while data := await stream.read(65536):
        stream.write(data)
        await stream.drain()


async def test_write_eof_then_the_server_echoes_everything_still_in_flight() -> None:
    closed_cleanly: list[bool] = []

    async def echo(stream: TLCPStream) -> None:
        await echo_until_eof(stream)
        closed_cleanly.append(stream.close_notify_received and not stream.close_notify_sent)

    payload = bytes(range(256)) * 4096  # 1 MiB, far beyond what the socket buffers and the window hold
    server, port = await serve(echo)
    try:
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))

        async def send() -> None:
            for offset in range(0, len(payload), 100_000):
                stream.write(payload[offset : offset + 100_000])
                await stream.drain()
            stream.write_eof()

        sender = asyncio.create_task(send())
        echoed = await stream.read()
        await sender
        assert stream.close_notify_received and stream.close_notify_sent
        await stream.aclose()
    finally:
        await stop(server)
    assert len(echoed) == len(payload) and echoed == payload
    assert closed_cleanly == [True]


async def test_without_half_close_the_receiver_cannot_write_after_close_notify() -> None:
    outcome: list[str] = []

    async def late_reply(stream: TLCPStream) -> None:
        assert await stream.read() == b"request"
        assert stream.close_notify_sent  # the engine answered the close_notify at once
        try:
            stream.write(b"reply")
        except TLCPStreamError as exc:
            outcome.append(str(exc))

    server, port = await serve(late_reply, half_close=False)
    try:
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        stream.write(b"request")
        stream.write_eof()
        assert await stream.read() == b""
        assert stream.close_notify_received
        await stream.aclose()
    finally:
        await stop(server)
    assert outcome == ["cannot write after close_notify"]


async def test_peer_close_notify_first_leaves_our_write_side_open() -> None:
    received: list[bytes] = []

    async def speak_first_then_listen(stream: TLCPStream) -> None:
        stream.write(b"greeting")
        stream.write_eof()
        with pytest.raises(TLCPStreamError):
            stream.write(b"after our close_notify")
        received.append(await stream.read())

    server, port = await serve(speak_first_then_listen)
    try:
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        assert await stream.read() == b"greeting"
        assert stream.at_eof() and stream.close_notify_received and not stream.close_notify_sent
        stream.write(b"answer after the server's close_notify")
        await stream.drain()
        await stream.aclose()
    finally:
        await stop(server)
    assert received == [b"answer after the server's close_notify"]


async def test_tlcp_request_half_closes_so_a_read_to_eof_server_answers() -> None:
    async def respond_after_eof(stream: TLCPStream) -> None:
        request = await stream.read()
        stream.write(b"%d bytes" % len(request))
        await stream.drain()

    server, port = await serve(respond_after_eof)
    try:
        configuration = client_configuration(TONGSUO_PKI, suites=GCM)
        response = await asyncio.to_thread(tlcp_request, "127.0.0.1", port, configuration, b"r" * 100_000)
    finally:
        await stop(server)
    assert response == b"100000 bytes"


async def test_tlcp_request_without_half_close_against_an_immediate_reply_server() -> None:
    async def respond(stream: TLCPStream) -> None:
        request = await stream.readexactly(7)
        stream.write(b"reply to " + request)
        await stream.drain()

    server, port = await serve(respond, half_close=False)
    try:
        configuration = client_configuration(TONGSUO_PKI, suites=GCM)
        response = await asyncio.to_thread(
            tlcp_request, "127.0.0.1", port, configuration, b"request", half_close=False
        )
    finally:
        await stop(server)
    assert response == b"reply to request"


@pytest.mark.parametrize("half_close", [False, True])
async def test_tlcp_accept_socket_half_close_setting_reaches_the_engine(half_close: bool) -> None:
    configuration = server_configuration(TONGSUO_PKI, suites=GCM)
    assert configuration.half_close is False
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept_one() -> bool:
        sock, _ = await loop.sock_accept(listener)
        stream = await tlcp_accept_socket(sock, configuration, half_close=half_close)
        async with stream:
            await stream.read()
            return bool(stream.get_extra_info("tlcp_connection").configuration.half_close)

    try:
        server_task = asyncio.create_task(accept_one())
        port = listener.getsockname()[1]
        stream = await tlcp_connect("127.0.0.1", port, client_configuration(TONGSUO_PKI, suites=GCM))
        stream.write_eof()
        assert await stream.read() == b""
        await stream.aclose()
        assert await server_task is half_close
    finally:
        listener.close()
    assert configuration.half_close is False  # the caller's object is never modified

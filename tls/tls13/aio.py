"""asyncio adapter for the sans-I/O TLS 1.3 (RFC 8998) engine: streams, connect/accept helpers, a server.

The shape is `tls.tlcp.aio`'s, so a gateway transport wraps it the same way: `tls13_accept_socket`
(after a MSG_PEEK sniff) or `tls13_accept` (after a StreamReader sniff, with ``initial_data``) on the
listener side, `tls13_connect` towards an upstream; each returns a `TLS13Stream` once the handshake is
done, whose API mirrors `asyncio.StreamReader`/`StreamWriter` plus `get_extra_info` with the TLS 1.3
details (``cipher_suite``, ``alpn_protocol``, ``peer_certificates``, ``peer_verified``,
``session_resumed``...).
Failures raise `TLS13HandshakeError`/`TLS13StreamError`, which name the alert and who sent it.

Flow control, both ways: decrypted data collects in a buffer and above `read_high_water` bytes the
transport stops reading until the consumer drains it to a quarter of that; `write()` encrypts at once
and `drain()` waits while the transport's buffer is above its high-water mark.

Closing: close_notify works like TCP FIN, one direction at a time (``half_close=True``, the default):
`write_eof()` sends ours and keeps reading; the peer's is EOF for the reader while we can still write.
A transport EOF without close_notify is EOF too, with `close_notify_received` False (truncation).
A client's `session` is the newest one a NewSessionTicket made resumable; tickets usually arrive just
after the handshake, so read (or call `wait_for_session`) before keeping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

from .alerts import AlertDescription, LocalProtocolError
from .config import TLS13Configuration, TLS13Session
from .connection import TLS13Connection
from .events import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    SessionTicketReceived,
)

__all__ = [
    "TLS13HandshakeError",
    "TLS13Stream",
    "TLS13StreamError",
    "start_tls13_server",
    "tls13_accept",
    "tls13_accept_socket",
    "tls13_connect",
]

logger = logging.getLogger(__name__)

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_READ_HIGH_WATER = 256 * 1024
_WRITE_SLICE = 256 * 1024

#: close_notify (reported as ConnectionClosed) and user_canceled: the only alerts that are not fatal (RFC 8446 6).
_NOT_FATAL = frozenset((AlertDescription.close_notify, AlertDescription.user_canceled))

ClientConnectedCallback = Callable[["TLS13Stream"], Awaitable[None] | None]


class TLS13StreamError(ConnectionError):
    """The connection failed: a fatal alert either way, or the transport broke.

    `alert` names the alert and `alert_sent` tells whether we sent it (our verdict on the peer) or
    received it; both are None when the transport failed without an alert.
    """

    def __init__(self, message: str, *, alert: str | None = None, alert_sent: bool | None = None) -> None:
        super().__init__(message)
        self.alert = alert
        self.alert_sent = alert_sent


class TLS13HandshakeError(TLS13StreamError):
    """The handshake did not complete."""


class _TLS13Protocol(asyncio.Protocol):
    """Moves bytes between one transport and one `TLS13Connection`; state shared with the stream."""

    def __init__(
        self,
        configuration: TLS13Configuration,
        *,
        half_close: bool = True,
        read_high_water: int = DEFAULT_READ_HIGH_WATER,
        on_handshake: Callable[[_TLS13Protocol], None] | None = None,
        initial_data: bytes = b"",
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._initial_data = initial_data
        if configuration.half_close != half_close:
            configuration = dataclasses.replace(configuration, half_close=half_close)
        self.configuration = configuration
        self.connection = TLS13Connection(configuration)
        self.transport: asyncio.Transport | None = None
        self.handshake: HandshakeComplete | None = None
        self.handshake_waiter: asyncio.Future[HandshakeComplete] = self._loop.create_future()
        self.closed_waiter: asyncio.Future[None] = self._loop.create_future()
        self._session_waiters: list[asyncio.Future[None]] = []
        self._on_handshake = on_handshake
        #: decrypted data not read yet: the records' bytes as they came (no copy until read), the first
        #: chunk partly consumed up to _first_offset; _buffered counts what is left
        self._chunks: deque[bytes] = deque()
        self._first_offset = 0
        self._buffered = 0
        self._read_high_water = read_high_water
        self._read_low_water = read_high_water // 4
        self._reading_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.eof = False
        self.close_notify_received = False
        self.close_notify_sent = False
        self.error: TLS13StreamError | None = None

    # transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.configuration.is_client:
            self.connection.start_handshake()
            self.flush()
        initial_data, self._initial_data = self._initial_data, b""
        if initial_data:
            self.data_received(initial_data)

    def data_received(self, data: bytes) -> None:
        if self.error is not None or self.close_notify_received:
            return
        try:
            events = self.connection.receive_data(data)
        except LocalProtocolError as exc:
            self._fail(TLS13StreamError(f"TLS 1.3 engine refused input: {exc}"))
            return
        self.flush()
        for event in events:
            self._handle_event(event)
        if self._buffered and self._read_waiter is not None:
            self._wake_reader()
        if self._buffered > self._read_high_water and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._set_eof()
        if not self.handshake_waiter.done():
            self._fail(TLS13HandshakeError("peer closed the connection during the handshake"))
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None and not self.handshake_waiter.done():
            reason = f": {exc}" if exc else ""
            self.error = TLS13HandshakeError(f"connection lost during the handshake{reason}")
        elif self.error is None and exc is not None:
            self.error = TLS13StreamError(f"connection lost: {exc}")
        if not self.handshake_waiter.done():
            assert self.error is not None
            self.handshake_waiter.set_exception(self.error)
            self.handshake_waiter.exception()
        self._set_eof()
        self._write_paused = False
        self._release(self._drain_waiters)
        self._release(self._session_waiters)
        if not self.closed_waiter.done():
            self.closed_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release(self._drain_waiters)

    # engine events

    def _handle_event(self, event: Event) -> None:
        if isinstance(event, ApplicationData):
            self._chunks.append(event.data)
            self._buffered += len(event.data)
        elif isinstance(event, HandshakeComplete):
            self.handshake = event
            if not self.handshake_waiter.done():
                self.handshake_waiter.set_result(event)
            if self._on_handshake is not None:
                self._on_handshake(self)
        elif isinstance(event, SessionTicketReceived):
            self._release(self._session_waiters)
        elif isinstance(event, ConnectionClosed):
            self.close_notify_received = True
            self.close_notify_sent = self.connection.close_notify_sent
            self._set_eof()
            if not self.handshake_waiter.done():
                self._fail(TLS13HandshakeError("peer sent close_notify during the handshake"))
        elif isinstance(event, AlertSent):
            error_class = TLS13StreamError if self.handshake_waiter.done() else TLS13HandshakeError
            self._fail(
                error_class(
                    f"sent fatal alert {event.name}: {event.reason}", alert=event.name, alert_sent=True
                )
            )
        elif isinstance(event, AlertReceived) and event.description not in _NOT_FATAL:
            error_class = TLS13StreamError if self.handshake_waiter.done() else TLS13HandshakeError
            self._fail(error_class(f"received fatal alert {event.name}", alert=event.name, alert_sent=False))

    def _fail(self, error: TLS13StreamError) -> None:
        if self.error is None:
            self.error = error
        if not self.handshake_waiter.done():
            self.handshake_waiter.set_exception(self.error)
            self.handshake_waiter.exception()
        self._set_eof()
        self._release(self._session_waiters)
        if self.transport is not None:
            self.transport.close()

    # plumbing shared with the stream

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _set_eof(self) -> None:
        self.eof = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @staticmethod
    def _release(waiters: list[asyncio.Future[None]]) -> None:
        pending = waiters[:]
        waiters.clear()
        for waiter in pending:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_readable(self) -> None:
        while not self._buffered and not self.eof:
            if self._read_waiter is not None:
                raise RuntimeError("another task is already reading from this TLS 1.3 stream")
            self._read_waiter = self._loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None

    async def wait_session(self) -> None:
        if self.connection.session is None and not self.eof and self.error is None:
            waiter = self._loop.create_future()
            self._session_waiters.append(waiter)
            await waiter

    def take(self, n: int) -> bytes:
        data = self._take_all() if n < 0 or n >= self._buffered else self._take_some(n)
        if self._reading_paused and self._buffered <= self._read_low_water and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    @property
    def buffered(self) -> int:
        return self._buffered

    def _take_all(self) -> bytes:
        chunks = self._chunks
        if self._first_offset:
            chunks[0] = chunks[0][self._first_offset :]
            self._first_offset = 0
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return data

    def _take_some(self, n: int) -> bytes:
        """The next `n` (< buffered) bytes: whole chunks as they are, the last one sliced."""
        chunks = self._chunks
        parts: list[bytes] = []
        remaining = n
        while remaining:
            first, offset = chunks[0], self._first_offset
            available = len(first) - offset
            if available <= remaining:
                parts.append(first[offset:] if offset else first)
                chunks.popleft()
                self._first_offset = 0
                remaining -= available
            else:
                parts.append(first[offset : offset + remaining])
                self._first_offset = offset + remaining
                remaining = 0
        self._buffered -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def drain(self) -> None:
        if self.error is not None:
            raise self.error
        if self.transport is None or self.transport.is_closing():
            await asyncio.sleep(0)
            if self.error is not None:
                raise self.error
            return
        if self._write_paused:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self.error is not None:
                raise self.error


class TLS13Stream:
    """A TLS 1.3 connection after its handshake (built by the helpers below, not directly)."""

    def __init__(self, protocol: _TLS13Protocol) -> None:
        if protocol.handshake is None or protocol.transport is None:
            raise ValueError("TLS13Stream needs a protocol whose handshake completed")
        self._protocol = protocol
        self._transport = protocol.transport
        self._handshake = protocol.handshake
        self._eof_sent = False

    @property
    def handshake(self) -> HandshakeComplete:
        return self._handshake

    @property
    def session(self) -> TLS13Session | None:
        """Client: the newest resumable session (put it in a later configuration's `session`)."""
        return self._protocol.connection.session

    async def wait_for_session(self, timeout: float = 5.0) -> TLS13Session | None:
        """Client: wait until a NewSessionTicket arrived (or EOF/timeout); returns `session`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._protocol.wait_session()
        return self.session

    @property
    def close_notify_received(self) -> bool:
        return self._protocol.close_notify_received

    @property
    def close_notify_sent(self) -> bool:
        return self._protocol.close_notify_sent

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport info (``peername``, ``socket``...) plus ``handshake``, ``cipher_suite``, ``version``,
        ``server_name``, ``alpn_protocol``, ``peer_certificates``, ``peer_certificate``,
        ``session_resumed``, ``group``, ``signature_scheme``, ``peer_verified`` (the peer chain was
        validated against trust anchors: only then is it an identity), ``session``, ``tls13_connection``."""
        handshake = self._handshake
        info: dict[str, Any] = {
            "handshake": handshake,
            "cipher_suite": handshake.cipher_suite,
            "version": handshake.version,
            "server_name": handshake.server_name,
            "alpn_protocol": handshake.alpn_protocol,
            "peer_certificates": handshake.peer_certificates,
            "peer_certificate": handshake.peer_certificate,
            "session_resumed": handshake.session_resumed,
            "group": handshake.group,
            "signature_scheme": handshake.signature_scheme,
            "peer_verified": handshake.peer_verified,
            "session": self.session,
            "tls13_connection": self._protocol.connection,
        }
        if name in info:
            return info[name]
        return self._transport.get_extra_info(name, default)

    # reading

    async def read(self, n: int = -1) -> bytes:
        protocol = self._protocol
        if n == 0:
            return b""
        if n < 0:
            chunks: list[bytes] = []
            while chunk := await self.read(DEFAULT_READ_HIGH_WATER):
                chunks.append(chunk)
            return b"".join(chunks)
        await protocol.wait_readable()
        if not protocol.buffered:
            if protocol.error is not None and not protocol.close_notify_received:
                raise protocol.error
            return b""
        return protocol.take(n)

    async def readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        protocol = self._protocol
        chunks: list[bytes] = []
        remaining = n
        while remaining:
            await protocol.wait_readable()
            if not protocol.buffered:
                if protocol.error is not None and not protocol.close_notify_received:
                    raise protocol.error
                raise asyncio.IncompleteReadError(b"".join(chunks), n)
            chunk = protocol.take(remaining)
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def at_eof(self) -> bool:
        return self._protocol.eof and not self._protocol.buffered

    # writing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        protocol = self._protocol
        if protocol.error is not None:
            raise protocol.error
        if self._eof_sent or protocol.close_notify_sent:
            raise TLS13StreamError("cannot write after close_notify")
        if self._transport.is_closing():
            raise TLS13StreamError("the connection is closed")
        view = memoryview(data)
        for offset in range(0, len(view), _WRITE_SLICE):
            protocol.connection.send_application_data(bytes(view[offset : offset + _WRITE_SLICE]))
            protocol.flush()

    def writelines(self, data: list[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    async def drain(self) -> None:
        await self._protocol.drain()

    def update_keys(self, *, request_peer_update: bool = True) -> None:
        """Send a KeyUpdate (RFC 8446 4.6.3)."""
        self._protocol.connection.update_keys(request_peer_update=request_peer_update)
        self._protocol.flush()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send close_notify; keep reading until the peer's close_notify (or transport EOF)."""
        protocol = self._protocol
        if self._eof_sent or protocol.close_notify_sent or self._transport.is_closing():
            self._eof_sent = True
            return
        self._eof_sent = True
        protocol.close_notify_sent = True
        protocol.connection.close()
        protocol.flush()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        if self._transport.is_closing():
            return
        if self._protocol.error is None:
            self.write_eof()
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._protocol.closed_waiter)

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> TLS13Stream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _finish_handshake(protocol: _TLS13Protocol, handshake_timeout: float | None) -> TLS13Stream:
    try:
        async with asyncio.timeout(handshake_timeout):
            await asyncio.shield(protocol.handshake_waiter)
    except TimeoutError:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise TLS13HandshakeError(f"TLS 1.3 handshake timed out after {handshake_timeout} s") from None
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise
    return TLS13Stream(protocol)


def _with_server_name(configuration: TLS13Configuration, host: str | None) -> TLS13Configuration:
    """Like Go's tls.Dial: an unset server_name defaults to the dialled DNS name (not an IP)."""
    if configuration.server_name is not None or not host:
        return configuration
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return dataclasses.replace(configuration, server_name=host)
    return configuration


async def tls13_connect(
    host: str,
    port: int,
    configuration: TLS13Configuration,
    *,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    sock: socket.socket | None = None,
    read_high_water: int = DEFAULT_READ_HIGH_WATER,
    half_close: bool = True,
) -> TLS13Stream:
    """Open a TCP connection (or use the connected ``sock``) and run the client handshake."""
    if not configuration.is_client:
        raise ValueError("tls13_connect needs a client configuration")
    loop = asyncio.get_running_loop()
    configuration = _with_server_name(configuration, host)

    def factory() -> _TLS13Protocol:
        return _TLS13Protocol(configuration, half_close=half_close, read_high_water=read_high_water)

    if sock is not None:
        _, protocol = await loop.create_connection(factory, sock=sock)
    else:
        async with asyncio.timeout(handshake_timeout):
            _, protocol = await loop.create_connection(factory, host, port)
    return await _finish_handshake(protocol, handshake_timeout)


async def tls13_accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    configuration: TLS13Configuration,
    *,
    initial_data: bytes = b"",
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    read_high_water: int = DEFAULT_READ_HIGH_WATER,
    half_close: bool = True,
) -> TLS13Stream:
    """Run the server handshake on a connection from `asyncio.start_server` (``initial_data``: what a
    sniffer already read).  The transport is taken over: ``reader``/``writer`` must not be used after."""
    if configuration.is_client:
        raise ValueError("tls13_accept needs a server configuration")
    transport = cast(asyncio.Transport, writer.transport)
    pending = bytes(getattr(reader, "_buffer", b""))
    reader_eof = reader.at_eof() or getattr(reader, "_eof", False)
    protocol = _TLS13Protocol(
        configuration,
        half_close=half_close,
        read_high_water=read_high_water,
        initial_data=initial_data + pending,
    )
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    transport.resume_reading()
    if reader_eof and not protocol.handshake_waiter.done():
        protocol.eof_received()
    return await _finish_handshake(protocol, handshake_timeout)


async def tls13_accept_socket(
    sock: socket.socket,
    configuration: TLS13Configuration,
    *,
    initial_data: bytes = b"",
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    read_high_water: int = DEFAULT_READ_HIGH_WATER,
    half_close: bool = True,
) -> TLS13Stream:
    """Run the server handshake on an accepted socket (e.g. after a ``MSG_PEEK`` sniff)."""
    if configuration.is_client:
        raise ValueError("tls13_accept_socket needs a server configuration")
    loop = asyncio.get_running_loop()
    protocol = _TLS13Protocol(
        configuration, half_close=half_close, read_high_water=read_high_water, initial_data=initial_data
    )
    await loop.connect_accepted_socket(lambda: protocol, sock)
    return await _finish_handshake(protocol, handshake_timeout)


async def start_tls13_server(
    host: str | None,
    port: int,
    configuration_factory: Callable[[], TLS13Configuration],
    client_connected_cb: ClientConnectedCallback,
    *,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    read_high_water: int = DEFAULT_READ_HIGH_WATER,
    sock: socket.socket | None = None,
    backlog: int = 100,
    half_close: bool = True,
) -> asyncio.Server:
    """Listen; ``client_connected_cb(stream)`` runs after each handshake and the stream is closed after it.

    Handshake failures and timeouts are logged and the connection dropped.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def serve(stream: TLS13Stream) -> None:
        try:
            result = client_connected_cb(stream)
            if result is not None:
                await result
        except Exception:
            logger.exception(
                "TLS 1.3 client callback failed", extra={"peer": stream.get_extra_info("peername")}
            )
        finally:
            stream.close()

    def on_handshake(protocol: _TLS13Protocol) -> None:
        task = loop.create_task(serve(TLS13Stream(protocol)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def watchdog(protocol: _TLS13Protocol) -> None:
        if not protocol.handshake_waiter.done() and protocol.transport is not None:
            logger.info(
                "TLS 1.3 handshake timed out", extra={"peer": protocol.transport.get_extra_info("peername")}
            )
            protocol._fail(TLS13HandshakeError("handshake timed out"))
            protocol.transport.abort()

    adjusted: list[TLS13Configuration] = []

    def configuration_for_connection() -> TLS13Configuration:
        configuration = configuration_factory()
        if configuration.half_close == half_close:
            return configuration
        if adjusted and adjusted[0] is configuration:
            return adjusted[1]
        adjusted[:] = [configuration, dataclasses.replace(configuration, half_close=half_close)]
        return adjusted[1]

    def factory() -> _TLS13Protocol:
        protocol = _TLS13Protocol(
            configuration_for_connection(),
            half_close=half_close,
            read_high_water=read_high_water,
            on_handshake=on_handshake,
        )
        if handshake_timeout is not None:
            timer = loop.call_later(handshake_timeout, watchdog, protocol)
            protocol.handshake_waiter.add_done_callback(lambda _: timer.cancel())
        protocol.handshake_waiter.add_done_callback(_log_handshake_failure)
        return protocol

    if sock is not None:
        return await loop.create_server(factory, sock=sock, backlog=backlog)
    return await loop.create_server(factory, host, port, backlog=backlog)


def _log_handshake_failure(waiter: asyncio.Future[HandshakeComplete]) -> None:
    if waiter.cancelled():
        return
    error = waiter.exception()
    if error is not None:
        logger.info("TLS 1.3 handshake failed: %s", error)

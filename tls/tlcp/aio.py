"""asyncio adapter for the sans-I/O TLCP engine: streams, connect/accept helpers and a server.

`TLCPConnection` never touches a socket; this module owns the I/O around it.  One `_TLCPProtocol`
(an `asyncio.Protocol`) feeds transport bytes into the engine, writes whatever the engine queues,
and turns engine events into stream state; `TLCPStream` is the StreamReader/StreamWriter-like face
that applications use once the handshake is done.

Flow control, both ways:

* reading: decrypted application data collects in a buffer; above `read_high_water` bytes the
  transport stops reading until the consumer drains the buffer below a quarter of that, so a slow
  consumer never makes us buffer without bound;
* writing: `write()` encrypts at once and hands records to the transport; `drain()` waits while the
  transport reports its buffer above its high-water mark (`pause_writing`/`resume_writing`).

Closing uses close_notify (GB/T 38636-2020 6.3.4, alert protocol) like TCP uses FIN, one direction
at a time (``half_close=True``, the default of every entry point here): `write_eof()` sends our
close_notify and keeps reading until the peer's; the peer's close_notify is EOF (b"") for the reader
while the stream can still write until `write_eof()`/`close()` sends ours.  So an echo server can
finish sending what is in flight after the client's close_notify, and a proxy can forward a
half-close.  RFC 5246 7.2.1 only requires that a close_notify be answered before our write side
closes; BabaSSL/Tongsuo and OpenSSL also write after receiving one.  With ``half_close=False`` the
engine answers the peer's close_notify at once and nothing more can be written (the engine's own
default, `TLCPConfiguration.half_close`, is overridden by the argument).  A transport EOF that
arrives without close_notify is also EOF for the reader, but `close_notify_received` stays False so
callers that care about truncation can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from .alerts import AlertDescription, AlertLevel, LocalProtocolError
from .config import PeerProfile, TLCPConfiguration, TLCPSession
from .connection import TLCPConnection
from .dialect import (
    ClientProgress,
    DialectCache,
    DialectChoice,
    DialectSource,
    Endpoint,
    describe_refusal,
    is_dialect_shaped,
    retry_dialect,
)
from .events import AlertReceived, AlertSent, ApplicationData, ConnectionClosed, Event, HandshakeComplete

__all__ = [
    "TLCPHandshakeError",
    "TLCPStream",
    "TLCPStreamError",
    "connect_with_dialects",
    "start_tlcp_server",
    "tlcp_accept",
    "tlcp_accept_socket",
    "tlcp_connect",
    "tlcp_request",
]

logger = logging.getLogger(__name__)

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Decrypted bytes buffered for the consumer before the transport stops reading.
DEFAULT_READ_HIGH_WATER = 256 * 1024
#: Plaintext handed to the engine per call, so one huge write() does not double its memory at once.
_WRITE_SLICE = 256 * 1024

ClientConnectedCallback = Callable[["TLCPStream"], Awaitable[None] | None]


class DialectStream(Protocol):
    """What the dialect retry needs of a connected stream (`TLCPStream`, or another adapter's)."""

    dialect: DialectChoice | None


StreamT = TypeVar("StreamT", bound=DialectStream)


class TLCPStreamError(ConnectionError):
    """The TLCP connection failed: a fatal alert either way, or the transport broke.

    `alert` names the alert (e.g. ``"bad_certificate"``) and `alert_sent` tells whether we sent it
    (our verdict on the peer) or received it (the peer's verdict on us); both are None when the
    transport failed without an alert.
    """

    def __init__(self, message: str, *, alert: str | None = None, alert_sent: bool | None = None) -> None:
        super().__init__(message)
        self.alert = alert
        self.alert_sent = alert_sent


class TLCPHandshakeError(TLCPStreamError):
    """The handshake did not complete.

    A client's error carries `client_progress` (what our flight sent, in which dialect) so a caller
    can tell a dialect-shaped refusal (`tls.tlcp.dialect.is_dialect_shaped`); `dialects_tried` lists
    the dialects of every attempt when `tlcp_connect` retried; `timed_out` marks a handshake that
    ran out of time (never dialect-shaped).
    """

    def __init__(
        self,
        message: str,
        *,
        alert: str | None = None,
        alert_sent: bool | None = None,
        client_progress: ClientProgress | None = None,
        dialects_tried: tuple[DialectChoice, ...] = (),
        timed_out: bool = False,
    ) -> None:
        super().__init__(message, alert=alert, alert_sent=alert_sent)
        self.client_progress = client_progress
        self.dialects_tried = dialects_tried
        self.timed_out = timed_out


class _TLCPProtocol(asyncio.Protocol):
    """Moves bytes between one transport and one `TLCPConnection`; state shared with the stream.

    State that starts out empty has class-level defaults (one of these is made per connection).
    """

    transport: asyncio.Transport | None = None
    handshake: HandshakeComplete | None = None
    #: created when someone waits for the close (most connections never have a waiter)
    _closed_waiter: asyncio.Future[None] | None = None
    connection_closed = False
    #: a server's handshake timer, cancelled once the handshake is over either way
    watchdog: asyncio.TimerHandle | None = None
    _reading_paused = False
    _read_waiter: asyncio.Future[None] | None = None
    _write_paused = False
    eof = False
    close_notify_received = False
    close_notify_sent = False
    error: TLCPStreamError | None = None

    def __init__(
        self,
        configuration: TLCPConfiguration,
        *,
        half_close: bool = True,
        read_high_water: int = DEFAULT_READ_HIGH_WATER,
        on_handshake: Callable[[_TLCPProtocol], None] | None = None,
        on_handshake_failed: Callable[[TLCPStreamError], None] | None = None,
        initial_data: bytes = b"",
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._initial_data = initial_data
        if configuration.half_close != half_close:
            configuration = dataclasses.replace(configuration, half_close=half_close)
        self.configuration = configuration
        self.connection = TLCPConnection(configuration)
        self.handshake_waiter: asyncio.Future[HandshakeComplete] = self._loop.create_future()
        self._on_handshake = on_handshake
        self._on_handshake_failed = on_handshake_failed
        self._buffer = bytearray()
        self._read_high_water = read_high_water
        self._read_low_water = read_high_water // 4
        self._drain_waiters: list[asyncio.Future[None]] = []

    # -- transport callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not checked with isinstance: uvloop's transports do not subclass asyncio's.
        self.transport = cast(asyncio.Transport, transport)
        if self.configuration.is_client:
            self.connection.start_handshake()
            self.flush()
        initial_data, self._initial_data = self._initial_data, b""
        if initial_data:
            # Bytes the caller already read (a protocol sniffer) come before anything the transport reads.
            self.data_received(initial_data)

    def data_received(self, data: bytes) -> None:
        if self.error is not None or self.close_notify_received:
            return
        try:
            events = self.connection.receive_data(data)
        except LocalProtocolError as exc:
            self._fail(TLCPStreamError(f"TLCP engine refused input: {exc}"))
            return
        self.flush()
        for event in events:
            self._handle_event(event)
        if self._buffer and self._read_waiter is not None:
            self._wake_reader()
        if (
            len(self._buffer) > self._read_high_water
            and not self._reading_paused
            and self.transport is not None
        ):
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        # Keep the transport open: the consumer may still write (and send close_notify) after a
        # peer's TCP half-close; it closes the stream when done.
        self._set_eof()
        if not self.handshake_waiter.done():
            self._fail(TLCPHandshakeError("peer closed the connection during the handshake"))
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None and not self.handshake_waiter.done():
            reason = f": {exc}" if exc else ""
            self.error = TLCPHandshakeError(f"connection lost during the handshake{reason}")
        elif self.error is None and exc is not None:
            self.error = TLCPStreamError(f"connection lost: {exc}")
        if not self.handshake_waiter.done():
            assert self.error is not None
            self._handshake_failed(self.error)
        self._set_eof()
        self._write_paused = False
        self._release_drain_waiters()
        self.connection_closed = True
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_drain_waiters()

    # -- engine events ---------------------------------------------------------------------------

    def _handle_event(self, event: Event) -> None:
        if isinstance(event, ApplicationData):
            self._buffer += event.data
        elif isinstance(event, HandshakeComplete):
            self.handshake = event
            if self.watchdog is not None:
                self.watchdog.cancel()
            if not self.handshake_waiter.done():
                self.handshake_waiter.set_result(event)
            if self._on_handshake is not None:
                self._on_handshake(self)
        elif isinstance(event, ConnectionClosed):
            self.close_notify_received = True
            # half_close: our write side stays open until write_eof()/close(); otherwise the engine replied.
            self.close_notify_sent = self.connection.close_notify_sent
            self._set_eof()
            if not self.handshake_waiter.done():
                self._fail(TLCPHandshakeError("peer sent close_notify during the handshake"))
        elif isinstance(event, AlertSent):
            error_class = TLCPStreamError if self.handshake_waiter.done() else TLCPHandshakeError
            self._fail(
                error_class(
                    f"sent fatal alert {event.name}: {event.reason}", alert=event.name, alert_sent=True
                )
            )
        elif isinstance(event, AlertReceived) and event.level == AlertLevel.FATAL:
            error_class = TLCPStreamError if self.handshake_waiter.done() else TLCPHandshakeError
            self._fail(error_class(f"received fatal alert {event.name}", alert=event.name, alert_sent=False))

    def _fail(self, error: TLCPStreamError) -> None:
        """A fatal error: remember it, wake everyone, and close after the queued alert is written."""
        if self.error is None:
            self.error = error
        if not self.handshake_waiter.done():
            self._handshake_failed(self.error)
        self._set_eof()
        if self.transport is not None:
            self.transport.close()

    def _handshake_failed(self, error: TLCPStreamError) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        self.handshake_waiter.set_exception(error)
        # Retrieved here so an unawaited failure (server side) does not log "never retrieved".
        self.handshake_waiter.exception()
        if self._on_handshake_failed is not None:
            self._on_handshake_failed(error)

    async def wait_closed(self) -> None:
        if self.connection_closed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        await asyncio.shield(self._closed_waiter)

    # -- plumbing shared with the stream ---------------------------------------------------------

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

    def _release_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_readable(self) -> None:
        """Return once the buffer has data or the stream reached EOF."""
        while not self._buffer and not self.eof:
            if self._read_waiter is not None:
                raise RuntimeError("another task is already reading from this TLCP stream")
            self._read_waiter = self._loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None

    def take(self, n: int) -> bytes:
        """Remove and return up to ``n`` buffered bytes (``n < 0``: all of them)."""
        if n < 0 or n >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]  # O(1) for a bytearray prefix
        if self._reading_paused and len(self._buffer) <= self._read_low_water and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def drain(self) -> None:
        if self.error is not None:
            raise self.error
        if self.transport is None or self.transport.is_closing():
            # Let the event loop run so that connection_lost can be delivered.
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


class TLCPStream:
    """A TLCP connection after its handshake: read and write application data.

    Created by `tlcp_connect`, `tlcp_accept` and `start_tlcp_server`; not meant to be built directly.
    The API mirrors `asyncio.StreamReader`/`StreamWriter` so code written for plain TCP ports over.
    """

    def __init__(self, protocol: _TLCPProtocol) -> None:
        if protocol.handshake is None or protocol.transport is None:
            raise ValueError("TLCPStream needs a protocol whose handshake completed")
        self._protocol = protocol
        self._transport = protocol.transport
        self._handshake = protocol.handshake
        self._eof_sent = False
        progress = protocol.connection.client_progress
        #: Client: the dialect whose forms the handshake sent, and how it was chosen (None: none mattered).
        self.dialect: DialectChoice | None = progress.dialect if progress is not None else None

    # -- identity ---------------------------------------------------------------------------------

    @property
    def handshake(self) -> HandshakeComplete:
        """The peer's identity and the negotiated parameters."""
        return self._handshake

    @property
    def session(self) -> TLCPSession | None:
        """Client: the session to put in a later configuration's `session` to resume."""
        return self._protocol.connection.session

    @property
    def close_notify_received(self) -> bool:
        """True once the peer closed cleanly; False at EOF means the transport was cut (truncation)."""
        return self._protocol.close_notify_received

    @property
    def close_notify_sent(self) -> bool:
        """True once our close_notify is queued (`write_eof`, `close`, or the engine's reply without half-close)."""
        return self._protocol.close_notify_sent

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport info (``peername``, ``sockname``, ``socket``...) plus TLCP details.

        TLCP names: ``cipher_suite``, ``session_id``, ``session_resumed``, ``server_name``,
        ``alpn_protocol`` (the ALPN protocol negotiated, or None), ``peer_certificates``,
        ``peer_sign_cert``, ``peer_enc_cert``, ``version``, ``handshake``, ``session``,
        ``tlcp_connection``, ``dialect``.
        """
        handshake = self._handshake
        tlcp_info: dict[str, Any] = {
            "handshake": handshake,
            "cipher_suite": handshake.cipher_suite,
            "session_id": handshake.session_id,
            "session_resumed": handshake.session_resumed,
            "server_name": handshake.server_name,
            "alpn_protocol": handshake.alpn_protocol,
            "peer_certificates": handshake.peer_certificates,
            "peer_sign_cert": handshake.peer_sign_cert,
            "peer_enc_cert": handshake.peer_enc_cert,
            "version": handshake.version,
            "session": self.session,
            "tlcp_connection": self._protocol.connection,
            "dialect": self.dialect,
        }
        if name in tlcp_info:
            return tlcp_info[name]
        return self._transport.get_extra_info(name, default)

    # -- reading ----------------------------------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``n < 0``: everything until EOF); b"" at EOF.

        Raises `TLCPStreamError` when the connection failed and nothing buffered is left.
        """
        protocol = self._protocol
        if n == 0:
            return b""
        if n < 0:
            chunks: list[bytes] = []
            while True:
                chunk = await self.read(DEFAULT_READ_HIGH_WATER)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        await protocol.wait_readable()
        if not protocol.buffered:
            if protocol.error is not None and not protocol.close_notify_received:
                raise protocol.error
            return b""
        return protocol.take(n)

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; `asyncio.IncompleteReadError` if EOF comes first."""
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

    # -- writing ----------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` into records and queue them on the transport (call `drain` after)."""
        protocol = self._protocol
        if protocol.error is not None:
            raise protocol.error
        if self._eof_sent or protocol.close_notify_sent:
            raise TLCPStreamError("cannot write after close_notify")
        if self._transport.is_closing():
            raise TLCPStreamError("the connection is closed")
        view = memoryview(data)
        for offset in range(0, len(view), _WRITE_SLICE):
            protocol.connection.send_application_data(bytes(view[offset : offset + _WRITE_SLICE]))
            protocol.flush()

    def writelines(self, data: list[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._protocol.drain()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send close_notify; keep reading until the peer's close_notify (or transport EOF).

        Without half-close, after the peer's close_notify our reply has already gone out and this
        does nothing.
        """
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
        """Send close_notify (if not yet sent) and close the transport once its buffer is written."""
        if self._transport.is_closing():
            return
        if self._protocol.error is None:
            self.write_eof()
        self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once, without close_notify."""
        self._transport.abort()

    async def wait_closed(self) -> None:
        """Wait until the transport is closed (after `close` or a peer close)."""
        await self._protocol.wait_closed()

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> TLCPStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _finish_handshake(protocol: _TLCPProtocol, handshake_timeout: float | None) -> TLCPStream:
    try:
        async with asyncio.timeout(handshake_timeout):
            await asyncio.shield(protocol.handshake_waiter)
    except TimeoutError:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise TLCPHandshakeError(
            f"TLCP handshake timed out after {handshake_timeout} s",
            client_progress=protocol.connection.client_progress,
            timed_out=True,
        ) from None
    except TLCPHandshakeError as error:
        if protocol.transport is not None:
            protocol.transport.abort()
        if protocol.configuration.is_client:
            raise _client_handshake_error(error, protocol.connection.client_progress) from None
        raise
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise
    return TLCPStream(protocol)


def _client_handshake_error(error: TLCPHandshakeError, progress: ClientProgress | None) -> TLCPHandshakeError:
    """The error with what our flight sent and what the server most likely refused, when a dialect mattered."""
    refusal = "" if error.alert_sent else describe_refusal(progress, error.alert)
    return TLCPHandshakeError(
        f"{error}; {refusal}" if refusal else str(error),
        alert=error.alert,
        alert_sent=error.alert_sent,
        client_progress=progress,
    )


def _with_server_name(configuration: TLCPConfiguration, host: str | None) -> TLCPConfiguration:
    """Like Go's tls.Dial: an unset server_name defaults to the dialled DNS name (not an IP)."""
    if configuration.server_name is not None or not host:
        return configuration
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return dataclasses.replace(configuration, server_name=host)
    return configuration


async def tlcp_connect(
    host: str,
    port: int,
    configuration: TLCPConfiguration,
    *,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    sock: socket.socket | None = None,
    read_high_water: int = DEFAULT_READ_HIGH_WATER,
    half_close: bool = True,
    dialect_cache: DialectCache | None = None,
    alpn_fallback: bool = False,
) -> TLCPStream:
    """Open a TCP connection (or use the connected ``sock``) and run the client handshake.

    ``half_close``: see the module docstring (overrides ``configuration.half_close``).
    With ``configuration.profile`` AUTO the engine recognises the server's dialect from its flight
    (`tls.tlcp.dialect`); if the server still refuses our flight in a dialect-shaped way, a second
    connection tries the dialect `retry_dialect` picks (not with ``sock``: it cannot be reopened).
    ``dialect_cache`` remembers per endpoint (host, port, server name) what a retry found, so later
    connections start with it and pay no extra handshake.  The stream's `dialect` says what was used.
    ``alpn_fallback``: when the server answers our ALPN offer with no_application_protocol, connect
    once more offering none (the stream's ``alpn_protocol`` is then None).  For callers whose
    protocol has a default when nothing is negotiated (HTTP/1.1): GmSSL 3.3's ``tlcp_server``
    refuses every ALPN offer unless it was started with ``-alpn``, where BabaSSL and Tongsuo servers
    without ALPN ignore the extension.  The refusal comes right after the ClientHello, so the retry
    costs a connection and a round trip, no SM2 operation.  Not with ``sock``.
    Raises `TLCPHandshakeError` (with the alert name when there was one, and the dialects tried) or
    `OSError`.
    """
    if not configuration.is_client:
        raise ValueError("tlcp_connect needs a client configuration")
    if alpn_fallback and configuration.alpn_protocols and sock is None:
        try:
            return await tlcp_connect(
                host,
                port,
                configuration,
                handshake_timeout=handshake_timeout,
                read_high_water=read_high_water,
                half_close=half_close,
                dialect_cache=dialect_cache,
            )
        except TLCPHandshakeError as error:
            if error.alert != AlertDescription.no_application_protocol.name or error.alert_sent is not False:
                raise
        configuration = dataclasses.replace(configuration, alpn_protocols=())
    configuration = _with_server_name(configuration, host)
    connect = functools.partial(
        _connect_once,
        host,
        port,
        handshake_timeout=handshake_timeout,
        sock=sock,
        read_high_water=read_high_water,
        half_close=half_close,
    )
    if configuration.profile is not PeerProfile.AUTO or sock is not None:
        return await connect(configuration)
    return await connect_with_dialects(
        connect, (host, port, configuration.server_name), configuration, dialect_cache
    )


async def connect_with_dialects(
    connect: Callable[[TLCPConfiguration], Awaitable[StreamT]],
    endpoint: Endpoint,
    configuration: TLCPConfiguration,
    cache: DialectCache | None,
) -> StreamT:
    """AUTO: start with the dialect a retry found earlier (if cached) or recognise it; retry once.

    ``connect`` runs one client handshake and raises `TLCPHandshakeError` (with ``client_progress``)
    when it fails; other asyncio adapters (the gateway's transport) reuse this policy through it."""
    pinned = cache.pinned(endpoint, configuration.now()) if cache is not None else None
    first, label = configuration, None
    if pinned is not None:
        first = dataclasses.replace(configuration, profile=pinned.dialect)
        label = DialectChoice(pinned.dialect, DialectSource.REMEMBERED, pinned.evidence)
    try:
        stream = await connect(first)
    except TLCPHandshakeError as error:
        progress = error.client_progress
        if error.timed_out or not is_dialect_shaped(progress, error.alert, error.alert_sent):
            raise
        assert progress is not None and progress.dialect is not None
        refused = _relabelled(progress.dialect, label)
        retry = DialectChoice(
            retry_dialect(refused.dialect, error.alert, progress.key_exchange),
            DialectSource.RETRIED,
            f"the server refused {refused.dialect.value} ({error.alert or 'closed without an alert'})",
        )
        if cache is not None:
            cache.stats.retries += 1
        stream = await _connect_retry(connect, configuration, refused, retry, error, endpoint, cache)
        label = retry
    if stream.dialect is not None:
        stream.dialect = _relabelled(stream.dialect, label)
    if cache is not None and stream.dialect is not None:
        cache.remember(endpoint, stream.dialect, configuration.now())
    return stream


async def _connect_retry(
    connect: Callable[[TLCPConfiguration], Awaitable[StreamT]],
    configuration: TLCPConfiguration,
    refused: DialectChoice,
    retry: DialectChoice,
    first_error: TLCPHandshakeError,
    endpoint: Endpoint,
    cache: DialectCache | None,
) -> StreamT:
    try:
        stream = await connect(dataclasses.replace(configuration, profile=retry.dialect))
    except TLCPHandshakeError as error:
        if cache is not None:
            cache.forget(endpoint)
        raise TLCPHandshakeError(
            f"TLCP handshake refused in both dialects tried: {refused.dialect.value}: {first_error}; "
            f"then {retry.dialect.value}: {error}",
            alert=error.alert,
            alert_sent=error.alert_sent,
            client_progress=error.client_progress,
            dialects_tried=(refused, retry),
            timed_out=error.timed_out,
        ) from None
    if cache is not None:
        cache.stats.retries_succeeded += 1
    return stream


def _relabelled(choice: DialectChoice, label: DialectChoice | None) -> DialectChoice:
    """The engine calls a dialect it was given configured; `label` says where the connector got it."""
    if label is None or choice.source is not DialectSource.CONFIGURED:
        return choice
    return label


async def _connect_once(
    host: str,
    port: int,
    configuration: TLCPConfiguration,
    *,
    handshake_timeout: float | None,
    sock: socket.socket | None,
    read_high_water: int,
    half_close: bool,
) -> TLCPStream:
    loop = asyncio.get_running_loop()

    def factory() -> _TLCPProtocol:
        return _TLCPProtocol(configuration, half_close=half_close, read_high_water=read_high_water)

    if sock is not None:
        _, protocol = await loop.create_connection(factory, sock=sock)
    else:
        async with asyncio.timeout(handshake_timeout):
            _, protocol = await loop.create_connection(factory, host, port)
    return await _finish_handshake(protocol, handshake_timeout)


async def tlcp_accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    configuration: TLCPConfiguration,
    *,
    initial_data: bytes = b"",
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    read_high_water: int = DEFAULT_READ_HIGH_WATER,
    half_close: bool = True,
) -> TLCPStream:
    """Run the server handshake on a connection accepted by `asyncio.start_server`.

    ``initial_data`` is what the caller already read (the gateway's protocol sniffer).  The transport
    is taken over from the stream pair: ``reader`` and ``writer`` must not be used afterwards.
    ``half_close``: see the module docstring (overrides ``configuration.half_close``).
    """
    if configuration.is_client:
        raise ValueError("tlcp_accept needs a server configuration")
    transport = cast(asyncio.Transport, writer.transport)
    # Bytes the StreamReader received beyond what the sniffer consumed must follow the transport to
    # the TLCP protocol; StreamReader offers no public way to take its buffer without awaiting.
    pending = bytes(getattr(reader, "_buffer", b""))
    reader_eof = reader.at_eof() or getattr(reader, "_eof", False)
    protocol = _TLCPProtocol(
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


async def tlcp_accept_socket(
    sock: socket.socket,
    configuration: TLCPConfiguration,
    *,
    initial_data: bytes = b"",
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    read_high_water: int = DEFAULT_READ_HIGH_WATER,
    half_close: bool = True,
) -> TLCPStream:
    """Run the server handshake on an accepted socket (e.g. after a ``MSG_PEEK`` sniff).

    ``initial_data`` is anything already consumed from ``sock``; it is fed to the engine first.
    ``half_close``: see the module docstring (overrides ``configuration.half_close``).
    """
    if configuration.is_client:
        raise ValueError("tlcp_accept_socket needs a server configuration")
    loop = asyncio.get_running_loop()
    protocol = _TLCPProtocol(
        configuration, half_close=half_close, read_high_water=read_high_water, initial_data=initial_data
    )
    await loop.connect_accepted_socket(lambda: protocol, sock)
    return await _finish_handshake(protocol, handshake_timeout)


async def start_tlcp_server(
    host: str | None,
    port: int,
    configuration_factory: Callable[[], TLCPConfiguration],
    client_connected_cb: ClientConnectedCallback,
    *,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    read_high_water: int = DEFAULT_READ_HIGH_WATER,
    sock: socket.socket | None = None,
    backlog: int = 100,
    reuse_address: bool | None = None,
    half_close: bool = True,
) -> asyncio.Server:
    """Listen for TLCP clients; ``client_connected_cb(stream)`` runs after each successful handshake.

    ``configuration_factory`` is called once per connection (it may return one shared object).
    Handshake failures and timeouts are logged and the connection dropped.  When the callback
    returns, the stream is closed (close_notify, then TCP close).  With ``half_close`` (see the
    module docstring) the callback may still write after reading EOF.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def serve(stream: TLCPStream) -> None:
        try:
            result = client_connected_cb(stream)
            if result is not None:
                await result
        except Exception:
            logger.exception("TLCP client callback failed", extra={"peer": stream.get_extra_info("peername")})
        finally:
            stream.close()

    def on_handshake(protocol: _TLCPProtocol) -> None:
        task = loop.create_task(serve(TLCPStream(protocol)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def handshake_timed_out(protocol: _TLCPProtocol) -> None:
        if not protocol.handshake_waiter.done() and protocol.transport is not None:
            logger.info(
                "TLCP handshake timed out", extra={"peer": protocol.transport.get_extra_info("peername")}
            )
            protocol._fail(TLCPHandshakeError("handshake timed out"))
            protocol.transport.abort()

    # The factory usually returns one shared configuration; adjust its half_close once, not per connection.
    adjusted: list[TLCPConfiguration] = []

    def configuration_for_connection() -> TLCPConfiguration:
        configuration = configuration_factory()
        if configuration.half_close == half_close:
            return configuration
        if adjusted and adjusted[0] is configuration:
            return adjusted[1]
        adjusted[:] = [configuration, dataclasses.replace(configuration, half_close=half_close)]
        return adjusted[1]

    def factory() -> _TLCPProtocol:
        protocol = _TLCPProtocol(
            configuration_for_connection(),
            half_close=half_close,
            read_high_water=read_high_water,
            on_handshake=on_handshake,
            on_handshake_failed=_log_handshake_failure,
        )
        if handshake_timeout is not None:
            protocol.watchdog = loop.call_later(handshake_timeout, handshake_timed_out, protocol)
        return protocol

    if sock is not None:
        return await loop.create_server(factory, sock=sock, backlog=backlog)
    return await loop.create_server(factory, host, port, backlog=backlog, reuse_address=reuse_address)


def _log_handshake_failure(error: TLCPStreamError) -> None:
    logger.info("TLCP handshake failed: %s", error)


def tlcp_request(
    host: str,
    port: int,
    configuration: TLCPConfiguration,
    payload: bytes,
    *,
    response_bytes: int | None = None,
    timeout: float = 30.0,
    half_close: bool = True,
) -> bytes:
    """Connect, send ``payload``, return the response, close cleanly (blocking; for scripts/tests).

    With ``half_close`` (the default) it sends close_notify right after the payload, so a server
    that reads its request until EOF sees one; the server may still answer.  With ``response_bytes``
    it reads exactly that many bytes then closes; otherwise it reads until the peer's close_notify
    (or TCP close).  ``half_close=False`` sends close_notify only after the response, for servers
    that stop writing on the client's close_notify (they answer it at once).
    """

    async def exchange() -> bytes:
        async with asyncio.timeout(timeout):
            stream = await tlcp_connect(
                host, port, configuration, handshake_timeout=timeout, half_close=half_close
            )
            try:
                stream.write(payload)
                await stream.drain()
                if half_close:
                    stream.write_eof()
                if response_bytes is not None:
                    return await stream.readexactly(response_bytes)
                return await stream.read()
            finally:
                stream.close()
                with contextlib.suppress(TLCPStreamError):
                    await stream.wait_closed()

    return asyncio.run(exchange())

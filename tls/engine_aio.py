"""The asyncio adapter both of the project's sans-I/O engines run under: TLCP (``tls.tlcp.aio``) and
TLS 1.3 (``tls.tls13.aio``).

The two engines have one sans-I/O face (``start_handshake``, ``receive_data`` returning events,
``data_to_send``, ``send_application_data``, ``close``, ``close_notify_sent``) and events of the same
names, but each its own classes.  `EngineProtocol` (an `asyncio.Protocol`) feeds transport bytes into
either engine, writes whatever it queues and turns its events into stream state; `SecureStream` is the
StreamReader/StreamWriter-like face applications use once the handshake is done; the functions below
connect, accept and serve with them.  An engine's adapter module subclasses both and says only what
differs: its connection and event classes, which received alerts are fatal, its error classes, the
names `get_extra_info` adds, and its own events (a TLS 1.3 session ticket).

Flow control, both ways:

* reading: decrypted application data collects as the records' bytes (no copy until read); above
  `read_high_water` bytes the transport stops reading until the consumer drains the buffer below a
  quarter of that, so a slow consumer never makes us buffer without bound;
* writing: `SecureStream.write` encrypts at once and hands records to the transport; ``drain()`` waits
  while the transport reports its buffer above its high-water mark (``pause_writing``/``resume_writing``).

Closing uses close_notify like TCP uses FIN, one direction at a time (``half_close=True``, the default
of every entry point): ``write_eof()`` sends ours and keeps reading until the peer's; the peer's is EOF
for the reader while the stream can still write.  A transport EOF without close_notify is EOF too, with
``close_notify_received`` False (truncation).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_READ_HIGH_WATER",
    "WRITE_SLICE",
    "EngineEvents",
    "EngineProtocol",
    "EngineStreamError",
    "SecureStream",
    "accept_socket",
    "accept_stream_pair",
    "finish_handshake",
    "open_client",
    "start_server",
    "with_server_name",
]

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Decrypted bytes buffered for the consumer before the transport stops reading.
DEFAULT_READ_HIGH_WATER = 256 * 1024
#: Plaintext handed to the engine per call, so one huge write() does not double its memory at once.
WRITE_SLICE = 256 * 1024


class EngineConfiguration(Protocol):
    """What the adapter reads of ``TLCPConfiguration`` and ``TLS13Configuration`` (dataclasses both)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def is_client(self) -> bool: ...

    @property
    def half_close(self) -> bool: ...

    @property
    def server_name(self) -> str | None: ...


class SansIoEngine(Protocol):
    """What the adapter calls on ``TLCPConnection`` and ``TLS13Connection``."""

    @property
    def close_notify_sent(self) -> bool: ...

    def start_handshake(self) -> None: ...

    def receive_data(self, data: bytes) -> Sequence[Any]: ...

    def data_to_send(self) -> bytes: ...

    def send_application_data(self, data: bytes) -> None: ...

    def close(self) -> None: ...


ConfigT = TypeVar("ConfigT", bound=EngineConfiguration)
EngineT = TypeVar("EngineT", bound=SansIoEngine)
HandshakeT = TypeVar("HandshakeT")
ProtocolT = TypeVar("ProtocolT", bound="EngineProtocol[Any, Any, Any]")
StreamT = TypeVar("StreamT", bound="SecureStream[Any, Any]")


class EngineStreamError(ConnectionError):
    """The connection failed: a fatal alert either way, or the transport broke.

    `alert` names the alert (e.g. ``"bad_certificate"``) and `alert_sent` tells whether we sent it
    (our verdict on the peer) or received it (the peer's verdict on us); both are None when the
    transport failed without an alert.  Each engine raises its own subclass.
    """

    def __init__(self, message: str, *, alert: str | None = None, alert_sent: bool | None = None) -> None:
        super().__init__(message)
        self.alert = alert
        self.alert_sent = alert_sent


@dataclass(frozen=True, slots=True)
class EngineEvents:
    """One engine's event classes (same names in both engines, different classes) and its caller-misuse
    error."""

    application_data: type[Any]
    handshake_complete: type[Any]
    connection_closed: type[Any]
    alert_sent: type[Any]
    alert_received: type[Any]
    local_protocol_error: type[Exception]

    @classmethod
    def of(cls, engine_package: ModuleType) -> EngineEvents:
        """The classes ``tls.tlcp`` or ``tls.tls13`` exports under the names both engines use."""
        return cls(
            application_data=engine_package.ApplicationData,
            handshake_complete=engine_package.HandshakeComplete,
            connection_closed=engine_package.ConnectionClosed,
            alert_sent=engine_package.AlertSent,
            alert_received=engine_package.AlertReceived,
            local_protocol_error=engine_package.LocalProtocolError,
        )


class EngineProtocol(asyncio.Protocol, Generic[ConfigT, EngineT, HandshakeT]):
    """Moves bytes between one transport and one engine connection; state shared with the stream.

    State that starts out empty has class-level defaults (one of these is made per connection).
    """

    #: How messages and log lines name the engine ("TLCP", "TLS 1.3").
    engine_name: ClassVar[str]
    events: ClassVar[EngineEvents]
    stream_error: ClassVar[type[EngineStreamError]]
    handshake_error: ClassVar[type[EngineStreamError]]
    #: the engine adapter module's logger (handshake failures and timeouts of a server)
    logger: ClassVar[logging.Logger]

    transport: asyncio.Transport | None = None
    handshake: HandshakeT | None = None
    #: created when someone waits for the close (most connections never have a waiter)
    _closed_waiter: asyncio.Future[None] | None = None
    connection_closed = False
    #: a server's handshake timer, cancelled once the handshake is over either way
    watchdog: asyncio.TimerHandle | None = None
    _reading_paused = False
    _read_waiter: asyncio.Future[None] | None = None
    _write_paused = False
    #: how far the first buffered chunk has been read
    _first_offset = 0
    #: decrypted bytes not read yet
    _buffered = 0
    eof = False
    close_notify_received = False
    close_notify_sent = False
    error: EngineStreamError | None = None

    def __init__(
        self,
        configuration: ConfigT,
        *,
        half_close: bool = True,
        read_high_water: int = DEFAULT_READ_HIGH_WATER,
        on_handshake: Callable[[Any], None] | None = None,
        on_handshake_failed: Callable[[EngineStreamError], None] | None = None,
        initial_data: bytes = b"",
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._initial_data = initial_data
        if configuration.half_close != half_close:
            configuration = dataclasses.replace(configuration, half_close=half_close)
        self.configuration = configuration
        self.connection: EngineT = self._new_connection(configuration)
        self.handshake_waiter: asyncio.Future[HandshakeT] = self._loop.create_future()
        self._on_handshake = on_handshake
        self._on_handshake_failed = on_handshake_failed
        #: decrypted data not read yet: the records' bytes as they came, the first chunk read up to _first_offset
        self._chunks: deque[bytes] = deque()
        self._read_high_water = read_high_water
        self._read_low_water = read_high_water // 4
        self._drain_waiters: list[asyncio.Future[None]] = []

    # -- engine specifics ------------------------------------------------------------------------

    def _new_connection(self, configuration: ConfigT) -> EngineT:
        raise NotImplementedError

    def _is_fatal(self, alert: Any) -> bool:
        """Whether a received alert ends the connection (close_notify comes as ``connection_closed``)."""
        raise NotImplementedError

    def _on_other_event(self, event: Any) -> None:
        """An event of the engine's own (a TLS 1.3 session ticket); ignored unless overridden."""

    def _wake_other_waiters(self) -> None:
        """The connection failed or closed: wake whatever else waits on the peer (session tickets)."""

    def handshake_timed_out_error(self, handshake_timeout: float | None) -> EngineStreamError:
        """What the caller gets when the handshake ran out of time."""
        return self.handshake_error(f"{self.engine_name} handshake timed out after {handshake_timeout} s")

    def handshake_error_for_caller(self, error: BaseException) -> BaseException:
        """What the caller gets when the handshake failed with ``error`` (the same, unless an engine adds)."""
        return error

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
        except self.events.local_protocol_error as exc:
            self._fail(self.stream_error(f"{self.engine_name} engine refused input: {exc}"))
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
        # Keep the transport open: the consumer may still write (and send close_notify) after a
        # peer's TCP half-close; it closes the stream when done.
        self._set_eof()
        if not self.handshake_waiter.done():
            self._fail(self.handshake_error("peer closed the connection during the handshake"))
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None and not self.handshake_waiter.done():
            reason = f": {exc}" if exc else ""
            self.error = self.handshake_error(f"connection lost during the handshake{reason}")
        elif self.error is None and exc is not None:
            self.error = self.stream_error(f"connection lost: {exc}")
        if not self.handshake_waiter.done():
            assert self.error is not None
            self._handshake_failed(self.error)
        self._set_eof()
        self._write_paused = False
        self._release(self._drain_waiters)
        self._wake_other_waiters()
        self.connection_closed = True
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release(self._drain_waiters)

    # -- engine events ---------------------------------------------------------------------------

    def _handle_event(self, event: Any) -> None:
        kinds = self.events
        if isinstance(event, kinds.application_data):
            self._chunks.append(event.data)
            self._buffered += len(event.data)
        elif isinstance(event, kinds.handshake_complete):
            self.handshake = event
            if self.watchdog is not None:
                self.watchdog.cancel()
            if not self.handshake_waiter.done():
                self.handshake_waiter.set_result(event)
            if self._on_handshake is not None:
                self._on_handshake(self)
        elif isinstance(event, kinds.connection_closed):
            self.close_notify_received = True
            # half_close: our write side stays open until write_eof()/close(); otherwise the engine replied.
            self.close_notify_sent = self.connection.close_notify_sent
            self._set_eof()
            if not self.handshake_waiter.done():
                self._fail(self.handshake_error("peer sent close_notify during the handshake"))
        elif isinstance(event, kinds.alert_sent):
            error_class = self.stream_error if self.handshake_waiter.done() else self.handshake_error
            self._fail(
                error_class(
                    f"sent fatal alert {event.name}: {event.reason}", alert=event.name, alert_sent=True
                )
            )
        elif isinstance(event, kinds.alert_received):
            if self._is_fatal(event):
                error_class = self.stream_error if self.handshake_waiter.done() else self.handshake_error
                self._fail(
                    error_class(f"received fatal alert {event.name}", alert=event.name, alert_sent=False)
                )
        else:
            self._on_other_event(event)

    def _fail(self, error: EngineStreamError) -> None:
        """A fatal error: remember it, wake everyone, and close after the queued alert is written."""
        if self.error is None:
            self.error = error
        if not self.handshake_waiter.done():
            self._handshake_failed(self.error)
        self._set_eof()
        self._wake_other_waiters()
        if self.transport is not None:
            self.transport.close()

    def _handshake_failed(self, error: EngineStreamError) -> None:
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

    @staticmethod
    def _release(waiters: list[asyncio.Future[None]]) -> None:
        pending = waiters[:]
        waiters.clear()
        for waiter in pending:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_readable(self) -> None:
        """Return once the buffer has data or the stream reached EOF."""
        while not self._buffered and not self.eof:
            if self._read_waiter is not None:
                raise RuntimeError(f"another task is already reading from this {self.engine_name} stream")
            self._read_waiter = self._loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None

    def take(self, n: int) -> bytes:
        """Remove and return up to ``n`` buffered bytes (``n < 0``: all of them)."""
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
        if not chunks:
            return b""
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


class SecureStream(Generic[ProtocolT, HandshakeT]):
    """A connection after its handshake: read and write application data.

    Built by the engine adapters' connect/accept helpers and servers, not directly.  The API mirrors
    `asyncio.StreamReader`/`StreamWriter` so code written for plain TCP ports over.
    """

    def __init__(self, protocol: ProtocolT) -> None:
        if protocol.handshake is None or protocol.transport is None:
            raise ValueError(f"{type(self).__name__} needs a protocol whose handshake completed")
        self._protocol = protocol
        self._transport = protocol.transport
        self._handshake: HandshakeT = protocol.handshake
        self._eof_sent = False

    # -- identity ---------------------------------------------------------------------------------

    @property
    def handshake(self) -> HandshakeT:
        """The peer's identity and the negotiated parameters."""
        return self._handshake

    @property
    def close_notify_received(self) -> bool:
        """True once the peer closed cleanly; False at EOF means the transport was cut (truncation)."""
        return self._protocol.close_notify_received

    @property
    def close_notify_sent(self) -> bool:
        """True once our close_notify is queued (`write_eof`, `close`, or the engine's reply without half-close)."""
        return self._protocol.close_notify_sent

    def _engine_info(self) -> dict[str, Any]:
        """The names `get_extra_info` answers from the handshake and the engine."""
        raise NotImplementedError

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport info (``peername``, ``sockname``, ``socket``...) plus the engine's details (the
        engine stream class's docstring lists them)."""
        info = self._engine_info()
        if name in info:
            return info[name]
        return self._transport.get_extra_info(name, default)

    # -- reading ----------------------------------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``n < 0``: everything until EOF); b"" at EOF.

        Raises the engine's stream error when the connection failed and nothing buffered is left.
        """
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
            raise protocol.stream_error("cannot write after close_notify")
        if self._transport.is_closing():
            raise protocol.stream_error("the connection is closed")
        view = memoryview(data)
        for offset in range(0, len(view), WRITE_SLICE):
            protocol.connection.send_application_data(bytes(view[offset : offset + WRITE_SLICE]))
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# -- connecting, accepting, serving ---------------------------------------------------------------


async def finish_handshake(
    protocol: ProtocolT, handshake_timeout: float | None, stream_class: Callable[[ProtocolT], StreamT]
) -> StreamT:
    """Wait for ``protocol``'s handshake and wrap it in ``stream_class``; abort the transport if it fails."""
    try:
        async with asyncio.timeout(handshake_timeout):
            await asyncio.shield(protocol.handshake_waiter)
    except TimeoutError:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise protocol.handshake_timed_out_error(handshake_timeout) from None
    except BaseException as error:
        if protocol.transport is not None:
            protocol.transport.abort()
        for_caller = protocol.handshake_error_for_caller(error)
        if for_caller is error:
            raise
        raise for_caller from None
    return stream_class(protocol)


def with_server_name(configuration: ConfigT, host: str | None) -> ConfigT:
    """Like Go's tls.Dial: an unset server_name defaults to the dialled DNS name (not an IP)."""
    if configuration.server_name is not None or not host:
        return configuration
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return dataclasses.replace(configuration, server_name=host)
    return configuration


async def open_client(
    protocol_factory: Callable[[], ProtocolT],
    host: str,
    port: int,
    *,
    sock: socket.socket | None,
    handshake_timeout: float | None,
) -> ProtocolT:
    """Connect (or use the connected ``sock``) with a client protocol; its handshake starts at once."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        _, protocol = await loop.create_connection(protocol_factory, sock=sock)
    else:
        async with asyncio.timeout(handshake_timeout):
            _, protocol = await loop.create_connection(protocol_factory, host, port)
    return protocol


def accept_stream_pair(
    protocol_class: type[ProtocolT],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    configuration: Any,
    *,
    initial_data: bytes,
    read_high_water: int,
    half_close: bool,
) -> ProtocolT:
    """Take the transport over from a stream pair of `asyncio.start_server` with a server protocol."""
    transport = cast(asyncio.Transport, writer.transport)
    # Bytes the StreamReader received beyond what the sniffer consumed must follow the transport to
    # the engine's protocol; StreamReader offers no public way to take its buffer without awaiting.
    pending = bytes(getattr(reader, "_buffer", b""))
    reader_eof = reader.at_eof() or getattr(reader, "_eof", False)
    protocol = protocol_class(
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
    return protocol


async def accept_socket(
    protocol_class: type[ProtocolT],
    sock: socket.socket,
    configuration: Any,
    *,
    initial_data: bytes,
    read_high_water: int,
    half_close: bool,
) -> ProtocolT:
    """Run a server protocol on an accepted socket; ``initial_data`` is fed to the engine first."""
    loop = asyncio.get_running_loop()
    protocol = protocol_class(
        configuration, half_close=half_close, read_high_water=read_high_water, initial_data=initial_data
    )
    await loop.connect_accepted_socket(lambda: protocol, sock)
    return protocol


async def start_server(
    protocol_class: type[ProtocolT],
    stream_class: Callable[[ProtocolT], StreamT],
    host: str | None,
    port: int,
    configuration_factory: Callable[[], Any],
    client_connected_cb: Callable[[StreamT], Awaitable[None] | None],
    *,
    handshake_timeout: float | None,
    read_high_water: int,
    sock: socket.socket | None,
    backlog: int,
    reuse_address: bool | None,
    half_close: bool,
) -> asyncio.Server:
    """Listen; ``client_connected_cb(stream)`` runs after each successful handshake, then the stream closes.

    Handshake failures and timeouts are logged (on the protocol class's logger) and the connection dropped.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    engine_name, logger = protocol_class.engine_name, protocol_class.logger

    async def serve(stream: StreamT) -> None:
        try:
            result = client_connected_cb(stream)
            if result is not None:
                await result
        except Exception:
            logger.exception(
                "%s client callback failed", engine_name, extra={"peer": stream.get_extra_info("peername")}
            )
        finally:
            stream.close()

    def on_handshake(protocol: ProtocolT) -> None:
        task = loop.create_task(serve(stream_class(protocol)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def handshake_timed_out(protocol: ProtocolT) -> None:
        if not protocol.handshake_waiter.done() and protocol.transport is not None:
            logger.info(
                "%s handshake timed out",
                engine_name,
                extra={"peer": protocol.transport.get_extra_info("peername")},
            )
            protocol._fail(protocol.handshake_error("handshake timed out"))
            protocol.transport.abort()

    def log_handshake_failure(error: EngineStreamError) -> None:
        logger.info("%s handshake failed: %s", engine_name, error)

    # The factory usually returns one shared configuration; adjust its half_close once, not per connection.
    adjusted: list[Any] = []

    def configuration_for_connection() -> Any:
        configuration = configuration_factory()
        if configuration.half_close == half_close:
            return configuration
        if adjusted and adjusted[0] is configuration:
            return adjusted[1]
        adjusted[:] = [configuration, dataclasses.replace(configuration, half_close=half_close)]
        return adjusted[1]

    def factory() -> ProtocolT:
        protocol = protocol_class(
            configuration_for_connection(),
            half_close=half_close,
            read_high_water=read_high_water,
            on_handshake=on_handshake,
            on_handshake_failed=log_handshake_failure,
        )
        if handshake_timeout is not None:
            protocol.watchdog = loop.call_later(handshake_timeout, handshake_timed_out, protocol)
        return protocol

    if sock is not None:
        return await loop.create_server(factory, sock=sock, backlog=backlog)
    return await loop.create_server(factory, host, port, backlog=backlog, reuse_address=reuse_address)

"""What every transport offers the listener and the clusters (Envoy's transport sockets).

A transport module (``plain``, ``tls``, ``tlcp``, ``tls13_sm``) owns:

* its server policy, built once per config generation (certificates by SNI, suites, client auth);
* :meth:`ServerTransport.accept`: an :class:`AcceptedSocket` in, a :class:`~gateway.stream.TransportStream`
  and the :class:`~gateway.identity.PeerIdentity` out, or :class:`HandshakeRefused` naming the reason
  (the metric label) and the alert, in the engine's own vocabulary;
* its upstream :class:`Connector`, which clusters use to open connections to their endpoints.

:class:`SessionStream` is the part the secure transports share: a stream whose bytes pass through a
sans-I/O session (OpenSSL's ``SSLObject`` over memory BIOs, or the TLCP engine). The transport sees
records, the receiver plaintext; a refusal sends its alert and then closes *lingering* (half-close, read
and discard until the peer closes or :data:`LINGER_SECONDS` pass), because closing a socket that still
has unread input makes the kernel answer with a reset, which would overtake the alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from gateway.logs.rate_limit import RateLimitedLog
from gateway.logs.setup import get_logger
from gateway.stream import TransportStream

if TYPE_CHECKING:
    from gateway.identity import PeerIdentity

#: How long a refused connection is kept half-closed so that the peer reads our alert or error reply.
LINGER_SECONDS = 1.0
#: What a secure connection speaks to HTTP when ALPN selected nothing.
DEFAULT_APPLICATION_PROTOCOL = "http/1.1"

_upstream_log = RateLimitedLog(get_logger("upstream"), rate=1.0, burst=10)


@dataclass(frozen=True, slots=True)
class Alert:
    """A TLS-family alert as its engine names and numbers it (``tls.tlcp.AlertDescription``, OpenSSL's)."""

    name: str
    code: int


class HandshakeRefused(Exception):
    """The connection ends before any filter runs; ``reason`` labels the metric and the audit record.

    ``alert`` is what went over the wire, ``alert_sent`` whether we sent it (our verdict) or received it
    (the peer's verdict on us). ``reply`` is what a listener filter wants written on the raw socket before
    it closes (an alert record, a short HTTP 400); a transport that owns the socket sends its own.
    """

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        alert: Alert | None = None,
        alert_sent: bool = True,
        reply: bytes = b"",
    ) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.alert = alert
        self.alert_sent = alert_sent
        self.reply = reply


class UpstreamConnectError(Exception):
    """Connecting or handshaking with an endpoint failed (retryable as ``connect-failure``)."""


@dataclass
class AcceptedSocket:
    """An accepted connection on its way through the listener filters to a transport.

    Listener filters annotate it (Envoy's connection socket): the sniffer sets ``transport`` and what it
    read from a ClientHello (``server_name``); a PROXY-protocol filter would rewrite ``peer``.
    """

    sock: socket.socket
    peer: tuple[str, int]
    local: tuple[str, int] | None = None
    transport: ServerTransport | None = None
    #: The transport's name as the sniffer saw it, for metrics before a transport is chosen.
    detected: str = "unknown"
    server_name: str | None = None
    notes: dict[str, str] = field(default_factory=dict)


class ServerTransport(ABC):
    """One transport a listener accepts; ``name`` is what ``filter_chain_match.transport_protocols`` says."""

    name: ClassVar[str]

    @abstractmethod
    async def accept(self, accepted: AcceptedSocket) -> tuple[TransportStream, PeerIdentity]:
        """Run the server side of the transport; raises :class:`HandshakeRefused`."""


class Connector(ABC):
    """Opens connections to an endpoint in one transport (a cluster's ``transport_socket``)."""

    kind: ClassVar[str]

    @abstractmethod
    async def connect(
        self, address: str, port: int, timeout: float, *, preamble: bytes = b""
    ) -> TransportStream:
        """A connected stream, ``preamble`` (a PROXY header) sent first on the raw TCP connection;
        raises :class:`UpstreamConnectError`."""


async def open_connection(stream: asyncio.Protocol, address: str, port: int, preamble: bytes = b"") -> None:
    """``loop.create_connection`` for ``stream``; a ``preamble`` is sent on the raw TCP connection
    before the stream sees it, so it precedes every byte the stream writes (a ClientHello)."""
    loop = asyncio.get_running_loop()
    if not preamble:
        await loop.create_connection(lambda: stream, address, port)
        return
    sock = await _connected_socket(address, port)
    try:
        await loop.sock_sendall(sock, preamble)
        await loop.create_connection(lambda: stream, sock=sock)
    except BaseException:
        sock.close()
        raise


async def _connected_socket(address: str, port: int) -> socket.socket:
    """A non-blocking TCP socket connected to the first of ``address``'s resolved addresses that answers."""
    loop = asyncio.get_running_loop()
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in await loop.getaddrinfo(address, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            failures.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failures[0] if failures else OSError(f"{address} resolves to no address")


async def connect_stream(
    stream: TransportStream, kind: str, address: str, port: int, timeout: float, preamble: bytes = b""
) -> None:
    """Connect ``stream`` (the protocol) to ``address:port`` (``preamble`` first, see
    :func:`open_connection`) and, for a session, finish its handshake, all within ``timeout``; any
    failure is an :class:`UpstreamConnectError`."""
    try:
        async with asyncio.timeout(timeout):
            await open_connection(stream, address, port, preamble)
            if isinstance(stream, SessionStream):
                await stream.handshake()
    except (OSError, TimeoutError, HandshakeRefused) as exc:
        stream.abort()
        prefix = "" if kind == "plain" else f"{kind} "
        raise UpstreamConnectError(f"{prefix}connect {address}:{port}: {exc or 'timeout'}") from None


def check_application_protocol(
    stream: SessionStream, speaks: tuple[str, ...], kind: str, address: str, port: int
) -> None:
    """Refuse a connection whose host chose an application protocol the cluster does not speak.

    ``speaks``: what the cluster can talk to its hosts, as ALPN names. No ALPN answer means HTTP/1.1
    (what a secure connection carried before ALPN), so an HTTP/2 cluster (``("h2",)``) needs the host to
    select ``h2``: speaking HTTP/2 to a host that did not agree to it would only end in a protocol error
    on the first request. The failure is a connect failure (503, gRPC UNAVAILABLE, outlier detection)
    with one rate-limited log line naming the host.
    """
    selected = stream.alpn_protocol
    if (selected or DEFAULT_APPLICATION_PROTOCOL) in speaks:
        return
    stream.close()
    detail = f"the host did not select ALPN {' or '.join(speaks)} (it selected {selected or 'none'})"
    _upstream_log.warning(
        "upstream application protocol refused",
        reason="alpn",
        kind=kind,
        host=f"{address}:{port}",
        detail=detail,
    )
    raise UpstreamConnectError(f"{kind} connect {address}:{port}: {detail}")


def offered_without_default(speaks: tuple[str, ...]) -> tuple[str, ...]:
    """The ALPN names a national-crypto client offers for ``speaks``: all but HTTP/1.1, which needs no
    offer (see :func:`check_application_protocol`), so an HTTP/1.1 or TCP cluster sends no extension
    and its ClientHello stays what TLCP peers without ALPN (GmSSL's ``tlcp_server``) accept."""
    return tuple(name for name in speaks if name != DEFAULT_APPLICATION_PROTOCOL)


def default_server_name(configured: str | None, address: str) -> str | None:
    """Like Go's tls.Dial: an unset server name defaults to the dialled DNS name (not an IP)."""
    if configured is not None:
        return configured
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return address
    return None


async def refuse_raw(sock: socket.socket, reply: bytes, linger: float = LINGER_SECONDS) -> None:
    """Send ``reply`` on a socket no transport owns yet, half-close and linger until the peer closes."""
    loop = asyncio.get_running_loop()
    try:
        if reply:
            await loop.sock_sendall(sock, reply)
        sock.shutdown(socket.SHUT_WR)
        async with asyncio.timeout(linger):
            while await loop.sock_recv(sock, 4096):
                pass
    except (OSError, TimeoutError):
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()


class SessionStream(TransportStream):
    """A :class:`TransportStream` whose bytes go through a security session (TLS, TLCP).

    Subclasses feed transport bytes to their engine in :meth:`_receive_records` and call back
    :meth:`_plaintext`, :meth:`_peer_closed`, :meth:`_handshake_complete` and :meth:`_refuse`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._handshake: asyncio.Future[None] | None = None
        self.handshaken = False
        self._lingering = False
        self._linger_timer: asyncio.TimerHandle | None = None
        #: Why the session failed after its handshake (a read then raises it).
        self.error: Exception | None = None

    # -- engine hooks ----------------------------------------------------------------------------

    @abstractmethod
    def _receive_records(self, data: bytes) -> None: ...

    @abstractmethod
    def _write_plaintext(self, data: bytes) -> None: ...

    @abstractmethod
    def _send_close_notify(self) -> None: ...

    @property
    @abstractmethod
    def alpn_protocol(self) -> str | None:
        """The application protocol ALPN selected (RFC 7301); None: none was (HTTP/1.1 to HTTP)."""

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if not self._lingering:
            self._receive_records(data)

    def eof_received(self) -> bool:
        if self._lingering:
            self._end_linger()
            return False
        if not self.handshaken:
            self._refuse(
                HandshakeRefused("peer_closed", "peer closed during the handshake", alert_sent=False)
            )
            return False
        # A transport EOF without close_notify: EOF for the reader all the same (truncation is the
        # application's concern, as with TCP).
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if not self.handshaken and self._handshake is not None and not self._handshake.done():
            detail = f"connection lost during the handshake: {exc}" if exc else "connection lost"
            self._handshake.set_exception(HandshakeRefused("peer_closed", detail, alert_sent=False))
            self._handshake.exception()
        super().connection_lost(exc)

    # -- engine callbacks ------------------------------------------------------------------------

    def _plaintext(self, data: bytes) -> None:
        TransportStream.data_received(self, data)

    def _peer_closed(self) -> None:
        """The peer's close_notify: EOF for the reader; our write side stays open (half-close)."""
        TransportStream.eof_received(self)

    def _handshake_complete(self) -> None:
        self.handshaken = True
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_result(None)

    def _refuse(self, refusal: HandshakeRefused) -> None:
        """A fatal failure: whatever the engine queued (its alert) is already written; close lingering."""
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(refusal)
            self._handshake.exception()
        elif self.error is None:
            self.error = refusal
        self._linger()

    # -- handshake -------------------------------------------------------------------------------

    async def handshake(self) -> None:
        """Wait for the handshake; a timeout or cancellation aborts the connection."""
        assert self._handshake is not None
        try:
            await asyncio.shield(self._handshake)
        except HandshakeRefused:
            raise
        except BaseException:
            self.abort()
            raise

    # -- closing ---------------------------------------------------------------------------------

    def _linger(self) -> None:
        transport = self.transport
        if transport is None or self._lingering:
            return
        self._lingering = True
        if transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._linger_timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._end_linger)

    def _end_linger(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        if not data and self.error is not None:
            raise self.error
        return data

    def write(self, data: bytes) -> None:
        if self._lost or self._lingering or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._write_plaintext(data)

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.handshaken and not self._lingering:
            with contextlib.suppress(Exception):
                self._send_close_notify()
        self.transport.close()

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
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from ..engine_aio import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_READ_HIGH_WATER,
    EngineEvents,
    EngineProtocol,
    EngineStreamError,
    SecureStream,
    accept_socket,
    accept_stream_pair,
    finish_handshake,
    open_client,
    start_server,
    with_server_name,
)
from .alerts import AlertDescription, LocalProtocolError
from .config import TLS13Configuration, TLS13Session
from .connection import TLS13Connection
from .events import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    ConnectionClosed,
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

#: close_notify (reported as ConnectionClosed) and user_canceled: the only alerts that are not fatal (RFC 8446 6).
_NOT_FATAL = frozenset((AlertDescription.close_notify, AlertDescription.user_canceled))

ClientConnectedCallback = Callable[["TLS13Stream"], Awaitable[None] | None]


class TLS13StreamError(EngineStreamError):
    """The connection failed: a fatal alert either way, or the transport broke.

    `alert` names the alert and `alert_sent` tells whether we sent it (our verdict on the peer) or
    received it; both are None when the transport failed without an alert.
    """


class TLS13HandshakeError(TLS13StreamError):
    """The handshake did not complete."""


class _TLS13Protocol(EngineProtocol[TLS13Configuration, TLS13Connection, HandshakeComplete]):
    """Moves bytes between one transport and one `TLS13Connection`; wakes `wait_session` on tickets."""

    engine_name = "TLS 1.3"
    events = EngineEvents(
        application_data=ApplicationData,
        handshake_complete=HandshakeComplete,
        connection_closed=ConnectionClosed,
        alert_sent=AlertSent,
        alert_received=AlertReceived,
        local_protocol_error=LocalProtocolError,
    )
    stream_error = TLS13StreamError
    handshake_error = TLS13HandshakeError
    logger = logger

    def __init__(self, configuration: TLS13Configuration, **options: Any) -> None:
        super().__init__(configuration, **options)
        self._session_waiters: list[asyncio.Future[None]] = []

    def _new_connection(self, configuration: TLS13Configuration) -> TLS13Connection:
        return TLS13Connection(configuration)

    def _is_fatal(self, alert: AlertReceived) -> bool:
        return alert.description not in _NOT_FATAL

    def _on_other_event(self, event: Any) -> None:
        if isinstance(event, SessionTicketReceived):
            self._release(self._session_waiters)

    def _wake_other_waiters(self) -> None:
        self._release(self._session_waiters)

    async def wait_session(self) -> None:
        if self.connection.session is None and not self.eof and self.error is None:
            waiter = self._loop.create_future()
            self._session_waiters.append(waiter)
            await waiter


class TLS13Stream(SecureStream[_TLS13Protocol, HandshakeComplete]):
    """A TLS 1.3 connection after its handshake (built by the helpers below, not directly).

    `get_extra_info` answers, besides the transport's names (``peername``, ``socket``...):
    ``handshake``, ``cipher_suite``, ``version``, ``server_name``, ``alpn_protocol``,
    ``peer_certificates``, ``peer_certificate``, ``session_resumed``, ``group``, ``signature_scheme``,
    ``peer_verified`` (the peer chain was validated against trust anchors: only then is it an
    identity), ``session``, ``tls13_connection``.
    """

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

    def _engine_info(self) -> dict[str, Any]:
        handshake = self._handshake
        return {
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

    def update_keys(self, *, request_peer_update: bool = True) -> None:
        """Send a KeyUpdate (RFC 8446 4.6.3)."""
        self._protocol.connection.update_keys(request_peer_update=request_peer_update)
        self._protocol.flush()


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
    configuration = with_server_name(configuration, host)

    def factory() -> _TLS13Protocol:
        return _TLS13Protocol(configuration, half_close=half_close, read_high_water=read_high_water)

    protocol = await open_client(factory, host, port, sock=sock, handshake_timeout=handshake_timeout)
    return await finish_handshake(protocol, handshake_timeout, TLS13Stream)


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
    protocol = accept_stream_pair(
        _TLS13Protocol,
        reader,
        writer,
        configuration,
        initial_data=initial_data,
        read_high_water=read_high_water,
        half_close=half_close,
    )
    return await finish_handshake(protocol, handshake_timeout, TLS13Stream)


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
    protocol = await accept_socket(
        _TLS13Protocol,
        sock,
        configuration,
        initial_data=initial_data,
        read_high_water=read_high_water,
        half_close=half_close,
    )
    return await finish_handshake(protocol, handshake_timeout, TLS13Stream)


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
    return await start_server(
        _TLS13Protocol,
        TLS13Stream,
        host,
        port,
        configuration_factory,
        client_connected_cb,
        handshake_timeout=handshake_timeout,
        read_high_water=read_high_water,
        sock=sock,
        backlog=backlog,
        reuse_address=None,
        half_close=half_close,
    )

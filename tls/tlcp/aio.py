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
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

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
from .events import AlertReceived, AlertSent, ApplicationData, ConnectionClosed, HandshakeComplete

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

ClientConnectedCallback = Callable[["TLCPStream"], Awaitable[None] | None]


class DialectStream(Protocol):
    """What the dialect retry needs of a connected stream (`TLCPStream`, or another adapter's)."""

    dialect: DialectChoice | None


StreamT = TypeVar("StreamT", bound=DialectStream)


class TLCPStreamError(EngineStreamError):
    """The TLCP connection failed: a fatal alert either way, or the transport broke.

    `alert` names the alert (e.g. ``"bad_certificate"``) and `alert_sent` tells whether we sent it
    (our verdict on the peer) or received it (the peer's verdict on us); both are None when the
    transport failed without an alert.
    """


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


class _TLCPProtocol(EngineProtocol[TLCPConfiguration, TLCPConnection, HandshakeComplete]):
    """Moves bytes between one transport and one `TLCPConnection`; a client's handshake errors say
    what its flight sent (`ClientProgress`), for the dialect retry."""

    engine_name = "TLCP"
    events = EngineEvents(
        application_data=ApplicationData,
        handshake_complete=HandshakeComplete,
        connection_closed=ConnectionClosed,
        alert_sent=AlertSent,
        alert_received=AlertReceived,
        local_protocol_error=LocalProtocolError,
    )
    stream_error = TLCPStreamError
    handshake_error = TLCPHandshakeError
    logger = logger

    def _new_connection(self, configuration: TLCPConfiguration) -> TLCPConnection:
        return TLCPConnection(configuration)

    def _is_fatal(self, alert: AlertReceived) -> bool:
        return alert.level == AlertLevel.FATAL

    def handshake_timed_out_error(self, handshake_timeout: float | None) -> TLCPHandshakeError:
        return TLCPHandshakeError(
            f"TLCP handshake timed out after {handshake_timeout} s",
            client_progress=self.connection.client_progress,
            timed_out=True,
        )

    def handshake_error_for_caller(self, error: BaseException) -> BaseException:
        if isinstance(error, TLCPHandshakeError) and self.configuration.is_client:
            return _client_handshake_error(error, self.connection.client_progress)
        return error


class TLCPStream(SecureStream[_TLCPProtocol, HandshakeComplete]):
    """A TLCP connection after its handshake: read and write application data.

    Created by `tlcp_connect`, `tlcp_accept` and `start_tlcp_server`; not meant to be built directly.
    The API mirrors `asyncio.StreamReader`/`StreamWriter` so code written for plain TCP ports over.
    `get_extra_info` answers, besides the transport's names (``peername``, ``sockname``,
    ``socket``...): ``cipher_suite``, ``session_id``, ``session_resumed``, ``server_name``,
    ``alpn_protocol`` (the ALPN protocol negotiated, or None), ``peer_certificates``,
    ``peer_sign_cert``, ``peer_enc_cert``, ``version``, ``handshake``, ``session``,
    ``tlcp_connection``, ``dialect``.
    """

    def __init__(self, protocol: _TLCPProtocol) -> None:
        super().__init__(protocol)
        progress = protocol.connection.client_progress
        #: Client: the dialect whose forms the handshake sent, and how it was chosen (None: none mattered).
        self.dialect: DialectChoice | None = progress.dialect if progress is not None else None

    @property
    def session(self) -> TLCPSession | None:
        """Client: the session to put in a later configuration's `session` to resume."""
        return self._protocol.connection.session

    def _engine_info(self) -> dict[str, Any]:
        handshake = self._handshake
        return {
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


def _client_handshake_error(error: TLCPHandshakeError, progress: ClientProgress | None) -> TLCPHandshakeError:
    """The error with what our flight sent and what the server most likely refused, when a dialect mattered."""
    refusal = "" if error.alert_sent else describe_refusal(progress, error.alert)
    return TLCPHandshakeError(
        f"{error}; {refusal}" if refusal else str(error),
        alert=error.alert,
        alert_sent=error.alert_sent,
        client_progress=progress,
    )


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
    configuration = with_server_name(configuration, host)
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

    def factory() -> _TLCPProtocol:
        return _TLCPProtocol(configuration, half_close=half_close, read_high_water=read_high_water)

    protocol = await open_client(factory, host, port, sock=sock, handshake_timeout=handshake_timeout)
    return await finish_handshake(protocol, handshake_timeout, TLCPStream)


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
    protocol = accept_stream_pair(
        _TLCPProtocol,
        reader,
        writer,
        configuration,
        initial_data=initial_data,
        read_high_water=read_high_water,
        half_close=half_close,
    )
    return await finish_handshake(protocol, handshake_timeout, TLCPStream)


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
    protocol = await accept_socket(
        _TLCPProtocol,
        sock,
        configuration,
        initial_data=initial_data,
        read_high_water=read_high_water,
        half_close=half_close,
    )
    return await finish_handshake(protocol, handshake_timeout, TLCPStream)


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
    return await start_server(
        _TLCPProtocol,
        TLCPStream,
        host,
        port,
        configuration_factory,
        client_connected_cb,
        handshake_timeout=handshake_timeout,
        read_high_water=read_high_water,
        sock=sock,
        backlog=backlog,
        reuse_address=reuse_address,
        half_close=half_close,
    )


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

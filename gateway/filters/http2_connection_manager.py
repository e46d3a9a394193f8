"""HTTP connection manager for HTTP/2 (ALPN ``h2``, or h2c with prior knowledge): one sans-I/O
:class:`~gateway.http2.connection.H2ServerConnection` per downstream connection, one
:class:`~gateway.proxy.Exchange` per stream, through the same router, access control, retries, metrics
and audit as HTTP/1.1.

Each stream gets an :class:`H2Stream`: the exchange's owner (its connection manager as far as the
exchange can tell), with a per-stream codec (:mod:`gateway.codec.http2`) and a per-stream view of the
connection (:class:`StreamConnection`), so the exchange stays protocol-agnostic.

Flow control, both ways, with backpressure:
- client to upstream: a stream's DATA is acknowledged (its window reopened) once the exchange has
  taken it, unless the exchange paused reading (upstream not connected yet, or its write buffer full);
  the window then stays shut until it resumes, so a slow upstream throttles that one client stream;
- upstream to client: what the client's window does not admit queues in the HTTP/2 connection; above
  :data:`OUTBOUND_HIGH_WATER` the stream's upstream stops being read until WINDOW_UPDATEs drain it.

Protocol errors and floods (:mod:`gateway.http2.flood`) end the connection with GOAWAY, a rate-limited
log line and ``smgate_http2_connection_errors{reason}``; the other connections never notice.

Draining (RFC 9113 6.8, as Envoy and nginx do it): a GOAWAY naming stream 2^31-1 first tells the
client to open no more streams while the ones on their way still count; ``http2_drain_notice`` later
the GOAWAY naming the last stream accepted follows, streams above it are refused with REFUSED_STREAM
(safe to retry elsewhere), and the connection closes once its last stream ends (or the gateway aborts
it at ``drain_timeout``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes

from gateway import grpc
from gateway.codec.base import CodecFactory, Headers
from gateway.codec.http2 import H2StreamServerCodec
from gateway.config import HttpConnectionManagerFilter
from gateway.filters.base import FilterStatus, NetworkFilter
from gateway.filters.http_connection_manager import ConnectionContext, identity_headers
from gateway.http2 import extended_connect
from gateway.http2.connection import H2ConnectionError, H2ServerConnection, Http2Limits
from gateway.http2.events import (
    BodyReceived,
    ConnectionEnded,
    H2Event,
    RequestStarted,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from gateway.http2.flood import FloodLimits
from gateway.logs.rate_limit import RateLimitedLog
from gateway.logs.setup import get_logger
from gateway.proxy import Exchange
from gateway.router import RouteTable
from gateway.timers import Deadline

if TYPE_CHECKING:
    from gateway.connection import Connection
    from gateway.identity import PeerIdentity
    from gateway.runtime import Generation
    from gateway.stream import TransportStream
    from gateway.upgrade import UpgradeTunnel

#: The largest stream id (RFC 9113 5.1.1): a GOAWAY naming it refuses no stream yet (a drain notice).
MAX_STREAM_ID = 2**31 - 1

#: Response bytes queued for one stream beyond the client's window before its upstream pauses.
OUTBOUND_HIGH_WATER = 256 * 1024
OUTBOUND_LOW_WATER = 64 * 1024

_log = RateLimitedLog(get_logger("http2"), rate=1.0, burst=10)
#: Operator-caused events (drain), one line per connection.
log = get_logger("http2")


def http2_limits(config: HttpConnectionManagerFilter) -> Http2Limits:
    options = config.http2_protocol_options
    return Http2Limits(
        max_concurrent_streams=options.max_concurrent_streams,
        max_header_list_size=min(options.max_header_list_size, config.max_request_headers_bytes),
        max_frame_size=options.max_frame_size,
        initial_stream_window_size=options.initial_stream_window_size,
        connection_window_size=options.initial_connection_window_size,
        enable_connect_protocol=options.allow_connect,
        flood=FloodLimits(
            stream_resets_per_window=options.max_stream_resets_per_10s,
            pings_per_window=options.max_pings_per_10s,
            settings_per_window=options.max_settings_per_10s,
            max_header_block_bytes=min(options.max_header_list_size, config.max_request_headers_bytes),
        ),
    )


class StreamConnection:
    """One stream's view of the downstream connection, as an exchange uses it: writes go to the shared
    connection, pausing reading holds back this stream's window, aborting resets this stream."""

    def __init__(self, stream: H2Stream, conn: Connection) -> None:
        self._stream = stream
        self._conn = conn
        self.id = conn.id
        self.identity: PeerIdentity = conn.identity
        self.listener = conn.listener
        self.generation: Generation = conn.generation
        self.close_reason = "downstream_closed"

    @property
    def draining(self) -> bool:
        return self._conn.draining

    @property
    def stream(self) -> TransportStream:
        return self._conn.stream

    @property
    def upstream_rx(self) -> int:
        return self._conn.upstream_rx

    @upstream_rx.setter
    def upstream_rx(self, value: int) -> None:
        self._conn.upstream_rx = value

    @property
    def upstream_tx(self) -> int:
        return self._conn.upstream_tx

    @upstream_tx.setter
    def upstream_tx(self, value: int) -> None:
        self._conn.upstream_tx = value

    def write(self, data: bytes) -> None:
        self._stream.manager.send(data)

    def abort(self) -> None:
        self._stream.reset(ErrorCodes.INTERNAL_ERROR)

    def close(self) -> None:
        """Closing "the connection" of one stream ends that stream, not its neighbours."""
        self._stream.close()

    def pause_reading(self) -> None:
        self._stream.pause_reading()

    def resume_reading(self) -> None:
        self._stream.resume_reading()


class H2Stream:
    """One request stream: owns its exchange (see :class:`gateway.proxy.ExchangeOwner`)."""

    # Per-stream state starts at these class-level values (as Exchange's does): cheaper streams.
    paused = False
    blocked = False
    #: Flow-controlled bytes taken while paused, acknowledged on resume.
    _unacknowledged = 0

    def __init__(self, manager: Http2ConnectionManager, event: RequestStarted, index: int) -> None:
        self.manager = manager
        self.stream_id = event.stream_id
        head = event.head
        #: Extended CONNECT (RFC 8441): routed as the HTTP/1.1 Upgrade it stands for, then a tunnel.
        self.tunnel: UpgradeTunnel | None = None
        protocol = event.protocol
        connect = protocol is not None
        websocket_key = None
        if protocol is not None:
            head, websocket_key = extended_connect.upgrade_request(head, protocol)
        self.conn = StreamConnection(self, manager.conn)
        self.codec = H2StreamServerCodec(
            manager.h2,
            event.stream_id,
            grpc_request=grpc.is_grpc(head),
            head_request=head.method == "HEAD",
            sent=self._response_queued,
            gone=self._client_gone,
            tunnel=connect,
            tunnel_key=websocket_key,
        )
        self.codec_factory = manager.codec_factory
        self.config = manager.config
        self.routes = manager.routes
        self.loop = manager.loop
        self.protocol = manager.codec_factory.protocol
        self.identity_prefixes = manager.identity_prefixes
        self.forwarded_proto = manager.forwarded_proto
        self.access_logged = manager.access_logged
        self.records = manager.records
        self.unrouted_stats = manager.unrouted_stats
        self.upstream_deadline = Deadline(self._on_upstream_deadline, manager.loop)
        #: A tunnel's first bytes wait (unacknowledged, so the stream's window bounds them) for the 200.
        self.paused = connect
        self.exchange = Exchange(self, head, index, time.monotonic())
        #: ``request_timeout`` per stream, as HTTP/1.1 has it per request: HEADERS to END_STREAM.
        self.request_deadline: Deadline | None = None
        if event.end_stream or connect:  # a CONNECT's request is its head; its DATA is the tunnel's
            self.exchange.request_done = True
        elif self.config.request_timeout is not None:
            self.request_deadline = Deadline(self._on_request_deadline, manager.loop)
            self.request_deadline.after(self.config.request_timeout)

    @property
    def audit_fields(self) -> dict[str, Any]:
        """The connection's audit fields and the stream id (built only when a record is written)."""
        return {**self.manager.audit_fields, "stream_id": self.stream_id}

    def identity_headers(self) -> Headers:
        return self.manager.identity_headers()

    # -- from the client ------------------------------------------------------------------------

    def request_body(self, event: BodyReceived) -> None:
        if self.tunnel is not None:
            self.tunnel.downstream_data(event.data, False)
        elif self.codec.tunnel:
            self.codec.early_data += event.data  # before the upstream's answer: sent when it opens
        else:
            self.exchange.request_body(event.data)
        if self.paused:
            self._unacknowledged += event.flow_controlled_length
        else:
            self.manager.h2.consumed(self.stream_id, event.flow_controlled_length)
        if event.end_stream:
            self.request_end()

    def request_end(self) -> None:
        exchange = self.exchange
        if self.request_deadline is not None:
            self.request_deadline.cancel()
        if self.tunnel is not None:
            self.tunnel.downstream_data(b"", True)  # the client's END_STREAM is the tunnel's FIN
        elif self.codec.tunnel:
            exchange.downstream_gone("downstream_closed_before_tunnel")
        elif not exchange.request_done:
            exchange.request_end()
            if exchange.finished:
                self.manager.stream_done(self)

    def reset_by_peer(self, error_code: int) -> None:
        self.exchange.downstream_gone(f"downstream_reset:{error_code}")

    def _client_gone(self) -> None:
        """The stream or connection closed under a response being relayed: end the exchange, after the
        upstream callback that found out has returned."""
        self.loop.call_soon(self.exchange.downstream_gone, "downstream_gone_mid_response")

    # -- flow control -----------------------------------------------------------------------------

    def resume(self) -> None:
        self.paused = False
        if self._unacknowledged:
            self.manager.h2.consumed(self.stream_id, self._unacknowledged)
            self._unacknowledged = 0
            self.manager.flush()

    def _response_queued(self) -> None:
        """Body bytes were queued for the client: stop reading the upstream while too many wait."""
        if not self.blocked and self.manager.h2.pending(self.stream_id) > OUTBOUND_HIGH_WATER:
            self.blocked = True
            self.manager.blocked.add(self)
            self._pause_upstream(True)

    def unblock_if_drained(self) -> bool:
        if self.manager.h2.pending(self.stream_id) > OUTBOUND_LOW_WATER:
            return False
        self.blocked = False
        self._pause_upstream(False)
        return True

    def _pause_upstream(self, pause: bool) -> None:
        if self.tunnel is not None:
            self.tunnel.downstream_write_ready(not pause)
            return
        upstream = self.exchange.upstream
        if upstream is not None:
            if pause:
                upstream.pause_reading()
            else:
                upstream.resume_reading()

    def reset(self, error_code: int) -> None:
        manager = self.manager
        if not manager.conn.closing and not manager.h2.closed:
            manager.send(self.codec.reset(error_code))

    def close(self) -> None:
        """The exchange is done with the stream. A tunnel ends as its upstream connection did (RFC 9113
        8.5): END_STREAM after the bytes still queued when it closed, RST_STREAM CONNECT_ERROR when it
        broke; any other exchange leaves with RST_STREAM NO_ERROR (a no-op once the stream ended)."""
        if self.tunnel is None:
            self.reset(ErrorCodes.NO_ERROR)
        elif self.conn.close_reason.startswith("upstream_error"):
            self.reset(ErrorCodes.CONNECT_ERROR)
        else:
            self.write(b"", end_stream=True)

    # -- the exchange's end -----------------------------------------------------------------------

    def exchange_finished(self, exchange: Exchange) -> None:
        self.cancel_deadlines()
        self.resume()  # what arrived while paused reopens the connection's window, taken or not
        if exchange.request_done:
            self.manager.stream_done(self)
            return
        # Answered before the client finished sending: tell it to stop (RFC 9113 8.1).
        self.reset(ErrorCodes.NO_ERROR)
        self.manager.stream_done(self)

    def _on_upstream_deadline(self) -> None:
        self.exchange.on_deadline()

    def _on_request_deadline(self) -> None:
        """The client did not finish its request in time: 408 (gRPC: a status), the upstream stream
        cancelled, the rest of the request refused (RST_STREAM after the answer, RFC 9113 8.1)."""
        if not self.exchange.request_done:
            self.exchange.request_timed_out()

    def cancel_deadlines(self) -> None:
        self.upstream_deadline.cancel()
        if self.request_deadline is not None:
            self.request_deadline.cancel()

    def detach(self) -> None:
        """The stream is over: let go of its exchange, codec, connection view and deadlines. Each of
        them points back at the stream; left as they are, every request would leave a reference cycle
        of some twenty objects for the cycle collector (whose passes pause every stream in flight).
        Extended CONNECT streams keep theirs: a tunnel winding down may still use them."""
        if self.codec.tunnel:
            return
        del self.exchange, self.codec, self.conn, self.upstream_deadline, self.request_deadline

    # -- extended CONNECT: the stream as a tunnel's downstream ------------------------------------

    def tunnel_started(self, tunnel: UpgradeTunnel) -> None:
        """The upstream switched protocols and the client has its 200: DATA both ways from here."""
        self.tunnel = tunnel
        tunnel.downstream = self
        self.exchange.status = 200  # what the client saw (RFC 8441 5: a 2xx, not 101)
        self.resume()

    def write(self, data: bytes, end_stream: bool = False) -> None:
        """Tunnel bytes to the client as DATA on this stream, queued beyond the client's windows (the
        upstream stops being read above :data:`OUTBOUND_HIGH_WATER`)."""
        manager = self.manager
        if manager.conn.closing or manager.h2.closed:
            return
        manager.h2.send_data(self.stream_id, data, end_stream=end_stream)
        manager.flush()
        self._response_queued()

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.resume()


class Http2ConnectionManager(NetworkFilter):
    retire_on_reload = True

    def __init__(
        self, config: HttpConnectionManagerFilter, codec_factory: CodecFactory, routes: RouteTable
    ) -> None:
        self.config = config
        #: Builds the upstream codec of HTTP/1.1 clusters (HTTP/2 clusters multiplex on their own).
        self.codec_factory = codec_factory
        self.routes = routes
        self.identity_prefixes = ("x-client-cert-", "x-ssl-", config.identity_headers.prefix.lower())
        self.streams: dict[int, H2Stream] = {}
        self.blocked: set[H2Stream] = set()
        self.requests = 0
        self._identity_headers: Headers | None = None
        self._goaway_received = False
        #: Bytes for the client, written once per event-loop turn (:meth:`send`).
        self._out: list[bytes] = []
        self._write_scheduled = False
        #: Streams ended this turn, detached at its end (when no call in progress can still use them).
        self._finished: list[H2Stream] = []
        #: The highest stream id taken in (answered or forwarded): the final GOAWAY's last stream id.
        self.last_stream_id = 0
        #: Draining: the notice GOAWAY is out (``_drain_notice`` runs until the final one).
        self.draining = False
        #: The final GOAWAY is out: new streams are refused, the connection closes when idle.
        self.refusing = False
        self._drain_notice: Deadline | None = None

    async def on_new_connection(self, conn: Connection) -> FilterStatus:
        self.start(conn)
        return FilterStatus.CONTINUE

    def start(self, conn: Connection) -> None:
        """Set up on a connection (at its start, or handed over by the HTTP/1.1 manager for h2c)."""
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        context = ConnectionContext.of(conn, "h2")
        self.forwarded_proto = context.forwarded_proto
        self.unrouted_stats = context.unrouted_stats
        self.records = context.records
        self.access_logged = context.access_logged
        self.audit_fields: dict[str, Any] = {**context.audit_fields, "http_version": "HTTP/2"}
        self.h2 = H2ServerConnection(http2_limits(self.config))
        self.idle = Deadline(self._on_idle, self.loop)
        self.idle.after(self.config.idle_timeout)
        self.flush()
        if conn.draining:
            self.on_drain(conn)

    def identity_headers(self) -> Headers:
        if self._identity_headers is None:
            cfg = self.config.identity_headers
            self._identity_headers = identity_headers(self.conn.identity, cfg.prefix, cfg.include_cert)
        return self._identity_headers

    def flush(self) -> None:
        self.send(self.h2.data_to_send())

    def send(self, data: bytes) -> None:
        """Queue bytes for the client. Streams answered in the same event-loop turn (their upstreams'
        reads arrived together) leave in one write, the next turn: each write is a send() syscall."""
        if not data:
            return
        self._out.append(data)
        self._end_of_turn()

    def _end_of_turn(self) -> None:
        if not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_scheduled = False
        finished, self._finished = self._finished, []
        for stream in finished:
            stream.detach()
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.conn.closing:
            return
        try:
            self.conn.write(data)
        except (ConnectionError, OSError):
            self.conn.abort()  # its on_close ends the streams

    def _close(self) -> None:
        """Close the connection after what is queued for it."""
        self._write_out()
        self.conn.close()

    # -- bytes in --------------------------------------------------------------------------------

    def on_data(self, conn: Connection, data: bytes, end_stream: bool) -> FilterStatus:
        if end_stream:
            self._goaway_received = True  # the client sends nothing more: finish what is open
        elif data:
            try:
                h2_events = self.h2.receive_data(data, self.loop.time())
            except H2ConnectionError as exc:
                self._connection_error(exc)
                return FilterStatus.STOP_ITERATION
            for event in h2_events:
                self._dispatch(event)
            self._unblock_streams()
        self.flush()
        self._close_when_done()
        return FilterStatus.STOP_ITERATION

    def _dispatch(self, event: H2Event | ConnectionEnded) -> None:
        if isinstance(event, RequestStarted):
            self._start_stream(event)
            return
        if isinstance(event, ConnectionEnded):
            self._goaway_received = True
            return
        stream = self.streams.get(event.stream_id)
        if isinstance(event, BodyReceived):
            if stream is None:  # answered already: the body is dropped, its connection window reopened
                self.h2.consumed(event.stream_id, event.flow_controlled_length)
            else:
                stream.request_body(event)
        elif stream is None:
            return
        elif isinstance(event, StreamEnded):
            stream.request_end()
        elif isinstance(event, StreamReset):
            stream.reset_by_peer(event.error_code)
        elif isinstance(event, TrailersReceived):
            stream.exchange.request_trailers(event.headers)

    def _start_stream(self, event: RequestStarted) -> None:
        if self.refusing:
            self.h2.reset(event.stream_id, ErrorCodes.REFUSED_STREAM)
            return
        if event.protocol is not None and not self.config.http2_protocol_options.allow_connect:
            # :protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL: a malformed request (RFC 8441 3)
            self.h2.reset(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        self.last_stream_id = max(self.last_stream_id, event.stream_id)
        self.requests += 1
        self.idle.set(None)
        self.conn.idle = False
        stream = H2Stream(self, event, self.requests)
        self.streams[event.stream_id] = stream
        stream.exchange.start()

    def _unblock_streams(self) -> None:
        if self.blocked:
            self.blocked = {s for s in self.blocked if not s.unblock_if_drained()}

    # -- streams end -----------------------------------------------------------------------------

    def stream_done(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self.blocked.discard(stream)
        self._finished.append(stream)
        self._end_of_turn()
        self.flush()
        if not self.streams:
            if not self.draining:  # while the drain notice runs, a stream may still be on its way
                self.conn.idle = True
                self.idle.after(self.config.idle_timeout)
            self._close_when_done()

    def _close_when_done(self) -> None:
        if self.streams or self.conn.closing:
            return
        if self._goaway_received or self.refusing:
            self._close()

    # -- draining --------------------------------------------------------------------------------

    def on_drain(self, conn: Connection) -> None:
        """The gateway drains: the notice GOAWAY now, the final one ``http2_drain_notice`` later."""
        if self.draining or conn.closing or self.h2.closed:
            return
        self.draining = True
        conn.idle = False  # not safe to close before the final GOAWAY: a stream may be on its way
        self.idle.set(None)
        notice = self.config.http2_drain_notice
        if notice is None:
            self._final_goaway()
            return
        self.h2.goaway(last_stream_id=MAX_STREAM_ID)
        self.flush()
        self._drain_notice = Deadline(self._final_goaway, self.loop)
        self._drain_notice.after(notice)

    def _final_goaway(self) -> None:
        conn = self.conn
        if conn.closing or self.h2.closed:
            return
        self.refusing = True
        self.h2.goaway(last_stream_id=self.last_stream_id)
        self.flush()
        log.info(
            "http2 goaway",
            reason="drain",
            listener=conn.listener,
            connection_id=conn.id,
            last_stream_id=self.last_stream_id,
            streams_in_flight=len(self.streams),
        )
        self._close_when_done()

    def _connection_error(self, exc: H2ConnectionError) -> None:
        conn = self.conn
        conn.generation.stats.http2_connection_errors.inc((conn.listener, exc.reason))
        _log.warning(
            "http2_connection_error",
            reason=exc.reason,
            listener=conn.listener,
            connection_id=conn.id,
            peer=conn.identity.remote_address,
            detail=str(exc)[:200],
        )
        conn.close_reason = f"http2_{exc.reason}"
        self.flush()  # the GOAWAY
        for stream in list(self.streams.values()):
            stream.exchange.downstream_gone(conn.close_reason)
        self._close()

    def _on_idle(self) -> None:
        if not self.streams:
            self.conn.close_reason = "idle_timeout"
            self.h2.goaway()
            self.flush()
            self._close()

    # -- flow control and closing ----------------------------------------------------------------

    def on_write_ready(self, conn: Connection, ready: bool) -> None:
        for stream in self.streams.values():
            if not stream.blocked:
                stream._pause_upstream(not ready)

    async def on_close(self, conn: Connection) -> None:
        self.idle.cancel()
        if self._drain_notice is not None:
            self._drain_notice.cancel()
        if self.draining and self.streams:
            log.warning(
                "http2 drain ended with streams in flight",
                reason=conn.close_reason,
                listener=conn.listener,
                connection_id=conn.id,
                streams_aborted=len(self.streams),
            )
        for stream in list(self.streams.values()):
            stream.cancel_deadlines()
            if not stream.exchange.finished:
                stream.exchange.downstream_gone(conn.close_reason)
        self.streams.clear()

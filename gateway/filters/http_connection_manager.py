"""HTTP connection manager (terminal): decodes requests with the configured codec and runs each through
the router (:class:`gateway.proxy.Exchange`), one exchange at a time, keep-alive between them.

Everything happens in the transport's callbacks: bytes arrive in :meth:`on_data`, go into the codec,
and its events drive the current exchange. A pipelined request waits in the codec (reading pauses)
until the exchange before it ends. Malformed requests get the codec's status (400, 413, 431, ...) and
the connection closes.

Deadlines are totals, not per-read: ``request_headers_timeout`` runs from the first byte of a request
head to its end, ``request_timeout`` from that first byte to the end of the request body, so a client
dripping a byte at a time is cut off all the same (408); ``idle_timeout`` runs between requests. The
route's timeouts (the whole exchange, each try) run on a second deadline the exchange owns.

Per connection, what every request would otherwise recompute is kept: the identity headers, the
forwarded proto, the audit fields of the connection's TLS identity.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway import audit_events as events
from gateway.codec.base import (
    NEED_DATA,
    PAUSED,
    Body,
    CodecFactory,
    CodecProtocolError,
    EndOfStream,
    Headers,
    RequestHead,
    ServerEvent,
)
from gateway.config import HttpConnectionManagerFilter
from gateway.filters.base import FilterStatus, NetworkFilter
from gateway.identity import PeerIdentity
from gateway.proxy import Exchange
from gateway.router import RouteTable
from gateway.timers import Deadline
from gateway.upgrade import UpgradeTunnel

#: RFC 9113 3.4: the client connection preface.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

if TYPE_CHECKING:
    from gateway.connection import Connection
    from gateway.stats import RouteStats


@dataclass(frozen=True, slots=True)
class ConnectionContext:
    """What every request of a connection shares, computed once when the connection starts."""

    forwarded_proto: str
    unrouted_stats: RouteStats
    #: Whether anyone reads the per-request audit record (not the null handle of "audit off").
    records: bool
    #: Whether an access log covers this listener (then each request also makes an AccessRecord).
    access_logged: bool
    audit_fields: dict[str, Any]

    @classmethod
    def of(cls, conn: Connection, codec: str) -> ConnectionContext:
        generation = conn.generation
        return cls(
            forwarded_proto="https" if conn.identity.secure else "http",
            unrouted_stats=generation.stats.route("-"),
            records=getattr(generation.audit, "enabled", True),
            access_logged=any(
                not log.listeners or conn.listener in log.listeners
                for log in generation.config.logging.access_logs
            ),
            audit_fields={**events.connection_fields(conn.id, conn.listener, conn.identity), "codec": codec},
        )


class HttpConnectionManager(NetworkFilter):
    retire_on_reload = True

    def __init__(
        self, config: HttpConnectionManagerFilter, codec_factory: CodecFactory, routes: RouteTable
    ) -> None:
        self.config = config
        self.codec_factory = codec_factory
        self.codec = codec_factory.server_codec(
            config.max_request_headers_bytes, config.max_request_body_bytes
        )
        self.routes = routes
        #: Request header prefixes only the gateway sets (a client's are stripped).
        self.identity_prefixes = ("x-client-cert-", "x-ssl-", config.identity_headers.prefix.lower())
        self.protocol = codec_factory.protocol
        self.exchange: Exchange | None = None
        #: An upgraded (WebSocket) connection: bytes go through the tunnel, no longer to the codec.
        self.tunnel: UpgradeTunnel | None = None
        self.requests = 0
        self._head_started: float | None = None
        self._eof = False
        self._pipelined = False
        self._identity_headers: Headers | None = None
        #: An event read ahead (after a bodyless request head) and not handled yet.
        self._stashed: ServerEvent | None = None

    async def on_new_connection(self, conn: Connection) -> FilterStatus:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        context = ConnectionContext.of(conn, self.codec_factory.protocol)
        self.forwarded_proto = context.forwarded_proto
        self.unrouted_stats = context.unrouted_stats
        self.records = context.records
        self.access_logged = context.access_logged
        self.audit_fields = context.audit_fields
        if self.codec_factory.protocol == "http1":
            self.audit_fields["http_version"] = "HTTP/1.1"
        self.deadline = Deadline(self._on_deadline, self.loop)
        self.upstream_deadline = Deadline(self._on_upstream_deadline, self.loop)
        self.deadline.after(self.config.idle_timeout)
        #: h2c with prior knowledge: plain connections whose first bytes are the HTTP/2 preface.
        self._h2c_candidate = self.config.h2c_prior_knowledge and not conn.identity.secure
        self._h2c_preface = b""
        return FilterStatus.CONTINUE

    def identity_headers(self) -> Headers:
        if self._identity_headers is None:
            cfg = self.config.identity_headers
            self._identity_headers = identity_headers(self.conn.identity, cfg.prefix, cfg.include_cert)
        return self._identity_headers

    # -- bytes in --------------------------------------------------------------------------------

    def on_data(self, conn: Connection, data: bytes, end_stream: bool) -> FilterStatus:
        if self.tunnel is not None:
            self.tunnel.downstream_data(data, end_stream)
            return FilterStatus.STOP_ITERATION
        if self._h2c_candidate:
            data = self._h2c_preface + data
            if H2_PREFACE.startswith(data[: len(H2_PREFACE)]):
                if len(data) < len(H2_PREFACE) and not end_stream:
                    self._h2c_preface = data  # the preface so far: wait for the rest
                    return FilterStatus.STOP_ITERATION
                if data.startswith(H2_PREFACE):
                    return self._hand_over_to_h2(conn, data, end_stream)
            self._h2c_candidate = False
        if data and self.exchange is None and self._head_started is None:
            self._head_started = self.loop.time()  # the first byte of a request head: deadlines start
        if end_stream:
            self._eof = True
        try:
            self.codec.receive_data(data)
        except CodecProtocolError as exc:
            self._protocol_error(exc)
            return FilterStatus.STOP_ITERATION
        self._process()
        return FilterStatus.STOP_ITERATION

    def _hand_over_to_h2(self, conn: Connection, data: bytes, end_stream: bool) -> FilterStatus:
        """h2c with prior knowledge (RFC 9113 3.3): the HTTP/2 manager takes the connection."""
        from gateway.filters.http2_connection_manager import Http2ConnectionManager

        self.deadline.cancel()
        self.upstream_deadline.cancel()
        h2 = Http2ConnectionManager(self.config, self.codec_factory, self.routes)
        conn.hand_over(self, h2)
        h2.start(conn)
        return h2.on_data(conn, data, end_stream)

    def _arm_request_deadline(self) -> None:
        """After a read: a request still arriving has its deadline armed (one that arrived whole in one
        read, the common case, never touches the timer)."""
        if self.conn.closing or self._head_started is None:
            return
        cfg, exchange = self.config, self.exchange
        if exchange is None:
            deadline = self._head_started + cfg.request_headers_timeout
        elif not exchange.request_done and cfg.request_timeout is not None:
            deadline = self._head_started + cfg.request_timeout
        else:
            return
        if cfg.request_timeout is not None:
            deadline = min(deadline, self._head_started + cfg.request_timeout)
        if self.deadline.when != deadline:
            self.deadline.set(deadline)

    def _process(self) -> None:
        self._process_events()
        self._arm_request_deadline()

    def _process_events(self) -> None:
        codec, conn = self.codec, self.conn
        while not conn.closing:
            try:
                event = self._stashed or codec.next_event()
                self._stashed = None
            except CodecProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is NEED_DATA:
                if self._eof:
                    self._downstream_ended()
                return
            exchange = self.exchange
            if isinstance(event, Body):
                if exchange is not None:
                    exchange.request_body(event.data)
            elif isinstance(event, RequestHead):
                self._start(event)
            elif isinstance(event, EndOfStream):
                if exchange is None or exchange.request_done:
                    self._downstream_ended()  # the codec's "connection closed"
                    return
                self._request_complete(exchange)
            elif event is PAUSED:
                # The next request is already here, but this exchange has not finished: it waits.
                self._pipelined = True
                conn.pause_reading()
                return

    def _start(self, head: RequestHead) -> None:
        if self._head_started is None:  # a pipelined request, read before the last exchange ended
            self._head_started = self.loop.time()
        self.requests += 1
        self.deadline.set(None)
        exchange = Exchange(self, head, self.requests, time.monotonic())
        self.exchange = exchange
        self.conn.idle = False
        if head.content_length == 0:
            # A request without a body is whole at once: route it as such (a local reply then keeps the
            # connection; forwarding sends head and end together).
            following = self.codec.next_event()
            if isinstance(following, EndOfStream):
                exchange.request_done = True
            else:
                self._stashed = following
        exchange.start()

    def _request_complete(self, exchange: Exchange) -> None:
        exchange.request_end()
        self.deadline.set(None)
        if exchange.finished:
            self._next_cycle()

    # -- exchanges end ---------------------------------------------------------------------------

    def exchange_finished(self, exchange: Exchange) -> None:
        """The exchange's response is written (or abandoned)."""
        self.upstream_deadline.set(None)
        if exchange.request_done or self.conn.closing:
            self._next_cycle()

    def _next_cycle(self) -> None:
        """Both halves of the exchange are over: keep the connection for the next request, or close."""
        conn, codec = self.conn, self.codec
        self.exchange = None
        self._head_started = None
        conn.idle = True
        if conn.closing:
            return
        if self._eof or conn.draining or codec.must_close() or not codec.keep_alive():
            conn.close()
            return
        codec.start_next_cycle()
        self.deadline.after(self.config.idle_timeout)
        if self._pipelined:
            self._pipelined = False
            conn.resume_reading()
            self.loop.call_soon(self._process)

    def _downstream_ended(self) -> None:
        """The client closed its sending side."""
        exchange = self.exchange
        if exchange is None or exchange.finished:
            self.conn.close()
        elif not exchange.request_done:
            exchange.downstream_gone("downstream_closed_mid_request")
        # else: the request is whole; the response still goes out, then the connection closes.

    def _protocol_error(self, exc: CodecProtocolError) -> None:
        conn = self.conn
        exchange = self.exchange
        if exchange is not None and not exchange.finished:
            # The codec refused the rest of this request (a bad or oversized chunk): it answers that.
            exchange.error = str(exc)[:200]
            exchange.local_reply(exc.status, f"{exc}\n".encode())
        else:
            self.unrouted_stats.record(exc.status, 0.0)
            events.http_request(
                conn.generation.audit,
                self.audit_fields,
                f"{conn.id}-{self.requests + 1}",
                method="-",
                host=None,
                path="-",
                status=exc.status,
                bytes_received=0,
                bytes_sent=0,
                duration_ms=0.0,
                error=str(exc)[:200],
            )
            try:
                conn.write(self.codec.local_reply(exc.status, f"{exc}\n".encode()))
            except (ConnectionError, OSError):
                pass
        conn.close_reason = "protocol_error"
        conn.close()

    # -- deadlines -------------------------------------------------------------------------------

    def _on_deadline(self) -> None:
        conn = self.conn
        exchange = self.exchange
        if exchange is not None and not exchange.request_done:
            exchange.request_timed_out()
            conn.close()
            return
        if self._head_started is not None and exchange is None:
            conn.close_reason = "request_headers_timeout"
            try:
                conn.write(self.codec.local_reply(408, b"request timeout\n"))
            except (ConnectionError, OSError):
                pass
            conn.close()
            return
        if exchange is None:
            conn.close_reason = "idle_timeout"
            conn.close()

    def _on_upstream_deadline(self) -> None:
        if self.exchange is not None:
            self.exchange.on_deadline()

    # -- flow control and closing ----------------------------------------------------------------

    def tunnel_started(self, tunnel: UpgradeTunnel) -> None:
        """The exchange switched protocols: from now on the connection's bytes are the tunnel's."""
        self.tunnel = tunnel
        if self._pipelined:  # reading paused at the upgrade request (h11: the client might switch)
            self._pipelined = False
            self.conn.resume_reading()

    def on_write_ready(self, conn: Connection, ready: bool) -> None:
        if self.tunnel is not None:
            self.tunnel.downstream_write_ready(ready)
            return
        exchange = self.exchange
        if exchange is not None and exchange.upstream is not None:
            if ready:
                exchange.upstream.resume_reading()
            else:
                exchange.upstream.pause_reading()

    async def on_close(self, conn: Connection) -> None:
        self.deadline.cancel()
        self.upstream_deadline.cancel()
        if self.exchange is not None and not self.exchange.finished:
            self.exchange.downstream_gone(conn.close_reason)


def identity_headers(identity: PeerIdentity, prefix: str, include_cert: bool) -> Headers:
    """``X-SSL-*`` and ``<prefix>*`` request headers describing the client (its verified certificate)."""
    out: list[tuple[str, str]] = [
        ("x-ssl-protocol", identity.version),
        ("x-ssl-cipher", identity.cipher_suite or ""),
    ]
    if identity.sni:
        out.append(("x-ssl-sni", identity.sni))
    peer = identity.peer
    if peer is not None:
        p = prefix.lower()
        out += [
            (f"{p}subject", peer.subject),
            (f"{p}issuer", peer.issuer),
            (f"{p}san", ",".join(peer.sans)),
            (f"{p}fingerprint-sha256", peer.fingerprint_sha256),
            (f"{p}serial", format(peer.serial, "x")),
        ]
        if peer.fingerprint_sm3:
            out.append((f"{p}fingerprint-sm3", peer.fingerprint_sm3))
        if include_cert:
            out.append((f"{p}pem", peer.pem().replace("\n", "\\n")))
    return tuple(out)

"""One request through the router (Envoy's router filter on one stream): match, access control, then a
direct response, a redirect, or a forward to the route's cluster with retries.

An :class:`Exchange` is a state machine driven by callbacks and owns no task: the HTTP connection
manager hands it the request (:meth:`start`, :meth:`request_body`, :meth:`request_end`), the upstream
connection hands it the response (:meth:`upstream_data`), the connection manager's upstream deadline
hands it timeouts. Only opening a new upstream connection awaits (a task whose completion resumes the
exchange); a request served from the host's keep-alive pool runs start to finish without one.

Protocol-agnostic: it speaks :mod:`gateway.codec.base` events to the downstream :class:`ServerCodec`
and an upstream :class:`ClientCodec`. Bodies stream through: what arrives before the upstream
connection is ready waits in a bounded buffer (reading pauses above it), everything else is written as
it comes, with each side's full write buffer pausing the other side's reading. Forwarding retries on
connect failures and, for requests without a body, on retryable statuses and resets, within the
route's retry policy and the cluster's retry budget. Clients see generic 502/503/504 bodies; the
detail goes to the audit record. Each request ends in exactly one ``http.request`` audit record
carrying the route decision, the upstream, the outcome and the connection's TLS identity.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

from gateway import audit_events as events
from gateway import grpc
from gateway.access import is_allowed
from gateway.cluster import Cluster, ClusterOverflow, Host, NoHealthyUpstream, UpstreamConnection
from gateway.codec.base import (
    NEED_DATA,
    PAUSED,
    Body,
    ClientCodec,
    CodecProtocolError,
    EndOfStream,
    Headers,
    RequestHead,
    ResponseHead,
    ResponseTrailers,
    ServerCodec,
)
from gateway.http2_upstream import H2Upstream, upstream_limits
from gateway.http_upstream import HttpUpstream
from gateway.logs.access_log import AccessRecord, log_request
from gateway.router import IDEMPOTENT, RouteEntry
from gateway.stream import TransportStream
from gateway.transports.base import UpstreamConnectError
from gateway.upgrade import UpgradeRefused, UpgradeTunnel, is_upgrade
from tls.tlcp.dialect import DialectChoice

if TYPE_CHECKING:
    from gateway.codec.base import CodecFactory
    from gateway.config import HttpConnectionManagerFilter
    from gateway.identity import PeerIdentity
    from gateway.router import RouteTable
    from gateway.runtime import Generation
    from gateway.stats import RouteStats
    from gateway.timers import Deadline


class DownstreamConnection(Protocol):
    """What an exchange uses of its downstream: the connection (HTTP/1.1) or one HTTP/2 stream of it."""

    @property
    def id(self) -> int: ...
    @property
    def identity(self) -> PeerIdentity: ...
    @property
    def listener(self) -> str: ...
    @property
    def generation(self) -> Generation: ...

    close_reason: str
    upstream_rx: int
    upstream_tx: int

    @property
    def draining(self) -> bool: ...
    @property
    def stream(self) -> TransportStream: ...
    def write(self, data: bytes) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class ExchangeOwner(Protocol):
    """What an exchange uses of the connection manager that runs it (HTTP/1.1, or per HTTP/2 stream)."""

    @property
    def conn(self) -> DownstreamConnection: ...
    @property
    def codec(self) -> ServerCodec: ...
    @property
    def codec_factory(self) -> CodecFactory: ...
    @property
    def config(self) -> HttpConnectionManagerFilter: ...
    @property
    def routes(self) -> RouteTable: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def protocol(self) -> str: ...
    @property
    def identity_prefixes(self) -> tuple[str, ...]: ...
    @property
    def forwarded_proto(self) -> str: ...
    @property
    def access_logged(self) -> bool: ...
    @property
    def records(self) -> bool: ...
    @property
    def audit_fields(self) -> dict[str, Any]: ...
    @property
    def unrouted_stats(self) -> RouteStats: ...
    @property
    def upstream_deadline(self) -> Deadline: ...

    def identity_headers(self) -> Headers: ...
    def exchange_finished(self, exchange: Exchange) -> None: ...
    def tunnel_started(self, tunnel: UpgradeTunnel) -> None: ...


#: Envoy's response flags: by the exchange's decision reason, then by what failed upstream.
_REASON_FLAGS = {"no_route": "NR", "access_control": "UAEX", "no_healthy_upstream": "UH", "overflow": "UO"}
_ERROR_FLAGS = (
    ("upstream connect error", "UF"),
    ("upstream request timeout", "UT"),
    ("upstream per-try timeout", "UT"),
    ("upstream reset", "UR"),
    ("upstream protocol error", "UPE"),
)

#: Fields never forwarded as request trailers: those that frame, route or describe a connection
#: (RFC 9110 6.5.1, 7.6.1); identity headers are refused as they are in the head.
NOT_IN_TRAILERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
    | {"content-length", "host", "expect", "proxy-authorization"}
)

#: Request body bytes held while the upstream connection is being opened (reading pauses above).
PENDING_BODY_LIMIT = 256 * 1024
#: What a client reads when the gateway answers for a failed upstream (the reason is audited).
GENERIC_BODIES = {
    502: b"bad gateway\n",
    503: b"upstream unavailable\n",
    504: b"upstream timeout\n",
}


class Exchange:
    """One request and its response on a downstream HTTP connection."""

    # Per-request state starts at these class-level values; an exchange assigns only what it changes
    # (most requests change a handful), which keeps creating one cheap.
    route: RouteEntry | None = None
    status = 0
    verdict = "allow"
    reason = ""
    error: str | None = None
    request_done = False
    response_started = False
    finished = False
    bytes_received = 0
    bytes_sent = 0
    cluster: Cluster | None = None
    host: Host | None = None
    endpoint: str | None = None
    upstream: HttpUpstream | None = None
    #: The TLCP dialect the upstream connection's handshake spoke (profile auto), for the audit record.
    upstream_dialect: DialectChoice | None = None
    attempts = 0
    _tried: frozenset[int] = frozenset()
    _hash_key: str | None = None
    _attempt_open = False
    _attempt_is_retry = False
    _stale_retry_used = False
    _connecting: asyncio.Task[UpstreamConnection] | None = None
    _upgrading: asyncio.Task[ResponseHead] | None = None
    #: The connect task is a shared one (HTTP/2): never cancelled by one of the requests awaiting it.
    _connecting_shared = False
    _tunnel: UpgradeTunnel | None = None
    _upstream_head: RequestHead | None = None
    _head_sent = False
    _request_trailers: Headers = ()
    _pending: list[bytes] | None = None
    _pending_bytes = 0
    _reading_paused = False
    _route_deadline: float | None = None
    _try_deadline: float | None = None
    #: The response head's headers as relayed (kept for the access log).
    response_headers: Headers = ()

    def __init__(self, hcm: ExchangeOwner, head: RequestHead, index: int, started: float) -> None:
        self.hcm = hcm
        self.conn = hcm.conn
        self.codec = hcm.codec
        self.head = head
        self.index = index
        self.started = started
        self.request_id = _request_id(head) or f"{self.conn.id}-{index}"

    # -- routing ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Route the request: answer it locally or start forwarding it."""
        hcm = self.hcm
        route = hcm.routes.match(self.head)
        if route is None:
            self._deny("no_route", 404, b"no route\n")
            return
        self.route = route
        if route.access is not None and not is_allowed(route.access, self.conn.identity):
            self.conn.generation.stats.access_denied.inc(route.labels)
            if route.forward is not None:
                self.cluster = route.forward.cluster
            self._deny("access_control", 403, b"access denied\n")
            return
        if route.direct_response is not None:
            self.reason = "direct_response"
            dr = route.direct_response
            self.local_reply(dr.status, route.direct_body, dr.content_type)
            return
        if route.redirect is not None:
            self.reason = "redirect"
            self.local_reply(
                route.redirect.response_code, b"", headers=(("location", self._location(route)),)
            )
            return
        length = self.head.content_length
        if length is not None and length > hcm.config.max_request_body_bytes:
            self.reason = "body_too_large"
            self.local_reply(413, b"request body too large\n")
            return
        forward = route.forward
        assert forward is not None
        self.reason = "forward"
        self.cluster = forward.cluster
        timeout = forward.action.timeout
        if grpc.is_grpc(self.head):
            if not forward.cluster.http2:
                self.error = f"cluster {forward.cluster.name} does not speak HTTP/2 (gRPC needs it)"
                self.local_reply(503, b"upstream does not speak HTTP/2\n")
                return
            timeout = grpc.effective_timeout(timeout, self.head)
        self._hash_key = self._hash(forward.cluster)
        if hcm.protocol == "http1" and is_upgrade(self.head):
            self._start_upgrade(forward.cluster)
            return
        self._route_deadline = hcm.loop.time() + timeout
        hcm.upstream_deadline.set(self._route_deadline)
        self._attempt()

    def _deny(self, reason: str, status: int, body: bytes) -> None:
        self.verdict = "deny"
        self.reason = reason
        self.local_reply(status, body)

    def _location(self, route: RouteEntry) -> str:
        rd = route.redirect
        assert rd is not None
        scheme = rd.scheme_redirect or ("https" if self.conn.identity.secure else "http")
        return f"{scheme}://{rd.host_redirect or self.head.authority}{rd.path_redirect or self.head.path}"

    def _hash(self, cluster: Cluster) -> str | None:
        hp = cluster.config.hash_policy
        if hp is None:
            return None
        if hp.client_cert_fingerprint:
            peer = self.conn.identity.peer
            return peer.fingerprint_sha256 if peer else self.conn.identity.remote_address
        assert hp.header is not None
        return self.head.header(hp.header)

    # -- upgrades (WebSocket) ---------------------------------------------------------------------

    def _start_upgrade(self, cluster: Cluster) -> None:
        """HTTP/1.1 Upgrade: its own upstream connection, then a byte tunnel (:mod:`gateway.upgrade`)."""
        self.reason = "upgrade"
        try:
            host = cluster.choose_host(self._hash_key)
        except NoHealthyUpstream as exc:
            self.reason = "no_healthy_upstream"
            self._give_up(503, str(exc))
            return
        self.host, self.endpoint, self.attempts = host, host.name, 1
        tunnel = UpgradeTunnel(self, cluster, host, self.hcm.config.upgrade_idle_timeout)
        self._tunnel = tunnel
        self._upgrading = self.hcm.loop.create_task(tunnel.open(self._build_upstream_head()))
        self._upgrading.add_done_callback(self._upgrade_answered)

    def _upgrade_answered(self, task: asyncio.Task[ResponseHead]) -> None:
        self._upgrading = None
        tunnel, cluster, host = self._tunnel, self.cluster, self.host
        assert tunnel is not None and cluster is not None and host is not None
        if task.cancelled() or self.finished:
            tunnel.shutdown()
            return
        exc = task.exception()
        if exc is not None:
            tunnel.shutdown()
            self._upgrade_failed(exc, cluster, host)
            return
        cluster.report(host, True)
        try:
            switched, client_early = self.codec.switch_protocols(task.result())
        except CodecProtocolError as refused:
            tunnel.shutdown()
            self.error = str(refused)
            self.local_reply(refused.status, GENERIC_BODIES[502])
            return
        self.status = 101
        self.response_started = True
        if self._write_downstream([switched]):
            self.hcm.tunnel_started(tunnel)
            tunnel.start(client_early)

    def _upgrade_failed(self, exc: BaseException, cluster: Cluster, host: Host) -> None:
        if isinstance(exc, UpgradeRefused):
            cluster.report(host, exc.status < 500)
            self.error = str(exc)
            self.local_reply(exc.status, b"upgrade refused by the upstream\n")
        elif isinstance(exc, UpstreamConnectError):
            cluster.fail(host, self.conn.id, f"connect_failure: {exc}")
            self._give_up(503, f"upstream connect error: {exc}")
        elif isinstance(exc, ClusterOverflow):
            self.reason = "overflow"
            self._give_up(503, f"overflow: {exc}")
        else:
            self._give_up(502, f"upstream reset: {type(exc).__name__}: {exc}")

    def tunnel_closed(self, reason: str) -> None:
        """The upgraded connection ended on one side: close the other, then the exchange is over."""
        self.conn.close_reason = reason
        self.conn.close()
        self._finish()

    # -- attempts --------------------------------------------------------------------------------

    def _attempt(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        self.attempts += 1
        retry = self.attempts > 1
        try:
            cluster.begin_request(retry)
        except ClusterOverflow as exc:
            self.reason = "overflow"
            events.upstream_fail(
                self.conn.generation.audit, self.conn.id, cluster.name, None, f"overflow: {exc}"
            )
            self._give_up(503, f"overflow: {exc}")
            return
        self._attempt_open, self._attempt_is_retry = True, retry
        try:
            host = cluster.choose_host(self._hash_key, self._tried)
        except NoHealthyUpstream as exc:
            self.reason = "no_healthy_upstream"
            audit = self.conn.generation.audit
            events.upstream_fail(audit, self.conn.id, cluster.name, None, f"no_healthy_upstream: {exc}")
            self._attempt_failed(503, str(exc), "connect-failure")
            return
        self.host, self.endpoint = host, host.name
        if cluster.http2:
            self._attempt_multiplexed(cluster, host)
            return
        proxy_header = cluster.proxy_header(self.conn) if cluster.config.proxy_protocol else b""
        pooled = cluster.idle_connection(host, self.hcm.protocol, proxy_header)
        if pooled is not None:
            assert isinstance(pooled, HttpUpstream)
            self._send_request(pooled)
            return
        self._connecting = self.hcm.loop.create_task(
            cluster.acquire(host, self.hcm.protocol, self._new_upstream, proxy_header=proxy_header)
        )
        self._connecting.add_done_callback(self._connected)

    def _attempt_multiplexed(self, cluster: Cluster, host: Host) -> None:
        """HTTP/2 clusters: a new stream on the host's shared connection, opening one if none has room."""
        shared = cluster.shared_connection(host)
        if shared is not None:
            assert isinstance(shared, H2Upstream)
            self._send_request(shared.open_stream())
            return
        self._connecting_shared = True
        self._connecting = cluster.connect_shared(host, self._new_upstream)
        self._connecting.add_done_callback(self._connected)

    def _new_upstream(self, host: Host, stream: TransportStream) -> UpstreamConnection:
        cluster = self.cluster
        assert cluster is not None
        options = cluster.config.http2_protocol_options
        if options is not None:
            scheme = "http" if cluster.config.transport_socket.type == "plain" else "https"
            return H2Upstream(
                host,
                stream,
                "h2",
                limits=upstream_limits(options),
                scheme=scheme,
                on_ended=cluster.retire,
                on_closed=cluster.shared_closed,
            )
        factory = self.hcm.codec_factory
        return HttpUpstream(host, stream, factory.protocol, codec=factory.client_codec())

    def _connected(self, task: asyncio.Task[UpstreamConnection]) -> None:
        self._connecting = None
        if task.cancelled():
            return
        exc = task.exception()
        cluster, host = self.cluster, self.host
        assert cluster is not None and host is not None
        if exc is None:
            upstream = task.result()
            if isinstance(upstream, H2Upstream):
                self._connecting_shared = False
                if not self.finished:
                    self._stream_on_new_connection(cluster, host, upstream)
                return
            assert isinstance(upstream, HttpUpstream)
            if self.finished:
                cluster.release(upstream, reusable=True)  # opened for nobody: keep it for the next one
            else:
                self._send_request(upstream)
            return
        if self.finished:
            return
        if isinstance(exc, UpstreamConnectError):
            self._tried = self._tried | {id(host)}
            self.conn.generation.stats.upstream_requests.inc((cluster.name, "connect_failure"))
            cluster.fail(host, self.conn.id, f"connect_failure: {exc}")
            self._attempt_failed(503, f"upstream connect error: {exc}", "connect-failure")
        elif isinstance(exc, ClusterOverflow):
            events.upstream_fail(
                self.conn.generation.audit, self.conn.id, cluster.name, host.name, f"overflow: {exc}"
            )
            self._attempt_failed(503, str(exc), "overflow")
        else:
            self._attempt_failed(502, f"upstream connect error: {type(exc).__name__}: {exc}", "reset")

    def _stream_on_new_connection(self, cluster: Cluster, host: Host, upstream: H2Upstream) -> None:
        if upstream.can_take_stream():
            cluster.take_stream(host)
            self._send_request(upstream.open_stream())
            return
        self._attempt_multiplexed(cluster, host)  # full already (or gone): another connection

    def _send_request(self, upstream: HttpUpstream) -> None:
        self.upstream = upstream
        self.upstream_dialect = getattr(upstream.stream, "dialect", None)
        upstream.serve(self)
        forward = self.route.forward if self.route else None
        assert forward is not None
        if forward.per_try_timeout is not None:
            self._try_deadline = self.hcm.loop.time() + forward.per_try_timeout
            self.hcm.upstream_deadline.set(self._try_deadline)
        codec = upstream.codec
        head = self._upstream_head or self._build_upstream_head()
        # Small messages leave in one write per direction: each write is a send() syscall.
        out = [codec.encode_request_head(head)]
        self._head_sent = True
        if self.head.content_length == 0:
            out.append(codec.encode_end())
        else:
            self._write_downstream([self.codec.encode_continue()])
            if self._pending:
                out += [codec.encode_body(chunk) for chunk in self._pending]
                self._pending = None
                self._pending_bytes = 0
            if self._reading_paused:
                self._reading_paused = False
                self.conn.resume_reading()
            if self.request_done:
                out.append(self._encode_request_end(codec))
        data = b"".join(out)
        self.conn.upstream_tx += len(data)
        try:
            upstream.stream.write(data)
        except (ConnectionError, OSError) as exc:
            self.upstream_lost(exc)

    def _build_upstream_head(self) -> RequestHead:
        """The forwarded head: hop-by-hop and gateway-set headers replaced, the route's rewrites applied."""
        head, hcm = self.head, self.hcm
        forward = self.route.forward if self.route else None
        assert forward is not None
        drop, identity_prefixes = forward.drop, hcm.identity_prefixes
        headers: list[tuple[str, str]] = []
        forwarded_for = None
        for name, value in head.headers:
            if name in drop:
                if name == "x-forwarded-for" and forwarded_for is None:
                    forwarded_for = value
                continue
            # Identity headers are only ever set by the gateway: strip any the client sent.
            if not name.startswith(identity_prefixes):
                headers.append((name, value))
        identity = self.conn.identity
        headers += forward.add
        headers.append(
            (
                "x-forwarded-for",
                f"{forwarded_for}, {identity.remote_address}" if forwarded_for else identity.remote_address,
            )
        )
        headers.append(("x-forwarded-proto", hcm.forwarded_proto))
        headers.append(("x-request-id", self.request_id))
        if head.content_length is None and head.header("transfer-encoding") is None:
            # A body of unknown length (HTTP/2 frames it by END_STREAM): chunked to an HTTP/1.1
            # upstream, which also lets it carry trailers; HTTP/2 upstreams leave the field out.
            headers.append(("transfer-encoding", "chunked"))
        if forward.action.identity_headers or hcm.config.identity_headers.enabled:
            headers += hcm.identity_headers()
        path = head.path
        match_prefix = self.route.prefix if self.route else None
        rewrite = forward.action.prefix_rewrite
        if rewrite is not None and match_prefix is not None and path.startswith(match_prefix):
            path = rewrite + path[len(match_prefix) :]
        self._upstream_head = RequestHead(
            head.method,
            forward.action.host_rewrite or head.authority,
            path,
            tuple(headers),
            head.content_length,
        )
        return self._upstream_head

    # -- the request body (from the connection manager) ------------------------------------------

    def request_body(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self.bytes_received > self.hcm.config.max_request_body_bytes:
            self._body_too_large()
            return
        if self.finished:
            return  # answered already: the rest of the body is read and dropped
        upstream = self.upstream
        if upstream is not None and self._head_sent:
            self.conn.upstream_tx += len(data)
            try:
                upstream.stream.write(upstream.codec.encode_body(data))
            except (ConnectionError, OSError) as exc:
                self.upstream_lost(exc)
            return
        if self._pending is None:
            self._pending = []
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > PENDING_BODY_LIMIT and not self._reading_paused:
            self._reading_paused = True
            self.conn.pause_reading()

    def request_end(self) -> None:
        self.request_done = True
        upstream = self.upstream
        if not self.finished and upstream is not None and self._head_sent and self.head.content_length != 0:
            try:
                upstream.stream.write(self._encode_request_end(upstream.codec))
            except (ConnectionError, OSError) as exc:
                self.upstream_lost(exc)

    def request_trailers(self, headers: Headers) -> None:
        """Trailers after the request body (HTTP/2), sent with its end where the upstream request can
        carry them: an HTTP/2 stream, or a chunked HTTP/1.1 body; otherwise dropped and counted."""
        if self.finished:
            return
        prefixes = self.hcm.identity_prefixes
        self._request_trailers = tuple(
            (name, value)
            for name, value in headers
            if name not in NOT_IN_TRAILERS and not name.startswith(prefixes)
        )
        if self.head.content_length == 0:  # announced no body: the end went with the head
            self._trailers_dropped()

    def _encode_request_end(self, codec: ClientCodec) -> bytes:
        trailers = self._request_trailers
        if trailers and not codec.set_trailers(trailers):
            self._trailers_dropped()
        return codec.encode_end()

    def _trailers_dropped(self) -> None:
        if self.cluster is not None:
            self.conn.generation.stats.request_trailers_dropped.inc((self.cluster.name,))

    def _body_too_large(self) -> None:
        self.error = "request body too large"
        if self.finished:
            return
        self._drop_upstream()
        self.reason = "body_too_large"
        self.local_reply(413, b"request body too large\n")

    def request_timed_out(self) -> None:
        """The request did not arrive whole within ``request_timeout``."""
        self.error = "request timeout"
        self.conn.close_reason = "request_timeout"
        if self.finished:
            return
        self._drop_upstream()
        self.local_reply(408, b"request timeout\n")

    # -- the response (from the upstream connection) ---------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        """Response bytes from this exchange's own upstream connection (HTTP/1.1)."""
        upstream = self.upstream
        assert upstream is not None
        self.conn.upstream_rx += len(data)
        try:
            upstream.codec.receive_data(data)
        except CodecProtocolError as exc:
            self._upstream_protocol_error(exc)
            return
        self.upstream_events()

    def upstream_events(self) -> None:
        """Relay what the upstream codec has decoded (a shared HTTP/2 connection pushes events there)."""
        upstream = self.upstream
        if upstream is None or self.finished:
            return
        codec = upstream.codec
        out: list[bytes] = []
        server = self.codec
        try:
            while True:
                event = codec.next_event()
                kind = type(event)
                if kind is Body:
                    out.append(server.encode_body(event.data))  # type: ignore[union-attr]
                elif kind is ResponseHead:
                    head = self._response_head(event)  # type: ignore[arg-type]
                    if head is None:
                        return  # retried
                    out.append(head)
                elif kind is ResponseTrailers:
                    out.append(server.encode_trailers(event.headers))  # type: ignore[union-attr]
                elif kind is EndOfStream:
                    out.append(server.encode_end())
                    if self._write_downstream(out):
                        self._upstream_done()
                    return
                elif event is NEED_DATA:
                    break
                elif event is PAUSED:
                    raise CodecProtocolError("upstream pipelined a second response", 502)
        except CodecProtocolError as exc:
            self._write_downstream(out)
            self._upstream_protocol_error(exc)
            return
        out.append(server.encode_held())
        self._write_downstream(out)

    def _response_head(self, event: ResponseHead) -> bytes | None:
        """The response head to relay, or ``None`` when the status is retried instead."""
        cluster, host, route = self.cluster, self.host, self.route
        assert cluster is not None and host is not None and route is not None and route.forward is not None
        forward = route.forward
        self._try_deadline = None
        if (
            event.status in forward.retry_statuses
            and self.attempts < forward.max_attempts
            and self.head.content_length == 0
        ):
            cluster.report(host, False)
            self._drop_upstream()
            self._attempt_failed(event.status, f"upstream answered {event.status}", str(event.status))
            return None
        cluster.report(host, event.status < 500)
        self.status = event.status
        self.response_started = True
        if self.conn.draining:
            self.codec.request_close()
        if forward.response_add:
            event = ResponseHead(event.status, event.headers + forward.response_add, event.reason)
        if self.hcm.access_logged:
            self.response_headers = event.headers
        return self.codec.encode_response_head(event)

    def _upstream_done(self) -> None:
        upstream, cluster = self.upstream, self.cluster
        assert upstream is not None and cluster is not None
        cluster.stats.upstream_requests.inc(cluster.response_labels[self.status // 100 % 10])
        self.upstream = None
        upstream.release(cluster, upstream.codec.reusable())
        self._attempt_open = False
        cluster.end_request(self._attempt_is_retry)
        self._finish()

    def _upstream_protocol_error(self, exc: CodecProtocolError) -> None:
        upstream, cluster = self.upstream, self.cluster
        assert upstream is not None and cluster is not None
        stale = upstream.reused and not upstream.got_bytes and not self.response_started
        cluster.stats.upstream_requests.inc((cluster.name, "protocol_error"))
        cluster.fail(upstream.host, self.conn.id, f"protocol_error: {exc}")
        self._drop_upstream()
        self._attempt_failed(502, f"upstream protocol error: {exc}", "stale-connection" if stale else "reset")

    def upstream_lost(self, exc: Exception | None) -> None:
        """The upstream connection closed or broke before the response ended."""
        upstream, cluster = self.upstream, self.cluster
        if upstream is None or cluster is None or self.finished:
            return
        stale = upstream.reused and not upstream.got_bytes and not self.response_started
        cluster.stats.upstream_requests.inc((cluster.name, "reset"))
        reason = f"reset: {type(exc).__name__ if exc else 'closed'}"
        if stale:
            cluster.report(upstream.host, False)
        else:
            cluster.fail(upstream.host, self.conn.id, reason)
        self._drop_upstream()
        self._attempt_failed(502, f"upstream {reason}", "stale-connection" if stale else "reset")

    def upstream_write_ready(self, ready: bool) -> None:
        """The upstream's write buffer filled (stop reading the client's body) or drained."""
        if ready:
            self.conn.resume_reading()
        else:
            self.conn.pause_reading()

    # -- failures and retries --------------------------------------------------------------------

    def _attempt_failed(self, status: int, detail: str, retry_class: str) -> None:
        """This attempt is over without a response to relay: retry it, or answer ``status``."""
        self._end_attempt()
        self.error = detail
        if self.response_started:
            self.conn.close_reason = "upstream_failed_mid_response"
            self.conn.abort()
            self._finish()
            return
        route, cluster = self.route, self.cluster
        assert route is not None and route.forward is not None and cluster is not None
        forward = route.forward
        bodyless = self.head.content_length == 0
        if retry_class == "stale-connection":
            # A pooled connection the upstream had already closed: one free retry, if nothing was lost.
            if bodyless and not self._stale_retry_used:
                self._stale_retry_used = True
                self.attempts -= 1
                self._attempt()
                return
            retry_class = "reset"
        policy = forward.action.retry_policy
        can_retry = (
            policy is not None
            and self.attempts < forward.max_attempts
            and retry_class in forward.retry_on
            and (retry_class == "connect-failure" or bodyless)
            and (self.head.method.upper() in IDEMPOTENT or retry_class == "connect-failure")
            and cluster.retry_allowed(policy.budget_percent, policy.min_retry_concurrency)
        )
        if can_retry:
            cluster.stats.upstream_retries.inc((cluster.name,))
            self._attempt()
            return
        self._give_up(status, detail)

    def _give_up(self, status: int, detail: str) -> None:
        self.error = detail
        self.local_reply(status, GENERIC_BODIES.get(status, b"upstream error\n"))

    def on_deadline(self) -> None:
        """The connection manager's upstream deadline fired: the route timeout or the per-try timeout."""
        if self.finished:
            return
        now = self.hcm.loop.time()
        cluster = self.cluster
        assert cluster is not None
        if self._route_deadline is not None and now + 0.001 >= self._route_deadline:
            events.upstream_fail(
                self.conn.generation.audit, self.conn.id, cluster.name, self.endpoint, "request_timeout"
            )
            self._drop_upstream()
            self._end_attempt()
            self.error = "upstream request timeout"
            if self.response_started:
                self.conn.close_reason = "upstream_timeout_mid_response"
                self.conn.abort()
                self._finish()
            else:
                self.local_reply(504, GENERIC_BODIES[504])
            return
        if self._try_deadline is not None and now + 0.001 >= self._try_deadline:
            self._try_deadline = None
            if self.host is not None:
                cluster.fail(self.host, self.conn.id, "per_try_timeout")
            self._drop_upstream()
            self._attempt_failed(504, "upstream per-try timeout", "504")
            return
        nearest = min(self._route_deadline or math.inf, self._try_deadline or math.inf)
        self.hcm.upstream_deadline.set(None if nearest == math.inf else nearest)

    def _drop_upstream(self) -> None:
        """Forget the attempt's connection (closed, never pooled) or the connect still under way."""
        if self._upgrading is not None:
            self._upgrading.cancel()  # its callback closes the tunnel's connection
            self._upgrading = None
        elif self._tunnel is not None:
            self._tunnel.shutdown()
        if self._connecting is not None:
            if self._connecting_shared:
                self._connecting.remove_done_callback(self._connected)
                self._connecting_shared = False
            else:
                self._connecting.cancel()
            self._connecting = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            assert self.cluster is not None
            upstream.release(self.cluster, reusable=False)
        self._head_sent = False
        self._try_deadline = None

    def _end_attempt(self) -> None:
        if self._attempt_open:
            self._attempt_open = False
            assert self.cluster is not None
            self.cluster.end_request(retry=self._attempt_is_retry)

    # -- the downstream side ---------------------------------------------------------------------

    def local_reply(
        self, status: int, body: bytes, content_type: str = "text/plain", headers: Headers = ()
    ) -> None:
        """A response the gateway makes itself (errors, direct responses, redirects)."""
        if self.finished:
            return
        if self.response_started:
            self.conn.abort()
            self._finish()
            return
        self.status = status
        self.response_started = True
        if self.conn.draining:
            self.codec.request_close()
        self._write_downstream([self.codec.local_reply(status, body, content_type, headers)])
        self._finish()

    def _write_downstream(self, chunks: list[bytes]) -> bool:
        """Write to the client; ``False`` when it is gone (the exchange is then over)."""
        data = b"".join(chunks)
        if not data:
            return True
        self.bytes_sent += len(data)
        try:
            self.conn.write(data)
        except (ConnectionError, OSError):
            self.downstream_gone("downstream_gone_mid_response")
            return False
        return True

    def downstream_gone(self, reason: str) -> None:
        """The client went away (or its request body broke off): stop, whatever the state."""
        if self.finished:
            return
        self.conn.close_reason = reason
        self._drop_upstream()
        self._end_attempt()
        self.conn.abort()
        self._finish()

    def _finish(self) -> None:
        """The response is written (or abandoned): count it, audit it, tell the connection manager."""
        if self.finished:
            return
        self.finished = True
        if self.upstream is not None or self._connecting is not None or self._tunnel is not None:
            self._drop_upstream()
        self._end_attempt()
        if self._reading_paused:
            self._reading_paused = False
            self.conn.resume_reading()
        hcm = self.hcm
        duration = time.monotonic() - self.started
        route_stats = self.route.stats if self.route is not None else hcm.unrouted_stats
        assert route_stats is not None
        route_stats.record(self.status, duration)
        if hcm.records:
            self.conn.generation.audit.emit(events.HTTP_REQUEST, **self._record(duration))
        if hcm.access_logged:
            log_request(self._access_record(duration))
        hcm.exchange_finished(self)

    def _access_record(self, duration: float) -> AccessRecord:
        """The access log's view of this request (built only when an access log covers the listener)."""
        conn, head = self.conn, self.head
        return AccessRecord(
            listener=conn.listener,
            connection_id=conn.id,
            start_time=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=duration),
            duration_ms=round(duration * 1000, 3),
            method=head.method,
            path=head.path,
            authority=head.authority or None,
            response_code=self.status,
            response_flags=self._response_flags(),
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            route_name=self.route.name if self.route is not None else None,
            upstream_cluster=self.cluster.name if self.cluster is not None else None,
            upstream_host=self.endpoint,
            request_headers=head.headers,
            response_headers=self.response_headers,
            identity=conn.identity,
            local_address=conn.stream.get_extra_info("sockname"),
        )

    def _response_flags(self) -> str:
        if self.reason in _REASON_FLAGS:
            return _REASON_FLAGS[self.reason]
        error = self.error or ""
        return next((flag for prefix, flag in _ERROR_FLAGS if error.startswith(prefix)), "-")

    def _record(self, duration: float) -> dict[str, object]:
        """The one audit record of this request."""
        head = self.head
        record: dict[str, object] = {
            **self.hcm.audit_fields,
            "request_id": self.request_id,
            "method": head.method,
            "host": head.authority or None,
            "path": head.path,
            "status": self.status or (502 if self.cluster is not None else 499),
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration_ms": round(duration * 1000, 3),
            "route": self.route.name if self.route is not None else None,
            "cluster": self.cluster.name if self.cluster is not None else None,
            "upstream": self.endpoint,
            "verdict": self.verdict,
            "reason": self.reason or "-",
            "attempts": self.attempts,
        }
        if self.error is not None:
            record["error"] = self.error[:200]
        dialect = self.upstream_dialect
        if dialect is not None:  # TLCP upstreams: the dialect the handshake spoke and how it was chosen
            record["upstream_tlcp_dialect"] = f"{dialect.dialect.value}/{dialect.source.value}"
        return record


def _request_id(head: RequestHead) -> str | None:
    """The client's X-Request-Id if it sent a sane one."""
    for name, value in head.headers:
        if name == "x-request-id":
            return value if len(value) <= 128 and value.isprintable() else None
    return None

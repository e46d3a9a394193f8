"""One request through the router: match, access control, then direct response, redirect or forward.

Protocol-agnostic: it speaks :mod:`gateway.codec.base` events to a downstream :class:`ServerCodec` and
an upstream :class:`ClientCodec`. Bodies stream through a bounded :class:`BodyChannel` (never buffered
whole). Forwarding retries on connect failures and, for requests without a body, on retryable
statuses, within the route's retry policy and the cluster's retry budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import audit_events as events
from gateway.access import is_allowed
from gateway.cluster import Cluster, ClusterOverflow, NoHealthyUpstream, UpstreamConnection
from gateway.codec.base import (
    NEED_DATA,
    PAUSED,
    Body,
    CodecFactory,
    CodecProtocolError,
    EndOfStream,
    Headers,
    RequestHead,
    ResponseHead,
    ServerCodec,
)
from gateway.config import ForwardAction, HttpConnectionManagerFilter, Route
from gateway.identity import PeerIdentity
from gateway.router import RouteTable
from gateway.upstream import UpstreamConnectError

if TYPE_CHECKING:
    from gateway.connection import Connection

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_IDENTITY_PREFIXES = ("x-client-cert-", "x-ssl-")


class BodyChannel:
    """Request body chunks from the connection's read loop to the request task (bounded: backpressure)."""

    def __init__(self, limit: int) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)
        self.limit = limit
        self.received = 0
        self.ended = False
        self.aborted = False
        self.consumer_gone = False
        self.too_large = False
        self.refusal: CodecProtocolError | None = None

    async def put(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            self.too_large = True
        if self.consumer_gone or self.too_large:
            return
        await self._queue.put(data)

    async def end(self) -> None:
        self.ended = True
        if not self.consumer_gone:
            await self._queue.put(None)

    def refuse(self, refusal: CodecProtocolError) -> None:
        """The codec refused the rest of the body (a bad or oversized chunk): the request answers it."""
        self.refusal = refusal
        self.abort()

    def abort(self) -> None:
        """The downstream went away: whatever is queued is useless; wake the consumer at once."""
        self.aborted = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self.too_large:
                raise BodyTooLarge()
            item = await self._queue.get()
            if item is None:
                if self.refusal is not None:
                    raise BodyRefused(str(self.refusal), self.refusal.status)
                if self.aborted:
                    raise ConnectionResetError("downstream closed during the request body")
                if self.too_large:
                    raise BodyTooLarge()
                return
            yield item

    def discard(self) -> None:
        """The request task no longer reads the body: drop what is queued and anything that follows."""
        self.consumer_gone = True
        while not self._queue.empty():
            self._queue.get_nowait()


class BodyTooLarge(Exception):
    pass


class BodyRefused(Exception):
    """The downstream codec refused the rest of the request body; ``status`` answers the request.

    Not a CodecProtocolError: inside the exchange that would read as the upstream's fault.
    """

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class DownstreamGone(Exception):
    """Writing to the client failed: not the upstream's fault (no outlier report, no retry)."""


class UpstreamFailure(Exception):
    def __init__(self, status: int, reason: str, retry_class: str) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_class = retry_class


@dataclass
class RequestContext:
    conn: Connection
    codec: ServerCodec
    codec_factory: CodecFactory
    config: HttpConnectionManagerFilter
    routes: RouteTable
    head: RequestHead
    body: BodyChannel
    response_started: bool = False
    status: int = 0
    route_name: str = "-"
    cluster_name: str | None = None
    endpoint: str | None = None
    attempts: int = 0
    index: int = 1
    bytes_sent: int = 0

    @property
    def request_id(self) -> str:
        """The client's X-Request-Id if it sent a sane one, else ``<connection>-<request index>``."""
        incoming = self.head.header("x-request-id")
        if incoming and len(incoming) <= 128 and incoming.isprintable():
            return incoming
        return f"{self.conn.id}-{self.index}"

    async def send(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        try:
            await self.conn.write(data)
        except (ConnectionError, OSError) as exc:
            raise DownstreamGone(type(exc).__name__) from None


def identity_headers(identity: PeerIdentity, prefix: str, include_cert: bool) -> Headers:
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


def _upstream_head(ctx: RequestContext, action: ForwardAction, match_prefix: str | None) -> RequestHead:
    head = ctx.head
    # Identity headers are only ever set by the gateway: strip any the client sent.
    prefix = ctx.config.identity_headers.prefix.lower()
    clean = tuple(
        (k, v) for k, v in head.headers if not k.startswith(_IDENTITY_PREFIXES) and not k.startswith(prefix)
    )
    head = RequestHead(head.method, head.authority, head.path, clean, head.content_length)
    path = head.path
    if action.prefix_rewrite is not None and match_prefix is not None and path.startswith(match_prefix):
        path = action.prefix_rewrite + path[len(match_prefix) :]
    identity = ctx.conn.identity
    add: list[tuple[str, str]] = [(h.name.lower(), h.value) for h in action.request_headers_to_add]
    xff = head.header("x-forwarded-for")
    add.append(("x-forwarded-for", f"{xff}, {identity.remote_address}" if xff else identity.remote_address))
    add.append(("x-forwarded-proto", "https" if identity.secure else "http"))
    add.append(("x-request-id", ctx.request_id))
    if action.identity_headers or ctx.config.identity_headers.enabled:
        add += identity_headers(
            identity, ctx.config.identity_headers.prefix, ctx.config.identity_headers.include_cert
        )
    return head.with_changes(
        authority=action.host_rewrite, path=path, add=tuple(add), remove=action.request_headers_to_remove
    )


async def handle_request(ctx: RequestContext) -> None:
    """Serve one request end to end; writes exactly one response (or aborts the connection)."""
    started = time.monotonic()
    gen = ctx.conn.generation
    try:
        await _dispatch(ctx)
    except BodyTooLarge:
        await _local_reply(ctx, 413, b"request body too large\n")
    except BodyRefused as exc:
        await _local_reply(ctx, exc.status, f"{exc}\n".encode())
    except UpstreamFailure as exc:
        if ctx.response_started:
            ctx.conn.stream.abort()
            ctx.conn.closing = True
        else:
            await _local_reply(ctx, exc.status, f"{exc}\n".encode())
    except (DownstreamGone, ConnectionError, OSError):
        ctx.conn.closing = True
        ctx.conn.close_reason = "downstream_gone_mid_response"
    finally:
        ctx.body.discard()
        gen.stats.requests.labels(ctx.route_name, str(ctx.status or 0)).inc()
        gen.stats.request_seconds.labels(ctx.route_name).observe(time.monotonic() - started)
        events.http_request(
            gen.audit,
            ctx.conn.id,
            ctx.request_id,
            method=ctx.head.method,
            host=ctx.head.authority or None,
            path=ctx.head.path,
            status=ctx.status or (502 if ctx.cluster_name else 499),
            bytes_received=ctx.body.received,
            bytes_sent=ctx.bytes_sent,
            duration_ms=round((time.monotonic() - started) * 1000, 3),
            route=ctx.route_name,
            cluster=ctx.cluster_name,
            upstream=ctx.endpoint,
            attempts=ctx.attempts,
            codec=ctx.codec_factory.protocol,
        )


async def _local_reply(
    ctx: RequestContext, status: int, body: bytes, content_type: str = "text/plain", headers: Headers = ()
) -> None:
    if ctx.response_started:
        ctx.conn.stream.abort()
        ctx.conn.closing = True
        return
    ctx.status = status
    ctx.response_started = True
    if ctx.conn.draining.is_set():
        ctx.codec.request_close()
    await ctx.send(ctx.codec.local_reply(status, body, content_type, headers))


def _decision(
    ctx: RequestContext,
    route: Route | None,
    *,
    allow: bool,
    reason: str,
    cluster: str | None = None,
    upstream: str | None = None,
) -> None:
    """One ``route.decision`` record: which route, cluster and endpoint a request went to, or why not."""
    events.route_decision(
        ctx.conn.generation.audit,
        ctx.conn.id,
        route=route.name if route is not None else None,
        cluster=cluster,
        upstream=upstream,
        allow=allow,
        reason=reason,
        request_id=ctx.request_id,
        method=ctx.head.method,
        path=ctx.head.path,
        attempt=ctx.attempts,
        codec=ctx.codec_factory.protocol,
    )


async def _dispatch(ctx: RequestContext) -> None:
    route = ctx.routes.match(ctx.head)
    if route is None:
        _decision(ctx, None, allow=False, reason="no_route")
        await _local_reply(ctx, 404, b"no route\n")
        return
    ctx.route_name = route.name
    if not is_allowed(route.access, ctx.conn.identity):
        ctx.conn.generation.stats.access_denied.labels(route.name).inc()
        cluster = route.route.cluster if route.route else None
        _decision(ctx, route, allow=False, reason="access_control", cluster=cluster)
        await _local_reply(ctx, 403, b"access denied\n")
        return
    if route.direct_response is not None:
        dr = route.direct_response
        _decision(ctx, route, allow=True, reason="direct_response")
        await _local_reply(ctx, dr.status, dr.body.encode(), dr.content_type)
        return
    if route.redirect is not None:
        _decision(ctx, route, allow=True, reason="redirect")
        await _local_reply(
            ctx, route.redirect.response_code, b"", headers=(("location", _location(ctx, route)),)
        )
        return
    cl = ctx.head.content_length
    if cl is not None and cl > ctx.config.max_request_body_bytes:
        await _local_reply(ctx, 413, b"request body too large\n")
        return
    assert route.route is not None
    await _forward(ctx, route, route.route)


def _location(ctx: RequestContext, route: Route) -> str:
    rd = route.redirect
    assert rd is not None
    scheme = rd.scheme_redirect or ("https" if ctx.conn.identity.secure else "http")
    host = rd.host_redirect or ctx.head.authority
    path = rd.path_redirect or ctx.head.path
    return f"{scheme}://{host}{path}"


def _hash_key(ctx: RequestContext, cluster: Cluster) -> str | None:
    hp = cluster.config.hash_policy
    if hp is None:
        return None
    if hp.client_cert_fingerprint:
        peer = ctx.conn.identity.peer
        return peer.fingerprint_sha256 if peer else ctx.conn.identity.remote_address
    assert hp.header is not None
    return ctx.head.header(hp.header)


async def _forward(ctx: RequestContext, route: Route, action: ForwardAction) -> None:
    gen = ctx.conn.generation
    cluster = gen.clusters[action.cluster]
    ctx.cluster_name = cluster.name
    policy = action.retry_policy
    max_attempts = 1 + (policy.num_retries if policy else 0)
    bodyless = ctx.head.content_length == 0
    tried: set[int] = set()
    hash_key = _hash_key(ctx, cluster)
    stale_retry_used = False
    try:
        async with asyncio.timeout(action.timeout):
            while True:
                ctx.attempts += 1
                retry = ctx.attempts > 1
                try:
                    cluster.begin_request(retry=retry)
                except ClusterOverflow as exc:
                    _decision(ctx, route, allow=True, reason="overflow", cluster=cluster.name)
                    events.upstream_fail(gen.audit, ctx.conn.id, cluster.name, None, f"overflow: {exc}")
                    raise UpstreamFailure(503, str(exc), "overflow") from None
                try:
                    await _attempt(ctx, route, action, cluster, hash_key, tried)
                    return
                except UpstreamFailure as exc:
                    if ctx.response_started:
                        raise
                    stale = exc.retry_class == "stale-connection"
                    if stale and bodyless and not stale_retry_used:
                        stale_retry_used = True
                        ctx.attempts -= 1
                        continue
                    retry_class = "reset" if stale else exc.retry_class
                    body_safe = retry_class == "connect-failure" or bodyless
                    can_retry = (
                        policy is not None
                        and ctx.attempts < max_attempts
                        and retry_class in policy.retry_on
                        and body_safe
                        and (ctx.head.method.upper() in IDEMPOTENT or retry_class == "connect-failure")
                        and cluster.retry_allowed(policy.budget_percent, policy.min_retry_concurrency)
                    )
                    if not can_retry:
                        raise
                    gen.stats.upstream_retries.labels(cluster.name).inc()
                finally:
                    cluster.end_request(retry=retry)
    except TimeoutError:
        events.upstream_fail(gen.audit, ctx.conn.id, cluster.name, ctx.endpoint, "request_timeout")
        raise UpstreamFailure(504, "upstream request timeout", "504") from None


async def _attempt(
    ctx: RequestContext,
    route: Route,
    action: ForwardAction,
    cluster: Cluster,
    hash_key: str | None,
    tried: set[int],
) -> None:
    gen = ctx.conn.generation
    try:
        host = cluster.choose_host(hash_key, frozenset(tried))
    except NoHealthyUpstream as exc:
        _decision(ctx, route, allow=True, reason="no_healthy_upstream", cluster=cluster.name)
        events.upstream_fail(gen.audit, ctx.conn.id, cluster.name, None, f"no_healthy_upstream: {exc}")
        raise UpstreamFailure(503, str(exc), "connect-failure") from None
    ctx.endpoint = host.name
    _decision(ctx, route, allow=True, reason="forward", cluster=cluster.name, upstream=host.name)
    try:
        upstream = await cluster.acquire(host, ctx.codec_factory.protocol, ctx.codec_factory.client_codec)
    except UpstreamConnectError as exc:
        tried.add(id(host))
        cluster.report(host, False)
        gen.stats.upstream_requests.labels(cluster.name, "connect_failure").inc()
        events.upstream_fail(gen.audit, ctx.conn.id, cluster.name, host.name, f"connect_failure: {exc}")
        raise UpstreamFailure(503, f"upstream connect error: {exc}", "connect-failure") from None
    except ClusterOverflow as exc:
        events.upstream_fail(gen.audit, ctx.conn.id, cluster.name, host.name, f"overflow: {exc}")
        raise UpstreamFailure(503, str(exc), "overflow") from None
    host.active_requests += 1
    reusable = False
    try:
        reusable = await _exchange(ctx, route, action, cluster, upstream)
    finally:
        host.active_requests -= 1
        await cluster.release(upstream, reusable)


async def _exchange(
    ctx: RequestContext, route: Route, action: ForwardAction, cluster: Cluster, upstream: UpstreamConnection
) -> bool:
    """Send the request and relay the response; returns whether the upstream connection is reusable."""
    gen = ctx.conn.generation
    codec = upstream.codec
    assert codec is not None
    head = _upstream_head(ctx, action, route.match.prefix)
    match_status: set[str] = set()
    if action.retry_policy is not None:
        match_status = {s for s in action.retry_policy.retry_on if s.isdigit()}
    got_bytes = False
    try:
        # Small messages leave in one write per direction: each write is a send() syscall.
        request_head = codec.encode_request_head(head)
        if ctx.head.content_length != 0:
            upstream.stream.write(request_head)
            await ctx.send(ctx.codec.encode_continue())
            async for chunk in ctx.body.chunks():
                upstream.stream.write(codec.encode_body(chunk))
                await upstream.stream.drain()
            upstream.stream.write(codec.encode_end())
        else:
            upstream.stream.write(request_head + codec.encode_end())
        await upstream.stream.drain()
        response: ResponseHead | None = None
        pending = bytearray()
        per_try = action.retry_policy.per_try_timeout if action.retry_policy else None
        head_deadline = asyncio.get_running_loop().time() + per_try if per_try else None
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                if pending:
                    await ctx.send(bytes(pending))
                    pending.clear()
                try:
                    async with asyncio.timeout_at(head_deadline if response is None else None):
                        data = await upstream.stream.read(65536)
                except TimeoutError:
                    cluster.report(upstream.host, False)
                    events.upstream_fail(
                        gen.audit, ctx.conn.id, cluster.name, upstream.host.name, "per_try_timeout"
                    )
                    raise UpstreamFailure(504, "upstream per-try timeout", "504") from None
                if data:
                    got_bytes = True
                    gen.stats.bytes.labels(ctx.conn.listener, "upstream_rx").inc(len(data))
                codec.receive_data(data)
                continue
            if event is PAUSED:
                raise CodecProtocolError("upstream pipelined a second response", 502)
            if isinstance(event, ResponseHead):
                response = event
                if (
                    str(event.status) in match_status
                    and ctx.attempts <= (action.retry_policy.num_retries if action.retry_policy else 0)
                    and ctx.head.content_length == 0
                ):
                    cluster.report(upstream.host, False)
                    raise UpstreamFailure(
                        event.status, f"upstream answered {event.status}", str(event.status)
                    )
                cluster.report(upstream.host, event.status < 500)
                headers = event.headers + tuple(
                    (h.name.lower(), h.value) for h in action.response_headers_to_add
                )
                ctx.status = event.status
                ctx.response_started = True
                if ctx.conn.draining.is_set():
                    ctx.codec.request_close()
                pending += ctx.codec.encode_response_head(ResponseHead(event.status, headers, event.reason))
            elif isinstance(event, Body):
                pending += ctx.codec.encode_body(event.data)
                if len(pending) >= 65536:
                    await ctx.send(bytes(pending))
                    pending.clear()
            elif isinstance(event, EndOfStream):
                assert response is not None
                await ctx.send(bytes(pending + ctx.codec.encode_end()))
                gen.stats.upstream_requests.labels(cluster.name, f"{response.status // 100}xx").inc()
                return codec.reusable()
    except CodecProtocolError as exc:
        cluster.report(upstream.host, False)
        gen.stats.upstream_requests.labels(cluster.name, "protocol_error").inc()
        events.upstream_fail(
            gen.audit, ctx.conn.id, cluster.name, upstream.host.name, f"protocol_error: {exc}"
        )
        if upstream.reused and not got_bytes and not ctx.response_started:
            raise UpstreamFailure(502, "upstream protocol error", "stale-connection") from None
        raise UpstreamFailure(502, "upstream protocol error", "reset") from None
    except (ConnectionError, OSError) as exc:
        if ctx.body.aborted:
            raise
        cluster.report(upstream.host, False)
        gen.stats.upstream_requests.labels(cluster.name, "reset").inc()
        if upstream.reused and not got_bytes and not ctx.response_started:
            raise UpstreamFailure(502, "upstream reset", "stale-connection") from None
        events.upstream_fail(
            gen.audit, ctx.conn.id, cluster.name, upstream.host.name, f"reset: {type(exc).__name__}"
        )
        raise UpstreamFailure(502, f"upstream reset: {type(exc).__name__}", "reset") from None

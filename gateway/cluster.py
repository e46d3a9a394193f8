"""Clusters of endpoints: the cluster owns its hosts and everything about reaching them.

A :class:`Cluster` owns one :class:`Host` per configured endpoint (a DNS name is resolved at connect
time), its transport's :class:`~gateway.transports.base.Connector` and, per host, the pool of idle
keep-alive connections. It chooses hosts (round robin, least request, ring hash), connects (trying the
hosts in turn when a filter asks for any host), counts active requests and connections (circuit
breaking), and records outcomes: passive outlier detection ejects a host after ``consecutive_errors``
failures for ``base_ejection_time * times ejected``, each failure is counted and audited here. Active
health checking lives in :mod:`gateway.health` and flips :attr:`Host.healthy` through :meth:`set_health`.
Filters receive their cluster when their chain is built and never touch a host's counters.

With ``proxy_protocol`` set, every new connection starts with a PROXY header naming its downstream
client (:meth:`Cluster.proxy_header`); such a connection belongs to that client, so the pool hands it
back only to a request carrying the same header (Envoy keys its pools the same way).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import audit_events as events
from gateway.auditing import AuditHandle
from gateway.config import ClusterConfig, Endpoint
from gateway.proxy_protocol import encode_v1, encode_v2
from gateway.stats import GatewayStats
from gateway.stream import TransportStream
from gateway.transports import build_connector
from gateway.transports.base import Connector, UpstreamConnectError

if TYPE_CHECKING:
    from gateway.connection import Connection
    from gateway.proxy import DownstreamConnection


class ClusterOverflow(Exception):
    """A circuit breaker refused the request (Envoy's ``upstream_rq_pending_overflow``)."""


class NoHealthyUpstream(Exception):
    pass


@dataclass(eq=False)
class UpstreamConnection:
    """An open connection to one host; protocol-specific subclasses keep their codec state here."""

    host: Host
    stream: TransportStream
    protocol: str = "tcp"
    idle_since: float = 0.0
    reused: bool = False
    #: The PROXY header it was opened with: only a request with the same header may reuse it.
    proxy_header: bytes = b""

    def reset_for_reuse(self) -> None:
        """Called when the connection goes back to the pool (an HTTP codec starts its next cycle)."""

    def can_take_stream(self) -> bool:
        """Multiplexed protocols (HTTP/2): whether another request may start on this connection now."""
        return False


#: Builds the protocol's connection object around a freshly connected stream.
ConnectionFactory = Callable[["Host", TransportStream], UpstreamConnection]


@dataclass(eq=False)
class Host:
    endpoint: Endpoint
    #: ``address:port``, as metrics and audit records name the endpoint.
    name: str = ""
    healthy: bool = True
    ejected_until: float = 0.0
    times_ejected: int = 0
    consecutive_errors: int = 0
    active_requests: int = 0
    open_connections: int = 0
    idle: list[UpstreamConnection] = field(default_factory=list)
    #: Multiplexed connections (HTTP/2), shared by concurrent requests rather than pooled while idle.
    shared: list[UpstreamConnection] = field(default_factory=list)
    #: The multiplexed connection being opened, awaited by every request that found none with room.
    connecting: asyncio.Task[UpstreamConnection] | None = None

    def __post_init__(self) -> None:
        self.name = f"{self.endpoint.address}:{self.endpoint.port}"

    def available(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now


class Cluster:
    def __init__(
        self,
        config: ClusterConfig,
        stats: GatewayStats,
        audit: AuditHandle,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = config.name
        self.stats = stats
        self.audit = audit
        self.clock = clock
        self.hosts = [Host(e) for e in config.endpoints]
        #: Whether requests reach the hosts over HTTP/2 (``http2_protocol_options`` set).
        self.http2 = config.http2_protocol_options is not None
        self.connector: Connector = build_connector(
            config.transport_socket, alpn=("h2",) if self.http2 else ("http/1.1",)
        )
        self._rr = itertools.count()
        self._weighted = [h for h in self.hosts for _ in range(h.endpoint.weight)]
        self._ring = self._build_ring() if config.lb_policy == "ring_hash" else []
        self._ring_keys = [k for k, _ in self._ring]
        self.active_requests = 0
        self.active_retries = 0
        self.pending = 0
        self._released = asyncio.Event()
        self.closed = False
        #: ``smgate_upstream_requests`` labels by status class (``response_labels[2]``: ``2xx``).
        self.response_labels = tuple((self.name, f"{i}xx") for i in range(10))
        for host in self.hosts:
            self._publish(host)

    # -- load balancing -------------------------------------------------------------------------

    def _build_ring(self) -> list[tuple[int, Host]]:
        ring = [
            (int.from_bytes(hashlib.sha256(f"{h.name}#{i}".encode()).digest()[:8], "big"), h)
            for h in self.hosts
            for i in range(64 * h.endpoint.weight)
        ]
        ring.sort(key=lambda entry: entry[0])
        return ring

    def choose_host(self, hash_key: str | None = None, exclude: frozenset[int] = frozenset()) -> Host:
        """Pick an available host; ``exclude`` holds ``id()`` of hosts already tried by this request."""
        now = self.clock()
        if not exclude and self.config.lb_policy == "round_robin":
            # The common case first: the next host in turn, if it may be used.
            weighted = self._weighted
            host = weighted[next(self._rr) % len(weighted)]
            if host.healthy and host.ejected_until <= now:
                return host
        candidates = [h for h in self.hosts if h.available(now) and id(h) not in exclude]
        if not candidates:
            # Envoy's panic mode: with nothing healthy, spread over every not-yet-tried host.
            candidates = [h for h in self.hosts if id(h) not in exclude and h.ejected_until <= now]
        if not candidates:
            raise NoHealthyUpstream(f"no healthy upstream in cluster {self.name}")
        policy = self.config.lb_policy
        if policy == "least_request":
            fewest = min(h.active_requests for h in candidates)
            return random.choice([h for h in candidates if h.active_requests == fewest])
        if policy == "ring_hash" and hash_key is not None and self._ring:
            point = int.from_bytes(hashlib.sha256(hash_key.encode()).digest()[:8], "big")
            start = bisect.bisect_left(self._ring_keys, point)
            allowed = {id(h) for h in candidates}
            for offset in range(len(self._ring)):
                host = self._ring[(start + offset) % len(self._ring)][1]
                if id(host) in allowed:
                    return host
        if len(candidates) == len(self.hosts):
            weighted = self._weighted
        else:
            weighted = [h for h in self._weighted if h in candidates] or candidates
        return weighted[next(self._rr) % len(weighted)]

    # -- circuit breaking -----------------------------------------------------------------------

    def begin_request(self, retry: bool = False) -> None:
        cb = self.config.circuit_breakers
        if self.active_requests >= cb.max_requests:
            self.stats.circuit_open.inc((self.name,))
            raise ClusterOverflow(f"cluster {self.name}: max_requests reached")
        self.active_requests += 1
        if retry:
            self.active_retries += 1

    def end_request(self, retry: bool = False) -> None:
        self.active_requests -= 1
        if retry:
            self.active_retries -= 1

    def retry_allowed(self, budget_percent: float, min_concurrency: int) -> bool:
        limit = max(min_concurrency, int(self.active_requests * budget_percent / 100))
        return self.active_retries < limit

    @property
    def open_connections(self) -> int:
        return sum(h.open_connections for h in self.hosts)

    # -- connections ----------------------------------------------------------------------------

    def proxy_header(self, downstream: Connection | DownstreamConnection | None) -> bytes:
        """The PROXY header for connections opened on behalf of ``downstream``: its client (as a
        PROXY-protocol listener rewrote it) and the local address it reached; for the gateway's own
        connections (``None``: health checks) one without addresses (v1 UNKNOWN, v2 LOCAL). Empty when
        the cluster has no ``proxy_protocol``."""
        if self.config.proxy_protocol is None:
            return b""
        source = destination = None
        if downstream is not None:
            identity = downstream.identity
            if identity.remote_address:
                source = (identity.remote_address, identity.remote_port)
            sockname = downstream.stream.get_extra_info("sockname")
            destination = (sockname[0], sockname[1]) if isinstance(sockname, tuple) else None
        encode = encode_v1 if self.config.proxy_protocol.version == 1 else encode_v2
        return encode(source, destination)

    def idle_connection(
        self, host: Host, protocol: str, proxy_header: bytes = b""
    ) -> UpstreamConnection | None:
        """A pooled keep-alive connection for ``protocol`` that is still open, now in use (no await).
        With a ``proxy_header``, only one opened with that header; other clients' stay pooled."""
        if proxy_header:
            return self._idle_connection_for(host, protocol, proxy_header)
        now = self.clock()
        idle = host.idle
        while idle:
            conn = idle.pop()
            if (
                conn.protocol == protocol
                and not conn.stream.is_closing()
                and now - conn.idle_since < self.config.idle_connection_timeout
            ):
                conn.reused = True
                host.active_requests += 1
                return conn
            self._discard(conn)
        return None

    def _idle_connection_for(
        self, host: Host, protocol: str, proxy_header: bytes
    ) -> UpstreamConnection | None:
        """:meth:`idle_connection` for one downstream client; closed or expired connections of any
        client are discarded on the way."""
        now = self.clock()
        timeout = self.config.idle_connection_timeout
        found: UpstreamConnection | None = None
        keep: list[UpstreamConnection] = []
        for conn in reversed(host.idle):
            if conn.stream.is_closing() or now - conn.idle_since >= timeout:
                self._discard(conn)
            elif found is None and conn.proxy_header == proxy_header and conn.protocol == protocol:
                found = conn
            else:
                keep.append(conn)
        keep.reverse()
        host.idle = keep
        if found is not None:
            found.reused = True
            host.active_requests += 1
        return found

    async def acquire(
        self,
        host: Host,
        protocol: str,
        factory: ConnectionFactory | None = None,
        timeout: float | None = None,
        proxy_header: bytes = b"",
    ) -> UpstreamConnection:
        """A pooled idle connection for ``protocol`` if one is alive, else a new one (circuit-broken);
        a new one starts with ``proxy_header`` (see :meth:`proxy_header`)."""
        pooled = self.idle_connection(host, protocol, proxy_header)
        if pooled is not None:
            return pooled
        await self._wait_for_connection_slot(timeout)
        host.open_connections += 1
        try:
            stream = await self.connector.connect(
                host.endpoint.address, host.endpoint.port, self.config.connect_timeout, preamble=proxy_header
            )
        except UpstreamConnectError:
            host.open_connections -= 1
            self._released.set()
            self.stats.upstream_connections.inc((self.name, "failure"))
            raise
        self.stats.upstream_connections.inc((self.name, "success"))
        dialect = getattr(stream, "dialect", None)
        if dialect is not None:
            self.stats.upstream_tlcp_dialects.inc((self.name, dialect.dialect.value, dialect.source.value))
        host.active_requests += 1
        conn = UpstreamConnection(host, stream, protocol) if factory is None else factory(host, stream)
        conn.proxy_header = proxy_header
        return conn

    # -- multiplexed connections (HTTP/2) ---------------------------------------------------------

    def shared_connection(self, host: Host) -> UpstreamConnection | None:
        """An open multiplexed connection to ``host`` with room for another stream (now counted)."""
        for conn in host.shared:
            if conn.can_take_stream():
                conn.reused = True
                host.active_requests += 1
                return conn
        return None

    def connect_shared(self, host: Host, factory: ConnectionFactory) -> asyncio.Task[UpstreamConnection]:
        """A task opening a multiplexed connection to ``host``; requests arriving while it connects
        share it instead of each opening their own."""
        task = host.connecting
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._open_shared(host, factory))
            host.connecting = task
        return task

    async def _open_shared(self, host: Host, factory: ConnectionFactory) -> UpstreamConnection:
        conn = await self.acquire(host, "h2", factory)
        host.active_requests -= 1  # each stream counts itself (take_stream)
        host.shared.append(conn)
        return conn

    def take_stream(self, host: Host) -> None:
        host.active_requests += 1

    def stream_released(self, host: Host) -> None:
        host.active_requests -= 1

    def retire(self, conn: UpstreamConnection) -> None:
        """A multiplexed connection takes no new streams (GOAWAY, protocol error, closing); the streams
        it carries may still finish."""
        shared = conn.host.shared
        if conn in shared:
            shared.remove(conn)

    def shared_closed(self, conn: UpstreamConnection) -> None:
        """A multiplexed connection is closed: its slot is free (called once per connection)."""
        self.retire(conn)
        conn.host.open_connections -= 1
        self._released.set()

    async def _wait_for_connection_slot(self, timeout: float | None) -> None:
        cb = self.config.circuit_breakers
        if self.open_connections < cb.max_connections:
            return
        if self.pending >= cb.max_pending_requests:
            self.stats.circuit_open.inc((self.name,))
            raise ClusterOverflow(f"cluster {self.name}: max_pending_requests reached")
        self.pending += 1
        try:
            async with asyncio.timeout(timeout or self.config.connect_timeout):
                while self.open_connections >= cb.max_connections:
                    self._released.clear()
                    await self._released.wait()
        except TimeoutError:
            self.stats.circuit_open.inc((self.name,))
            raise ClusterOverflow(f"cluster {self.name}: max_connections reached") from None
        finally:
            self.pending -= 1

    async def connect_any(
        self, hash_key: str | None, conn_id: int, proxy_header: bytes = b""
    ) -> UpstreamConnection | None:
        """A raw connection to any host: each host tried at most once, in balancing order; every
        failure reported and audited. ``None`` when none connected."""
        tried: set[int] = set()
        for _ in range(len(self.hosts)):
            try:
                host = self.choose_host(hash_key, frozenset(tried))
            except NoHealthyUpstream as exc:
                events.upstream_fail(self.audit, conn_id, self.name, None, str(exc))
                return None
            try:
                upstream = await self.acquire(host, "tcp", proxy_header=proxy_header)
            except UpstreamConnectError as exc:
                tried.add(id(host))
                self.fail(host, conn_id, f"connect_failure: {exc}")
                continue
            except ClusterOverflow as exc:
                events.upstream_fail(self.audit, conn_id, self.name, None, str(exc))
                return None
            self.report(host, True)
            return upstream
        return None

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """The request is over: the connection goes back to the pool (if reusable and room) or closes."""
        host = conn.host
        host.active_requests -= 1
        if (
            reusable
            and not self.closed
            and not conn.stream.is_closing()
            and len(host.idle) < self.config.max_idle_connections
        ):
            conn.reset_for_reuse()
            conn.idle_since = self.clock()
            host.idle.append(conn)
            return
        self._discard(conn)

    def _discard(self, conn: UpstreamConnection) -> None:
        conn.host.open_connections -= 1
        self._released.set()
        conn.stream.close()

    # -- outcomes -------------------------------------------------------------------------------

    def fail(self, host: Host, conn_id: int | str, reason: str) -> None:
        """A request or connection to ``host`` failed: outlier detection and the audit record."""
        self.report(host, False)
        events.upstream_fail(self.audit, conn_id, self.name, host.name, reason)

    def report(self, host: Host, success: bool) -> None:
        """Passive health: count consecutive connect failures / 5xx, eject past the threshold."""
        if success:
            host.consecutive_errors = 0
            return
        od = self.config.outlier_detection
        host.consecutive_errors += 1
        if od is None or host.consecutive_errors < od.consecutive_errors:
            return
        now = self.clock()
        ejected = sum(1 for h in self.hosts if h.ejected_until > now)
        if ejected + 1 > max(1, int(len(self.hosts) * od.max_ejection_percent / 100)):
            return
        host.times_ejected += 1
        host.consecutive_errors = 0
        host.ejected_until = now + od.base_ejection_time * host.times_ejected
        events.upstream_fail(
            self.audit,
            "outlier_detection",
            self.name,
            host.name,
            f"ejected for {od.base_ejection_time * host.times_ejected:g}s after "
            f"{od.consecutive_errors} consecutive errors",
        )
        self._publish(host)

    def set_health(self, host: Host, healthy: bool) -> None:
        if host.healthy != healthy:
            host.healthy = healthy
            if not healthy:
                events.upstream_fail(self.audit, "health_check", self.name, host.name, "health check failed")
        self._publish(host)

    def _publish(self, host: Host) -> None:
        self.stats.upstream_healthy.set((self.name, host.name), 1.0 if host.available(self.clock()) else 0.0)

    def describe(self) -> dict[str, object]:
        now = self.clock()
        return {
            "name": self.name,
            "lb_policy": self.config.lb_policy,
            "transport": self.connector.kind,
            "active_requests": self.active_requests,
            "endpoints": [
                {
                    "endpoint": h.name,
                    "healthy": h.healthy,
                    "ejected": h.ejected_until > now,
                    "active_requests": h.active_requests,
                    "open_connections": h.open_connections,
                    "idle_connections": len(h.idle),
                }
                for h in self.hosts
            ],
        }

    async def close(self) -> None:
        for host in self.hosts:
            for conn in list(host.shared):
                self.retire(conn)
                conn.stream.close()
        self.closed = True
        for host in self.hosts:
            idle, host.idle = host.idle, []
            for conn in idle:
                self._discard(conn)


class ClusterManager:
    """All clusters of one config generation; a reload keeps clusters whose config did not change."""

    def __init__(self, stats: GatewayStats, audit: AuditHandle) -> None:
        self.stats = stats
        self.audit = audit
        self.clusters: dict[str, Cluster] = {}

    def build(
        self, configs: tuple[ClusterConfig, ...], changed_files: frozenset[Path] = frozenset()
    ) -> tuple[dict[str, Cluster], list[Cluster]]:
        """New cluster map for ``configs`` and the clusters it retires. A cluster is reused when its
        config is unchanged and none of its transport's certificate/key files changed on disk."""
        new: dict[str, Cluster] = {}
        for cfg in configs:
            old = self.clusters.get(cfg.name)
            files = {v for k, v in cfg.transport_socket if isinstance(v, Path)}
            reuse = old is not None and old.config == cfg and not (files & changed_files)
            new[cfg.name] = old if reuse and old is not None else Cluster(cfg, self.stats, self.audit)
        retired = [c for name, c in self.clusters.items() if new.get(name) is not c]
        return new, retired

    def get(self, name: str) -> Cluster:
        return self.clusters[name]

"""TCP proxy (terminal): bytes both ways to a cluster endpoint with backpressure, half-close, idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from gateway import audit_events as events
from gateway.cluster import Cluster, UpstreamConnection
from gateway.config import TcpProxyFilter
from gateway.filters.base import FilterStatus, NetworkFilter

if TYPE_CHECKING:
    from gateway.connection import Connection


class TcpProxy(NetworkFilter):
    def __init__(self, config: TcpProxyFilter, cluster: Cluster) -> None:
        self.config = config
        self.cluster = cluster
        self.upstream: UpstreamConnection | None = None
        self._pump: asyncio.Task[None] | None = None

    async def on_new_connection(self, conn: Connection) -> FilterStatus:
        peer = conn.identity.peer
        self.upstream = await self.cluster.connect_any(peer.fingerprint_sha256 if peer else None, conn.id)
        events.route_decision(
            conn.generation.audit,
            conn.id,
            route=f"filter_chain:{conn.filter_chain}",
            cluster=self.cluster.name,
            upstream=self.upstream.host.name if self.upstream else None,
            allow=True,
            reason="tcp_proxy" if self.upstream else "no_upstream",
        )
        if self.upstream is None:
            conn.close_reason = "no_upstream"
            return FilterStatus.STOP_ITERATION
        self._pump = asyncio.create_task(self._upstream_to_downstream(conn))
        return FilterStatus.CONTINUE

    async def _upstream_to_downstream(self, conn: Connection) -> None:
        assert self.upstream is not None
        stream = self.upstream.stream
        stats = conn.generation.stats.bytes
        label = (conn.listener, "upstream_rx")
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                stats.inc(label, len(data))
                await conn.write(data)
        except (OSError, ConnectionError):
            pass
        finally:
            if conn.stream.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    conn.stream.write_eof()
            else:
                conn.close()

    async def on_data(self, conn: Connection, data: bytes, end_stream: bool) -> FilterStatus:
        if self.upstream is None:
            return FilterStatus.STOP_ITERATION
        stream = self.upstream.stream
        try:
            if data:
                stream.write(data)
                conn.generation.stats.bytes.inc((conn.listener, "upstream_tx"), len(data))
                await stream.drain()
            if end_stream and stream.can_write_eof():
                stream.write_eof()
        except (OSError, ConnectionError, RuntimeError):
            conn.close()
        return FilterStatus.STOP_ITERATION

    def read_timeout(self) -> float | None:
        return self.config.idle_timeout

    async def on_idle(self, conn: Connection) -> bool:
        return time.monotonic() - conn.last_activity < self.config.idle_timeout

    async def on_close(self, conn: Connection) -> None:
        if self._pump is not None:
            # The downstream half is done; the upstream half runs until EOF or the idle timeout.
            while not self._pump.done():
                idle = time.monotonic() - conn.last_activity
                if idle >= self.config.idle_timeout:
                    break
                await asyncio.wait({self._pump}, timeout=self.config.idle_timeout - idle)
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.upstream is not None:
            self.cluster.release(self.upstream, reusable=False)

"""TCP proxy (terminal): bytes both ways to a cluster endpoint, with flow control, half-close and an
idle timeout.

Both directions are callbacks: downstream bytes arrive in :meth:`TcpProxy.on_data` and go to the
upstream stream; upstream bytes arrive in :class:`_UpstreamSide` and go to the connection. A side whose
write buffer fills stops the other side's reading until it drains. EOF is forwarded as a half-close
where the transport has one (TCP FIN, TLCP close_notify) and closes the connection where it has not
(TLS); the connection ends when both directions have ended, or after ``idle_timeout`` without bytes.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from gateway import audit_events as events
from gateway.cluster import Cluster, UpstreamConnection
from gateway.config import TcpProxyFilter
from gateway.filters.base import FilterStatus, NetworkFilter
from gateway.timers import Deadline

if TYPE_CHECKING:
    from gateway.connection import Connection


class _UpstreamSide:
    """The upstream stream's receiver: relays to the downstream connection."""

    def __init__(self, proxy: TcpProxy, conn: Connection) -> None:
        self.proxy = proxy
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.upstream_rx += len(data)
        conn.touch()
        try:
            conn.write(data)
        except (OSError, ConnectionError):
            self.proxy.close()

    def eof_received(self) -> None:
        self.proxy.upstream_ended()

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.upstream_ended()

    def pause_writing(self) -> None:
        self.conn.pause_reading()

    def resume_writing(self) -> None:
        self.conn.resume_reading()


class TcpProxy(NetworkFilter):
    def __init__(self, config: TcpProxyFilter, cluster: Cluster) -> None:
        self.config = config
        self.cluster = cluster
        self.upstream: UpstreamConnection | None = None
        self.conn: Connection | None = None
        self._downstream_ended = False
        self._upstream_ended = False
        self._idle: Deadline | None = None

    async def on_new_connection(self, conn: Connection) -> FilterStatus:
        self.conn = conn
        peer = conn.identity.peer
        hash_key = peer.fingerprint_sha256 if peer else None
        self.upstream = await self.cluster.connect_any(hash_key, conn.id, self.cluster.proxy_header(conn))
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
        self._idle = Deadline(self._on_idle)
        self._idle.after(self.config.idle_timeout)
        self.upstream.stream.attach(_UpstreamSide(self, conn))
        return FilterStatus.CONTINUE

    def on_data(self, conn: Connection, data: bytes, end_stream: bool) -> FilterStatus:
        upstream = self.upstream
        if upstream is None:
            return FilterStatus.STOP_ITERATION
        stream = upstream.stream
        try:
            if data:
                conn.touch()
                stream.write(data)
                conn.upstream_tx += len(data)
        except (OSError, ConnectionError):
            self.close()
            return FilterStatus.STOP_ITERATION
        if end_stream:
            self._downstream_ended = True
            if self._upstream_ended:
                self.close()
            elif stream.can_write_eof():
                with contextlib.suppress(OSError, ConnectionError):
                    stream.write_eof()
            else:
                stream.close()
        return FilterStatus.STOP_ITERATION

    def on_write_ready(self, conn: Connection, ready: bool) -> None:
        if self.upstream is not None:
            if ready:
                self.upstream.stream.resume_reading()
            else:
                self.upstream.stream.pause_reading()

    def upstream_ended(self) -> None:
        if self._upstream_ended:
            return
        self._upstream_ended = True
        conn = self.conn
        assert conn is not None
        if self._downstream_ended or not conn.stream.can_write_eof():
            self.close()
        else:
            with contextlib.suppress(OSError, ConnectionError):
                conn.stream.write_eof()

    def _on_idle(self) -> None:
        conn = self.conn
        assert conn is not None and self._idle is not None
        left = self.config.idle_timeout - (time.monotonic() - conn.last_activity)
        if left > 0:
            self._idle.after(left)
            return
        conn.close_reason = "idle_timeout"
        self.close()

    def close(self) -> None:
        if self.conn is not None and not self.conn.closing:
            self.conn.close()
        if self.upstream is not None:
            self.upstream.stream.close()

    async def on_close(self, conn: Connection) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self.upstream is not None:
            self.cluster.release(self.upstream, reusable=False)
            self.upstream = None

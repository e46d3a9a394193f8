"""HTTP/1.1 Upgrade (WebSocket) through the gateway: after the upstream's ``101 Switching Protocols``, the
downstream and upstream connections become one bidirectional byte stream (Envoy's upgrade support).

The request is routed like any other (route, access control, the route's cluster); the
:class:`UpgradeTunnel` then opens a connection of its own to the chosen host (never pooled), sends the
request with its ``Upgrade``/``Connection`` fields kept, and reads the response head. A ``101`` is
relayed and the tunnel starts: bytes flow both ways as they come, each side's full write buffer pauses
reading on the other side, ``idle_timeout`` without a byte in either direction closes both, and either
side closing ends the tunnel. The exchange stays open for the tunnel's life, so the request's one audit
record carries status 101, the tunnel's byte counts and its duration. Any other answer is a refusal:
the client gets the upstream's status with a short body.

The tunnel's downstream is the client connection (HTTP/1.1) or, for WebSocket over HTTP/2 (extended
CONNECT, :mod:`gateway.http2.extended_connect`), one stream of it: anything with the small
:class:`TunnelDownstream` face, set by the connection manager when the tunnel starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import h11

from gateway.codec.base import RequestHead, ResponseHead
from gateway.timers import Deadline

if TYPE_CHECKING:
    from gateway.cluster import Cluster, Host, UpstreamConnection
    from gateway.proxy import Exchange

#: Most bytes of an upstream response head read before the answer counts as malformed.
MAX_RESPONSE_HEAD = 65536


def is_upgrade(head: RequestHead) -> bool:
    """An HTTP/1.1 request asking to switch protocols (``Connection: upgrade`` and an ``Upgrade``)."""
    if head.header("upgrade") is None:
        return False
    tokens = (head.header("connection") or "").lower().split(",")
    return any(token.strip() == "upgrade" for token in tokens)


class TunnelDownstream(Protocol):
    """Where the upstream's bytes go, and whose reading stops while the upstream cannot take more."""

    def write(self, data: bytes) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class UpgradeRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class UpgradeTunnel:
    """The upstream half of an upgraded exchange, then the byte stream between the two connections."""

    def __init__(self, exchange: Exchange, cluster: Cluster, host: Host, idle_timeout: float) -> None:
        self.exchange = exchange
        self.cluster = cluster
        self.host = host
        self.idle_timeout = idle_timeout
        self.upstream: UpstreamConnection | None = None
        self.downstream: TunnelDownstream = exchange.conn
        self.closed = False
        self.idle: Deadline | None = None
        self._upstream_early = b""

    async def open(self, head: RequestHead) -> ResponseHead:
        """Connect, send the request, read the upstream's answer head (raises :class:`UpgradeRefused`)."""
        upstream = await self.cluster.acquire(self.host, "upgrade")
        self.upstream = upstream
        client = h11.Connection(h11.CLIENT)
        headers = [("host", head.authority), *((k, v) for k, v in head.headers if k != "host")]
        request = h11.Request(method=head.method, target=head.path, headers=headers)
        upstream.stream.write((client.send(request) or b"") + (client.send(h11.EndOfMessage()) or b""))
        received = 0
        while True:
            try:
                event = client.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpgradeRefused(502, f"upstream protocol error: {exc}") from None
            if event is h11.NEED_DATA:
                data = await upstream.stream.read(65536)
                received += len(data)
                if not data or received > MAX_RESPONSE_HEAD:
                    raise UpgradeRefused(502, "upstream closed before answering the upgrade")
                client.receive_data(data)
                continue
            if isinstance(event, h11.InformationalResponse | h11.Response):
                headers_out = tuple(
                    (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers.raw_items()
                )
                if event.status_code != 101:
                    raise UpgradeRefused(
                        event.status_code, f"upstream refused the upgrade ({event.status_code})"
                    )
                self._upstream_early = client.trailing_data[0]
                return ResponseHead(101, headers_out, event.reason.decode("latin-1"))
            raise UpgradeRefused(502, f"unexpected upstream event {type(event).__name__}")

    # -- the tunnel --------------------------------------------------------------------------------

    def start(self, client_early: bytes) -> None:
        """Both sides switched: bytes that arrived early on either side go first, then push mode."""
        self.idle = Deadline(self._on_idle, self.exchange.hcm.loop)
        self.idle.after(self.idle_timeout)
        if self._upstream_early:
            self.upstream_bytes(self._upstream_early)
        if client_early:
            self.downstream_data(client_early, False)
        assert self.upstream is not None
        self.upstream.stream.attach(self)

    def downstream_data(self, data: bytes, end_stream: bool) -> None:
        if self.closed:
            return
        if end_stream:
            self.close("downstream_closed")
            return
        self.exchange.bytes_received += len(data)
        self.exchange.conn.upstream_tx += len(data)
        assert self.idle is not None
        self.idle.after(self.idle_timeout)
        assert self.upstream is not None
        self.upstream.stream.write(data)

    def upstream_bytes(self, data: bytes) -> None:
        self.exchange.bytes_sent += len(data)
        self.exchange.conn.upstream_rx += len(data)
        assert self.idle is not None
        self.idle.after(self.idle_timeout)
        self.downstream.write(data)

    def downstream_write_ready(self, ready: bool) -> None:
        if self.upstream is not None:
            if ready:
                self.upstream.stream.resume_reading()
            else:
                self.upstream.stream.pause_reading()

    # the upstream stream's receiver

    def data_received(self, data: bytes) -> None:
        if not self.closed:
            self.upstream_bytes(data)

    def eof_received(self) -> None:
        self.close("upstream_closed")

    def connection_lost(self, exc: Exception | None) -> None:
        self.close("upstream_closed" if exc is None else f"upstream_error:{type(exc).__name__}")

    def pause_writing(self) -> None:
        self.downstream.pause_reading()

    def resume_writing(self) -> None:
        self.downstream.resume_reading()

    # -- the end -----------------------------------------------------------------------------------

    def _on_idle(self) -> None:
        self.close("upgrade_idle_timeout")

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.shutdown()
        self.exchange.tunnel_closed(reason)

    def shutdown(self) -> None:
        """Stop the tunnel and close the upstream connection (it is never reused)."""
        self.closed = True
        if self.idle is not None:
            self.idle.cancel()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            self.cluster.release(upstream, reusable=False)

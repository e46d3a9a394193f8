"""An upstream HTTP connection in push mode: its client codec and the exchange it currently serves.

The connection is its stream's receiver for its whole life: while an exchange holds it, response bytes
go to the exchange, which feeds the codec and reads its events (:meth:`Exchange.upstream_data`); while it
sits in its host's pool, any byte or EOF from the upstream means it cannot be reused, so it closes and
the pool skips it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.cluster import UpstreamConnection
from gateway.codec.base import ClientCodec

if TYPE_CHECKING:
    from gateway.cluster import Cluster
    from gateway.proxy import Exchange


@dataclass(eq=False)
class HttpUpstream(UpstreamConnection):
    codec: ClientCodec = field(default=None)  # type: ignore[assignment]
    exchange: Exchange | None = None
    #: Whether the upstream sent anything for the current exchange (a silent reused connection was stale).
    got_bytes: bool = False
    _attached: bool = False

    def serve(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.got_bytes = False
        if not self._attached:
            self._attached = True
            self.stream.attach(self)

    def reset_for_reuse(self) -> None:
        self.exchange = None
        self.codec.start_next_cycle()

    def release(self, cluster: Cluster, reusable: bool) -> None:
        """The exchange is done with this connection: back to the host's pool, or closed."""
        self.exchange = None
        cluster.release(self, reusable)

    def pause_reading(self) -> None:
        """The downstream cannot take more of the response now."""
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()

    # -- the stream's receiver -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.stream.close()  # unsolicited bytes on an idle connection: never reuse it
            return
        self.got_bytes = True
        exchange.upstream_data(data)

    def eof_received(self) -> None:
        exchange = self.exchange
        if exchange is None:
            self.stream.close()
            return
        exchange.upstream_data(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_ready(False)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_ready(True)

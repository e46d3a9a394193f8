"""A downstream connection after its handshake: its stream's receiver, driving the filter chain.

:meth:`Connection.run` runs each filter's ``on_new_connection``, then attaches the connection to its
stream: from there on every read is a call from the transport into :meth:`data_received` and on
through the filters, and writes go straight to the stream. ``run`` returns once the stream is closed
and the filters' ``on_close`` finished.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING

from gateway.filters.base import FilterStatus, NetworkFilter
from gateway.identity import PeerIdentity
from gateway.stream import TransportStream

if TYPE_CHECKING:
    from gateway.runtime import Generation

_ids = itertools.count(1)


def next_connection_id() -> int:
    return next(_ids)


class Connection:
    def __init__(
        self,
        stream: TransportStream,
        identity: PeerIdentity,
        listener: str,
        generation: Generation,
        filter_chain: str = "default",
        id: int | None = None,
    ) -> None:
        self.stream = stream
        self.identity = identity
        self.listener = listener
        self.generation = generation
        self.filter_chain = filter_chain
        self.id = next(_ids) if id is None else id
        self.started = time.monotonic()
        self.last_activity = self.started
        self.bytes_received = 0
        self.bytes_sent = 0
        self.closing = False
        #: True while no exchange is in flight (a keep-alive HTTP connection between requests): safe to close.
        self.idle = True
        self.close_reason = "downstream_closed"
        #: Set when the gateway drains: terminal filters finish the current exchange and stop.
        self.draining = False
        #: Bytes the terminal filter moved to and from the upstream side.
        self.upstream_rx = 0
        self.upstream_tx = 0
        self.write_ready = True
        self.filters: list[NetworkFilter] = []
        self._readers: list[NetworkFilter] = []
        #: The one filter that reads bytes, when there is only one (the common case): called directly.
        self._reader: NetworkFilter | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, filters: list[NetworkFilter]) -> None:
        self.filters = filters
        # Only filters that look at bytes are offered them (RBAC decides once, in on_new_connection).
        self._readers = [f for f in filters if type(f).on_data is not NetworkFilter.on_data]
        self._reader = self._readers[0] if len(self._readers) == 1 else None
        bytes_counter = self.generation.stats.bytes
        bytes_counter.track(self)
        try:
            for flt in filters:
                if await flt.on_new_connection(self) is FilterStatus.STOP_ITERATION:
                    return
            self.stream.attach(self)
            await self._closed
        finally:
            for flt in reversed(self.filters):  # as handed over (h2c: the HTTP/2 manager)
                try:
                    await flt.on_close(self)
                except Exception as exc:
                    self.close_reason = f"filter_error:{type(exc).__name__}"
            if not self._closed.done():
                self.stream.close()
            bytes_counter.untrack(self)

    def hand_over(self, old: NetworkFilter, new: NetworkFilter) -> None:
        """``new`` takes ``old``'s place in the chain from the next byte on (h2c prior knowledge: the
        HTTP/1.1 connection manager gives the connection to the HTTP/2 one)."""
        self.filters = [new if f is old else f for f in self.filters]
        self._readers = [new if f is old else f for f in self._readers]
        if self._reader is old:
            self._reader = new

    def counts(self) -> list[tuple[tuple[str, ...], float]]:
        """``smgate_bytes`` of this connection so far (added to the counter when it is collected)."""
        listener = self.listener
        return [
            ((listener, "downstream_rx"), float(self.bytes_received)),
            ((listener, "downstream_tx"), float(self.bytes_sent)),
            ((listener, "upstream_rx"), float(self.upstream_rx)),
            ((listener, "upstream_tx"), float(self.upstream_tx)),
        ]

    def drain(self) -> None:
        """The gateway drains: terminal filters finish what is in flight and take nothing new (HTTP/1.1
        answers with ``Connection: close``, HTTP/2 sends GOAWAY)."""
        if self.draining:
            return
        self.draining = True
        for flt in self.filters:
            flt.on_drain(self)

    def close(self) -> None:
        """Close after what is written (TLS/TLCP: with close_notify)."""
        self.closing = True
        self.stream.close()

    def abort(self) -> None:
        self.closing = True
        self.stream.abort()

    # -- the stream's receiver -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        self._offer(data, False)

    def eof_received(self) -> None:
        self._offer(b"", True)

    def _offer(self, data: bytes, end_stream: bool) -> None:
        try:
            if self._reader is not None:
                self._reader.on_data(self, data, end_stream)
                return
            for flt in self._readers:
                if flt.on_data(self, data, end_stream) is FilterStatus.STOP_ITERATION:
                    break
        except Exception as exc:  # a filter bug must end this connection, not the event loop's callback
            self.close_reason = f"filter_error:{type(exc).__name__}"
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        error = exc or getattr(self.stream, "error", None)
        if error is not None and self.close_reason == "downstream_closed":
            self.close_reason = f"downstream_error:{type(error).__name__}"
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self.write_ready = False
        for flt in self.filters:
            flt.on_write_ready(self, False)

    def resume_writing(self) -> None:
        self.write_ready = True
        for flt in self.filters:
            flt.on_write_ready(self, True)

    # -- writing and flow control ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.stream.write(data)
        self.bytes_sent += len(data)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def pause_reading(self) -> None:
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()

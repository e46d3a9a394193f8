"""Upstream HTTP/2: one multiplexed connection per host, shared by the exchanges that use it at once.

:class:`H2Upstream` is the connection: its stream's receiver for its whole life, it owns an
:class:`~gateway.http2.connection.H2ClientConnection`, turns response frames into codec events for the
stream they belong to, and tells each stream's exchange to read them. :class:`H2UpstreamStream` is what
an exchange holds instead of an HTTP/1.1 connection: the same face as
:class:`~gateway.http_upstream.HttpUpstream` (a client codec, ``stream.write`` to send, ``release``
when done), one HTTP/2 stream underneath. The cluster keeps the connections of each host in
``Host.shared`` and hands out streams while the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS`` allows.

Flow control: a response's DATA is acknowledged as the exchange passes it on, unless the downstream
asked to pause (its window then stays shut, throttling that one stream at the upstream); request bytes
the upstream's window does not admit queue in the connection, and above :data:`REQUEST_HIGH_WATER` the
exchange stops reading the client's body until WINDOW_UPDATEs drain the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from gateway.cluster import UpstreamConnection
from gateway.codec.base import Body, EndOfStream, ResponseTrailers
from gateway.codec.http2 import H2StreamClientCodec
from gateway.http2.connection import H2ClientConnection, H2ConnectionError, Http2Limits
from gateway.http2.events import (
    BodyReceived,
    ConnectionEnded,
    ResponseStarted,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from gateway.http_upstream import HttpUpstream

if TYPE_CHECKING:
    from gateway.cluster import Cluster
    from gateway.config import Http2ProtocolOptions
    from gateway.proxy import Exchange


def upstream_limits(options: Http2ProtocolOptions) -> Http2Limits:
    """What the gateway advertises to an HTTP/2 cluster's hosts."""
    return Http2Limits(
        max_concurrent_streams=options.max_concurrent_streams,
        max_header_list_size=options.max_header_list_size,
        max_frame_size=options.max_frame_size,
        initial_stream_window_size=options.initial_stream_window_size,
        connection_window_size=options.initial_connection_window_size,
    )


REQUEST_HIGH_WATER = 256 * 1024
REQUEST_LOW_WATER = 64 * 1024


class UpstreamStreamReset(Exception):
    """The upstream reset the stream (or the connection ended under it); ``code`` is the HTTP/2 error."""

    def __init__(self, code: int) -> None:
        super().__init__(f"stream reset by upstream (HTTP/2 error {code})")
        self.code = code


@dataclass(eq=False)
class H2Upstream(UpstreamConnection):
    limits: Http2Limits = field(default_factory=Http2Limits)
    scheme: str = "http"
    #: Told when the connection can take no more streams for good (closed, GOAWAY, protocol error).
    on_ended: Callable[[H2Upstream], None] | None = None
    #: Told once, when the connection has closed.
    on_closed: Callable[[H2Upstream], None] | None = None
    streams: dict[int, H2UpstreamStream] = field(default_factory=dict)
    ended: bool = False
    closed: bool = False

    def __post_init__(self) -> None:
        self.h2 = H2ClientConnection(self.limits)
        self.loop = asyncio.get_running_loop()
        #: Request codecs holding body chunks until the turn ends (:meth:`hold`).
        self._holding: set[H2StreamClientCodec] = set()
        self._write_scheduled = False
        self.stream.attach(self)
        self.flush()

    def can_take_stream(self) -> bool:
        return not self.ended and not self.stream.is_closing() and self.h2.can_open_stream()

    def open_stream(self) -> H2UpstreamStream:
        stream = H2UpstreamStream(host=self.host, stream=self.stream, protocol="h2", connection=self)
        stream.codec = H2StreamClientCodec(self.h2, self.scheme, stream.request_queued, self.hold)
        return stream

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.stream.is_closing():
            self.stream.write(data)

    def hold(self, codec: H2StreamClientCodec | None = None) -> None:
        """Write what the streams queue in this event-loop turn once, at its end: the requests that
        arrived together (and each request's head, body and end) leave in one write."""
        if codec is not None:
            self._holding.add(codec)
        if not self._write_scheduled:
            self._write_scheduled = True
            self.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        self._write_scheduled = False
        holding, self._holding = self._holding, set()
        for codec in holding:
            codec.send_held()
        self.flush()

    # -- the stream's receiver -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            h2_events = self.h2.receive_data(data, self.loop.time())
        except H2ConnectionError as exc:
            self.flush()  # our GOAWAY
            self._end(UpstreamStreamReset(exc.error_code))
            self.stream.close()
            return
        touched: dict[int, H2UpstreamStream] = {}
        for event in h2_events:
            if isinstance(event, ConnectionEnded):
                self._goaway(event.last_stream_id)
                continue
            stream = self.streams.get(event.stream_id)
            if stream is None:
                if isinstance(event, BodyReceived):
                    self.h2.consumed(event.stream_id, event.flow_controlled_length)
                continue
            if isinstance(event, StreamReset):
                self._forget(stream)
                stream.lost(UpstreamStreamReset(event.error_code))
                continue
            stream.got_bytes = True
            codec = stream.codec
            if isinstance(event, ResponseStarted):
                codec.push(event.head)
            elif isinstance(event, BodyReceived):
                codec.push(Body(event.data))
                stream.response_taken(event.flow_controlled_length)
            elif isinstance(event, TrailersReceived):
                codec.push(ResponseTrailers(event.headers))
            elif isinstance(event, StreamEnded):
                codec.push(EndOfStream())
            touched[event.stream_id] = stream
        for stream in touched.values():
            stream.drained_if_below_low_water()
            if stream.exchange is not None:
                stream.exchange.upstream_events()
        self.hold()

    def eof_received(self) -> None:
        self._end(None)
        self.stream.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)
        if not self.closed:
            self.closed = True
            if self.on_closed is not None:
                self.on_closed(self)

    def pause_writing(self) -> None:
        for stream in list(self.streams.values()):
            if stream.exchange is not None:
                stream.exchange.upstream_write_ready(False)

    def resume_writing(self) -> None:
        for stream in list(self.streams.values()):
            if stream.exchange is not None:
                stream.exchange.upstream_write_ready(True)

    # -- streams and the connection's end --------------------------------------------------------

    def register(self, stream: H2UpstreamStream) -> None:
        self.streams[stream.codec.stream_id] = stream

    def _forget(self, stream: H2UpstreamStream) -> None:
        self.streams.pop(stream.codec.stream_id, None)
        if self.ended and not self.streams:
            self.stream.close()

    def stream_done(self, stream: H2UpstreamStream, complete: bool) -> None:
        """An exchange let go of its stream: reset it unless it ended normally."""
        if not complete:
            stream.codec.drop_held()
            self._holding.discard(stream.codec)
        if stream.codec.stream_id in self.streams:
            if not complete:
                self.h2.reset(stream.codec.stream_id, ErrorCodes.CANCEL)
                self.flush()
            self._forget(stream)

    def _goaway(self, last_stream_id: int | None) -> None:
        """No new streams; those above ``last_stream_id`` were never processed (safe to retry)."""
        self._mark_ended()
        for stream_id, stream in list(self.streams.items()):
            if last_stream_id is not None and stream_id > last_stream_id:
                self._forget(stream)
                stream.got_bytes = False
                stream.lost(UpstreamStreamReset(ErrorCodes.REFUSED_STREAM))
        if not self.streams:
            self.stream.close()

    def _end(self, exc: Exception | None) -> None:
        self._mark_ended()
        streams, self.streams = list(self.streams.values()), {}
        for stream in streams:
            stream.lost(exc)

    def _mark_ended(self) -> None:
        if not self.ended:
            self.ended = True
            if self.on_ended is not None:
                self.on_ended(self)


@dataclass(eq=False)
class H2UpstreamStream(HttpUpstream):
    """One request stream on a shared :class:`H2Upstream` (what the exchange holds)."""

    connection: H2Upstream | None = None
    codec: H2StreamClientCodec = field(default=None)  # type: ignore[assignment]
    paused: bool = False
    request_blocked: bool = False
    _unacknowledged: int = 0

    def serve(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.got_bytes = False

    def request_queued(self) -> None:
        """Called by the codec after the first frame (it has a stream id) and after body bytes."""
        connection = self.connection
        assert connection is not None
        if self.codec.stream_id not in connection.streams:
            connection.register(self)
        if not self.request_blocked and connection.h2.pending(self.codec.stream_id) > REQUEST_HIGH_WATER:
            self.request_blocked = True
            if self.exchange is not None:
                self.exchange.upstream_write_ready(False)

    def drained_if_below_low_water(self) -> None:
        connection = self.connection
        assert connection is not None
        if self.request_blocked and connection.h2.pending(self.codec.stream_id) <= REQUEST_LOW_WATER:
            self.request_blocked = False
            if self.exchange is not None:
                self.exchange.upstream_write_ready(True)

    def response_taken(self, flow_controlled_length: int) -> None:
        if self.paused:
            self._unacknowledged += flow_controlled_length
        else:
            assert self.connection is not None
            self.connection.h2.consumed(self.codec.stream_id, flow_controlled_length)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        connection = self.connection
        if self._unacknowledged and connection is not None:
            connection.h2.consumed(self.codec.stream_id, self._unacknowledged)
            self._unacknowledged = 0
            connection.flush()

    def release(self, cluster: Cluster, reusable: bool) -> None:
        self.exchange = None
        cluster.stream_released(self.host)
        if self.connection is not None:
            self.connection.stream_done(self, complete=self.codec.ended)
        self.codec.detach()  # its callbacks point back here: no reference cycle left per request

    def lost(self, exc: Exception | None) -> None:
        if self.exchange is not None:
            self.exchange.upstream_lost(exc)

"""Stream events of an HTTP/2 connection, as the gateway sees them (one request or response per stream).

``h2`` reports frames; these report what the router needs: a request (or response) head with the
routing attributes of :mod:`gateway.codec.base`, body chunks, trailers, the end or reset of a stream
and the end of the connection. Frozen and slotted, like h11's events.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.codec.base import Headers, RequestHead, ResponseHead


@dataclass(frozen=True, slots=True)
class StreamEvent:
    stream_id: int


@dataclass(frozen=True, slots=True)
class RequestStarted(StreamEvent):
    head: RequestHead
    #: ``:scheme`` and, for extended CONNECT (RFC 8441), ``:protocol``.
    scheme: str
    protocol: str | None
    end_stream: bool


@dataclass(frozen=True, slots=True)
class ResponseStarted(StreamEvent):
    head: ResponseHead
    end_stream: bool


@dataclass(frozen=True, slots=True)
class BodyReceived(StreamEvent):
    data: bytes
    end_stream: bool
    #: What the frame cost the flow-control windows (data plus padding): what ``consumed`` must return.
    flow_controlled_length: int = 0


@dataclass(frozen=True, slots=True)
class TrailersReceived(StreamEvent):
    headers: Headers


@dataclass(frozen=True, slots=True)
class StreamEnded(StreamEvent):
    """The peer finished its side of the stream (END_STREAM), after a head, body or trailers."""


@dataclass(frozen=True, slots=True)
class StreamReset(StreamEvent):
    error_code: int
    #: True when the peer reset the stream, False when this side did (e.g. a refused stream).
    remote: bool = True


@dataclass(frozen=True, slots=True)
class ConnectionEnded:
    """The connection is over: GOAWAY received or sent, or a protocol error or flood on our side."""

    error_code: int
    reason: str
    #: Highest stream the peer may still see answered (GOAWAY's last_stream_id), when known.
    last_stream_id: int | None = None


H2Event = RequestStarted | ResponseStarted | BodyReceived | TrailersReceived | StreamEnded | StreamReset

"""Per-stream codec adapters over one shared sans-I/O HTTP/2 connection.

HTTP/2 multiplexes many requests on one connection, while an :class:`~gateway.proxy.Exchange` speaks to
one :class:`ServerCodec` (and one :class:`ClientCodec`) as if it owned the connection. These adapters
give each stream that view: encoding a response head, body or trailers queues frames on the shared
:class:`~gateway.http2.connection.H2ServerConnection` for this stream and returns whatever the
connection has to send now (frames of other streams and WINDOW_UPDATEs included, in order), so the
exchange writes the bytes as it does for HTTP/1.1. Decoding is not theirs: the connection manager reads
the connection's stream events and hands them to each stream's exchange.

gRPC: a reply the gateway makes itself to a gRPC request is a Trailers-Only response (HTTP 200,
``grpc-status`` from the HTTP status), never an HTTP error page.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import h2.exceptions
from h2.errors import ErrorCodes

from gateway import grpc
from gateway.codec.base import (
    NEED_DATA,
    Body,
    ClientCodec,
    ClientEvent,
    CodecProtocolError,
    EndOfStream,
    Headers,
    RequestHead,
    ResponseHead,
    ResponseTrailers,
    ServerCodec,
    ServerEvent,
)
from gateway.http2 import extended_connect
from gateway.http2.connection import H2ClientConnection, H2ServerConnection


class H2StreamServerCodec(ServerCodec):
    """Encodes one stream's response; ``sent`` is told after body bytes are queued (backpressure).

    Each upstream read's worth of response is queued on the connection at once, at its end
    (:meth:`encode_held` or :meth:`encode_end`), so it costs the fewest frames.
    """

    def __init__(
        self,
        connection: H2ServerConnection,
        stream_id: int,
        *,
        grpc_request: bool,
        head_request: bool,
        sent: Callable[[], None],
        gone: Callable[[], None],
        tunnel: bool = False,
        tunnel_key: str | None = None,
    ) -> None:
        self.connection = connection
        self.stream_id = stream_id
        #: An extended CONNECT stream (RFC 8441): its response opens a tunnel (:meth:`switch_protocols`).
        self.tunnel = tunnel
        self._tunnel_key = tunnel_key
        #: Tunnel bytes the client sent before the upstream answered (they follow the 200).
        self.early_data = b""
        self._gone = gone
        self.grpc_request = grpc_request
        self.head_request = head_request
        self._sent = sent
        self._trailers: Headers | None = None
        self._held_head: ResponseHead | None = None
        self._held_body: list[bytes] = []

    def receive_data(self, data: bytes) -> None:
        """Stream events come from the shared connection (see the module docstring), not from here."""

    def next_event(self) -> ServerEvent:
        return NEED_DATA

    def encode_response_head(self, head: ResponseHead) -> bytes:
        # Held, with the body after it, until we know what follows: a response whose end arrives with it
        # leaves as HEADERS and one DATA frame carrying END_STREAM, or as one HEADERS frame with
        # END_STREAM when it has no body (a gRPC Trailers-Only response must stay one, or clients see
        # no status). The exchange calls encode_held() when an upstream read ends mid-response.
        self._held_head = head
        return b""

    def encode_held(self) -> bytes:
        with self._unless_gone():
            self._send_held_head()
            self._send_held_body()
        return self.connection.data_to_send()

    @contextlib.contextmanager
    def _unless_gone(self) -> Iterator[None]:
        """The client may have reset the stream or closed the connection (GOAWAY) while the response was
        on its way: what is left of the response is dropped and the exchange told, never an exception
        into the upstream's callbacks."""
        try:
            yield
        except h2.exceptions.ProtocolError:
            self._gone()

    def _send_held_head(self, end_stream: bool = False) -> bool:
        head, self._held_head = self._held_head, None
        if head is not None:
            self.connection.send_response(self.stream_id, head, end_stream=end_stream)
        return head is not None

    def _send_held_body(self, end_stream: bool = False) -> None:
        body = self._held_body
        if not body and not end_stream:
            return
        self._held_body = []
        self.connection.send_data(self.stream_id, body[0] if len(body) == 1 else b"".join(body), end_stream)
        if body:
            self._sent()

    def encode_body(self, data: bytes) -> bytes:
        if data and not self.head_request:
            self._held_body.append(data)
        return b""

    def encode_trailers(self, headers: Headers) -> bytes:
        self._trailers = headers
        return b""

    def encode_end(self) -> bytes:
        with self._unless_gone():
            if self._trailers is not None:
                self._send_held_head()
                self._send_held_body()
                self.connection.send_trailers(self.stream_id, self._trailers)
            elif self._held_body:
                self._send_held_head()
                self._send_held_body(end_stream=True)
            elif not self._send_held_head(end_stream=True):
                self._send_held_body(end_stream=True)
        return self.connection.data_to_send()

    def local_reply(
        self, status: int, body: bytes, content_type: str = "text/plain", headers: Headers = ()
    ) -> bytes:
        with self._unless_gone():
            self._local_reply(status, body, content_type, headers)
        return self.connection.data_to_send()

    def _local_reply(self, status: int, body: bytes, content_type: str, headers: Headers) -> None:
        connection, stream_id = self.connection, self.stream_id
        if self.grpc_request:
            message = body.decode("utf-8", "replace").strip()
            trailers = grpc.trailers_only(grpc.status_for(status), message)
            connection.send_response(stream_id, ResponseHead(200, trailers), end_stream=True)
            return
        head_headers = (("content-type", content_type), ("content-length", str(len(body))), *headers)
        empty = not body or self.head_request
        connection.send_response(stream_id, ResponseHead(status, head_headers), end_stream=empty)
        if not empty:
            connection.send_data(stream_id, body, end_stream=True)

    def switch_protocols(self, head: ResponseHead) -> tuple[bytes, bytes]:
        """The upstream's 101 to an extended CONNECT: a 200 on the stream, which stays open both ways
        (:mod:`gateway.http2.extended_connect`); the client's early tunnel bytes are handed over."""
        if not self.tunnel:
            raise CodecProtocolError("only an extended CONNECT stream can become a tunnel", 502)
        response = extended_connect.tunnel_response(head, self._tunnel_key)
        with self._unless_gone():
            self.connection.send_response(self.stream_id, response)
        early, self.early_data = self.early_data, b""
        return self.connection.data_to_send(), early

    def keep_alive(self) -> bool:
        return False  # a stream carries one exchange

    def start_next_cycle(self) -> None:
        """Never called: the stream ends with its exchange."""

    def reset(self, error_code: int = ErrorCodes.INTERNAL_ERROR) -> bytes:
        self.connection.reset(self.stream_id, error_code)
        return self.connection.data_to_send()


def _nothing() -> None:
    pass


def _ignore_hold(codec: H2StreamClientCodec) -> None:
    pass


class H2StreamClientCodec(ClientCodec):
    """Encodes one upstream stream's request; the upstream connection queues its response events here.

    The request's HEADERS are queued on the connection at once (that opens the stream); body chunks
    are held until the end of the event-loop turn (``hold``), so a body whose end arrives with it leaves
    as one DATA frame with END_STREAM. The encode methods return nothing: the connection writes what
    its streams queued once per turn.
    """

    def __init__(
        self,
        connection: H2ClientConnection,
        scheme: str,
        sent: Callable[[], None],
        hold: Callable[[H2StreamClientCodec], None],
    ) -> None:
        self.connection = connection
        self.scheme = scheme
        self.stream_id = 0
        self._sent = sent
        self._hold = hold
        self._held_body: list[bytes] = []
        self._events: list[ClientEvent] = []
        self._trailers: Headers = ()
        self.ended = False
        self._request_ended = False

    def encode_request_head(self, head: RequestHead) -> bytes:
        bodyless = head.content_length == 0
        self.stream_id = self.connection.send_request(head, self.scheme, end_stream=bodyless)
        self._request_ended = bodyless
        self._sent()
        self._hold(self)
        return b""

    def encode_body(self, data: bytes) -> bytes:
        if data and not self._request_ended:
            self._held_body.append(data)
            self._hold(self)
        return b""

    def set_trailers(self, headers: Headers) -> bool:
        self._trailers = headers
        return True

    def encode_end(self) -> bytes:
        if not self._request_ended:
            self._request_ended = True
            if self._trailers:
                self.send_held()
                self.connection.send_trailers(self.stream_id, self._trailers)
            else:
                self._send_held_body(end_stream=True)
            self._hold(self)  # the end may come in a later turn than the body: it must be written too
        return b""

    def send_held(self) -> None:
        """The turn is over: queue the held body chunks (the connection writes them next)."""
        if self._held_body:
            self._send_held_body(end_stream=False)

    def drop_held(self) -> None:
        self._held_body = []

    def detach(self) -> None:
        """The exchange let go of the stream: tell nobody any more (what is held still goes out)."""
        self._sent = _nothing
        self._hold = _ignore_hold

    def _send_held_body(self, end_stream: bool) -> None:
        body, self._held_body = self._held_body, []
        self.connection.send_data(self.stream_id, body[0] if len(body) == 1 else b"".join(body), end_stream)
        if body:
            self._sent()

    def receive_data(self, data: bytes) -> None:
        """Response events are pushed by the upstream connection (:meth:`push`)."""

    def push(self, event: ResponseHead | Body | ResponseTrailers | EndOfStream) -> None:
        if isinstance(event, EndOfStream):
            self.ended = True
        self._events.append(event)

    def next_event(self) -> ClientEvent:
        if self._events:
            return self._events.pop(0)
        return NEED_DATA

    def reusable(self) -> bool:
        return False  # the stream is over; the connection is shared and pooled on its own

    def start_next_cycle(self) -> None:
        """Never called: one stream, one request."""

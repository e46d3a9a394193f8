"""Sans-I/O HTTP/2 endpoints for the gateway, on the ``h2`` library (as h11 is for HTTP/1.1).

:class:`H2ServerConnection` (downstream) and :class:`H2ClientConnection` (upstream) wrap one
``h2.connection.H2Connection`` each and speak the gateway's vocabulary: request/response heads with
lower-case headers (:mod:`gateway.codec.base`), body chunks, trailers, resets. The caller owns I/O:
``receive_data(bytes, now)`` returns events, ``data_to_send()`` returns bytes to write.

Flow control works in both directions with backpressure:
- inbound, a stream's window is only reopened when the caller says it has passed the bytes on
  (:meth:`consumed`), so a slow upstream throttles the client instead of filling memory;
- outbound, :meth:`send_data` queues what the peer's window does not allow yet and sends it as
  WINDOW_UPDATEs arrive; :meth:`pending` tells the caller when to stop reading from the other side.

Limits (concurrent streams, header-list size, frame size, windows) come from
:class:`Http2Limits`; floods are stopped by :mod:`gateway.http2.flood` before ``h2`` sees a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from gateway.codec.base import Headers, RequestHead, ResponseHead
from gateway.http2.events import (
    BodyReceived,
    ConnectionEnded,
    H2Event,
    RequestStarted,
    ResponseStarted,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from gateway.http2.flood import FloodDetected, FloodLimits, FrameScanner
from gateway.http2.headers import (
    MalformedHeaders,
    field_bytes,
    outbound_fields,
    request_fields,
    response_fields,
    trailer_fields,
)
from gateway.http2.unlogged import UnloggedH2Connection


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """What this endpoint advertises in SETTINGS and enforces (RFC 9113 6.5.2)."""

    max_concurrent_streams: int = 100
    max_header_list_size: int = 65536
    max_frame_size: int = 16384
    initial_stream_window_size: int = 1 << 20
    connection_window_size: int = 4 << 20
    header_table_size: int = 4096
    #: Servers: SETTINGS_ENABLE_CONNECT_PROTOCOL, extended CONNECT allowed (RFC 8441 3).
    enable_connect_protocol: bool = False
    flood: FloodLimits = field(default_factory=FloodLimits)


class H2ConnectionError(Exception):
    """The connection must end: GOAWAY is queued in ``data_to_send()``; ``reason`` labels metrics."""

    def __init__(self, reason: str, detail: str, error_code: int) -> None:
        super().__init__(detail)
        self.reason = reason
        self.error_code = error_code


def _content_length(headers: Headers) -> int | None:
    values = {v for k, v in headers if k == "content-length"}
    if len(values) == 1:
        value = values.pop()
        if value.isdigit():
            return int(value)
    return None


class _H2Endpoint:
    """What both sides share: feeding bytes through the flood scanner, flow control, sending."""

    client_side = False

    def __init__(self, limits: Http2Limits) -> None:
        self.limits = limits
        # Header blocks are checked and normalized by gateway.http2.headers, in one pass each way.
        config = h2.config.H2Configuration(
            client_side=self.client_side,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = UnloggedH2Connection(config=config)
        self._scanner = FrameScanner(limits.flood, client_preface=not self.client_side)
        self._outbound: dict[int, bytearray] = {}
        self._outbound_end: set[int] = set()
        self._outbound_trailers: dict[int, list[tuple[bytes, bytes]]] = {}
        self.closed = False
        #: The peer sent GOAWAY: no new streams; with NO_ERROR the open ones may still finish.
        self.goaway_received = False

    # setup

    def _initiate(self) -> None:
        limits = self.limits
        settings = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_stream_window_size,
            h2.settings.SettingCodes.HEADER_TABLE_SIZE: limits.header_table_size,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        }
        if limits.enable_connect_protocol and not self.client_side:
            settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        self._h2.local_settings = h2.settings.Settings(client=self.client_side, initial_values=settings)
        self._h2.initiate_connection()
        self._h2.decoder.max_header_list_size = limits.max_header_list_size
        self._h2.decoder.max_allowed_table_size = limits.header_table_size
        extra = limits.connection_window_size - 65535
        if extra > 0:
            self._h2.increment_flow_control_window(extra)

    # input

    def receive_data(self, data: bytes, now: float) -> list[H2Event | ConnectionEnded]:
        """Feed bytes from the peer. Raises :class:`H2ConnectionError` after queuing a GOAWAY."""
        if self.closed:
            return []
        try:
            self._scanner.scan(data, now)
            h2_events = self._h2.receive_data(data)
        except FloodDetected as exc:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM)
            raise H2ConnectionError(exc.reason, str(exc), ErrorCodes.ENHANCE_YOUR_CALM) from None
        except h2.exceptions.ProtocolError as exc:
            # h2 has already queued GOAWAY with the matching code
            self.closed = True
            code = int(getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR))
            raise H2ConnectionError(_protocol_reason(exc), str(exc) or type(exc).__name__, code) from None
        events: list[H2Event | ConnectionEnded] = []
        try:
            for event in h2_events:
                events.extend(self._translate(event))
        except MalformedHeaders as exc:
            self._goaway(ErrorCodes.PROTOCOL_ERROR)
            raise H2ConnectionError("malformed_headers", str(exc), ErrorCodes.PROTOCOL_ERROR) from None
        return events

    def _translate(self, event: h2.events.Event) -> list[H2Event | ConnectionEnded]:
        if isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.data is not None
            return [
                BodyReceived(
                    event.stream_id,
                    event.data,
                    event.stream_ended is not None,
                    event.flow_controlled_length or len(event.data),
                )
            ]
        if isinstance(event, h2.events.TrailersReceived):
            assert event.stream_id is not None and event.headers is not None
            return [TrailersReceived(event.stream_id, trailer_fields(event.headers))]
        if isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            return [StreamEnded(event.stream_id)]
        if isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            self._forget(event.stream_id)
            return [StreamReset(event.stream_id, int(event.error_code or 0), remote=event.remote_reset)]
        if isinstance(event, h2.events.WindowUpdated):
            self._flush_all() if not event.stream_id else self._flush(event.stream_id)
            return []
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self._flush_all()  # a larger INITIAL_WINDOW_SIZE opens every stream's window
            return []
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway_received = True
            if event.error_code == ErrorCodes.NO_ERROR:
                self._keep_open_for_streams_in_flight()
            else:
                self.closed = True
            return [ConnectionEnded(int(event.error_code or 0), "goaway_received", event.last_stream_id)]
        return self._translate_head(event)

    def _translate_head(self, event: h2.events.Event) -> list[H2Event | ConnectionEnded]:
        return []

    def _keep_open_for_streams_in_flight(self) -> None:
        """A graceful GOAWAY (RFC 9113 6.8), sent or received, still lets the streams up to its last
        stream id finish, but ``h2`` moves its connection state machine to CLOSED on any GOAWAY and then
        refuses their frames; put it back in the open state (new streams stay refused: by
        :attr:`goaway_received` here, by the connection manager after its own GOAWAY)."""
        open_state = (
            h2.connection.ConnectionState.CLIENT_OPEN
            if self.client_side
            else h2.connection.ConnectionState.SERVER_OPEN
        )
        self._h2.state_machine.state = open_state

    # flow control

    def consumed(self, stream_id: int, length: int) -> None:
        """The caller passed ``length`` bytes of this stream's body on: reopen the peer's window."""
        if length > 0 and not self.closed:
            self._h2.acknowledge_received_data(length, stream_id)  # closed streams: connection window only

    def pending(self, stream_id: int) -> int:
        """Body bytes queued for ``stream_id`` that the peer's window has not admitted yet."""
        return len(self._outbound.get(stream_id, b""))

    # output

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        if stream_id not in self._outbound and not self.closed and self._fits(stream_id, len(data)):
            try:  # nothing queued before it and the windows admit it all: one frame, no queue
                self._h2.send_data(stream_id, data, end_stream=end_stream)
            except h2.exceptions.StreamClosedError:
                pass
            return
        buffer = self._outbound.setdefault(stream_id, bytearray())
        buffer += data
        if end_stream:
            self._outbound_end.add(stream_id)
        self._flush(stream_id)

    def _fits(self, stream_id: int, length: int) -> bool:
        h2_conn = self._h2
        if length > h2_conn.max_outbound_frame_size:
            return False
        try:
            return length <= h2_conn.local_flow_control_window(stream_id)
        except h2.exceptions.StreamClosedError:
            return False

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        """Trailers end the stream; they wait behind any queued body bytes."""
        self._outbound_trailers[stream_id] = outbound_fields(headers)
        self._outbound_end.add(stream_id)
        self._outbound.setdefault(stream_id, bytearray())
        self._flush(stream_id)

    def reset(self, stream_id: int, error_code: int = ErrorCodes.CANCEL) -> None:
        self._forget(stream_id)
        try:
            self._h2.reset_stream(stream_id, error_code)
        except h2.exceptions.StreamClosedError:
            pass

    def goaway(self, error_code: int = ErrorCodes.NO_ERROR, last_stream_id: int | None = None) -> None:
        """Graceful close (draining): no stream above ``last_stream_id`` (default: the highest the peer
        opened) will be processed; those up to it may finish, so ``h2`` is kept in the open state."""
        self._h2.close_connection(error_code, last_stream_id=last_stream_id)
        if error_code == ErrorCodes.NO_ERROR:
            self._keep_open_for_streams_in_flight()

    def data_to_send(self) -> bytes:
        return self._h2.data_to_send()

    def _goaway(self, error_code: int) -> None:
        self.closed = True
        self._h2.close_connection(error_code)

    def _forget(self, stream_id: int) -> None:
        self._outbound.pop(stream_id, None)
        self._outbound_end.discard(stream_id)
        self._outbound_trailers.pop(stream_id, None)

    def _flush_all(self) -> None:
        for stream_id in list(self._outbound):
            self._flush(stream_id)

    def _flush(self, stream_id: int) -> None:
        """Send what the windows admit; the end (END_STREAM or trailers) follows the last byte."""
        buffer = self._outbound.get(stream_id)
        if buffer is None or self.closed:
            return
        wants_end = stream_id in self._outbound_end
        trailers = self._outbound_trailers.get(stream_id)
        try:
            while buffer:
                size = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
                if size <= 0:
                    return
                chunk = bytes(buffer[:size])
                del buffer[:size]
                ends_here = not buffer and wants_end and trailers is None
                self._h2.send_data(stream_id, chunk, end_stream=ends_here)
                if ends_here:
                    self._forget(stream_id)
                    return
            if not wants_end:
                return
            if trailers is not None:
                self._h2.send_headers(stream_id, trailers, end_stream=True)
            else:
                self._h2.end_stream(stream_id)
            self._forget(stream_id)
        except h2.exceptions.StreamClosedError:
            self._forget(stream_id)


def _protocol_reason(exc: Exception) -> str:
    if isinstance(exc, h2.exceptions.TooManyStreamsError):
        return "too_many_streams"
    if isinstance(exc, h2.exceptions.DenialOfServiceError):
        return "header_list_too_large"
    if isinstance(exc, h2.exceptions.FlowControlError):
        return "flow_control"
    if isinstance(exc, h2.exceptions.FrameTooLargeError):
        return "frame_too_large"
    return "protocol_error"


class H2ServerConnection(_H2Endpoint):
    """Downstream HTTP/2: requests in, responses out. Send :meth:`data_to_send` right after creation."""

    client_side = False

    def __init__(self, limits: Http2Limits | None = None) -> None:
        super().__init__(limits or Http2Limits())
        self._initiate()

    def _translate_head(self, event: h2.events.Event) -> list[H2Event | ConnectionEnded]:
        if not isinstance(event, h2.events.RequestReceived):
            return []
        assert event.stream_id is not None and event.headers is not None
        fields = request_fields(event.headers)
        pseudo, headers = fields.pseudo, fields.headers
        end_stream = event.stream_ended is not None
        head = RequestHead(
            method=pseudo[":method"],
            authority=pseudo.get(":authority") or fields.host or "",
            path=pseudo.get(":path", ""),
            headers=headers,
            content_length=0 if end_stream else _content_length(headers),
        )
        return [
            RequestStarted(
                event.stream_id, head, pseudo.get(":scheme", ""), pseudo.get(":protocol"), end_stream
            )
        ]

    def send_response(self, stream_id: int, head: ResponseHead, end_stream: bool = False) -> None:
        headers = [(b":status", str(head.status).encode()), *outbound_fields(head.headers)]
        self._h2.send_headers(stream_id, headers, end_stream=end_stream)


class H2ClientConnection(_H2Endpoint):
    """Upstream HTTP/2: requests out, responses in. Send :meth:`data_to_send` right after creation."""

    client_side = True

    def __init__(self, limits: Http2Limits | None = None) -> None:
        super().__init__(limits or Http2Limits())
        self._initiate()

    def _translate_head(self, event: h2.events.Event) -> list[H2Event | ConnectionEnded]:
        if isinstance(event, h2.events.InformationalResponseReceived):
            response_fields(event.headers)  # checked, then dropped: 1xx responses are not relayed
            return []
        if not isinstance(event, h2.events.ResponseReceived):
            return []
        assert event.stream_id is not None and event.headers is not None
        status, headers = response_fields(event.headers)
        head = ResponseHead(status=status, headers=headers)
        return [ResponseStarted(event.stream_id, head, event.stream_ended is not None)]

    def open_streams(self) -> int:
        return int(self._h2.open_outbound_streams)

    def can_open_stream(self) -> bool:
        return (
            not self.closed
            and not self.goaway_received
            and self.open_streams() < self._h2.remote_settings.max_concurrent_streams
        )

    def send_request(self, head: RequestHead, scheme: str, end_stream: bool = False) -> int:
        stream_id: int = self._h2.get_next_available_stream_id()
        headers = [(b":method", field_bytes(head.method)), (b":scheme", field_bytes(scheme))]
        if head.authority:  # none in the original request: none here either (RFC 9113 8.3.1)
            headers.append((b":authority", field_bytes(head.authority)))
        headers.append((b":path", field_bytes(head.path)))
        headers += outbound_fields(head.headers)
        self._h2.send_headers(stream_id, headers, end_stream=end_stream)
        return stream_id

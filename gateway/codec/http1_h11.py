"""HTTP/1.1 codec on h11: the reference the default llhttp codec (:mod:`gateway.codec.http1`) is
tested against, byte stream for byte stream (tests/gateway/test_codec_differential.py).

Select it on a listener with ``codec: gateway.codec.http1_h11:H11CodecFactory``. It is pure Python and
several times slower than the default, and it is the one to trust when the two disagree: h11 is a
small, readable state machine. Keep-alive, chunked streaming, 100-continue and hop-by-hop hygiene
(:mod:`gateway.codec.http1_fields`) are the same in both.
"""

from __future__ import annotations

import h11
from h11._readers import ChunkedReader

from gateway.codec.base import (
    NEED_DATA,
    PAUSED,
    Body,
    ClientCodec,
    ClientEvent,
    CodecFactory,
    CodecProtocolError,
    EndOfStream,
    Headers,
    LocalProtocolError,
    RequestHead,
    ResponseHead,
    ServerCodec,
    ServerEvent,
)
from gateway.codec.http1_fields import (
    CLOSE_FIELD,
    HOP_BY_HOP_AND_HOST,
    SUPPORTED_VERSIONS,
    check_request_head,
    comma_tokens,
    field_section_size,
    forwardable,
    reason_phrase,
)


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> Headers:
    return tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw)


def _encode_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    # Latin-1, not h11's ASCII default: a value received as obs-text goes out byte for byte.
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def declared_body_length(headers: Headers) -> int | None:
    """``RequestHead.content_length``: ``None`` for a chunked body, else Content-Length or 0."""
    if any(name == "transfer-encoding" for name, _ in headers):
        return None
    return next((int(value) for name, value in headers if name == "content-length"), 0)


def _send(conn: h11.Connection, event: h11.Event) -> bytes:
    try:
        return conn.send(event) or b""
    except h11.LocalProtocolError as exc:
        raise LocalProtocolError(str(exc)) from None
    except UnicodeEncodeError:
        raise LocalProtocolError("a field is not Latin-1 text") from None


class H11ServerCodec(ServerCodec):
    def __init__(self, max_header_bytes: int, max_body_bytes: int | None = None) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._body_received = 0
        self._error: CodecProtocolError | None = None
        self._closing = False
        self._head_request = False

    def receive_data(self, data: bytes) -> None:
        try:
            self._conn.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise CodecProtocolError(str(exc), exc.error_status_hint) from None

    def next_event(self) -> ServerEvent:
        if self._error is not None:
            raise CodecProtocolError(f"request stream already failed: {self._error}", self._error.status)
        try:
            return self._next_event()
        except CodecProtocolError as exc:
            self._error = exc
            raise

    def _next_event(self) -> ServerEvent:
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise CodecProtocolError(str(exc), exc.error_status_hint) from None
        if event is h11.NEED_DATA:
            self._check_declared_chunk()
            return NEED_DATA
        if event is h11.PAUSED:
            return PAUSED
        if isinstance(event, h11.Request):
            return self._request_head(event)
        if isinstance(event, h11.Data):
            self._body_received += len(event.data)
            self._check_declared_chunk()
            return Body(bytes(event.data))
        if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return EndOfStream()
        raise CodecProtocolError(f"unexpected HTTP event {type(event).__name__}")

    def _request_head(self, event: h11.Request) -> RequestHead:
        headers = _decode_headers(event.headers.raw_items())
        target = event.target.decode("latin-1")
        # h11 has taken the request in, so even a refusal of it is a response to HEAD (no body).
        self._head_request = event.method == b"HEAD"
        names = {name for name, _ in headers}
        size = field_section_size(target, headers)
        check_request_head(target, event.http_version.decode(), names, size, self._max_header_bytes)
        self._body_received = 0
        return RequestHead(
            method=event.method.decode("ascii"),
            authority=next((v for k, v in headers if k == "host"), ""),
            path=target,
            headers=headers,
            content_length=declared_body_length(headers),
        )

    def _check_declared_chunk(self) -> None:
        """413 as soon as a chunk size says the body will exceed the limit, before its data arrives.

        h11 keeps the declared size of the current chunk to itself (``ChunkedReader._bytes_in_chunk``
        is the part not yet delivered); the reference reads it rather than re-parse the chunk line.
        """
        reader = self._conn._reader
        if self._max_body_bytes is None or not isinstance(reader, ChunkedReader):
            return
        if self._body_received + reader._bytes_in_chunk > self._max_body_bytes:
            raise CodecProtocolError("request body too large", 413)

    def encode_continue(self) -> bytes:
        if self._conn.they_are_waiting_for_100_continue:
            return _send(
                self._conn, h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            )
        return b""

    def request_close(self) -> None:
        self._closing = True

    def encode_response_head(self, head: ResponseHead) -> bytes:
        headers = forwardable(head.headers)
        if self._closing:
            headers.append(CLOSE_FIELD)
        response = h11.Response(
            status_code=head.status, headers=_encode_headers(headers), reason=head.reason.encode("latin-1")
        )
        return _send(self._conn, response)

    def encode_body(self, data: bytes) -> bytes:
        if not data or self._head_request:
            return b""
        return _send(self._conn, h11.Data(data=data))

    def encode_end(self) -> bytes:
        return _send(self._conn, h11.EndOfMessage())

    def local_reply(
        self, status: int, body: bytes, content_type: str = "text/plain", headers: Headers = ()
    ) -> bytes:
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        fields = [("content-type", content_type), ("content-length", str(len(body))), *headers]
        if self._closing or (status >= 400 and self._conn.their_state is not h11.DONE):
            fields.append(CLOSE_FIELD)
        response = h11.Response(
            status_code=status, headers=_encode_headers(fields), reason=reason_phrase(status).encode()
        )
        return _send(self._conn, response) + self.encode_body(body) + self.encode_end()

    def keep_alive(self) -> bool:
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def start_next_cycle(self) -> None:
        self._conn.start_next_cycle()
        self._head_request = False

    def must_close(self) -> bool:
        ended = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)
        return self._conn.our_state in (h11.MUST_CLOSE, h11.CLOSED) and self._conn.their_state in ended


class H11ClientCodec(ClientCodec):
    def __init__(self) -> None:
        self._conn = h11.Connection(h11.CLIENT)
        self._chunked = False
        self._trailers: Headers = ()

    def encode_request_head(self, head: RequestHead) -> bytes:
        headers = forwardable(head.headers, HOP_BY_HOP_AND_HOST)
        headers.insert(0, ("host", head.authority))
        try:
            request = h11.Request(
                method=head.method.encode("ascii"),
                target=head.path.encode("latin-1"),
                headers=_encode_headers(headers),
            )
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise LocalProtocolError(f"cannot send this request: {exc}") from None
        self._chunked = "chunked" in comma_tokens(tuple(headers), "transfer-encoding")
        return _send(self._conn, request)

    def encode_body(self, data: bytes) -> bytes:
        return _send(self._conn, h11.Data(data=data)) if data else b""

    def set_trailers(self, headers: Headers) -> bool:
        if not self._chunked:
            return False
        self._trailers = headers
        return True

    def encode_end(self) -> bytes:
        trailers, self._trailers = self._trailers, ()
        return _send(self._conn, h11.EndOfMessage(headers=_encode_headers(list(trailers))))

    def receive_data(self, data: bytes) -> None:
        try:
            self._conn.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise CodecProtocolError(f"upstream: {exc}", 502) from None

    def next_event(self) -> ClientEvent:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise CodecProtocolError(f"upstream: {exc}", 502) from None
            if event is h11.NEED_DATA:
                return NEED_DATA
            if event is h11.PAUSED:
                return PAUSED
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                if event.http_version.decode() not in SUPPORTED_VERSIONS:
                    raise CodecProtocolError("upstream: unsupported HTTP version", 502)
                return ResponseHead(
                    status=event.status_code,
                    headers=_decode_headers(event.headers.raw_items()),
                    reason=event.reason.decode("latin-1"),
                )
            if isinstance(event, h11.Data):
                return Body(bytes(event.data))
            if isinstance(event, h11.EndOfMessage):
                return EndOfStream()
            if isinstance(event, h11.ConnectionClosed):
                raise CodecProtocolError("upstream closed the connection", 502)

    def reusable(self) -> bool:
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def start_next_cycle(self) -> None:
        self._conn.start_next_cycle()


class H11CodecFactory(CodecFactory):
    protocol = "http1"

    def server_codec(self, max_header_bytes: int, max_body_bytes: int | None = None) -> ServerCodec:
        return H11ServerCodec(max_header_bytes, max_body_bytes)

    def client_codec(self) -> ClientCodec:
        return H11ClientCodec()

"""HTTP/1.1 codec on h11: keep-alive, chunked streaming, 100-continue, hop-by-hop header hygiene."""

from __future__ import annotations

from http import HTTPStatus

import h11

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
    RequestHead,
    ResponseHead,
    ServerCodec,
    ServerEvent,
)

#: RFC 9110 §7.6.1 connection-specific fields never forwarded; framing headers are re-derived by h11.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)


def _decode_headers(raw: list[tuple[bytes, bytes]]) -> Headers:
    return tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw)


def _forwardable(headers: Headers) -> list[tuple[str, str]]:
    conn_tokens = {
        t.strip().lower() for k, v in headers if k == "connection" for t in v.split(",") if t.strip()
    }
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in conn_tokens]


def _reason(status: int, given: str) -> bytes:
    """The reason phrase to send: the upstream's, or the standard one (HTTP/2 responses carry none)."""
    if given:
        return given.encode("latin-1")
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _content_length(headers: Headers) -> int | None:
    if any(k == "transfer-encoding" for k, _ in headers):
        return None
    for k, v in headers:
        if k == "content-length":
            return int(v)
    return 0


class H1ServerCodec(ServerCodec):
    def __init__(self, max_header_bytes: int) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._max_header_bytes = max_header_bytes
        self._closing = False
        self._head_request = False

    def receive_data(self, data: bytes) -> None:
        try:
            self._conn.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise CodecProtocolError(str(exc), exc.error_status_hint) from None

    def next_event(self) -> ServerEvent:
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise CodecProtocolError(str(exc), exc.error_status_hint) from None
        if event is h11.NEED_DATA:
            return NEED_DATA
        if event is h11.PAUSED:
            return PAUSED
        if isinstance(event, h11.Request):
            raw = event.headers.raw_items()
            # h11 bounds only an *incomplete* head; a complete oversized head arriving at once is ours.
            if len(event.target) + sum(len(k) + len(v) + 4 for k, v in raw) > self._max_header_bytes:
                raise CodecProtocolError("request header section too large", 431)
            headers = _decode_headers(raw)
            host = next((v for k, v in headers if k == "host"), "")
            target = event.target.decode("latin-1")
            if not target.startswith("/") and target != "*":
                raise CodecProtocolError("absolute-form and authority-form targets are not proxied", 400)
            self._head_request = event.method == b"HEAD"
            return RequestHead(
                method=event.method.decode("ascii"),
                authority=host,
                path=target,
                headers=headers,
                content_length=_content_length(headers),
            )
        if isinstance(event, h11.Data):
            return Body(bytes(event.data))
        if isinstance(event, h11.EndOfMessage):
            return EndOfStream()
        if isinstance(event, h11.ConnectionClosed):
            return EndOfStream()
        raise CodecProtocolError(f"unexpected HTTP event {type(event).__name__}")

    def encode_continue(self) -> bytes:
        if self._conn.they_are_waiting_for_100_continue:
            return self._conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
        return b""

    def request_close(self) -> None:
        self._closing = True

    def encode_response_head(self, head: ResponseHead) -> bytes:
        headers = _forwardable(head.headers)
        if self._closing:
            headers.append(("connection", "close"))
        return (
            self._conn.send(
                h11.Response(
                    status_code=head.status, headers=headers, reason=_reason(head.status, head.reason)
                )
            )
            or b""
        )

    def switch_protocols(self, head: ResponseHead) -> tuple[bytes, bytes]:
        try:
            data = self._conn.send(
                h11.InformationalResponse(
                    status_code=101, headers=list(head.headers), reason=_reason(101, head.reason)
                )
            )
        except h11.LocalProtocolError as exc:
            raise CodecProtocolError(f"cannot switch protocols: {exc}", 502) from None
        return data or b"", self._conn.trailing_data[0]

    def encode_body(self, data: bytes) -> bytes:
        if not data or self._head_request:
            return b""
        return self._conn.send(h11.Data(data=data)) or b""

    def encode_end(self) -> bytes:
        return self._conn.send(h11.EndOfMessage()) or b""

    def local_reply(
        self, status: int, body: bytes, content_type: str = "text/plain", headers: Headers = ()
    ) -> bytes:
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        extra = list(headers)
        if self._closing or (status >= 400 and self._conn.their_state is not h11.DONE):
            extra.append(("connection", "close"))
        head = ResponseHead(
            status,
            (("content-type", content_type), ("content-length", str(len(body))), *extra),
        )
        out = self._conn.send(h11.Response(status_code=head.status, headers=list(head.headers))) or b""
        return out + self.encode_body(body) + self.encode_end()

    def keep_alive(self) -> bool:
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def start_next_cycle(self) -> None:
        self._conn.start_next_cycle()

    def must_close(self) -> bool:
        ended = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)
        return self._conn.our_state in (h11.MUST_CLOSE, h11.CLOSED) and self._conn.their_state in ended


class H1ClientCodec(ClientCodec):
    def __init__(self) -> None:
        self._conn = h11.Connection(h11.CLIENT)

    def encode_request_head(self, head: RequestHead) -> bytes:
        headers = [(k, v) for k, v in _forwardable(head.headers) if k != "host"]
        headers.insert(0, ("host", head.authority))
        return self._conn.send(h11.Request(method=head.method, target=head.path, headers=headers)) or b""

    def encode_body(self, data: bytes) -> bytes:
        return self._conn.send(h11.Data(data=data)) or b"" if data else b""

    def encode_end(self) -> bytes:
        return self._conn.send(h11.EndOfMessage()) or b""

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


class Http1CodecFactory(CodecFactory):
    protocol = "http1"

    def server_codec(self, max_header_bytes: int) -> ServerCodec:
        return H1ServerCodec(max_header_bytes)

    def client_codec(self) -> ClientCodec:
        return H1ClientCodec()

"""HTTP/1.1 codec on httptools (llhttp, the parser of Node.js and uvicorn): the default ``codec: http1``.

It keeps the contract of the h11 reference (:mod:`gateway.codec.http1_h11`, selectable as
``codec: gateway.codec.http1_h11:H11CodecFactory``): the same events, verdicts and bytes out, which
tests/gateway/test_codec_differential.py checks stream by stream. What it does around llhttp, and why:

* llhttp parses all it is fed and cannot be paused from Python (httptools exposes no ``HPE_PAUSED``).
  So ``receive_data`` parses at once, the callbacks queue events, and ``next_event`` hands them out
  in h11's order: a request's events, then :data:`PAUSED` until ``start_next_cycle``. A pipelined
  request is parsed ahead; once :data:`PIPELINE_DEPTH` heads wait, reading stops and the connection
  closes after they are answered, so parsing ahead is bounded. A refusal is queued where it arose:
  the requests before it are still answered, as with h11.
* llhttp has no size limits. Bytes fed without the message moving on (an unfinished head, chunk
  line or trailer section) are counted; past the limit the peer gets 431, as h11 bounds its buffer.
* h11 checks what llhttp does not: a single Host field (required in HTTP/1.1), Transfer-Encoding
  exactly ``chunked`` (else 501), HTTP/1.0 closes the connection even with ``keep-alive``, a field
  value has no trailing whitespace. The checks both codecs share live in :mod:`.http1_fields`.
* llhttp does not report chunk sizes; the codec reads a declared size back from the chunk line that
  ends where the chunk's data begins, so a chunk beyond ``max_body_bytes`` gets 413 before its data.
* httptools cannot tell llhttp that a response answers HEAD, so parsing stops at that response's
  head; where the stream goes on is then unknown, and the upstream connection is not reused.

Writing follows h11's rules (:mod:`.http1_writers`).

This is the proxy's hot path: per message the work is llhttp plus one Python call per field, and
the head is judged from one dict of its fields.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Generic, NamedTuple, TypeVar

import httptools

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
    MAX_RESPONSE_HEAD_BYTES,
    SUPPORTED_VERSIONS,
    check_request_head,
    comma_tokens,
    field_section_size,
    forwardable_indexed,
    reason_phrase,
)
from gateway.codec.http1_writers import BodyWriter, encode_fields, request_head, response_head

#: Request heads the codec holds (parsed, not yet handed out) before it stops reading.
PIPELINE_DEPTH = 32

#: llhttp refusals that h11 answers with a status other than 400, by llhttp's reason text.
_REFUSAL_STATUS = {
    "Invalid HTTP version": 505,
    "Invalid `Transfer-Encoding` header value": 501,
    "Request has invalid `Transfer-Encoding`": 501,
}

_END = EndOfStream()
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_TRAILING_WHITESPACE = (" ", "\t")

#: Lower-cased field names by their bytes on the wire, and methods. Peers choose names, so the
#: cache is bounded in entries and in name length (a field name is rarely over 40 bytes).
_FIELD_NAMES: dict[bytes, str] = {}
_METHODS: dict[bytes, str] = {}
_MAX_CACHED, _MAX_CACHED_LENGTH = 4096, 64


def _field_name(raw: bytes) -> str:
    name = raw.decode("latin-1").lower()
    if len(raw) <= _MAX_CACHED_LENGTH and len(_FIELD_NAMES) < _MAX_CACHED:
        _FIELD_NAMES[raw] = name
    return name


def _method(raw: bytes) -> str:
    method = _METHODS.get(raw)
    if method is None:
        method = _METHODS[raw] = raw.decode("ascii")  # llhttp knows a few dozen methods, no more
    return method


def _lists(headers: Headers, index: dict[str, str], name: str, token: str) -> bool:
    """Whether the list-valued field ``name`` (present) holds ``token``; quick for one plain value."""
    value = index[name]
    if len(index) == len(headers) and "," not in value:
        return value.lower() == token
    return token in comma_tokens(headers, name)


def _normalise_transfer_coding(headers: Headers) -> Headers:
    """h11's rule: Transfer-Encoding is one field, exactly ``chunked`` (kept lower case), or 501."""
    codings = [value for name, value in headers if name == "transfer-encoding"]
    if len(codings) > 1 or codings[0].lower() != "chunked":
        raise CodecProtocolError("only Transfer-Encoding: chunked is supported", 501)
    return tuple((k, "chunked" if k == "transfer-encoding" else v) for k, v in headers)


class _State(Enum):
    """One side's state in h11's model of an HTTP/1.1 connection."""

    IDLE = "idle"
    SEND_RESPONSE = "send_response"
    SEND_BODY = "send_body"
    DONE = "done"
    MUST_CLOSE = "must_close"
    CLOSED = "closed"
    ERROR = "error"


IDLE, SEND_RESPONSE, SEND_BODY = _State.IDLE, _State.SEND_RESPONSE, _State.SEND_BODY
DONE, MUST_CLOSE, CLOSED, ERROR = _State.DONE, _State.MUST_CLOSE, _State.CLOSED, _State.ERROR


class _StopReading(Exception):
    """Raised from a callback to make llhttp stop where it is; the codec reads no further."""


class _CloseAfterResponse:
    """Queued before a response that ends the connection (HTTP/1.0, ``Connection: close``, HEAD)."""


_CLOSE_AFTER_RESPONSE = _CloseAfterResponse()

Queued = TypeVar("Queued")


class _Http1Connection(Generic[Queued]):
    """What both sides share: feeding llhttp, the event queue, h11's states, the body writer.

    ``_peer`` and ``_us`` are h11's states as the caller sees them: they move when ``next_event``
    hands an event out or an ``encode_*`` call is made, not when llhttp parses ahead.
    """

    _parser: httptools.HttpRequestParser | httptools.HttpResponseParser

    def __init__(self, max_stalled_bytes: int, error_status: int | None) -> None:
        self._events: deque[Queued | CodecProtocolError] = deque()
        self._fields: list[tuple[str, str]] = []
        self._max_stalled_bytes = max_stalled_bytes
        #: ``None``: the status each refusal names (server side); else this one for all (client side).
        self._error_status = error_status
        self._fed = 0  # bytes fed before the current feed
        self._feed_length = 0
        self._stalled = 0
        self._progress = False
        self._reading = True
        self._eof = False
        self._peer = IDLE
        self._us = IDLE
        self._keep_alive = True
        self._writer = BodyWriter(0, chunked=False)

    # -- feeding llhttp

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        elif self._reading:
            self._progress = False
            self._feed_length = len(data)
            self._feed(data)
            self._fed += self._feed_length

    def _feed(self, data: bytes) -> None:
        try:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                self._parse_after_upgrade(data[int(upgrade.args[0]) :])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _StopReading):
                self._reading = False
            elif isinstance(cause, CodecProtocolError):
                self._fail(cause)
            elif isinstance(cause, httptools.HttpParserError):
                self._fail(CodecProtocolError(f"malformed HTTP/1.1: {cause}", 400))
            else:
                raise
        except httptools.HttpParserError as exc:
            reason = str(exc)
            self._fail(CodecProtocolError(f"malformed HTTP/1.1: {reason}", _REFUSAL_STATUS.get(reason, 400)))
        else:
            self._after_feed(data)

    def _parse_after_upgrade(self, data: bytes) -> None:
        """llhttp stops after an Upgrade request; the codec never switches protocols (Upgrade is
        hop-by-hop), so what follows is the next request, on the same parser."""
        while data:
            try:
                self._parser.feed_data(data)
                return
            except httptools.HttpParserUpgrade as upgrade:
                data = data[int(upgrade.args[0]) :]

    def _after_feed(self, data: bytes) -> None:
        """Bound what llhttp holds without progress, as h11 bounds its buffer (431 past the limit)."""
        if self._progress:
            self._stalled = 0
            return
        self._stalled += len(data)
        if self._stalled > self._max_stalled_bytes:
            self._fail(CodecProtocolError("receive buffer too long", 431))

    def _fail(self, error: CodecProtocolError) -> None:
        if self._error_status is not None:
            error = CodecProtocolError(f"upstream: {error}", self._error_status)
        self._events.append(error)
        self._reading = False

    def _failed(self, error: CodecProtocolError) -> CodecProtocolError:
        self._peer = ERROR
        self._settle()
        return error

    def on_header(self, name: bytes, value: bytes) -> None:
        text = value.decode("latin-1")
        if text[-1:] in _TRAILING_WHITESPACE:  # llhttp strips the whitespace before a value, not after
            text = text.rstrip(" \t")
        self._fields.append((_FIELD_NAMES.get(name) or _field_name(name), text))

    # -- h11's state rules

    def _disable_keep_alive(self) -> None:
        self._keep_alive = False
        if self._us is DONE:
            self._us = MUST_CLOSE
        if self._peer is DONE:
            self._peer = MUST_CLOSE

    def _peer_done(self) -> None:
        self._peer = DONE if self._keep_alive else MUST_CLOSE

    def _peer_closed(self) -> None:
        self._peer = CLOSED
        self._settle()

    def _settle(self) -> None:
        """h11's state-triggered transitions: once the peer has closed or failed, we must close too."""
        if (self._peer is CLOSED and (self._us is DONE or self._us is IDLE)) or (
            self._peer is ERROR and self._us is DONE
        ):
            self._us = MUST_CLOSE

    def _start_body(self, writer: BodyWriter, closes: bool) -> None:
        self._writer = writer
        self._us = SEND_BODY
        if closes:
            self._disable_keep_alive()

    def encode_body(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._us is not SEND_BODY:
            raise LocalProtocolError("no message body is being sent")
        return self._writer.encode(data)

    def encode_end(self) -> bytes:
        return self._end()

    def _end(self, trailer_fields: bytes = b"") -> bytes:
        if self._us is not SEND_BODY:
            raise LocalProtocolError("no message is being sent")
        out = self._writer.end(trailer_fields)
        self._us = DONE if self._keep_alive else MUST_CLOSE
        self._settle()
        return out

    def _start_next_cycle(self) -> None:
        if self._us is not DONE or self._peer is not DONE:
            raise LocalProtocolError("the exchange is not over on both sides")
        self._us = self._peer = IDLE


class _QueuedRequest(NamedTuple):
    """What the server codec keeps of a queued request beside the :class:`RequestHead` it hands out."""

    method: str
    version: str
    keep_alive: bool
    expects_continue: bool


class _RequestRefused(CodecProtocolError):
    """A parsed request head the codec refuses; the refusal answers that request (h11's view)."""

    def __init__(self, message: str, status: int, request: _QueuedRequest) -> None:
        super().__init__(message, status)
        self.request = request


@dataclass(slots=True)
class _OpenChunk:
    """A chunk whose header llhttp has reported and whose end it has not."""

    body_before: int
    queued_before: int
    data_in_feed: int = 0
    checked: bool = False


class Http1ServerCodec(_Http1Connection[RequestHead | Body | EndOfStream], ServerCodec):
    """Downstream side: requests in, responses out."""

    _parser: httptools.HttpRequestParser

    def __init__(self, max_header_bytes: int, max_body_bytes: int | None = None) -> None:
        super().__init__(max_stalled_bytes=max_header_bytes, error_status=None)
        self._parser = httptools.HttpRequestParser(self)
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._requests: deque[_QueuedRequest] = deque()
        # The message llhttp is in, which is ahead of the caller's when requests are pipelined.
        self._url = b""
        self._begun = 0
        self._head_start = 0  # bytes fed before the feed in which the current head began
        self._last_keep_alive = True
        self._pipeline_full = False
        self._chunked = False
        self._body_bytes = 0
        self._chunk: _OpenChunk | None = None
        self._chunk_line_start = b""
        # The exchange the caller is in.
        self._delivered = 0
        self._method: str | None = None
        self._their_version: str | None = None
        self._waiting_for_continue = False
        self._closing = False

    # -- llhttp callbacks

    def on_message_begin(self) -> None:
        if len(self._requests) >= PIPELINE_DEPTH:
            self._pipeline_full = True
            raise _StopReading()
        if not self._last_keep_alive:
            raise CodecProtocolError("data after the last request of the connection", 400)
        self._begun += 1
        self._head_start = self._fed

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_headers_complete(self) -> None:
        self._progress = True
        parser = self._parser
        headers = tuple(self._fields)
        self._fields = []
        index = dict(headers)
        target = self._url.decode("latin-1")
        self._url = b""
        if "transfer-encoding" in index:
            headers = _normalise_transfer_coding(headers)
            index = dict(headers)
        version = parser.get_http_version()
        self._check_host(version, headers, index)
        keep_alive = version >= "1.1" and not (
            "connection" in index and _lists(headers, index, "connection", "close")
        )
        expects_continue = (
            version >= "1.1" and "expect" in index and _lists(headers, index, "expect", "100-continue")
        )
        request = _QueuedRequest(_method(parser.get_method()), version, keep_alive, expects_continue)
        content_length = self._check_head(request, target, headers, index)
        self._last_keep_alive = keep_alive and version == "1.1"
        self._chunked = content_length is None
        self._body_bytes = 0
        self._chunk_line_start = b""
        self._requests.append(request)
        self._events.append(
            RequestHead(request.method, index.get("host", ""), target, headers, content_length)
        )

    @staticmethod
    def _check_host(version: str, headers: Headers, index: dict[str, str]) -> None:
        """h11's rule (RFC 9112 §3.2): at most one Host field, and exactly one in an HTTP/1.1 request."""
        if "host" not in index:
            if version == "1.1":
                raise CodecProtocolError("missing mandatory Host: header", 400)
        elif len(index) < len(headers) and sum(1 for name, _ in headers if name == "host") > 1:
            raise CodecProtocolError("found multiple Host: headers", 400)

    def _check_head(
        self, request: _QueuedRequest, target: str, headers: Headers, index: dict[str, str]
    ) -> int | None:
        """The shared head checks; the declared body length (``None``: chunked).

        A refusal still answers the request it refuses, as in h11 (a HEAD request's refusal has no
        body, an HTTP/1.0 one's closes).
        """
        # The head is within the bytes fed since it began; the exact measure is needed only past that.
        bound = self._fed + self._feed_length - self._head_start + len(headers)
        size = bound if bound <= self._max_header_bytes else field_section_size(target, headers)
        try:
            check_request_head(target, request.version, index, size, self._max_header_bytes)
            if "transfer-encoding" in index:
                content_length = None
            else:
                content_length = int(index["content-length"]) if "content-length" in index else 0
            if content_length != 0 and "upgrade" in index and self._parser.should_upgrade():
                # httptools has llhttp skip the body of an Upgrade request, so its end cannot be found.
                raise CodecProtocolError("an Upgrade request with a body is not supported", 400)
        except CodecProtocolError as exc:
            raise _RequestRefused(str(exc), exc.status, request) from None
        return content_length

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._body_bytes += len(body)
        if self._chunk is not None:
            self._chunk.data_in_feed += len(body)
        self._events.append(Body(body))

    def on_chunk_header(self) -> None:
        self._progress = True
        self._chunk = _OpenChunk(body_before=self._body_bytes, queued_before=len(self._events))

    def on_chunk_complete(self) -> None:
        self._progress = True
        chunk, self._chunk = self._chunk, None
        if chunk is not None and self._max_body_bytes is not None and self._body_bytes > self._max_body_bytes:
            self._drop_events_since(chunk.queued_before)
            raise CodecProtocolError("request body too large", 413)

    def on_message_complete(self) -> None:
        self._progress = True
        self._fields = []  # trailer fields: checked by llhttp, not forwarded (as with h11)
        self._chunked = False
        self._chunk = None
        self._events.append(_END)

    def _after_feed(self, data: bytes) -> None:
        if self._chunked:
            self._check_declared_chunk(data)
            if not self._reading:
                return
        super()._after_feed(data)

    def _check_declared_chunk(self, data: bytes) -> None:
        """Refuse a chunk whose declared size takes the body past the limit, before its data arrives.

        llhttp reports chunk boundaries, not sizes. When a chunk is still open at the end of a feed,
        the bytes after its chunk line are exactly the data llhttp delivered for it, so the line ends
        ``data_in_feed`` bytes before the end of the feed and is read back from there (joined with
        the start carried over when the line was split across feeds). A line that is not a size (a
        trailer field, or chunk data complete but for its CRLF) is left alone: the data is then all
        here, and ``on_chunk_complete`` counts it.
        """
        chunk = self._chunk
        if chunk is None:
            last_lf = data.rfind(b"\n")
            self._chunk_line_start = data[last_lf + 1 :] if last_lf >= 0 else self._chunk_line_start + data
            return
        end = len(data) - chunk.data_in_feed
        chunk.data_in_feed = 0
        if chunk.checked:
            return
        chunk.checked = True
        previous_lf = data.rfind(b"\n", 0, max(end - 1, 0))
        line = data[previous_lf + 1 : end] if previous_lf >= 0 else self._chunk_line_start + data[:end]
        self._chunk_line_start = b""
        size = line[:-2].partition(b";")[0]
        if self._max_body_bytes is None or not line.endswith(b"\r\n") or not _HEX.fullmatch(size):
            return
        if chunk.body_before + int(size, 16) > self._max_body_bytes:
            self._drop_events_since(chunk.queued_before)
            self._fail(CodecProtocolError("request body too large", 413))

    def _drop_events_since(self, mark: int) -> None:
        while len(self._events) > mark:
            self._events.pop()

    # -- events out

    def next_event(self) -> ServerEvent:
        peer = self._peer
        if peer is DONE or peer is MUST_CLOSE:
            if self._events or self._begun > self._delivered:
                if peer is MUST_CLOSE:
                    raise self._failed(CodecProtocolError("data after the last request of the connection"))
                return PAUSED
            return self._at_rest()
        if peer is ERROR:
            raise CodecProtocolError("the request stream already failed", 400)
        if peer is CLOSED:
            return _END
        if not self._events:
            return self._at_rest()
        event = self._events.popleft()
        if type(event) is RequestHead:
            self._start_request(self._requests.popleft())
        elif event is _END:
            self._delivered += 1
            self._waiting_for_continue = False
            self._peer_done()
        elif type(event) is Body:
            self._waiting_for_continue = False
        else:
            assert isinstance(event, CodecProtocolError)
            if isinstance(event, _RequestRefused):
                self._start_request(event.request)
            raise self._failed(event)
        return event

    def _at_rest(self) -> ServerEvent:
        """Nothing queued: wait for bytes, or report the peer's close (an error mid-request)."""
        if not self._eof:
            return NEED_DATA
        if self._peer is SEND_BODY or self._begun > self._delivered:
            raise self._failed(CodecProtocolError("peer closed the connection in the middle of a request"))
        self._peer_closed()
        return _END

    def _start_request(self, request: _QueuedRequest) -> None:
        self._peer = SEND_BODY
        if self._us is IDLE:
            self._us = SEND_RESPONSE
        self._method = request.method
        self._their_version = request.version
        self._waiting_for_continue = request.expects_continue
        if not request.keep_alive:
            self._disable_keep_alive()

    # -- bytes out

    def encode_continue(self) -> bytes:
        if not self._waiting_for_continue:
            return b""
        self._waiting_for_continue = False
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    def request_close(self) -> None:
        self._closing = True

    def encode_response_head(self, head: ResponseHead) -> bytes:
        fields, index = forwardable_indexed(head.headers)
        if self._closing or (self._pipeline_full and not self._requests):
            self._close_field(fields, index)
        # A response relayed from HTTP/2 has no reason phrase: send the standard one (clients such as
        # h2load refuse an empty one).
        return self._response_head(head.status, head.reason or reason_phrase(head.status), fields, index)

    def switch_protocols(self, head: ResponseHead) -> tuple[bytes, bytes]:
        """The upstream's ``101`` as it came (its Upgrade/Connection fields are the point of it); from
        here the connection carries the new protocol and this codec reads nothing more. A client waits
        for the 101 before speaking the new protocol, so nothing of it was parsed as HTTP."""
        if self._us is not IDLE and self._us is not SEND_RESPONSE:
            raise CodecProtocolError("cannot switch protocols: a response is already under way", 502)
        if any("\r" in k or "\n" in k or "\r" in v or "\n" in v for k, v in head.headers):
            raise CodecProtocolError("cannot switch protocols: CR or LF in a field", 502)
        lines = [f"HTTP/1.1 101 {head.reason or reason_phrase(101)}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in head.headers]
        self._us = CLOSED
        self._reading = False
        return ("".join(lines) + "\r\n").encode("latin-1"), b""

    @staticmethod
    def _close_field(fields: list[tuple[str, str]], index: dict[str, str]) -> None:
        fields.append(CLOSE_FIELD)
        index.setdefault(*CLOSE_FIELD)

    def _response_head(
        self, status: int, reason: str, fields: list[tuple[str, str]], index: dict[str, str]
    ) -> bytes:
        if self._us is not IDLE and self._us is not SEND_RESPONSE:
            raise LocalProtocolError("a response is already under way")
        head, writer, closes = response_head(
            status, reason, fields, index, self._method, self._their_version, self._keep_alive
        )
        self._waiting_for_continue = False
        self._start_body(writer, closes)
        return head

    def encode_body(self, data: bytes) -> bytes:
        if self._method == "HEAD":
            return b""
        return super().encode_body(data)

    def local_reply(
        self, status: int, body: bytes, content_type: str = "text/plain", headers: Headers = ()
    ) -> bytes:
        if self._us is not IDLE and self._us is not SEND_RESPONSE:
            return b""
        fields = [("content-type", content_type), ("content-length", str(len(body))), *headers]
        index = dict(fields)
        if self._closing or (status >= 400 and self._peer is not DONE):
            self._close_field(fields, index)
        head = self._response_head(status, reason_phrase(status), fields, index)
        return head + self.encode_body(body) + self.encode_end()

    def keep_alive(self) -> bool:
        return self._us is DONE and self._peer is DONE

    def start_next_cycle(self) -> None:
        self._start_next_cycle()
        self._method = None

    def must_close(self) -> bool:
        return (self._us is MUST_CLOSE or self._us is CLOSED) and self._peer in (
            DONE,
            MUST_CLOSE,
            CLOSED,
            ERROR,
        )


class Http1ClientCodec(
    _Http1Connection[ResponseHead | Body | EndOfStream | _CloseAfterResponse], ClientCodec
):
    """Upstream side: requests out, responses in."""

    _parser: httptools.HttpResponseParser
    _trailers: Headers = ()

    def __init__(self) -> None:
        super().__init__(max_stalled_bytes=MAX_RESPONSE_HEAD_BYTES, error_status=502)
        self._parser = httptools.HttpResponseParser(self)
        self._method: str | None = None
        self._reason = b""
        self._informational = False
        self._responses = 0
        self._until_close = False
        self._more_than_one_response = False

    # -- bytes out

    def encode_request_head(self, head: RequestHead) -> bytes:
        if self._us is not IDLE:
            raise LocalProtocolError("a request is already under way")
        fields, index = forwardable_indexed(head.headers, HOP_BY_HOP_AND_HOST)
        fields.insert(0, ("host", head.authority))
        index["host"] = head.authority
        out, writer = request_head(head.method, head.path, fields, index)
        self._method = head.method
        self._peer = SEND_RESPONSE
        self._start_body(writer, closes=False)
        return out

    def set_trailers(self, headers: Headers) -> bool:
        """Only a chunked request has a trailer section; one framed by Content-Length drops them."""
        if self._us is not SEND_BODY or not self._writer.chunked:
            return False
        self._trailers = headers
        return True

    def encode_end(self) -> bytes:
        trailers, self._trailers = self._trailers, ()
        if not trailers:
            return self._end()
        fields = list(trailers)
        return self._end(encode_fields(fields, dict(fields)))

    # -- llhttp callbacks

    def on_message_begin(self) -> None:
        if self._responses:
            # More bytes after the final response: the upstream answered twice, or sent a body with
            # its answer to HEAD. The connection cannot be trusted with another request.
            self._more_than_one_response = True
            raise _StopReading()

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_headers_complete(self) -> None:
        self._progress = True
        parser = self._parser
        headers = tuple(self._fields)
        self._fields = []
        reason, self._reason = self._reason.decode("latin-1"), b""
        status = parser.get_status_code()
        if status < 100 or status == 101:
            raise CodecProtocolError(f"status {status} does not answer a forwarded request", 502)
        if status < 200:
            self._informational = True
            return
        version = parser.get_http_version()
        if version not in SUPPORTED_VERSIONS:
            raise CodecProtocolError(f"HTTP/{version} is not supported", 502)
        index = dict(headers)
        if "transfer-encoding" in index:
            headers = _normalise_transfer_coding(headers)
        if version != "1.1" or ("connection" in index and _lists(headers, index, "connection", "close")):
            self._events.append(_CLOSE_AFTER_RESPONSE)
        self._until_close = "transfer-encoding" not in index and "content-length" not in index
        self._events.append(ResponseHead(status, headers, reason))
        if self._method == "HEAD":
            self._responses += 1
            self._events.append(_CLOSE_AFTER_RESPONSE)
            self._events.append(_END)
            raise _StopReading()

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._events.append(Body(body))

    def on_message_complete(self) -> None:
        self._progress = True
        self._fields = []
        if self._informational:
            self._informational = False
            return
        self._responses += 1
        self._until_close = False
        self._events.append(_END)

    # -- events out

    def next_event(self) -> ClientEvent:
        events = self._events
        while events:
            event = events.popleft()
            if type(event) is Body:
                return event
            if type(event) is ResponseHead:
                self._peer = SEND_BODY
                return event
            if event is _END:
                self._peer_done()
                return _END
            if event is _CLOSE_AFTER_RESPONSE:
                self._disable_keep_alive()
                continue
            assert isinstance(event, CodecProtocolError)
            raise self._failed(event)
        return self._at_rest()

    def _at_rest(self) -> ClientEvent:
        peer = self._peer
        if peer is ERROR:
            raise CodecProtocolError("upstream: the response stream already failed", 502)
        if (peer is DONE or peer is MUST_CLOSE) and self._more_than_one_response:
            return PAUSED
        if not self._eof:
            return NEED_DATA
        if peer is SEND_BODY and self._until_close:
            # RFC 9112 §6.3: without Content-Length or chunking, the response ends when the upstream closes.
            self._until_close = False
            self._disable_keep_alive()
            self._peer_done()
            return _END
        raise self._failed(CodecProtocolError("upstream closed the connection", 502))

    def reusable(self) -> bool:
        return self._us is DONE and self._peer is DONE and not self._more_than_one_response

    def start_next_cycle(self) -> None:
        self._start_next_cycle()
        self._method = None
        self._responses = 0


class Http1CodecFactory(CodecFactory):
    protocol = "http1"

    def server_codec(self, max_header_bytes: int, max_body_bytes: int | None = None) -> ServerCodec:
        return Http1ServerCodec(max_header_bytes, max_body_bytes)

    def client_codec(self) -> ClientCodec:
        return Http1ClientCodec()

"""Drive an HTTP/1.1 codec the way the HTTP connection manager and the router do, and write down
what it did: a transcript two codecs can be compared by.

A server transcript lists each request head handed out, its body (joined), its end, the bytes the
codec wrote for the response the "router" chose, and how the stream finished: the peer's clean
close, ``Connection: close`` after a response, or a refusal with its status. The response depends
on the request path, so the same streams exercise the codec's writing (framing, ``Connection``,
HEAD, HTTP/1.0 peers) as well as its reading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from gateway.codec.base import (
    NEED_DATA,
    PAUSED,
    Body,
    ClientCodec,
    CodecFactory,
    CodecProtocolError,
    EndOfStream,
    RequestHead,
    ResponseHead,
    ServerCodec,
)
from gateway.codec.http1 import Http1CodecFactory
from gateway.codec.http1_h11 import H11CodecFactory

LLHTTP = Http1CodecFactory()
H11 = H11CodecFactory()


class Respond(Enum):
    """When the simulated router answers a request."""

    #: As soon as the request has ended (a fast upstream).
    AT_END = "at_end"
    #: Only when the codec says the next request waits (``PAUSED``) or the peer closes: a slow upstream.
    DEFERRED = "deferred"
    #: At the head, before reading the body (a 404 or a direct response).
    AT_HEAD = "at_head"


Entry = tuple[object, ...]


def response_for(head: RequestHead) -> tuple[ResponseHead, bytes]:
    """The upstream's answer, chosen by the request path so that writing is exercised too."""
    if head.path.startswith("/chunked"):
        return ResponseHead(200, (("content-type", "text/plain"),), "OK"), b"streamed"
    if head.path.startswith("/te"):
        return ResponseHead(200, (("transfer-encoding", "chunked"), ("x-up", "1")), "OK"), b"abc"
    if head.path.startswith("/204"):
        return ResponseHead(204, (("x-empty", "yes"),), "No Content"), b""
    if head.path.startswith("/close"):
        return ResponseHead(200, (("content-length", "2"), ("connection", "close")), "OK"), b"ok"
    return ResponseHead(200, (("content-length", "2"), ("host", "h"), ("server", "up")), "OK"), b"ok"


@dataclass
class _Exchange:
    head: RequestHead
    body: bytearray
    ended: bool = False
    answered: bool = False


class ServerDriver:
    def __init__(self, codec: ServerCodec, respond: Respond, draining: bool = False) -> None:
        self.codec = codec
        self.respond = respond
        #: The gateway is draining: the first response tells the client the connection closes.
        self.draining = draining
        self.log: list[Entry] = []
        self.exchange: _Exchange | None = None
        self.finished = False

    def run(self, fragments: Iterable[bytes]) -> list[Entry]:
        for data in [*fragments, b""]:
            if self.finished:
                break
            self.feed(data)
        if not self.finished:
            self.log.append(("unfinished",))
        return self.log

    def feed(self, data: bytes) -> None:
        codec = self.codec
        try:
            codec.receive_data(data)
            while not self.finished:
                event = codec.next_event()
                if event is NEED_DATA:
                    return
                if event is PAUSED:
                    self.finish_exchange()
                elif isinstance(event, RequestHead):
                    self.on_head(event)
                elif isinstance(event, Body):
                    assert self.exchange is not None and not self.exchange.ended
                    self.exchange.body += event.data
                elif isinstance(event, EndOfStream):
                    self.on_end()
        except CodecProtocolError as exc:
            self.log.append(("refused", exc.status))
            reply = codec.local_reply(exc.status, b"refused\n")
            # The head, ignoring case: whether the parser had taken the refused request in (so that
            # a HEAD's refusal has no body, and h11 rewrites "Connection" in its own case) differs
            # where llhttp refuses a target that h11 takes and the head check then refuses.
            self.log.append(("refusal head", reply.partition(b"\r\n\r\n")[0].lower()))
            self.finished = True

    def on_head(self, head: RequestHead) -> None:
        assert self.exchange is None, "a head before the previous exchange finished"
        self.log.append(("head", head.method, head.authority, head.path, head.headers, head.content_length))
        self.exchange = _Exchange(head, bytearray())
        if self.draining:
            self.codec.request_close()
        self.log.append(("continue", self.codec.encode_continue()))
        if self.respond is Respond.AT_HEAD:
            self.answer()

    def on_end(self) -> None:
        exchange = self.exchange
        if exchange is None or exchange.ended:
            self.finish_exchange()
            self.log.append(("peer closed",))
            self.finished = True
            return
        exchange.ended = True
        self.log.append(("body", bytes(exchange.body)))
        if self.respond is Respond.AT_END:
            self.finish_exchange()

    def answer(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.answered = True
        if self.respond is Respond.AT_HEAD:
            out = self.codec.local_reply(404, b"no route\n")
        else:
            head, body = response_for(exchange.head)
            out = (
                self.codec.encode_response_head(head) + self.codec.encode_body(body) + self.codec.encode_end()
            )
        self.log.append(("response", out))

    def finish_exchange(self) -> None:
        """The router is done with the request: answer if not yet, then keep alive or close."""
        exchange = self.exchange
        if exchange is None:
            return
        if not exchange.answered:
            self.answer()
        if not exchange.ended:
            return
        self.exchange = None
        if self.codec.keep_alive():
            self.codec.start_next_cycle()
        else:
            self.log.append(("close", self.codec.must_close()))
            self.finished = True


def server_transcript(
    factory: CodecFactory,
    fragments: Iterable[bytes],
    respond: Respond = Respond.AT_END,
    *,
    max_header_bytes: int = 4096,
    max_body_bytes: int | None = 1 << 20,
    draining: bool = False,
) -> list[Entry]:
    codec = factory.server_codec(max_header_bytes, max_body_bytes)
    return ServerDriver(codec, respond, draining).run(fragments)


def client_transcript(factory: CodecFactory, request: RequestHead, fragments: Iterable[bytes]) -> list[Entry]:
    """Send ``request`` (no body) and read the response from ``fragments`` (then the upstream closes)."""
    codec: ClientCodec = factory.client_codec()
    log: list[Entry] = [("request", codec.encode_request_head(request) + codec.encode_end())]
    body = bytearray()
    try:
        for data in [*fragments, b""]:
            codec.receive_data(data)
            while True:
                event = codec.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                if isinstance(event, ResponseHead):
                    log.append(("head", event.status, event.reason, event.headers))
                elif isinstance(event, Body):
                    body += event.data
                elif isinstance(event, EndOfStream):
                    log.append(("body", bytes(body)))
                    log.append(("reusable", codec.reusable()))
                    return log
    except CodecProtocolError as exc:
        log.append(("refused", exc.status))
        return log
    log.append(("unfinished",))
    return log


def splits(stream: bytes) -> Iterable[list[bytes]]:
    """The stream whole, cut in two at every point, and one byte at a time."""
    yield [stream]
    for cut in range(1, len(stream)):
        yield [stream[:cut], stream[cut:]]
    yield [stream[i : i + 1] for i in range(len(stream))]

"""The llhttp codec (the default ``http1``) against the h11 reference, byte stream for byte stream.

Both codecs are driven the same way (tests/gateway/codec_harness.py) and must leave the same
transcript: the same request heads and bodies handed to the router, the same response bytes, the same
refusal status at the same point, the same end of the connection. Streams: valid ones cut at every
point, single-fault streams, and byte-mutated ones (hypothesis, with the project's profiles).

Where llhttp and h11 legitimately differ, the divergence must match an entry of :data:`DIVERGENCES`:
its trigger is in the stream and the difference goes the documented way (``stricter``: only llhttp
refuses; ``laxer``: only h11 refuses; ``status``: both refuse with different statuses). Each entry
also has an example showing the divergence is real, so the list cannot outlive its reasons.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.codec.base import RequestHead
from gateway.codec.http1 import PIPELINE_DEPTH
from tests.gateway.codec_harness import (
    H11,
    LLHTTP,
    Entry,
    Respond,
    client_transcript,
    server_transcript,
    splits,
)

# -- the documented divergences ------------------------------------------------------------------

#: llhttp's method registry (llhttp/src/llhttp/constants.ts, HTTP methods).
LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH "
    b"UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE "
    b"UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)


def _unknown_method(stream: bytes) -> bool:
    return any(m[1] not in LLHTTP_METHODS for m in re.finditer(rb"(\S+)[ \t]+\S*[ \t]*HTTP/", stream))


def _request_line_whitespace(stream: bytes) -> bool:
    return any(b"HTTP/" in line and (b"  " in line or b"\t" in line) for line in stream.split(b"\n"))


def _empty_line_before_request(stream: bytes) -> bool:
    # In a well-formed stream a request line follows a head's blank line or body bytes, never a
    # line break that ends a non-empty line.
    return stream[:1] in (b"\r", b"\n") or bool(
        re.search(rb"\n\r?\n\r?\n|[^\n]\r?\n[!-~]+ \S+ HTTP/", stream)
    )


@dataclass(frozen=True)
class Divergence:
    name: str
    why: str
    trigger: Callable[[bytes], bool]
    kinds: frozenset[str]
    #: A stream showing it, and the first llhttp transcript entry where the codecs part.
    example: bytes
    llhttp_at_divergence: Entry


DIVERGENCES = (
    Divergence(
        "method registry",
        "llhttp knows a fixed list of methods (case-sensitive) and refuses any other token; h11 takes "
        "any token. Stricter; RFC 9110 §9.1 lets a server refuse methods it does not know.",
        _unknown_method,
        frozenset({"stricter", "status"}),
        b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n",
        ("refused", 400),
    ),
    Divergence(
        "request-line whitespace",
        "llhttp takes runs of spaces between method, target and version; h11 wants single spaces. "
        "RFC 9112 §3 allows parsing on whitespace-delimited words; the parts stay unambiguous.",
        _request_line_whitespace,
        frozenset({"laxer", "status"}),
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        ("head", "GET", "a", "/", (("host", "a"),), 0),
    ),
    Divergence(
        "empty lines before a request",
        "llhttp skips empty lines before a request line, as RFC 9112 §2.2 recommends; h11 refuses them.",
        _empty_line_before_request,
        frozenset({"laxer", "status"}),
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ("head", "GET", "a", "/", (("host", "a"),), 0),
    ),
    Divergence(
        "bare CR or LF",
        "llhttp requires CRLF line ends; h11 also takes a bare LF (RFC 9112 §2.2 makes that optional).",
        lambda s: re.search(rb"(?<!\r)\n|\r(?!\n)", s) is not None,
        frozenset({"stricter", "status"}),
        b"GET / HTTP/1.1\nHost: a\n\n",
        ("refused", 400),
    ),
    Divergence(
        "obsolete line folding",
        "llhttp refuses obs-fold; h11 unfolds it. RFC 9112 §5.2 allows either for a server.",
        lambda s: re.search(rb"\n[ \t]", s) is not None,
        frozenset({"stricter", "status"}),
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        ("refused", 400),
    ),
    Divergence(
        "Content-Length list",
        "llhttp refuses a repeated Content-Length even with equal values; h11 merges them. "
        "RFC 9112 §6.3 allows either; refusing leaves no room for disagreement on framing.",
        lambda s: (
            re.search(rb"(?i)content-length[ \t]*:[^\n]*,", s) is not None
            or re.search(rb"(?is)\ncontent-length[ \t]*:[^\n]*\n(?:[^\r\n][^\n]*\n)*?content-length", s)
            is not None
        ),
        frozenset({"stricter", "status"}),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        ("refused", 400),
    ),
    Divergence(
        "control characters in fields",
        "llhttp refuses CTLs other than HTAB in field values and trailers (RFC 9110 §5.5); h11 takes "
        "any byte but NUL and whitespace.",
        lambda s: re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", s) is not None,
        frozenset({"stricter", "status"}),
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        ("refused", 400),
    ),
    Divergence(
        "chunk line grammar",
        "llhttp holds chunk lines to RFC 9112 §7.1 (no space after the size, an extension has a name) "
        "but takes leading zeros beyond h11's 20-digit cap.",
        lambda s: re.search(rb"\n[0-9A-Fa-f]+(?:[ \t;])|\n0[0-9A-Fa-f]{20}", s) is not None,
        frozenset({"stricter", "laxer", "status"}),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2;\r\nok\r\n0\r\n\r\n",
        ("refused", 400),
    ),
    Divergence(
        "which refusal comes first",
        "A head with both a bad request-target and a transfer coding other than chunked is refused by "
        "both: llhttp stops at the request line (400), h11 only after the field section, where its "
        "framing check answers 501 before the gateway's shared head checks see the target.",
        lambda s: (
            re.match(rb"[^ ]+ +[^/* ]", s) is not None
            and re.search(rb"(?i)\ntransfer-encoding[ \t]*:(?![ \t]*chunked[ \t]*\r?\n)", s) is not None
        ),
        frozenset({"status"}),
        b"PATCH !/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: hunked\r\n\r\n",
        ("refused", 400),
    ),
    Divergence(
        "Upgrade with a body",
        "httptools has llhttp skip the body of an Upgrade request, so the codec cannot find where the "
        "request ends and refuses it; h11 proxies it as a plain request (Upgrade is hop-by-hop).",
        lambda s: re.search(rb"(?i)\nconnection[ \t]*:[^\n]*upgrade", s) is not None,
        frozenset({"stricter"}),
        b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\nok",
        ("refused", 400),
    ),
)


def divergence_kind(h11_log: list[Entry], llhttp_log: list[Entry]) -> tuple[str, int]:
    """How two transcripts part: ``stricter``, ``laxer``, ``status`` or ``other``; and where."""
    at = 0
    while at < min(len(h11_log), len(llhttp_log)) and h11_log[at] == llhttp_log[at]:
        at += 1
    h11_refused = at < len(h11_log) and h11_log[at][0] == "refused"
    llhttp_refused = at < len(llhttp_log) and llhttp_log[at][0] == "refused"
    if h11_refused and llhttp_refused:
        return "status", at
    if llhttp_refused:
        return "stricter", at
    if h11_refused:
        return "laxer", at
    return "other", at


def assert_same_or_documented(stream: bytes, h11_log: list[Entry], llhttp_log: list[Entry]) -> None:
    if h11_log == llhttp_log:
        return
    kind, at = divergence_kind(h11_log, llhttp_log)
    reasons = [d.name for d in DIVERGENCES if kind in d.kinds and d.trigger(stream)]
    assert reasons, (
        f"undocumented divergence ({kind}) on {stream!r}:\n"
        f"  h11:    {h11_log[at : at + 2]}\n  llhttp: {llhttp_log[at : at + 2]}"
    )


@pytest.mark.parametrize("divergence", DIVERGENCES, ids=lambda d: d.name)
def test_each_documented_divergence_is_real(divergence: Divergence) -> None:
    h11_log = server_transcript(H11, [divergence.example])
    llhttp_log = server_transcript(LLHTTP, [divergence.example])
    kind, at = divergence_kind(h11_log, llhttp_log)
    assert kind in divergence.kinds
    assert divergence.trigger(divergence.example)
    assert llhttp_log[at] == divergence.llhttp_at_divergence


# -- valid streams, cut at every point ------------------------------------------------------------

VALID_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /chunked?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\n"
    b"X-Empty:\r\nX-Obs: caf\xe9\r\nX-Padded:  v \t\r\n\r\n",
    b"POST /te HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b'POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5;ext=1;q="x"\r\nhello\r\n1A\r\n'
    + b"z" * 26
    + b"\r\n0\r\nTrailer-A: x\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: a\r\n\r\nPOST /chunked HTTP/1.1\r\nHost: a\r\n"
    b"Content-Length: 3\r\n\r\nabcGET /204 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /chunked HTTP/1.0\r\n\r\n",
    b"HEAD /chunked HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET /te HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /close HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n",
    b"DELETE /te HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Foo\r\nX-Foo: drop\r\nKeep-Alive: 5\r\n"
    b"TE: trailers\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /chunked HTTP/1.1\r\nHost: b\r\n\r\n",
]


@pytest.mark.parametrize("respond", list(Respond), ids=lambda r: r.value)
@pytest.mark.parametrize("stream", VALID_REQUESTS, ids=range(len(VALID_REQUESTS)))
def test_valid_streams_agree_at_every_split(stream: bytes, respond: Respond) -> None:
    for fragments in splits(stream):
        h11_log = server_transcript(H11, fragments, respond)
        assert server_transcript(LLHTTP, fragments, respond) == h11_log, fragments
        # An early answer closes the connection, so a request pipelined after it is refused.
        assert respond is Respond.AT_HEAD or not any(entry[0] == "refused" for entry in h11_log)


@pytest.mark.parametrize("respond", list(Respond), ids=lambda r: r.value)
def test_draining_closes_alike(respond: Respond) -> None:
    for stream in VALID_REQUESTS:
        h11_log = server_transcript(H11, [stream], respond, draining=True)
        assert server_transcript(LLHTTP, [stream], respond, draining=True) == h11_log
        responses = [entry[1] for entry in h11_log if entry[0] == "response"]
        assert b"connection: close" in responses[0].lower()  # type: ignore[attr-defined]


def test_pipelined_requests_beyond_the_depth_are_answered_after_a_close() -> None:
    """The llhttp codec parses pipelined requests ahead, so it bounds them: with PIPELINE_DEPTH heads
    waiting it stops reading and closes once they are answered (h11 reads lazily, one at a time)."""
    stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * (PIPELINE_DEPTH + 5)
    h11_log = server_transcript(H11, [stream])
    llhttp_log = server_transcript(LLHTTP, [stream])
    answered = PIPELINE_DEPTH  # all arrived in one read: the codec queued that many, then stopped
    assert sum(entry[0] == "head" for entry in llhttp_log) == answered
    assert llhttp_log[-1] == ("close", True)
    assert llhttp_log[: 4 * (answered - 1)] == h11_log[: 4 * (answered - 1)]
    assert b"connection: close" in llhttp_log[-2][1]  # type: ignore[operator]
    assert sum(entry[0] == "head" for entry in h11_log) == PIPELINE_DEPTH + 5


# -- generated streams ----------------------------------------------------------------------------

METHODS = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"]
TARGETS = ["/", "/te", "/chunked", "/204", "/close", "/a/b?x=1&y=%20#f", "/caf%C3%A9", "*"]
NAMES = ["User-Agent", "Accept", "X-A", "x-b", "Cookie", "Via", "Expect", "Connection", "Keep-Alive"]
VALUES = ["a", "text/html, */*;q=0.8", "", "caf\xe9", "a\tb", "close", "keep-alive", "100-continue", "x" * 40]


@dataclass
class RequestParts:
    method: str
    target: str
    version: str
    hosts: list[str]
    fields: list[tuple[str, str]]
    body: str  # "none", "length" or "chunked"
    chunk_size: str | None = None
    chunk_data: str = "hello"
    chunk_end: str = "\r\n"
    trailer: str | None = None
    truncate: int = 0
    then_more: bool = False

    def encode(self) -> bytes:
        fields = [("Host", host) for host in self.hosts] + self.fields
        framing = {name.lower() for name, _ in fields} & {"content-length", "transfer-encoding"}
        body = ""
        if self.body == "length":
            fields += [] if framing else [("Content-Length", "5")]
            body = "hello"
        elif self.body == "chunked":
            fields += [] if "transfer-encoding" in framing else [("Transfer-Encoding", "chunked")]
            size = self.chunk_size if self.chunk_size is not None else f"{len(self.chunk_data):x}"
            trailer = f"{self.trailer}\r\n" if self.trailer else ""
            body = f"{size}\r\n{self.chunk_data}{self.chunk_end}0\r\n{trailer}\r\n"
        head = f"{self.method} {self.target} {self.version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields)
        data = (head + "\r\n" + body).encode("latin-1")
        if self.truncate:
            return data[: max(1, len(data) - self.truncate)]
        return data + (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" if self.then_more else b"")


def _add(*fields: tuple[str, str], body: str | None = None) -> Callable[[RequestParts, st.DrawFn], None]:
    def fault(parts: RequestParts, draw: st.DrawFn) -> None:
        parts.fields += list(fields)
        if body is not None:
            parts.body = body

    return fault


def _pick(attribute: str, *choices: object) -> Callable[[RequestParts, st.DrawFn], None]:
    def fault(parts: RequestParts, draw: st.DrawFn) -> None:
        setattr(parts, attribute, draw(st.sampled_from(choices)))
        if attribute.startswith(("chunk", "trailer")):
            parts.body = "chunked"

    return fault


def _more_after(parts: RequestParts, *fields: tuple[str, str], version: str | None = None) -> None:
    """A request after one that ends the connection."""
    parts.fields += list(fields)
    parts.version = version or parts.version
    parts.then_more = True


#: One fault each: what a client gets wrong, or an attacker tries (point 3 of issue 11 among them).
FAULTS: dict[str, Callable[[RequestParts, st.DrawFn], None]] = {
    "content-length and transfer-encoding": _add(
        ("Content-Length", "5"), ("Transfer-Encoding", "chunked"), body="chunked"
    ),
    "transfer-encoding and content-length": _add(
        ("Transfer-Encoding", "chunked"), ("Content-Length", "5"), body="chunked"
    ),
    "transfer-encoding gzip": _add(("Transfer-Encoding", "gzip"), body="length"),
    "transfer-encoding gzip, chunked": _add(("Transfer-Encoding", "gzip, chunked"), body="chunked"),
    "transfer-encoding twice": _add(
        ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked"), body="chunked"
    ),
    "content-length conflict": _add(("Content-Length", "5"), ("Content-Length", "6"), body="length"),
    "content-length bad": lambda parts, draw: parts.fields.append(
        ("Content-Length", draw(st.sampled_from(["x", "-1", "+5", "5x", "0x5", "9" * 25, ""])))
    ),
    "chunk size bad": _pick("chunk_size", "zz", "-1", "0x5", "", "g", "5 x"),
    "chunk data without CRLF": _pick("chunk_end", "", "X", "\r", "xx", "\n\r"),
    "chunk data short": _pick("chunk_data", "hel", ""),
    "chunk size big": _pick("chunk_size", "ffff", "7fffffff", "100000", "10", "41"),
    "trailer bad": _pick("trailer", "Bad Name: x", ": x", "X", "X : y"),
    "host missing": lambda parts, draw: setattr(parts, "hosts", []),
    "host twice": lambda parts, draw: setattr(parts, "hosts", ["a", "b"]),
    "version": _pick(
        "version", "HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/3.0", "HTTP/1", "http/1.1", "HTTP/1.1x"
    ),
    "target": _pick("target", "http://a/", "a:443", "/\x7f", "/a\x00", "/\x80", "", "//x"),
    "field name bad": lambda parts, draw: parts.fields.append(
        (draw(st.sampled_from(["Bad Name", "X:Y", "(x)", "\xe9", "X[", "Host "])), "v")
    ),
    "field value bad": lambda parts, draw: parts.fields.append(
        ("X-V", draw(st.sampled_from(["a\x00b", "a\rb", "\x80", " lead"])))
    ),
    "truncated": lambda parts, draw: setattr(parts, "truncate", draw(st.integers(1, 30))),
    "more after close": lambda parts, draw: _more_after(parts, ("Connection", "close")),
    "more after HTTP/1.0": lambda parts, draw: _more_after(parts, version="HTTP/1.0"),
    "head too big": lambda parts, draw: parts.fields.append(("X-Big", "b" * draw(st.integers(100, 5000)))),
}


@st.composite
def request_parts(draw: st.DrawFn) -> RequestParts:
    return RequestParts(
        method=draw(st.sampled_from(METHODS)),
        target=draw(st.sampled_from(TARGETS)),
        version=draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])),
        hosts=[draw(st.sampled_from(["a", "example.com:8443", "[::1]"]))],
        fields=draw(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=4)),
        body=draw(st.sampled_from(["none", "length", "chunked"])),
    )


def _cut(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=3))))
    pieces, last = [], 0
    for cut in (c for c in cuts if c < len(data)):
        pieces.append(data[last:cut])
        last = cut
    return [*pieces, data[last:]]


@st.composite
def single_fault_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Zero to two good requests, then one with a single fault; cut into up to four reads."""
    good = [draw(request_parts()).encode() for _ in range(draw(st.integers(0, 2)))]
    faulty = draw(request_parts())
    FAULTS[draw(st.sampled_from(sorted(FAULTS)))](faulty, draw)
    stream = b"".join(good) + faulty.encode()
    return stream, _cut(draw, stream)


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Good requests with one or two bytes deleted, inserted or replaced."""
    stream = b"".join(draw(request_parts()).encode() for _ in range(draw(st.integers(1, 2))))
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.integers(0, len(stream) - 1))
        byte = bytes([draw(st.integers(0, 255))])
        stream = draw(
            st.sampled_from(
                [
                    stream[:at] + stream[at + 1 :],
                    stream[:at] + byte + stream[at:],
                    stream[:at] + byte + stream[at + 1 :],
                ]
            )
        )
    return stream, _cut(draw, stream)


LIMITS = st.sampled_from([(4096, 1 << 20), (1024, 64)])
DIFFERENTIAL = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_streams(case: tuple[bytes, list[bytes]], respond: Respond, limits: tuple[int, int]) -> None:
    stream, fragments = case
    max_header_bytes, max_body_bytes = limits
    logs = [
        server_transcript(
            codec, fragments, respond, max_header_bytes=max_header_bytes, max_body_bytes=max_body_bytes
        )
        for codec in (H11, LLHTTP)
    ]
    assert_same_or_documented(stream, *logs)


@DIFFERENTIAL
@given(single_fault_streams(), st.sampled_from(list(Respond)), LIMITS)
def test_single_fault_streams_agree(
    case: tuple[bytes, list[bytes]], respond: Respond, limits: tuple[int, int]
) -> None:
    _check_streams(case, respond, limits)


@DIFFERENTIAL
@given(mutated_streams(), st.sampled_from(list(Respond)), LIMITS)
def test_mutated_streams_agree(
    case: tuple[bytes, list[bytes]], respond: Respond, limits: tuple[int, int]
) -> None:
    _check_streams(case, respond, limits)


# -- the upstream side ----------------------------------------------------------------------------

VALID_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: up\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A:  padded \r\n\r\n5;e=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 500\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nX-Obs: caf\xe9\r\nContent-Length: 1\r\n\r\nx",
]
GET = RequestHead("GET", "up", "/x", (("accept", "*/*"), ("connection", "close"), ("x-drop", "1")), 0)


@pytest.mark.parametrize("stream", VALID_RESPONSES, ids=range(len(VALID_RESPONSES)))
def test_valid_responses_agree_at_every_split(stream: bytes) -> None:
    for fragments in splits(stream):
        h11_log = client_transcript(H11, GET, fragments)
        assert client_transcript(LLHTTP, GET, fragments) == h11_log, fragments
        assert h11_log[-1][0] == "reusable"


RESPONSE_FAULTS = [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"garbage\r\n\r\n",
    b"",
    b"HTTP/1.1 200 OK\r\nX: " + b"a" * 40000 + b"\r\nContent-Length: 0\r\n\r\n",
]


@pytest.mark.parametrize("stream", RESPONSE_FAULTS, ids=range(len(RESPONSE_FAULTS)))
def test_bad_responses_are_refused_alike(stream: bytes) -> None:
    fragments = [stream[i : i + 4096] for i in range(0, len(stream), 4096)] or [b""]
    h11_log = client_transcript(H11, GET, fragments)
    assert client_transcript(LLHTTP, GET, fragments) == h11_log
    assert h11_log[-1] == ("refused", 502)


def test_request_heads_are_written_alike() -> None:
    heads = [
        GET,
        RequestHead("POST", "up:8080", "/p?q", (("content-length", "3"), ("host", "dropped")), 3),
        RequestHead("PUT", "up", "/c", (("transfer-encoding", "chunked"), ("te", "trailers")), None),
        RequestHead("OPTIONS", "", "*", (("x-obs", "caf\xe9"),), 0),
    ]
    for head in heads:
        writes = []
        for factory in (H11, LLHTTP):
            codec = factory.client_codec()
            body = b"abc" if head.content_length != 0 else b""
            writes.append(codec.encode_request_head(head) + codec.encode_body(body) + codec.encode_end())
        assert writes[0] == writes[1]


def test_request_trailers_are_written_alike_and_only_in_a_chunked_body() -> None:
    chunked = RequestHead("POST", "up", "/c", (("transfer-encoding", "chunked"),), None)
    by_length = RequestHead("POST", "up", "/l", (("content-length", "3"),), 3)
    trailers = (("x-checksum", "c1"), ("x-more", "2"))
    for head, carried in ((chunked, True), (by_length, False)):
        writes = []
        for factory in (H11, LLHTTP):
            codec = factory.client_codec()
            out = codec.encode_request_head(head) + codec.encode_body(b"abc")
            assert codec.set_trailers(trailers) is carried
            writes.append(out + codec.encode_end())
        assert writes[0] == writes[1]
        assert writes[0].endswith(b"0\r\nx-checksum: c1\r\nx-more: 2\r\n\r\n" if carried else b"abc")


def test_upstream_connections_that_cannot_carry_another_request_are_not_reused() -> None:
    """Where the codecs part on the upstream side, the llhttp codec is the one that closes.

    A body that ends when the upstream closes leaves no connection to reuse (h11 reports it
    reusable all the same). httptools cannot tell llhttp that a response answers HEAD, so the codec
    stops reading at that response's head and cannot vouch for the bytes after it: it does not reuse
    the connection (h11 does). A second response on one request means the upstream and the proxy no
    longer agree on the exchange; the llhttp codec notices it as it arrives.
    """
    until_close = [b"HTTP/1.1 200 OK\r\nServer: up\r\n\r\nstreamed until close"]
    h11_log, llhttp_log = (client_transcript(f, GET, until_close) for f in (H11, LLHTTP))
    assert h11_log[:-1] == llhttp_log[:-1]
    assert llhttp_log[-2:] == [("body", b"streamed until close"), ("reusable", False)]

    head = RequestHead("HEAD", "up", "/x", (), 0)
    answer = [b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"]
    h11_log, llhttp_log = (client_transcript(f, head, answer) for f in (H11, LLHTTP))
    assert h11_log[:-1] == llhttp_log[:-1]
    assert llhttp_log[-2:] == [("body", b""), ("reusable", False)]

    twice = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]
    h11_log, llhttp_log = (client_transcript(f, GET, twice) for f in (H11, LLHTTP))
    assert h11_log[:-1] == llhttp_log[:-1]
    assert llhttp_log[-1] == ("reusable", False)

"""Writing HTTP/1.1 messages as h11 writes them: the output side of the llhttp codec.

h11 decides a sent message's framing and its ``Connection`` field itself (``_body_framing``,
``_clean_up_response_headers_for_sending``, ``write_headers``). These functions make the same
decisions, so the default codec's bytes equal the reference's (tests/gateway/test_codec_differential.py):
a body of unknown length is chunked to an HTTP/1.1 peer and delimited by closing to an HTTP/1.0 one,
``Connection: close`` goes out when the connection will not be reused, Host comes first.

Fields are checked for what could change a message's meaning on the wire: a name that is not a
token, CR, LF or NUL in a value, text that is not Latin-1. Fields reach here from a parser that has
already refused worse, or from configuration.
"""

from __future__ import annotations

import re

from gateway.codec.base import LocalProtocolError
from gateway.codec.http1_fields import comma_tokens

LENGTH, CHUNKED, UNTIL_CLOSE = "length", "chunked", "until_close"

Fields = list[tuple[str, str]]

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
#: Field names and methods already found to be tokens; bounded in entries and length (peers choose names).
_known_tokens: set[str] = set()
_MAX_KNOWN_TOKENS, _MAX_KNOWN_LENGTH = 4096, 64


def _check_tokens(names: set[str] | dict[str, str]) -> None:
    if _known_tokens.issuperset(names):
        return
    for name in names:
        if name not in _known_tokens:
            if not _TOKEN.fullmatch(name):
                raise LocalProtocolError(f"{name!r} is not a token")
            if len(name) <= _MAX_KNOWN_LENGTH and len(_known_tokens) < _MAX_KNOWN_TOKENS:
                _known_tokens.add(name)


class BodyWriter:
    """Frames an outgoing body: by Content-Length (``length``), chunked, or until the connection closes."""

    __slots__ = ("chunked", "remaining")

    def __init__(self, length: int | None, chunked: bool) -> None:
        self.remaining = length
        self.chunked = chunked

    def encode(self, data: bytes) -> bytes:
        if self.chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        if self.remaining is not None:
            self.remaining -= len(data)
            if self.remaining < 0:
                raise LocalProtocolError("too much data for the declared Content-Length")
        return data

    def end(self, trailer_fields: bytes = b"") -> bytes:
        """The end of the body; a chunked one can carry ``trailer_fields`` (RFC 9112 7.1.2)."""
        if self.chunked:
            return b"0\r\n" + trailer_fields + b"\r\n"
        if self.remaining:
            raise LocalProtocolError("too little data for the declared Content-Length")
        return b""


def encode_fields(fields: Fields, index: dict[str, str]) -> bytes:
    """``name: value`` lines, Host first; ``index`` maps each lower-case name in ``fields`` to a value."""
    _check_tokens(index)
    if not fields:
        return b""
    if "host" in index and fields[0][0] != "host":
        fields = [f for f in fields if f[0] == "host"] + [f for f in fields if f[0] != "host"]
    # One pass joins the lines; names are tokens, so a CR or LF beyond the separators is in a value.
    block = "\r\n".join(map(": ".join, fields))
    separators = len(fields) - 1
    if block.count("\n") != separators or block.count("\r") != separators or "\x00" in block:
        raise LocalProtocolError("a field value contains CR, LF or NUL")
    try:
        return block.encode("latin-1") + b"\r\n"
    except UnicodeEncodeError:
        raise LocalProtocolError("a field is not Latin-1 text") from None


def body_framing(
    method: str | None, status: int | None, fields: Fields, index: dict[str, str]
) -> tuple[str, int]:
    """h11's ``_body_framing``: ``(LENGTH, n)``, ``(CHUNKED, 0)`` or ``(UNTIL_CLOSE, 0)``.

    ``status`` is ``None`` for a request. A response that cannot have a body has length 0; a
    response with neither Transfer-Encoding nor Content-Length runs until the connection closes.
    """
    if status is not None and (
        status == 204 or status == 304 or method == "HEAD" or (method == "CONNECT" and 200 <= status < 300)
    ):
        return LENGTH, 0
    if "transfer-encoding" in index:
        if comma_tokens(tuple(fields), "transfer-encoding") != ["chunked"]:
            raise LocalProtocolError("only Transfer-Encoding: chunked is supported")
        return CHUNKED, 0
    if "content-length" in index:
        if len(index) == len(fields):  # no name repeats: the index holds the only value
            length, lengths = index["content-length"], None
        else:
            lengths = {value for name, value in fields if name == "content-length"}
            length = lengths.pop()
        if lengths or not (length.isascii() and length.isdigit()):
            raise LocalProtocolError(f"bad Content-Length {length!r}")
        return LENGTH, int(length)
    return (LENGTH, 0) if status is None else (UNTIL_CLOSE, 0)


#: Status lines already written, by status and reason; bounded (the reason may come from an upstream).
_STATUS_LINES: dict[tuple[int, str], bytes] = {}
_MAX_STATUS_LINES = 512


def _status_line(status: int, reason: str) -> bytes:
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        if "\r" in reason or "\n" in reason:
            raise LocalProtocolError("the reason phrase contains CR or LF")
        try:
            line = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
        except UnicodeEncodeError:
            raise LocalProtocolError("the reason phrase is not Latin-1 text") from None
        if len(_STATUS_LINES) < _MAX_STATUS_LINES:
            _STATUS_LINES[(status, reason)] = line
    return line


def response_head(
    status: int,
    reason: str,
    fields: Fields,
    index: dict[str, str],
    method: str | None,
    peer_version: str | None,
    keep_alive: bool,
) -> tuple[bytes, BodyWriter, bool]:
    """The status line and fields of a response, its body writer, and whether the connection closes.

    ``index`` maps each name in ``fields`` to a value.

    h11's cleanup: a response to HEAD carries the framing fields a GET would have had; a body of
    unknown length is chunked to an HTTP/1.1 peer, else delimited by closing; ``Connection: close``
    is written (title case, h11's ``set_comma_header``) when the connection will not be reused.
    """
    if not 200 <= status < 1000:
        raise LocalProtocolError(f"status {status} is not a final response")
    status_line = _status_line(status, reason)
    kind, length = body_framing("GET" if method == "HEAD" else method, status, fields, index)
    peer_needs_close = False
    if kind != LENGTH:
        fields = [f for f in fields if f[0] != "content-length" and f[0] != "transfer-encoding"]
        if peer_version is None or peer_version < "1.1":
            peer_needs_close = method != "HEAD"
        else:
            fields.append(("Transfer-Encoding", "chunked"))
    closes = not keep_alive or peer_needs_close
    if closes:
        tokens = set(comma_tokens(tuple(fields), "connection"))
        tokens.discard("keep-alive")
        tokens.add("close")
        fields = [f for f in fields if f[0] != "connection"] + [("Connection", t) for t in sorted(tokens)]
    elif "connection" in index:
        closes = "close" in comma_tokens(tuple(fields), "connection")
    head = status_line + encode_fields(fields, index) + b"\r\n"
    if method == "HEAD" or status == 204 or status == 304 or (method == "CONNECT" and status < 300):
        writer = BodyWriter(0, chunked=False)
    elif kind == LENGTH:
        writer = BodyWriter(length, chunked=False)
    else:
        writer = BodyWriter(None, chunked=not peer_needs_close)
    return head, writer, closes


def request_head(method: str, target: str, fields: Fields, index: dict[str, str]) -> tuple[bytes, BodyWriter]:
    """The request line and fields of a request (Host first) and its body writer; ``index`` maps
    each name in ``fields`` to a value."""
    if method not in _known_tokens:
        _check_tokens({method})
    if not (target and target.isascii() and target.isprintable() and " " not in target):
        raise LocalProtocolError(f"cannot send the target {target!r}")
    kind, length = body_framing(method, None, fields, index)
    head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + encode_fields(fields, index) + b"\r\n"
    return head, BodyWriter(length if kind == LENGTH else None, chunked=kind == CHUNKED)

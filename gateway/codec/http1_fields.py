"""HTTP/1.1 rules both HTTP/1.1 codecs share (the llhttp default and the h11 reference).

What a proxy may forward (RFC 9110 §7.6.1: connection-specific fields never cross a hop), how a
request head is judged before it is routed, what a request declares about its body, and the status
line of responses the gateway writes itself. Keeping these in one place is what lets the
differential test hold the two parsers to the same verdicts.
"""

from __future__ import annotations

from http import HTTPStatus

from gateway.codec.base import CodecProtocolError, Headers

#: RFC 9110 §7.6.1 connection-specific fields, never forwarded; framing fields are re-derived.
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

#: The HTTP versions an HTTP/1.1 codec speaks; any other is answered 505 (RFC 9110 §15.6.6).
SUPPORTED_VERSIONS = frozenset({"1.0", "1.1"})

#: Added to a response after which the connection closes.
CLOSE_FIELD = ("connection", "close")

#: h11's default bound on an incomplete response head, kept by both client codecs.
MAX_RESPONSE_HEAD_BYTES = 16 * 1024

_REASONS = {status.value: status.phrase for status in HTTPStatus}


def reason_phrase(status: int) -> str:
    """The standard reason phrase (``OK`` for 200), or ``""`` for a code without one."""
    return _REASONS.get(status, "")


def forwardable(headers: Headers) -> list[tuple[str, str]]:
    """The fields a proxy passes on: no hop-by-hop field, nor any the Connection field names."""
    if not any(name in HOP_BY_HOP for name, _ in headers):
        return list(headers)
    named = {
        token.strip().lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
        if token.strip()
    }
    return [(name, value) for name, value in headers if name not in HOP_BY_HOP and name not in named]


def comma_tokens(headers: Headers, name: str) -> list[str]:
    """Lower-cased elements of a list-valued field over all its lines (h11's ``get_comma_header``)."""
    return [
        token.strip().lower()
        for field, value in headers
        if field == name
        for token in value.split(",")
        if token.strip()
    ]


def declared_body_length(headers: Headers) -> int | None:
    """``RequestHead.content_length``: ``None`` for a chunked body, else Content-Length or 0."""
    length: int | None = 0
    for name, value in headers:
        if name == "transfer-encoding":
            return None
        if name == "content-length" and length == 0:
            length = int(value)
    return length


def check_request_head(target: str, version: str, headers: Headers, max_header_bytes: int) -> None:
    """Refuse a parsed request head the gateway will not route (raises :class:`CodecProtocolError`).

    Both codecs call this with the same arguments, so their verdicts agree by construction: the
    size check uses the same measure (target plus ``name: value\\r\\n`` per field), whatever each
    parser buffered on the way.
    """
    if len(target) + sum(len(name) + len(value) + 4 for name, value in headers) > max_header_bytes:
        raise CodecProtocolError("request header section too large", 431)
    if version == "0.9":
        # What llhttp reports for a request line without a version: no HTTP/1.x request at all.
        raise CodecProtocolError("not an HTTP/1.x request line", 400)
    if version not in SUPPORTED_VERSIONS:
        raise CodecProtocolError(f"HTTP/{version} is not supported", 505)
    if not target.startswith("/") and target != "*":
        raise CodecProtocolError("absolute-form and authority-form targets are not proxied", 400)
    framing = {name for name, _ in headers if name in ("content-length", "transfer-encoding")}
    if len(framing) == 2:
        # RFC 9112 §6.1: a message with both may be a smuggling attempt; an intermediary must not
        # forward it as is, and rejecting it is the safe choice.
        raise CodecProtocolError("both Content-Length and Transfer-Encoding", 400)

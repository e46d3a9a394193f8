"""HTTP/1.1 rules both HTTP/1.1 codecs share (the llhttp default and the h11 reference).

What a proxy may forward (RFC 9110 §7.6.1: connection-specific fields never cross a hop), how a
request head is judged before it is routed, what a request declares about its body, and the status
line of responses the gateway writes itself. Keeping these in one place is what lets the
differential test hold the two parsers to the same verdicts.
"""

from __future__ import annotations

from collections.abc import Container
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

#: What a client codec leaves out of a forwarded request: it writes Host itself, from the authority.
HOP_BY_HOP_AND_HOST = HOP_BY_HOP | {"host"}

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


def forwardable(headers: Headers, dropped: frozenset[str] = HOP_BY_HOP) -> list[tuple[str, str]]:
    """The fields a proxy passes on: none of ``dropped`` (hop-by-hop fields by default), nor any the
    Connection field names."""
    return forwardable_indexed(headers, dropped)[0]


def forwardable_indexed(
    headers: Headers, dropped: frozenset[str] = HOP_BY_HOP
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """:func:`forwardable`, and a map from each name it keeps to a value (for writers)."""
    index = dict(headers)
    if dropped.isdisjoint(index):
        return list(headers), index
    if "connection" in index:
        value = index["connection"]
        if len(index) == len(headers) and "," not in value:
            named = {value.strip().lower()}
        else:
            named = set(comma_tokens(headers, "connection"))
        if not named <= dropped:
            dropped = dropped | named
    for name in index.keys() & dropped:
        del index[name]
    return [field for field in headers if field[0] not in dropped], index


def comma_tokens(headers: Headers, name: str) -> list[str]:
    """Lower-cased elements of a list-valued field over all its lines (h11's ``get_comma_header``)."""
    return [
        token.strip().lower()
        for field, value in headers
        if field == name
        for token in value.split(",")
        if token.strip()
    ]


def field_section_size(target: str, headers: Headers) -> int:
    """The measure of a request head both codecs hold to the limit: target plus ``name: value\r\n``."""
    return len(target) + sum(len(name) + len(value) + 4 for name, value in headers)


def check_request_head(
    target: str, version: str, field_names: Container[str], section_size: int, max_header_bytes: int
) -> None:
    """Refuse a parsed request head the gateway will not route (raises :class:`CodecProtocolError`).

    Both codecs call this with the same facts about the head, so their verdicts agree by
    construction whatever each parser buffered on the way. ``section_size`` may be an upper bound
    of :func:`field_section_size` when that bound is within the limit.
    """
    if section_size > max_header_bytes:
        raise CodecProtocolError("request header section too large", 431)
    if version == "0.9":
        # What llhttp reports for a request line without a version: no HTTP/1.x request at all.
        raise CodecProtocolError("not an HTTP/1.x request line", 400)
    if version not in SUPPORTED_VERSIONS:
        raise CodecProtocolError(f"HTTP/{version} is not supported", 505)
    if not target.startswith("/") and target != "*":
        raise CodecProtocolError("absolute-form and authority-form targets are not proxied", 400)
    if "content-length" in field_names and "transfer-encoding" in field_names:
        # RFC 9112 §6.1: a message with both may be a smuggling attempt; an intermediary must not
        # forward it as is, and refusing it is the safe choice.
        raise CodecProtocolError("both Content-Length and Transfer-Encoding", 400)

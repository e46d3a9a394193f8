"""HTTP/2 header blocks, checked and converted in one pass (RFC 9113 8.2 and 8.3).

``h2`` can validate and normalize every header block itself, through a chain of seven generators that
each loop over every field in Python (the field-name check one character at a time): in the gateway's
profile that was a third of ``h2``'s per-request cost. The endpoints in :mod:`gateway.http2.connection`
turn those passes off and call these functions instead, which enforce the same rules in one loop per
block, with the character checks done by compiled regular expressions:

- field names: no characters in 0x00-0x20, 0x41-0x5a (upper case) or 0x7f-0xff, no colon past the
  first character, not empty (8.2.1); no connection-specific fields, ``te`` only as ``trailers`` (8.2.2);
- field values: no NUL, CR or LF, no leading or trailing space or tab (8.2.1);
- pseudo-header fields: only the defined ones, each once, all before the regular fields, none in
  trailers, request ones only in requests and ``:status`` only in responses (8.3); a request has
  ``:method``, and ``:scheme`` and ``:path`` (non-empty) unless it is a plain CONNECT (8.5), ``:protocol``
  only with CONNECT (RFC 8441); ``:authority`` or ``host``, equal when both, ``host`` at most once;
  a response has a three-digit ``:status``.

A block that breaks one raises :class:`MalformedHeaders`; the endpoint ends the connection with
GOAWAY(PROTOCOL_ERROR), as ``h2`` did, rather than resetting the one stream, so a client cannot make
the gateway reset streams for it at no cost of its own (the "MadeYouReset" variant of rapid reset).

What ``h2``'s outbound normalization did (lower-case names, no connection-specific fields, credentials
kept out of the HPACK table) :func:`outbound_fields` does, into the bytes ``h2`` sends as they are;
it also keeps the per-request ``x-request-id`` out of the table.
Field values are Latin-1 text both ways, as in the HTTP/1.1 codec, so bytes pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hpack import NeverIndexedHeaderTuple

from gateway.codec.base import Headers

#: RFC 9113 8.2.2: connection-specific header fields must not appear in HTTP/2.
CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
REQUEST_PSEUDO = frozenset({":method", ":scheme", ":authority", ":path", ":protocol"})
#: Fields HPACK must never index (RFC 7541 7.1.3): credentials, as ``h2`` and nghttp2 treat them, and
#: the request id the gateway sets, new on every request (indexing it would only evict useful entries).
NOT_INDEXED = frozenset({"authorization", "proxy-authorization", "x-request-id"})
#: Cookies shorter than this are never indexed either: short values are the guessable ones.
SHORT_COOKIE = 20

_NAME = re.compile(rb"[!-9;-@\[-~]+")
_BAD_VALUE = re.compile(rb"[\x00\n\r]|\A[ \t]|[ \t]\Z")
_STATUS = re.compile(rb"[0-9]{3}")

HeaderBlock = Iterable[tuple[bytes, bytes]]


class MalformedHeaders(Exception):
    """A header block breaks RFC 9113 8.2 or 8.3; the message says which field and how."""


class RequestFields:
    """A request's pseudo-header fields and regular fields, as text (names lower case)."""

    __slots__ = ("headers", "host", "pseudo")

    def __init__(self, pseudo: dict[str, str], headers: Headers, host: str | None) -> None:
        self.pseudo = pseudo
        #: Regular fields without ``host``; cookie crumbs joined again (8.2.3).
        self.headers = headers
        self.host = host


def request_fields(block: HeaderBlock) -> RequestFields:
    """Check a request's header block and split it into pseudo-header and regular fields."""
    pseudo: dict[str, str] = {}
    regular: list[tuple[str, str]] = []
    cookies: list[str] = []
    host: str | None = None
    for name, value in block:
        if _BAD_VALUE.search(value) is not None:
            raise MalformedHeaders(f"bad characters in the value of {name!r}")
        if name[:1] == b":":
            key = name.decode("latin-1")
            if regular or cookies or host is not None:
                raise MalformedHeaders(f"pseudo-header field {key} after a regular field")
            if key not in REQUEST_PSEUDO:
                raise MalformedHeaders(f"pseudo-header field {key} in a request")
            if key in pseudo:
                raise MalformedHeaders(f"pseudo-header field {key} twice")
            pseudo[key] = value.decode("latin-1")
            continue
        key, text = _regular_field(name, value)
        if key == "cookie":
            cookies.append(text)
        elif key == "host":
            if host is not None:
                raise MalformedHeaders("host twice")
            host = text
        else:
            regular.append((key, text))
    _check_request_pseudo(pseudo, host)
    if cookies:
        regular.append(("cookie", "; ".join(cookies)))
    return RequestFields(pseudo, tuple(regular), host)


def _check_request_pseudo(pseudo: dict[str, str], host: str | None) -> None:
    method = pseudo.get(":method")
    if method is None:
        raise MalformedHeaders("request without :method")
    if method == "CONNECT" and ":protocol" not in pseudo:
        if ":scheme" in pseudo or ":path" in pseudo:
            raise MalformedHeaders("CONNECT with :scheme or :path")
    else:
        if method != "CONNECT" and ":protocol" in pseudo:
            raise MalformedHeaders(":protocol without CONNECT")
        if ":scheme" not in pseudo:
            raise MalformedHeaders("request without :scheme")
        if not pseudo.get(":path"):
            raise MalformedHeaders("request without :path")
    authority = pseudo.get(":authority")
    if authority is None and host is None:
        raise MalformedHeaders("request with neither :authority nor host")
    if authority is not None and host is not None and authority != host:
        raise MalformedHeaders(":authority and host differ")


def response_fields(block: HeaderBlock) -> tuple[int, Headers]:
    """Check a response's (or an informational response's) header block: its status and regular fields."""
    status: int | None = None
    regular: list[tuple[str, str]] = []
    for name, value in block:
        if _BAD_VALUE.search(value) is not None:
            raise MalformedHeaders(f"bad characters in the value of {name!r}")
        if name[:1] == b":":
            if name != b":status":
                raise MalformedHeaders(f"pseudo-header field {name.decode('latin-1')} in a response")
            if status is not None or regular:
                raise MalformedHeaders(":status twice or after a regular field")
            if _STATUS.fullmatch(value) is None:
                raise MalformedHeaders(f"bad :status {value!r}")
            status = int(value)
            continue
        regular.append(_regular_field(name, value))
    if status is None:
        raise MalformedHeaders("response without :status")
    return status, tuple(regular)


def trailer_fields(block: HeaderBlock) -> Headers:
    """Check a trailer block (regular fields only); cookie crumbs joined again."""
    regular: list[tuple[str, str]] = []
    cookies: list[str] = []
    for name, value in block:
        if _BAD_VALUE.search(value) is not None:
            raise MalformedHeaders(f"bad characters in the value of {name!r}")
        if name[:1] == b":":
            raise MalformedHeaders(f"pseudo-header field {name.decode('latin-1')} in trailers")
        key, text = _regular_field(name, value)
        if key == "cookie":
            cookies.append(text)
        else:
            regular.append((key, text))
    if cookies:
        regular.append(("cookie", "; ".join(cookies)))
    return tuple(regular)


def _regular_field(name: bytes, value: bytes) -> tuple[str, str]:
    if _NAME.fullmatch(name) is None:
        raise MalformedHeaders(f"bad field name {name[:64]!r}")
    key = name.decode("ascii")
    if key in CONNECTION_SPECIFIC:
        raise MalformedHeaders(f"connection-specific field {key}")
    text = value.decode("latin-1")
    if key == "te" and text.lower() != "trailers":
        raise MalformedHeaders(f"te: {text[:64]!r}")
    return key, text


def field_bytes(text: str) -> bytes:
    """Latin-1, as fields arrive; UTF-8 for what only gateway-made text can hold beyond it."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # gateway-made text beyond Latin-1 (configured values)
        return text.encode("utf-8")


def outbound_fields(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Regular fields fit for HTTP/2, as bytes: names lower case, connection-specific fields (and
    ``host``) left out, ``te`` only as ``trailers``, credentials and request ids never indexed."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        lower = name.lower()
        if lower in CONNECTION_SPECIFIC or lower == "host" or (lower == "te" and value.lower() != "trailers"):
            continue
        field = (lower.encode("latin-1"), field_bytes(value))
        if lower in NOT_INDEXED or (lower == "cookie" and len(value) < SHORT_COOKIE):
            field = NeverIndexedHeaderTuple(*field)
        out.append(field)
    return out

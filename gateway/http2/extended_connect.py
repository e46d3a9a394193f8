"""WebSocket over HTTP/2 (extended CONNECT, RFC 8441) translated to and from an HTTP/1.1 Upgrade.

A client that saw ``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`` opens a stream with ``:method CONNECT`` and
``:protocol websocket``; the stream's DATA frames then carry the WebSocket frames. The gateway routes
that request like a GET and sends it to the upstream as the HTTP/1.1 Upgrade it stands for (Envoy does
the same), so one tunnel (:mod:`gateway.upgrade`) serves both. The two handshakes differ where RFC 8441
section 5 says: HTTP/2 has no ``Sec-WebSocket-Key``/``Sec-WebSocket-Accept`` (the stream already
proves the server speaks the protocol), so the gateway makes the key for the upstream, checks the
upstream's answer to it (RFC 6455 4.2.2), and turns the ``101`` into the ``200`` HTTP/2 expects.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from gateway.codec.base import CodecProtocolError, RequestHead, ResponseHead

#: RFC 6455 1.3: appended to the key before hashing for Sec-WebSocket-Accept.
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Fields of the upstream's 101 that mean nothing on an HTTP/2 stream (RFC 8441 5, RFC 9113 8.2.2).
_NOT_RELAYED = frozenset({"connection", "upgrade", "sec-websocket-accept"})


def websocket_accept(key: str) -> str:
    """RFC 6455 4.2.2: base64 of the SHA-1 of the key and the GUID (a handshake check, not security)."""
    return base64.b64encode(
        hashlib.sha1((key + WEBSOCKET_GUID).encode(), usedforsecurity=False).digest()
    ).decode()


def upgrade_request(head: RequestHead, protocol: str) -> tuple[RequestHead, str | None]:
    """The HTTP/1.1 Upgrade request an extended CONNECT stands for, and the WebSocket key made for it
    (``None`` for other protocols). The request has no body: the stream's DATA is the tunnel's."""
    key = None
    headers = [(k, v) for k, v in head.headers if k not in ("sec-websocket-key", "content-length")]
    if protocol == "websocket":
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        headers.append(("sec-websocket-key", key))
    headers += [("connection", "upgrade"), ("upgrade", protocol)]
    return RequestHead("GET", head.authority, head.path, tuple(headers), 0), key


def tunnel_response(head: ResponseHead, key: str | None) -> ResponseHead:
    """The ``200`` that opens the tunnel on the stream, from the upstream's ``101`` (which must answer
    ``key``); raises :class:`CodecProtocolError` (502) when it does not."""
    if key is not None and head.header("sec-websocket-accept") != websocket_accept(key):
        raise CodecProtocolError("upstream WebSocket handshake: wrong Sec-WebSocket-Accept", 502)
    return ResponseHead(200, tuple((k, v) for k, v in head.headers if k not in _NOT_RELAYED))

"""The extended CONNECT (RFC 8441) to HTTP/1.1 Upgrade translation, bytes-free."""

from __future__ import annotations

import pytest

from gateway.codec.base import CodecProtocolError, RequestHead, ResponseHead
from gateway.http2.extended_connect import tunnel_response, upgrade_request, websocket_accept


def test_websocket_accept_is_rfc_6455s_example() -> None:
    assert websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_the_upgrade_request_is_a_get_with_a_fresh_key_and_no_body() -> None:
    connect = RequestHead(
        "CONNECT",
        "chat.example",
        "/chat?room=1",
        (("sec-websocket-version", "13"), ("sec-websocket-key", "client-chosen"), ("origin", "o")),
        None,
    )
    head, key = upgrade_request(connect, "websocket")
    assert (head.method, head.authority, head.path, head.content_length) == (
        "GET",
        "chat.example",
        "/chat?room=1",
        0,
    )
    assert key is not None and head.header("sec-websocket-key") == key != "client-chosen"
    assert head.header("connection") == "upgrade" and head.header("upgrade") == "websocket"
    assert head.header("origin") == "o" and head.header("sec-websocket-version") == "13"
    other, no_key = upgrade_request(connect, "connect-udp")
    assert no_key is None and other.header("upgrade") == "connect-udp"


def test_the_upstream_101_becomes_a_200_only_if_it_answers_the_key() -> None:
    _, key = upgrade_request(RequestHead("CONNECT", "a", "/", (), None), "websocket")
    assert key is not None
    switched = ResponseHead(
        101,
        (
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", websocket_accept(key)),
            ("sec-websocket-protocol", "chat"),
        ),
    )
    assert tunnel_response(switched, key) == ResponseHead(200, (("sec-websocket-protocol", "chat"),))
    with pytest.raises(CodecProtocolError) as refused:
        tunnel_response(switched, "another key")
    assert refused.value.status == 502

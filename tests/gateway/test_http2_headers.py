"""HTTP/2 header blocks: each rule of RFC 9113 8.2/8.3 the gateway enforces instead of h2's own passes."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple

from gateway.codec.base import RequestHead, ResponseHead
from gateway.http2.connection import H2ClientConnection, H2ConnectionError, H2ServerConnection
from gateway.http2.events import RequestStarted, ResponseStarted, TrailersReceived
from gateway.http2.headers import (
    MalformedHeaders,
    outbound_fields,
    request_fields,
    response_fields,
    trailer_fields,
)
from tests.gateway.test_http2_connection import NOW, goaway_code, pump

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example"), (b":path", b"/x")]


def test_a_request_splits_into_pseudo_and_regular_fields() -> None:
    fields = request_fields([*GET, (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")])
    assert fields.pseudo == {":method": "GET", ":scheme": "https", ":authority": "a.example", ":path": "/x"}
    assert fields.headers == (("accept", "*/*"), ("cookie", "a=1; b=2"))
    assert fields.host is None


def test_host_stands_in_for_authority_and_is_not_a_regular_field() -> None:
    fields = request_fields([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"host", b"h")])
    assert fields.host == "h" and fields.headers == ()


def test_values_keep_their_bytes_as_latin_1() -> None:
    assert request_fields([*GET, (b"x-name", b"caf\xe9")]).headers == (("x-name", "caf\xe9"),)


@pytest.mark.parametrize(
    "block",
    [
        [*GET, (b"Accept", b"*/*")],  # upper case name
        [*GET, (b"x y", b"1")],  # space in a name
        [*GET, (b"x:y", b"1")],  # colon past the first character
        [*GET, (b"", b"1")],  # empty name
        [*GET, (b"x-\xff", b"1")],  # byte beyond 0x7e in a name
        [*GET, (b"x", b"a\x00b")],  # NUL in a value
        [*GET, (b"x", b"a\r\nb")],  # CR LF in a value
        [*GET, (b"x", b" a")],  # leading space
        [*GET, (b"x", b"a\t")],  # trailing tab
        [*GET, (b"connection", b"close")],
        [*GET, (b"transfer-encoding", b"chunked")],
        [*GET, (b"upgrade", b"websocket")],
        [*GET, (b"keep-alive", b"5")],
        [*GET, (b"proxy-connection", b"x")],
        [*GET, (b"te", b"gzip")],
        [(b"accept", b"*/*"), *GET],  # pseudo-header after a regular field
        [*GET, (b":method", b"GET")],  # twice
        [*GET, (b":status", b"200")],  # response-only
        [*GET, (b":foo", b"1")],  # undefined
        GET[1:],  # no :method
        [GET[0], GET[2], GET[3]],  # no :scheme
        GET[:3],  # no :path
        [*GET[:3], (b":path", b"")],  # empty :path
        [GET[0], GET[1], GET[3]],  # neither :authority nor host
        [*GET, (b"host", b"b.example")],  # host differs from :authority
        [GET[0], GET[1], GET[3], (b"host", b"h"), (b"host", b"h")],  # host twice
        [(b":method", b"CONNECT"), (b":authority", b"a:443"), (b":path", b"/")],  # plain CONNECT with :path
        [*GET, (b":protocol", b"websocket")],  # :protocol without CONNECT
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":authority", b"a"), (b":path", b"/")],
    ],
)
def test_malformed_requests_are_refused(block) -> None:
    with pytest.raises(MalformedHeaders):
        request_fields(block)


def test_connect_forms() -> None:
    plain = request_fields([(b":method", b"CONNECT"), (b":authority", b"a:443")])
    assert plain.pseudo == {":method": "CONNECT", ":authority": "a:443"}
    extended = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), *GET[1:]]
    assert request_fields(extended).pseudo[":protocol"] == "websocket"


def test_te_trailers_is_the_one_te_allowed() -> None:
    assert request_fields([*GET, (b"te", b"trailers")]).headers == (("te", "trailers"),)


def test_responses() -> None:
    assert response_fields([(b":status", b"204"), (b"server", b"x")]) == (204, (("server", "x"),))
    for block in (
        [(b"server", b"x")],
        [(b":status", b"20")],
        [(b":status", b"abc")],
        [(b":status", b"200"), (b":status", b"200")],
        [(b"server", b"x"), (b":status", b"200")],
        [(b":status", b"200"), (b":path", b"/")],
        [(b":status", b"200"), (b"Server", b"x")],
        [(b":status", b"200"), (b"connection", b"close")],
    ):
        with pytest.raises(MalformedHeaders):
            response_fields(block)


def test_trailers() -> None:
    assert trailer_fields([(b"grpc-status", b"0")]) == (("grpc-status", "0"),)
    with pytest.raises(MalformedHeaders):
        trailer_fields([(b":status", b"200")])
    with pytest.raises(MalformedHeaders):
        trailer_fields([(b"grpc-message", b"x\n")])


def test_outbound_fields_are_lower_case_bytes_without_connection_fields() -> None:
    fields = outbound_fields(
        (
            ("Content-Type", "text/plain"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "5"),
            ("Transfer-Encoding", "chunked"),
            ("Host", "h"),
            ("TE", "gzip"),
            ("te", "trailers"),
            ("x-name", "caf\xe9"),
        )
    )
    assert fields == [(b"content-type", b"text/plain"), (b"te", b"trailers"), (b"x-name", b"caf\xe9")]


def test_credentials_and_request_ids_are_never_indexed() -> None:
    fields = outbound_fields(
        (("authorization", "Bearer abc"), ("cookie", "s=1"), ("cookie", "x" * 40), ("x-request-id", "1-2"))
    )
    assert [isinstance(f, NeverIndexedHeaderTuple) for f in fields] == [True, True, False, True]


def _unchecked_client() -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
    )
    client = h2.connection.H2Connection(config)
    client.initiate_connection()
    return client


def test_a_malformed_request_ends_the_connection_with_protocol_error() -> None:
    client = _unchecked_client()
    client.send_headers(1, [*GET, (b"Bad-Name", b"1")], end_stream=True)
    server = H2ServerConnection()
    server.data_to_send()
    with pytest.raises(H2ConnectionError) as failed:
        server.receive_data(client.data_to_send(), NOW)
    assert failed.value.reason == "malformed_headers"
    assert goaway_code(server.data_to_send()) == ErrorCodes.PROTOCOL_ERROR
    assert server.receive_data(b"more", NOW) == []


def test_requests_responses_and_trailers_pass_both_endpoints() -> None:
    client, server = H2ClientConnection(), H2ServerConnection()
    pump(client, server)
    head = RequestHead(
        "POST", "a.example", "/svc", (("content-type", "application/grpc"), ("te", "trailers")), None
    )
    stream = client.send_request(head, "http")
    client.send_data(stream, b"body", end_stream=True)
    _, at_server = pump(client, server)
    started = next(e for e in at_server if isinstance(e, RequestStarted))
    assert started.head.authority == "a.example" and started.head.headers == head.headers
    server.send_response(stream, ResponseHead(200, (("content-type", "application/grpc"),)))
    server.send_trailers(stream, (("grpc-status", "0"),))
    at_client, _ = pump(client, server)
    assert next(e for e in at_client if isinstance(e, ResponseStarted)).head.status == 200
    assert TrailersReceived(stream, (("grpc-status", "0"),)) in at_client


def test_a_request_without_authority_is_sent_without_one() -> None:
    """RFC 9113 8.3.1: an intermediary omits :authority when the original request had none."""
    client = H2ClientConnection()
    upstream = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, validate_inbound_headers=False)
    )
    upstream.initiate_connection()
    client.receive_data(upstream.data_to_send(), NOW)
    client.send_request(RequestHead("GET", "", "/", (), 0), "http", end_stream=True)
    received = upstream.receive_data(client.data_to_send())
    headers = next(e.headers for e in received if isinstance(e, h2.events.RequestReceived))
    assert [name for name, _ in headers] == [b":method", b":scheme", b":path"]

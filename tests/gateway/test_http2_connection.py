"""The sans-I/O HTTP/2 endpoints: exchanges, flow control in both directions, and each flood defence."""

from __future__ import annotations

import h2.config
import h2.connection
import hpack
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

from gateway.codec.base import RequestHead, ResponseHead
from gateway.http2.connection import H2ClientConnection, H2ConnectionError, H2ServerConnection, Http2Limits
from gateway.http2.events import (
    BodyReceived,
    RequestStarted,
    ResponseStarted,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from gateway.http2.flood import PREFACE, FloodLimits

NOW = 1000.0


def pump(a, b, now=NOW):
    """Move bytes both ways until quiet; returns (events at a, events at b)."""
    at_a: list = []
    at_b: list = []
    while True:
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return at_a, at_b
        if out_a:
            at_b += b.receive_data(out_a, now)
        if out_b:
            at_a += a.receive_data(out_b, now)


def connected(limits: Http2Limits | None = None):
    client, server = H2ClientConnection(), H2ServerConnection(limits)
    pump(client, server)
    return client, server


def goaway_code(data: bytes) -> int | None:
    """The error code of the last GOAWAY frame in ``data`` (server output), if any."""
    code = None
    view = memoryview(data)
    while len(view) >= 9:
        length = int.from_bytes(view[:3], "big")
        if view[3] == 0x7:
            frame = GoAwayFrame(0)
            frame.parse_body(view[9 : 9 + length])
            code = frame.error_code
        view = view[9 + length :]
    return code


def test_request_and_response_with_body_and_trailers() -> None:
    client, server = connected()
    head = RequestHead(
        "POST",
        "api.example",
        "/grpc.Service/Call",
        (("content-type", "application/grpc"), ("te", "trailers")),
        None,
    )
    stream = client.send_request(head, "https")
    client.send_data(stream, b"hello", end_stream=True)
    _, at_server = pump(client, server)
    started = next(e for e in at_server if isinstance(e, RequestStarted))
    assert started.head.method == "POST" and started.head.authority == "api.example"
    assert started.head.path == "/grpc.Service/Call" and started.scheme == "https"
    assert ("te", "trailers") in started.head.headers and not started.end_stream
    body = b"".join(e.data for e in at_server if isinstance(e, BodyReceived))
    assert body == b"hello" and any(isinstance(e, StreamEnded) for e in at_server)

    server.send_response(
        stream, ResponseHead(200, (("content-type", "application/grpc"), ("connection", "close")))
    )
    server.send_data(stream, b"world")
    server.send_trailers(stream, (("grpc-status", "0"), ("grpc-message", "")))
    at_client, _ = pump(client, server)
    response = next(e for e in at_client if isinstance(e, ResponseStarted))
    assert response.head.status == 200 and ("connection", "close") not in response.head.headers
    assert b"".join(e.data for e in at_client if isinstance(e, BodyReceived)) == b"world"
    trailers = next(e for e in at_client if isinstance(e, TrailersReceived))
    assert dict(trailers.headers)["grpc-status"] == "0"


def test_outbound_flow_control_queues_until_the_peer_consumes() -> None:
    client, server = connected()
    stream = client.send_request(RequestHead("GET", "a", "/big", (), 0), "https", end_stream=True)
    pump(client, server)
    server.send_response(stream, ResponseHead(200))
    server.send_data(stream, b"x" * (3 << 20), end_stream=True)
    at_client, _ = pump(client, server)
    received = sum(len(e.data) for e in at_client if isinstance(e, BodyReceived))
    assert received == 1 << 20  # the client's stream window, nothing more while it does not consume
    assert server.pending(stream) == (3 << 20) - received
    while server.pending(stream):
        client.consumed(stream, received)
        at_client, _ = pump(client, server)
        received = sum(len(e.data) for e in at_client if isinstance(e, BodyReceived))
        assert received > 0
    assert any(isinstance(e, StreamEnded) for e in at_client)


def test_inbound_window_reopens_only_for_consumed_bytes() -> None:
    client, server = connected(Http2Limits(initial_stream_window_size=65536))
    stream = client.send_request(RequestHead("POST", "a", "/upload", (), None), "https")
    client.send_data(stream, b"y" * 200_000, end_stream=True)
    _, at_server = pump(client, server)
    assert sum(len(e.data) for e in at_server if isinstance(e, BodyReceived)) == 65536
    assert client.pending(stream) == 200_000 - 65536
    server.consumed(stream, 65536)
    _, at_server = pump(client, server)
    assert sum(len(e.data) for e in at_server if isinstance(e, BodyReceived)) == 65536


def test_reset_by_the_peer_is_reported_and_drops_queued_output() -> None:
    client, server = connected()
    stream = client.send_request(RequestHead("GET", "a", "/", (), 0), "https", end_stream=True)
    pump(client, server)
    server.send_response(stream, ResponseHead(200))
    server.send_data(stream, b"z" * (2 << 20))
    client.reset(stream)
    _, at_server = pump(client, server)
    assert StreamReset(stream, ErrorCodes.CANCEL, remote=True) in at_server
    assert server.pending(stream) == 0


class RawClient:
    """An h2 client used as an attacker: it sends whatever frames the test writes."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()

    def preface(self) -> bytes:
        return self.conn.data_to_send()


def _server_fed(
    data: bytes, limits: Http2Limits | None = None
) -> tuple[H2ServerConnection, H2ConnectionError]:
    server = H2ServerConnection(limits)
    server.data_to_send()
    with pytest.raises(H2ConnectionError) as failed:
        server.receive_data(data, NOW)
    return server, failed.value


def test_rapid_reset_ends_the_connection_with_enhance_your_calm() -> None:
    attacker = RawClient()
    data = attacker.preface()
    for i in range(300):
        stream = 1 + 2 * i
        attacker.conn.send_headers(
            stream,
            [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")],
            end_stream=True,
        )
        attacker.conn.reset_stream(stream)
        data += attacker.conn.data_to_send()
    server, error = _server_fed(data)
    assert error.reason == "rapid_reset" and error.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway_code(server.data_to_send()) == ErrorCodes.ENHANCE_YOUR_CALM


def test_resets_spread_over_time_are_fine() -> None:
    client, server = connected()
    for i in range(300):
        stream = client.send_request(RequestHead("GET", "a", "/", (), 0), "https", end_stream=True)
        client.reset(stream)
        pump(client, server, now=NOW + i)  # one reset a second: under 200 per 10 s


def _headers_block() -> bytes:
    return hpack.Encoder().encode(
        [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")]
    )


def test_continuation_flood_is_cut_off() -> None:
    data = PREFACE + SettingsFrame(0).serialize()
    headers = HeadersFrame(1)
    headers.data = _headers_block()[:2]
    data += headers.serialize()
    for _ in range(100):
        continuation = ContinuationFrame(1)
        continuation.data = b"\x00"  # a literal-name fragment that never ends
        data += continuation.serialize()
    server, error = _server_fed(data)
    assert error.reason in ("continuation_flood", "protocol_error")
    assert goaway_code(server.data_to_send()) is not None


def test_continuation_bytes_are_bounded_by_the_header_block_limit() -> None:
    limits = Http2Limits(flood=FloodLimits(max_header_block_bytes=20000, max_continuation_frames=1000))
    data = PREFACE + SettingsFrame(0).serialize()
    headers = HeadersFrame(1)
    headers.data = _headers_block()[:2]
    data += headers.serialize()
    for _ in range(10):
        continuation = ContinuationFrame(1)
        continuation.data = b"\x00" * 4000
        data += continuation.serialize()
    _, error = _server_fed(data, limits)
    assert error.reason == "header_block_too_large"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [(PingFrame(0), "ping_flood"), (SettingsFrame(0), "settings_flood")],
)
def test_control_frame_floods(frame, reason) -> None:
    data = PREFACE + SettingsFrame(0).serialize() + frame.serialize() * 500
    server, error = _server_fed(data)
    assert error.reason == reason
    output = server.data_to_send()
    assert goaway_code(output) == ErrorCodes.ENHANCE_YOUR_CALM
    assert len(output) < 4096  # the flood did not make the server queue 500 acknowledgements


def test_empty_data_frames_in_a_row() -> None:
    attacker = RawClient()
    data = attacker.preface()
    attacker.conn.send_headers(
        1, [(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/")]
    )
    data += attacker.conn.data_to_send()
    data += DataFrame(1).serialize() * 100
    _, error = _server_fed(data)
    assert error.reason == "empty_frames"


def test_hpack_bomb_is_refused_by_the_header_list_limit() -> None:
    encoder = hpack.Encoder()
    big = ("x-big", "b" * 4000)
    first = HeadersFrame(1)
    first.data = encoder.encode(
        [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/"), big]
    )
    first.flags.add("END_HEADERS")
    first.flags.add("END_STREAM")
    second = HeadersFrame(3)
    # 100 references to the 4 KB table entry: a 200-byte block that decodes to 400 KB
    second.data = encoder.encode(
        [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")] + [big] * 100
    )
    second.flags.add("END_HEADERS")
    second.flags.add("END_STREAM")
    assert len(second.data) < 1000
    data = PREFACE + SettingsFrame(0).serialize() + first.serialize() + second.serialize()
    server, error = _server_fed(data, Http2Limits(max_header_list_size=16384))
    assert error.reason == "header_list_too_large"
    assert goaway_code(server.data_to_send()) is not None


def test_more_streams_than_advertised_are_refused() -> None:
    attacker = RawClient()
    data = attacker.preface()
    for i in range(6):
        attacker.conn.send_headers(
            1 + 2 * i, [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")]
        )
        data += attacker.conn.data_to_send()
    _, error = _server_fed(data, Http2Limits(max_concurrent_streams=4))
    assert error.reason == "too_many_streams"

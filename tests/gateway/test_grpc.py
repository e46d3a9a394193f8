"""gRPC helpers: status mapping, grpc-timeout, Trailers-Only replies, grpc.health.v1 messages."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from gateway.codec.base import RequestHead
from gateway.grpc import (
    GrpcStatus,
    effective_timeout,
    encode_message,
    health_check_request,
    health_check_serving,
    is_grpc,
    parse_timeout,
    status_for,
    trailers_only,
)


@pytest.mark.parametrize(
    ("http_status", "reason", "expected"),
    [
        (403, "access_control", GrpcStatus.PERMISSION_DENIED),
        (404, "no_route", GrpcStatus.UNIMPLEMENTED),
        (503, "upstream_connect_failure", GrpcStatus.UNAVAILABLE),
        (504, "upstream_timeout", GrpcStatus.DEADLINE_EXCEEDED),
        (502, None, GrpcStatus.UNAVAILABLE),
        (408, None, GrpcStatus.DEADLINE_EXCEEDED),
        (401, None, GrpcStatus.UNAUTHENTICATED),
        (418, None, GrpcStatus.UNKNOWN),
    ],
)
def test_status_mapping(http_status: int, reason: str | None, expected: GrpcStatus) -> None:
    assert status_for(http_status, reason) is expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1H", 3600.0), ("2M", 120.0), ("3S", 3.0), ("250m", 0.25), ("100u", 1e-4), ("99999999n", 0.099999999)],
)
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "1", "S", "123456789S", "1.5S", "-1S", "1s", "1 S"])
def test_malformed_grpc_timeout_is_ignored(value: str) -> None:
    assert parse_timeout(value) is None


def test_grpc_timeout_only_shortens_the_route_timeout() -> None:
    head = RequestHead("POST", "a", "/s/m", (("grpc-timeout", "500m"),), None)
    assert effective_timeout(10.0, head) == 0.5
    assert effective_timeout(0.1, head) == 0.1
    assert effective_timeout(3.0, RequestHead("POST", "a", "/s/m", (), None)) == 3.0


def test_grpc_detection_by_content_type() -> None:
    def head(ct: str) -> RequestHead:
        return RequestHead("POST", "a", "/", (("content-type", ct),), None)

    assert is_grpc(head("application/grpc")) and is_grpc(head("application/grpc+proto"))
    assert not is_grpc(head("application/grpc-web")) and not is_grpc(head("application/json"))


def test_trailers_only_reply_percent_encodes_the_message() -> None:
    headers = dict(trailers_only(GrpcStatus.UNAVAILABLE, "upstream down: 100% 断"))
    assert headers == {
        "content-type": "application/grpc",
        "grpc-status": "14",
        "grpc-message": "upstream down: 100%25 %E6%96%AD",
    }
    assert encode_message("plain text") == "plain text"


def test_health_messages_match_protobuf() -> None:
    request = health_check_request("payments.v1.Ledger")
    parsed = health_pb2.HealthCheckRequest.FromString(request[5:])
    assert parsed.service == "payments.v1.Ledger" and request[:5] == b"\x00" + len(request[5:]).to_bytes(
        4, "big"
    )
    assert health_check_request("") == b"\x00\x00\x00\x00\x00"
    for status, serving in (
        (health_pb2.HealthCheckResponse.SERVING, True),
        (health_pb2.HealthCheckResponse.NOT_SERVING, False),
        (health_pb2.HealthCheckResponse.UNKNOWN, False),
    ):
        payload = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert health_check_serving(b"\x00" + len(payload).to_bytes(4, "big") + payload) is serving
    assert not health_check_serving(b"\x00\x00\x00\x00\x05\x08")  # truncated
    assert not health_check_serving(b"\x01\x00\x00\x00\x02\x08\x01")  # compressed flag

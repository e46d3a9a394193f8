"""gRPC as a gateway sees it: status codes, ``grpc-timeout``, gateway-made replies, health checks.

gRPC runs over HTTP/2 and reports its outcome in trailers (``grpc-status``, ``grpc-message``). A reply
the gateway makes itself (no route, access denied, upstream down, timeout) must be a gRPC reply too,
not an HTML error page: a *Trailers-Only* response (HTTP 200, ``content-type: application/grpc``,
status in the one HEADERS frame that ends the stream), as Envoy sends. References: gRPC's
PROTOCOL-HTTP2.md and http-grpc-status-mapping.md, grpc.health.v1 (health.proto).
"""

from __future__ import annotations

import re
from enum import IntEnum

from gateway.codec.base import Headers, RequestHead


class GrpcStatus(IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


#: What a gateway decision means to a gRPC client; these win over the HTTP status mapping.
_BY_REASON = {
    "no_route": GrpcStatus.UNIMPLEMENTED,
    "access_control": GrpcStatus.PERMISSION_DENIED,
    "upstream_timeout": GrpcStatus.DEADLINE_EXCEEDED,
    "deadline_exceeded": GrpcStatus.DEADLINE_EXCEEDED,
    "upstream_unavailable": GrpcStatus.UNAVAILABLE,
    "upstream_connect_failure": GrpcStatus.UNAVAILABLE,
    "no_healthy_upstream": GrpcStatus.UNAVAILABLE,
    "overflow": GrpcStatus.UNAVAILABLE,
    "draining": GrpcStatus.UNAVAILABLE,
    "request_too_large": GrpcStatus.RESOURCE_EXHAUSTED,
}

#: gRPC's http-grpc-status-mapping.md, for statuses without a more specific reason; 408 (the client
#: did not send its request within ``request_timeout``) is a timeout like 504.
_BY_HTTP_STATUS = {
    400: GrpcStatus.INTERNAL,
    401: GrpcStatus.UNAUTHENTICATED,
    403: GrpcStatus.PERMISSION_DENIED,
    404: GrpcStatus.UNIMPLEMENTED,
    408: GrpcStatus.DEADLINE_EXCEEDED,
    413: GrpcStatus.RESOURCE_EXHAUSTED,
    429: GrpcStatus.UNAVAILABLE,
    502: GrpcStatus.UNAVAILABLE,
    503: GrpcStatus.UNAVAILABLE,
    504: GrpcStatus.DEADLINE_EXCEEDED,
}


def is_grpc(head: RequestHead) -> bool:
    for name, value in head.headers:  # names are lower case; the first content-type counts
        if name == "content-type":
            return value == "application/grpc" or value.startswith(("application/grpc+", "application/grpc;"))
    return False


def status_for(http_status: int, reason: str | None = None) -> GrpcStatus:
    """The gRPC status a gateway-made reply carries (reason first, then the HTTP status)."""
    if reason is not None and reason in _BY_REASON:
        return _BY_REASON[reason]
    return _BY_HTTP_STATUS.get(http_status, GrpcStatus.UNKNOWN)


def encode_message(message: str) -> str:
    """``grpc-message`` is UTF-8 with bytes outside printable ASCII, and ``%``, percent-encoded."""
    return "".join(
        chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}" for byte in message.encode()
    )


def trailers_only(status: GrpcStatus, message: str) -> Headers:
    """Headers of a Trailers-Only reply (to be sent with ``:status 200`` and END_STREAM)."""
    return (
        ("content-type", "application/grpc"),
        ("grpc-status", str(int(status))),
        ("grpc-message", encode_message(message)),
    )


_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str | None) -> float | None:
    """``grpc-timeout`` in seconds (at most 8 digits and a unit); ``None`` if absent or malformed."""
    if value is None:
        return None
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def effective_timeout(route_timeout: float, head: RequestHead) -> float:
    """The route timeout, shortened by the client's ``grpc-timeout`` when that is sooner."""
    requested = parse_timeout(head.header("grpc-timeout"))
    return route_timeout if requested is None else min(route_timeout, requested)


# grpc.health.v1: HealthCheckRequest {string service = 1;} HealthCheckResponse {ServingStatus status = 1;}

HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
SERVING = 1


def frame_message(payload: bytes) -> bytes:
    """A gRPC length-prefixed message: compressed flag 0, 4-byte big-endian length, payload."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def health_check_request(service: str) -> bytes:
    """One framed HealthCheckRequest (protobuf field 1, wire type 2)."""
    name = service.encode()
    if len(name) > 127:
        raise ValueError("service names over 127 bytes are not supported by the health checker")
    payload = (b"\x0a" + bytes([len(name)]) + name) if name else b""
    return frame_message(payload)


def health_check_serving(body: bytes) -> bool:
    """Whether a framed HealthCheckResponse says SERVING; anything malformed is not serving."""
    if len(body) < 5 or body[0] != 0:
        return False
    length = int.from_bytes(body[1:5], "big")
    payload = body[5 : 5 + length]
    if len(payload) != length:
        return False
    status = 0  # proto3 default: UNKNOWN
    index = 0
    while index < len(payload):
        key = payload[index]
        index += 1
        if key == 0x08 and index < len(payload):  # field 1, varint (enum values here fit one byte)
            status = payload[index]
            index += 1
        else:
            return False
    return status == SERVING

"""One realistic example of every caller event type (the gateway's field groups)."""

from __future__ import annotations

from dataclasses import dataclass

from audit.events import tls_fields


@dataclass(frozen=True)
class FakeCert:
    subject: str = "CN=client.example,O=Bank"
    issuer: str = "CN=SM2 Intermediate,O=Bank"
    serial: int = 0x1F2E3D
    der: bytes = b"\x30\x03\x02\x01\x01"


TLS = tls_fields(
    protocol="TLCP",
    cipher_suite="ECDHE_SM4_GCM_SM3",
    sni="api.bank.example",
    alpn="http/1.1",
    resumed=False,
    client_cert=FakeCert(),
)
CERT = {
    "subject": "CN=api.bank.example",
    "issuer": "CN=SM2 Intermediate",
    "serial": "0a1b",
    "fingerprint_sm3": "ab" * 32,
    "not_after": "2027-01-01T00:00:00.000000Z",
}

SAMPLE_EVENTS: list[tuple[str, dict[str, object]]] = [
    ("listener.start", {"listener": "public", "address": "0.0.0.0:8443"}),
    (
        "config.reload",
        {
            "result": "accepted",
            "diff": {"added": ["route r2"], "removed": [], "changed": []},
            "source": "/etc/smgate.yaml",
        },
    ),
    (
        "config.reload",
        {
            "result": "rejected",
            "diff": {},
            "source": "/etc/smgate.yaml",
            "error": "routes.0.cluster: unknown",
        },
    ),
    ("cert.loaded", {"cert": CERT, "purpose": "tlcp-sign", "path": "/etc/pki/sign.pem"}),
    ("cert.expiring", {"cert": CERT, "purpose": "tlcp-enc", "days_left": 12.5}),
    ("cert.expired", {"cert": CERT, "purpose": "upstream-ca"}),
    (
        "conn.open",
        {
            "conn_id": "c1",
            "listener": "public",
            "client_addr": "198.51.100.7:50000",
            "local_addr": "10.0.0.1:8443",
        },
    ),
    ("handshake.ok", {"conn_id": "c1", **TLS}),
    (
        "handshake.fail",
        {
            "conn_id": "c2",
            "alert": "bad_certificate",
            "alert_code": 42,
            "alert_direction": "sent",
            "reason": "client certificate signature invalid",
            "protocol": "TLCP",
        },
    ),
    (
        "route.decision",
        {
            "conn_id": "c1",
            "request_id": "r1",
            "route": "payments",
            "cluster": "core",
            "upstream": "10.1.0.5:9000",
            "verdict": "allow",
            "protocol": "TLCP",
        },
    ),
    (
        "http.request",
        {
            "conn_id": "c1",
            "request_id": "r1",
            "method": "POST",
            "host": "api.bank.example",
            "path": "/v1/pay",
            "status": 201,
            "bytes_received": 512,
            "bytes_sent": 80,
            "duration_ms": 12.75,
            "headers": {"authorization": "Bearer secret-token", "user-agent": "curl"},
        },
    ),
    (
        "upstream.fail",
        {
            "conn_id": "c1",
            "request_id": "r2",
            "cluster": "core",
            "upstream": "10.1.0.6:9000",
            "reason": "connect timeout",
        },
    ),
    (
        "conn.close",
        {
            "conn_id": "c1",
            "bytes_received": 2048,
            "bytes_sent": 4096,
            "duration_ms": 1500.0,
            "reason": "client_close",
        },
    ),
    (
        "admin.action",
        {"action": "drain", "actor": "ops@127.0.0.1", "target": "listener public", "result": "ok"},
    ),
    ("listener.stop", {"listener": "public", "reason": "shutdown"}),
]

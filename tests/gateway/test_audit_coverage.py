"""Every audit event the gateway owes, from one real run: start, TLCP and TLS requests, an access-control
deny, an upstream failure, a failed handshake, a TCP route, a good and a bad reload through the admin
API, and shutdown. Every record validates against ``audit/schema.json`` and the chain verifies."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import ssl
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from audit.events import event_schema
from audit.keys import write_audit_key
from gateway.audit_setup import build_audit
from gateway.cli import main as smgate
from gateway.config import load_config
from gateway.echo import EchoService, start_tcp_echo
from gateway.server import Gateway
from tests.gateway.helpers import HttpClient, RecordingAudit
from tests.gateway.test_tlcp import client_config
from tests.ports import free_port
from tls.tlcp.aio import TLCPStreamError, tlcp_connect

REQUIRED_EVENTS = {
    "listener.start",
    "listener.stop",
    "config.reload",
    "cert.loaded",
    "cert.expiring",
    "cert.expired",
    "conn.open",
    "handshake.ok",
    "handshake.fail",
    "route.decision",
    "http.request",
    "upstream.fail",
    "conn.close",
    "admin.action",
}


def expired_ca_pem() -> bytes:
    """A self-signed CA certificate that expired in 2001 (for the ``cert.expired`` record)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smgate expired test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def document(demo, tmp: Path, echo_port: int, tcp_echo_port: int, dead_port: int) -> dict:
    sm2 = demo.sm2
    routes = [
        {"name": "ok", "match": {"prefix": "/ok"}, "route": {"cluster": "echo"}},
        {
            "name": "mtls",
            "match": {"prefix": "/mtls"},
            "access": {"allow": [{"authenticated": True}]},
            "route": {"cluster": "echo"},
        },
        {"name": "down", "match": {"prefix": "/down"}, "route": {"cluster": "dead", "timeout": 5}},
    ]
    return {
        "listeners": [
            {
                "name": "main",
                "port": 0,
                "handshake_timeout": 5,
                "tls": {
                    "protocols": ["tlcp", "tls1.3", "tls1.2"],
                    "cipher_suites": {"tlcp": ["ECDHE_SM4_GCM_SM3", "ECC_SM4_GCM_SM3"]},
                    "client_auth": "optional",
                    "trust_anchors": str(tmp / "clients-ca.pem"),
                    "sm2_trust_anchors": str(sm2.ca_bundle),
                    "certificates": [
                        {
                            "sign_cert": str(sm2.server_sign.cert),
                            "sign_key": str(sm2.server_sign.key),
                            "enc_cert": str(sm2.server_enc.cert),
                            "enc_key": str(sm2.server_enc.key),
                            "chain": str(sm2.chain),
                            "tls_certificates": [
                                {
                                    "cert_chain": str(demo.rsa.server.cert),
                                    "private_key": str(demo.rsa.server.key),
                                }
                            ],
                        }
                    ],
                },
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "web"}]}],
            },
            {
                "name": "tcp",
                "port": 0,
                "tls": {"protocols": ["plain"]},
                "filter_chains": [{"filters": [{"name": "tcp_proxy", "cluster": "tcp_echo"}]}],
            },
        ],
        "route_configs": [{"name": "web", "virtual_hosts": [{"name": "all", "routes": routes}]}],
        "clusters": [
            {"name": "echo", "endpoints": [{"address": "127.0.0.1", "port": echo_port}]},
            {"name": "tcp_echo", "endpoints": [{"address": "127.0.0.1", "port": tcp_echo_port}]},
            {
                "name": "dead",
                "connect_timeout": 1,
                "endpoints": [{"address": "127.0.0.1", "port": dead_port}],
                "outlier_detection": None,
            },
        ],
        # Every valid certificate is "expiring" within 100000 days; the 2001 CA is expired.
        "admin": {"port": 0, "cert_expiry_warning_days": 100000},
        "audit": {
            "key_file": str(tmp / "chain.key"),
            "signing_key": str(demo.audit.key),
            "signing_cert": str(demo.audit.cert),
            "sinks": [{"type": "file", "directory": str(tmp / "log")}],
        },
    }


async def admin_reload(port: int) -> tuple[int, dict]:
    client = await HttpClient.open(port)
    try:
        status, _, body = await client.request("POST", "/reload", host="127.0.0.1")
    finally:
        await client.close()
    return status, json.loads(body)


async def exercise(gw: Gateway, demo, config_path: Path, doc: dict) -> None:
    port = gw.listener_port("main")
    stream = await tlcp_connect("127.0.0.1", port, client_config(demo), handshake_timeout=5)
    tlcp = HttpClient(stream, stream)  # type: ignore[arg-type]
    assert (await tlcp.request("GET", "/ok/tlcp"))[0] == 200
    stream.close()

    ctx = ssl.create_default_context(cafile=str(demo.rsa.ca.cert))
    tls = await HttpClient.open(port, ctx)
    assert (await tls.request("GET", "/ok/tls"))[0] == 200
    assert (await tls.request("GET", "/mtls/secret"))[0] == 403
    assert (await tls.request("GET", "/down/x"))[0] == 503
    await tls.close()

    untrusting = ssl.create_default_context()  # the system store does not know the demo CA
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await HttpClient.open(port, untrusting)

    # The listener does not take CBC suites: the gateway answers with a handshake_failure alert.
    with pytest.raises(TLCPStreamError):
        await tlcp_connect("127.0.0.1", port, client_config(demo, suites=["ECC_SM4_CBC_SM3"]))

    reader, writer = await asyncio.open_connection("127.0.0.1", gw.listener_port("tcp"))
    writer.write(b"ping over tcp")
    writer.write_eof()
    assert await reader.read() == b"ping over tcp"
    writer.close()

    assert gw.admin is not None
    doc["route_configs"][0]["virtual_hosts"][0]["routes"].insert(
        0, {"name": "pong", "match": {"path": "/ping"}, "direct_response": {"status": 200, "body": "pong"}}
    )
    config_path.write_text(yaml.safe_dump(doc))
    assert await admin_reload(gw.admin.port) == (200, {"reloaded": True, "errors": []})
    doc["route_configs"][0]["virtual_hosts"][0]["routes"][1]["route"] = {"cluster": "missing"}
    config_path.write_text(yaml.safe_dump(doc))
    status, body = await admin_reload(gw.admin.port)
    assert status == 400 and "unknown cluster 'missing'" in body["errors"][0]


def read_records(directory: Path) -> list[dict]:
    records = []
    for path in sorted(directory.glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


async def test_every_required_event_is_audited_and_valid(demo_pki, tmp_path):
    (tmp_path / "clients-ca.pem").write_bytes(demo_pki.rsa.ca.cert.read_bytes() + expired_ca_pem())
    write_audit_key(tmp_path / "chain.key")
    echo = await EchoService(name="echo").start()
    echo_endpoint = f"127.0.0.1:{echo.port}"
    tcp_echo = await start_tcp_echo()
    tcp_echo_port = tcp_echo.sockets[0].getsockname()[1]
    doc = document(demo_pki, tmp_path, echo.port, tcp_echo_port, free_port())
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    config = load_config(config_path)
    gw = Gateway(config, config_path=config_path, audit=build_audit(config))
    await gw.start()
    try:
        await exercise(gw, demo_pki, config_path, doc)
    finally:
        await gw.stop()
        await echo.close()
        tcp_echo.close()

    records = read_records(tmp_path / "log")
    validator = jsonschema.Draft202012Validator(event_schema())
    for record in records:
        errors = [e.message for e in validator.iter_errors(record)]
        assert not errors, (record, errors)
    by_type: dict[str, list[dict]] = {}
    for record in records:
        by_type.setdefault(record["event"], []).append(record)
    assert REQUIRED_EVENTS <= by_type.keys(), REQUIRED_EVENTS - by_type.keys()

    assert {(r["listener"], r["address"].split(":")[0]) for r in by_type["listener.start"]} == {
        ("main", "127.0.0.1"),
        ("tcp", "127.0.0.1"),
    }
    assert {r["listener"] for r in by_type["listener.stop"]} == {"main", "tcp"}

    loaded = by_type["cert.loaded"]
    subjects = {r["cert"]["subject"] for r in loaded}
    assert any("localhost" in s for s in subjects) and "CN=smgate expired test CA" in subjects
    for record in loaded:
        assert record["cert"]["not_after"] and record["cert"]["serial"] and record["cert"]["fingerprint_sm3"]
        assert record["purpose"] and record["path"]
    assert {r["generation"] for r in loaded} == {1}  # the accepted reload changed no certificate
    assert any(r["purpose"] == "audit.signing_cert" for r in loaded)
    expired = by_type["cert.expired"]
    assert [r["cert"]["subject"] for r in expired] == ["CN=smgate expired test CA"] * 2
    assert all(r["days_left"] > 0 for r in by_type["cert.expiring"])

    accepted, rejected = (
        [r for r in by_type["config.reload"] if r["result"] == result] for result in ("accepted", "rejected")
    )
    assert len(accepted) == 1 and len(rejected) == 1
    assert accepted[0]["diff"] == {"route_configs": {"added": [], "removed": [], "changed": ["web"]}}
    assert accepted[0]["source"] == "admin_api"
    assert rejected[0]["diff"] == {"route_configs": {"added": [], "removed": [], "changed": ["web"]}}
    assert "unknown cluster 'missing'" in rejected[0]["error"]
    assert [(r["action"], r["actor"], r["result"]) for r in by_type["admin.action"]] == [
        ("reload", "admin_api", "accepted"),
        ("reload", "admin_api", "rejected"),
    ]

    protocols = {r["protocol"] for r in by_type["handshake.ok"]}
    assert {"TLCP", "TLSv1.3"} <= protocols
    assert len(by_type["handshake.fail"]) == 2
    (fail,) = [r for r in by_type["handshake.fail"] if r["alert_direction"] == "sent"]
    (rejected_by_client,) = [r for r in by_type["handshake.fail"] if r["alert_direction"] == "received"]
    assert (fail["alert"], fail["alert_code"], fail["alert_direction"]) == ("handshake_failure", 40, "sent")
    assert fail["reason"] == "handshake_error"
    # the client's unknown_ca alert, or only its hang-up, depending on what the loop saw first
    assert rejected_by_client["alert_direction"] == "received"
    assert (rejected_by_client["reason"], rejected_by_client["alert"], rejected_by_client["alert_code"]) in (
        ("peer_closed", "none", 0),
        ("handshake_error", "unknown_ca", 48),
    )

    # Connection-level decisions (TCP proxy) are route.decision records; an HTTP request's decision is
    # part of its one http.request record.
    decisions = by_type["route.decision"]
    assert {(r["route"], r["cluster"], r["upstream"], r["verdict"]) for r in decisions} == {
        ("filter_chain:default", "tcp_echo", f"127.0.0.1:{tcp_echo_port}", "allow")
    }
    assert len(by_type["http.request"]) == 4
    allowed = {(r["route"], r["cluster"], r["upstream"], r["verdict"]) for r in by_type["http.request"]}
    assert ("ok", "echo", echo_endpoint, "allow") in allowed
    assert ("mtls", "echo", None, "deny") in allowed
    down = [r for r in by_type["http.request"] if r["route"] == "down"]
    assert down and down[0]["verdict"] == "allow" and down[0]["upstream"].startswith("127.0.0.1:")

    (upstream_fail,) = [r for r in by_type["upstream.fail"] if r["cluster"] == "dead"]
    assert upstream_fail["reason"].startswith("connect_failure")

    requests = {r["path"]: r for r in by_type["http.request"]}
    assert requests["/ok/tlcp"]["status"] == 200 and requests["/mtls/secret"]["status"] == 403
    assert requests["/down/x"]["status"] == 503
    assert requests["/down/x"]["error"].startswith("upstream connect error")
    assert (requests["/ok/tlcp"]["protocol"], requests["/ok/tls"]["protocol"]) == ("TLCP", "TLSv1.3")
    assert requests["/ok/tlcp"]["cipher_suite"] in ("ECDHE_SM4_GCM_SM3", "ECC_SM4_GCM_SM3")
    for request in requests.values():
        assert request["method"] == "GET" and request["duration_ms"] >= 0 and "body" not in request
    tlcp_conn = requests["/ok/tlcp"]["conn_id"]
    closes = {r["conn_id"]: r for r in by_type["conn.close"]}
    assert closes[tlcp_conn]["bytes_received"] > 0 and closes[tlcp_conn]["bytes_sent"] > 0
    opened = {r["conn_id"] for r in by_type["conn.open"]}
    assert opened == set(closes)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = smgate(
            [
                "audit",
                "verify",
                "--key",
                str(tmp_path / "chain.key"),
                "--cert",
                str(demo_pki.audit.cert),
                str(tmp_path / "log"),
            ]
        )
    assert code == 0, out.getvalue()
    assert "audit verify: OK" in out.getvalue()


def test_openssl_failures_map_to_alerts_with_codes():
    from gateway import audit_events
    from gateway.transports.base import Alert
    from gateway.transports.tls import alert, openssl_alert

    assert openssl_alert("TLSV1_ALERT_UNKNOWN_CA") == (Alert("unknown_ca", 48), False)
    assert openssl_alert("SSLV3_ALERT_BAD_CERTIFICATE") == (Alert("bad_certificate", 42), False)
    assert openssl_alert("TLSV13_ALERT_CERTIFICATE_REQUIRED") == (Alert("certificate_required", 116), False)
    assert openssl_alert("NO_SHARED_CIPHER") == (Alert("handshake_failure", 40), True)
    assert openssl_alert("UNSUPPORTED_PROTOCOL") == (Alert("protocol_version", 70), True)
    assert openssl_alert("SOMETHING_ELSE") == (None, True)
    audit = RecordingAudit()
    audit_events.handshake_fail(
        audit, 7, "handshake_error", alert=alert("certificate_required"), alert_sent=False
    )
    audit_events.handshake_fail(audit, 8, "handshake_timeout")
    received, timeout = audit.of("handshake.fail")
    assert (received["alert"], received["alert_code"], received["alert_direction"]) == (
        "certificate_required",
        116,
        "received",
    )
    assert (timeout["alert"], timeout["alert_code"], timeout["alert_direction"]) == ("none", 0, "sent")

"""`smgate demo` end to end: TLCP and TLS on one port through the built-in upstream, TCP proxy,
admin, and an audit trail that `smgate audit verify` accepts."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO
from tests.gateway.process import DEFAULT_LOOP, GatewayProcess


def smgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_demo_serves_tlcp_tls_tcp_and_audits(tmp_path):
    state = tmp_path / "state"
    demo = GatewayProcess(
        ["demo", "--state", str(state), "--port", "0", "--tcp-port", "0", "--admin-port", "0", "--quiet"],
        ready_pattern=r"smgate demo ready",
    )
    try:
        port, tcp, admin = demo.port("main"), demo.port("tcp"), demo.port("admin")
        assert f"loop={DEFAULT_LOOP}" in demo.output()  # TLCP and TLS below run on uvloop, the default
        pki = state / "pki"
        tlcp = smgate(
            "client",
            "127.0.0.1",
            str(port),
            "--protocol",
            "tlcp",
            "--servername",
            "localhost",
            "--cafile",
            str(pki / "sm2" / "ca_bundle.pem"),
            "--cert",
            str(pki / "sm2" / "client_sign.pem"),
            "--key",
            str(pki / "sm2" / "client_sign.key"),
            "--enc-cert",
            str(pki / "sm2" / "client_enc.pem"),
            "--enc-key",
            str(pki / "sm2" / "client_enc.key"),
            "--chain",
            str(pki / "sm2" / "chain.pem"),
            "--get",
            "/mtls/hello",
        )
        assert tlcp.returncode == 0, tlcp.stderr
        assert "protocol: TLCPv1.1" in tlcp.stdout and "status: 200" in tlcp.stdout
        assert '"x-client-cert-fingerprint-sm3"' in tlcp.stdout
        anonymous = smgate(
            "client",
            "127.0.0.1",
            str(port),
            "--protocol",
            "tlcp",
            "--servername",
            "localhost",
            "--cafile",
            str(pki / "sm2" / "ca_bundle.pem"),
            "--get",
            "/mtls/hello",
        )
        assert "status: 403" in anonymous.stdout
        curl = subprocess.run(
            [
                "/usr/bin/curl",
                "-sS",
                "--cacert",
                str(state / "standard_ca_bundle.pem"),
                f"https://localhost:{port}/gateway/health",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert curl.stdout == "ok\n", curl.stderr
        echo = smgate("client", "127.0.0.1", str(tcp), "--protocol", "plain", "--send", "ping over tcp")
        assert echo.stdout.endswith("ping over tcp")
        metrics = subprocess.run(
            ["/usr/bin/curl", "-sS", f"http://127.0.0.1:{admin}/metrics"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert 'protocol="tlcp",result="success"' in metrics.stdout
    finally:
        assert demo.stop() == 0
    verify = smgate(
        "audit",
        "verify",
        "--key",
        str(state / "audit" / "chain.key"),
        "--cert",
        str(state / "pki" / "audit" / "audit_sign.pem"),
        str(state / "audit" / "log"),
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit verify: OK" in verify.stdout

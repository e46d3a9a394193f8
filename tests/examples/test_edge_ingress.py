"""examples/edge-ingress.yaml: TLCP, TLS and TLS 1.3-SM on one port in front of an HTTP cluster, audited."""

from __future__ import annotations

from tests.examples.conftest import check_clean, localized, place, response_json, run
from tests.gateway.process import serve
from tests.ports import free_port


def test_edge_ingress_serves_tls_and_tlcp_and_audits(example_pki, http_echo, tmp_path):
    config = place("edge-ingress.yaml", tmp_path, example_pki)
    check_clean(config)
    port = free_port()
    gateway = serve(localized(config, {"edge": port}, {"web": [http_echo]}))
    try:
        tls = run(
            "curl", "-sS", "--cacert", example_pki / "tls_root.pem",
            "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/hello?via=tls",
        )  # fmt: skip
        assert tls.returncode == 0, tls.stderr
        answer = response_json(tls.stdout)
        assert answer["path"] == "/hello?via=tls"
        assert answer["headers"]["x-forwarded-proto"] == "https"
        tlcp = run(
            "smgate", "client", "127.0.0.1", port, "--protocol", "tlcp", "--servername", "localhost",
            "--cafile", example_pki / "sm2_root.pem", "--get", "/hello?via=tlcp",
        )  # fmt: skip
        assert tlcp.returncode == 0, tlcp.stdout + tlcp.stderr
        assert "protocol: TLCPv1.1" in tlcp.stdout and "status: 200" in tlcp.stdout
        assert response_json(tlcp.stdout)["path"] == "/hello?via=tlcp"
        sm = run(
            "smgate", "client", "127.0.0.1", port, "--protocol", "tls13-sm", "--servername", "localhost",
            "--cafile", example_pki / "sm2_root.pem", "--get", "/hello?via=tls13-sm",
        )  # fmt: skip
        assert sm.returncode == 0, sm.stdout + sm.stderr
        assert "cipher: TLS_SM4_GCM_SM3" in sm.stdout and "status: 200" in sm.stdout
        assert response_json(sm.stdout)["path"] == "/hello?via=tls13-sm"
    finally:
        assert gateway.stop() == 0, gateway.output()
    verified = run(
        "smgate", "audit", "verify", "--key", example_pki / "audit_chain.key",
        "--cert", example_pki / "audit_signing.pem", tmp_path / "audit" / "edge",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit verify: OK" in verified.stdout + verified.stderr

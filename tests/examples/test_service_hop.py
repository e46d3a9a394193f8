"""examples/service-hop-{outbound,inbound}.yaml: plain HTTP -> sidecar -> mutual TLCP -> gateway -> app."""

from __future__ import annotations

from tests.examples.conftest import check_clean, localized, place, response_json, run
from tests.gateway.process import serve
from tests.ports import free_ports


def test_mutual_tlcp_hop_carries_the_callers_verified_identity(example_pki, http_echo, tmp_path):
    inbound_config = place("service-hop-inbound.yaml", tmp_path, example_pki)
    outbound_config = place("service-hop-outbound.yaml", tmp_path, example_pki)
    check_clean(inbound_config)
    check_clean(outbound_config)
    inbound_port, outbound_port = free_ports(2)
    inbound = serve(localized(inbound_config, {"inbound": inbound_port}, {"payments-app": [http_echo]}))
    try:
        outbound = serve(
            localized(outbound_config, {"outbound": outbound_port}, {"payments": [inbound_port]})
        )
        try:
            hop = run("curl", "-sS", f"http://127.0.0.1:{outbound_port}/charge")
            assert hop.returncode == 0, hop.stderr
            answer = response_json(hop.stdout)
            assert answer["path"] == "/charge"
            headers = answer["headers"]
            assert headers["x-ssl-protocol"] == "TLCPv1.1"
            assert headers["x-ssl-cipher"] == "ECDHE_SM4_GCM_SM3"
            assert "OU=orders" in headers["x-client-cert-subject"]
        finally:
            assert outbound.stop() == 0, outbound.output()
        anonymous = run(
            "smgate", "client", "127.0.0.1", inbound_port, "--protocol", "tlcp",
            "--servername", "payments.internal", "--cafile", example_pki / "sm2_root.pem",
            "--cipher", "ECC_SM4_GCM_SM3", "--get", "/charge",
        )  # fmt: skip
        assert anonymous.returncode != 0
        assert "status: 200" not in anonymous.stdout
    finally:
        assert inbound.stop() == 0, inbound.output()

"""Config validation: every error reported with its key path; references; redaction; `config check`."""

from __future__ import annotations

import copy

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config, parse_config, redacted
from tests.gateway.conftest import write_config
from tests.gateway.helpers import base_doc


def test_valid_document_loads(pki, tmp_path):
    config = parse_config(base_doc(pki, 9), tmp_path)
    assert config.listeners[0].tls.certificates[1].server_names == ("other.test",)
    assert config.cluster("echo").endpoints[0].port == 9


def test_every_error_is_reported_with_its_path(pki, tmp_path):
    doc = base_doc(pki, 9)
    certs = doc["listeners"][0]["tls"]["certificates"]
    certs[1]["tls_certificates"][0]["private_key"] = "missing.key"
    certs.append(
        {
            "name": "sm2",
            "server_names": ["sm2.test"],
            "sign_cert": str(pki.ca),
            "sign_key": str(pki.ca),
            "enc_cert": str(pki.ca),
            "enc_key": "nope.key",
        }
    )
    doc["clusters"][0]["endpoints"][0]["port"] = 70000
    doc["clusters"][0]["lb_policy"] = "fastest"
    doc["route_configs"][0]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = "ech0"
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)
    errors = info.value.errors
    assert "listeners[0].tls.certificates[1].tls_certificates[0].private_key: file not found" in errors
    assert "listeners[0].tls.certificates[2].enc_key: file not found" in errors
    assert any(e.startswith("clusters[0].endpoints[0].port:") for e in errors)
    assert any(e.startswith("clusters[0].lb_policy:") for e in errors)
    assert "route_configs[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster 'ech0'" in errors
    assert len(errors) == 5


def test_cross_references_are_checked(pki, tmp_path):
    doc = base_doc(pki, 9, routes=[{"name": "r", "route": {"cluster": "nowhere"}}])
    doc["listeners"][0]["filter_chains"][0]["filters"][0]["route_config"] = "absent"
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)
    assert info.value.errors == [
        "listeners[0].filter_chains[0].filters[0].route_config: unknown route_config 'absent'",
        "route_configs[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster 'nowhere'",
    ]


def test_policy_consistency_errors(pki, tmp_path):
    doc = base_doc(pki, 9, protocols=("tlcp", "tls1.3"), client_auth="required")
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)
    assert info.value.errors == ["listeners[0].tls: tlcp needs a certificate set with an SM2 sign/enc pair"]
    doc = base_doc(pki, 9)
    doc["listeners"][0]["filter_chains"][0]["filters"].append({"name": "tcp_proxy", "cluster": "echo"})
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)
    assert info.value.errors[0].startswith(
        "listeners[0].filter_chains[0].filters: a filter chain needs exactly one"
    )


def test_relative_paths_resolve_against_the_config_file(pki, tmp_path):
    doc = base_doc(pki, 9)
    tls_cert = doc["listeners"][0]["tls"]["certificates"][0]["tls_certificates"][0]
    (tmp_path / "server.pem").write_bytes(pki.server_rsa.read_bytes())
    tls_cert["cert_chain"] = "server.pem"
    config = load_config(write_config(tmp_path / "gw.yaml", doc))
    assert config.listeners[0].tls.certificates[0].tls_certificates[0].cert_chain == tmp_path / "server.pem"


def test_redaction_hides_key_material_paths(pki, tmp_path):
    data = redacted(parse_config(base_doc(pki, 9), tmp_path))
    cert = data["listeners"][0]["tls"]["certificates"][0]["tls_certificates"][0]
    assert cert["private_key"] == "[redacted]"
    assert cert["cert_chain"].endswith(".pem")


def test_config_check_command(pki, tmp_path, capsys):
    good = write_config(tmp_path / "good.yaml", base_doc(pki, 9))
    assert main(["config", "check", str(good)]) == 0
    assert "ok (1 listener(s), 1 cluster(s))" in capsys.readouterr().out
    doc = copy.deepcopy(base_doc(pki, 9))
    doc["listeners"][0]["tls"]["certificates"][0]["tls_certificates"][0]["cert_chain"] = str(pki.client_key)
    bad = write_config(tmp_path / "bad.yaml", doc)
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "listeners[0].tls.certificates[0].tls_certificates[0].cert_chain: not a certificate" in err
    (tmp_path / "broken.yaml").write_text("listeners: [")
    assert main(["config", "check", str(tmp_path / "broken.yaml")]) == 1
    assert "invalid YAML" in capsys.readouterr().err


def test_tlcp_options_are_the_engines_own_types(pki, tmp_path):
    from tls.tlcp import CipherSuite, ClientAuth, PeerProfile

    doc = base_doc(pki, 9, client_auth="optional")
    doc["clusters"][0]["transport_socket"] = {
        "type": "tlcp",
        "verify": False,
        "cipher_suites": ["ECC_SM4_GCM_SM3"],
        "profile": "tongsuo",
    }
    config = parse_config(doc, tmp_path)
    upstream = config.cluster("echo").transport_socket
    assert upstream.cipher_suites == (CipherSuite.ECC_SM4_GCM_SM3,)
    assert upstream.profile is PeerProfile.TONGSUO
    assert config.listeners[0].tls.client_auth is ClientAuth.OPTIONAL
    assert redacted(config)["clusters"][0]["transport_socket"]["cipher_suites"] == ["ECC_SM4_GCM_SM3"]
    assert parse_config(config.model_dump(mode="python"), tmp_path) == config
    doc["clusters"][0]["transport_socket"]["cipher_suites"] = ["ECC_SM4_CTR_SM3"]
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)
    (error,) = info.value.errors
    assert error.startswith("clusters[0].transport_socket.cipher_suites[0]: unknown TLCP cipher suite")
    assert all(suite.name in error for suite in CipherSuite)

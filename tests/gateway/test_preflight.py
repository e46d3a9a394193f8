"""`config check` catches what `serve` would refuse (gateway/preflight.py), every message with the file
and the key path; `serve` refuses a second instance and a busy audit directory with one line each."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from tests.conftest import REPO
from tests.gateway.process import serve
from tests.ports import free_ports

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files made with the `smgate pki` and `smgate audit keygen` commands."""
    out = tmp_path_factory.mktemp("preflight-pki")
    (out / "password").write_text(PASSWORD + "\n")
    sm2_ca = ["--ca-cert", str(out / "sm2_root.pem"), "--ca-key", str(out / "sm2_root.key")]
    ecdsa_ca = ["--ca-cert", str(out / "ecdsa_root.pem"), "--ca-key", str(out / "ecdsa_root.key")]
    ecdsa_server = ["--type", "ecdsa", "--role", "server", *ecdsa_ca, "--cn", "localhost"]
    encrypted = ["--key-password-file", str(out / "password")]
    for argv in (
        ["pki", "ca", "--cn", "Preflight SM2 Root", "--name", "sm2_root"],
        ["pki", "ca", "--type", "ecdsa", "--cn", "Preflight ECDSA Root", "--name", "ecdsa_root"],
        ["pki", "issue-tlcp", "--role", "server", *sm2_ca, "--cn", "localhost", "--name", "edge"],
        [
            "pki",
            "issue-tlcp",
            "--role",
            "server",
            *sm2_ca,
            "--cn",
            "localhost",
            "--name",
            "locked",
            *encrypted,
        ],
        ["pki", "issue", *ecdsa_server, "--name", "edge_tls"],
        ["pki", "issue", *ecdsa_server, "--name", "locked_tls", *encrypted],
        ["pki", "issue", "--audit-signing", *sm2_ca, "--cn", "audit signer", "--name", "audit_sign"],
        ["pki", "issue", "--audit-signing", *sm2_ca, "--cn", "other signer", "--name", "other_sign"],
    ):
        assert main([*argv, "--out-dir", str(out)]) == 0, argv
    assert main(["audit", "keygen", str(out / "chain.key")]) == 0
    return out


def document(pki: Path, tmp_path: Path) -> dict[str, Any]:
    listener_port, db_port, admin_port = free_ports(3)
    return {
        "listeners": [
            {
                "name": "edge",
                "address": "127.0.0.1",
                "port": listener_port,
                "tls": {
                    "protocols": ["tlcp", "tls1.3"],
                    "sm2_trust_anchors": str(pki / "sm2_root.pem"),
                    "certificates": [
                        {
                            "sign_cert": str(pki / "edge_sign.pem"),
                            "sign_key": str(pki / "edge_sign.key"),
                            "enc_cert": str(pki / "edge_enc.pem"),
                            "enc_key": str(pki / "edge_enc.key"),
                            "tls_certificates": [
                                {
                                    "cert_chain": str(pki / "edge_tls.pem"),
                                    "private_key": str(pki / "edge_tls.key"),
                                }
                            ],
                        }
                    ],
                },
                "filter_chains": [{"filters": [{"name": "tcp_proxy", "cluster": "db"}]}],
            }
        ],
        "clusters": [{"name": "db", "endpoints": [{"address": "127.0.0.1", "port": db_port}]}],
        "admin": {"address": "127.0.0.1", "port": admin_port},
        "audit": {
            "key_file": str(pki / "chain.key"),
            "signing_key": str(pki / "audit_sign.key"),
            "signing_cert": str(pki / "audit_sign.pem"),
            "pipeline": "thread",
            "sinks": [{"type": "file", "directory": str(tmp_path / "audit")}],
        },
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def check(path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "config", "check", str(path), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def refused(path: Path, env: dict[str, str] | None = None) -> str:
    """`config check` output for a config it must refuse; then `serve` must refuse it too, with the
    same line and without a traceback."""
    result = check(path, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    served = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert served.returncode == 1, served.stdout + served.stderr
    assert "Traceback" not in served.stderr
    for line in result.stderr.splitlines():
        if "error(s)" not in line:
            assert line in served.stderr
    return result.stderr


def test_the_base_document_checks_ok(pki, tmp_path):
    result = check(write(tmp_path / "gw.yaml", document(pki, tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_audit_signing_certificate_that_does_not_match_its_key(pki, tmp_path):
    doc = document(pki, tmp_path)
    doc["audit"]["signing_cert"] = str(pki / "other_sign.pem")
    path = write(tmp_path / "gw.yaml", doc)
    assert (
        f"{path}: audit.signing_cert: {pki / 'other_sign.pem'} does not match audit.signing_key "
        f"{pki / 'audit_sign.key'}" in refused(path)
    )


def test_listener_key_that_does_not_match_its_certificate_names_the_key(pki, tmp_path):
    doc = document(pki, tmp_path)
    doc["listeners"][0]["tls"]["certificates"][0]["sign_key"] = str(pki / "edge_enc.key")
    path = write(tmp_path / "gw.yaml", doc)
    assert (
        f"{path}: listeners[0].tls.certificates[0].sign_key: {pki / 'edge_enc.key'} does not match "
        f"sign_cert {pki / 'edge_sign.pem'} (CN=localhost)" in refused(path)
    )


def test_audit_directory_that_cannot_be_created(pki, tmp_path):
    (tmp_path / "plain-file").write_text("not a directory")
    doc = document(pki, tmp_path)
    doc["audit"]["sinks"][0]["directory"] = str(tmp_path / "plain-file" / "audit")
    path = write(tmp_path / "gw.yaml", doc)
    assert (
        f"{path}: audit.sinks[0].directory: {tmp_path / 'plain-file' / 'audit'} cannot be created: "
        f"{tmp_path / 'plain-file'} is not a directory" in refused(path)
    )


def test_audit_directory_on_a_file_system_that_takes_no_files(pki, tmp_path):
    doc = document(pki, tmp_path)
    doc["audit"]["sinks"][0]["directory"] = "/proc/smgate-audit"
    path = write(tmp_path / "gw.yaml", doc)
    assert f"{path}: audit.sinks[0].directory: cannot create files in /proc/smgate-audit" in refused(path)


def test_admin_port_that_is_also_a_listener_port(pki, tmp_path):
    doc = document(pki, tmp_path)
    doc["listeners"][0]["address"] = "0.0.0.0"
    doc["admin"]["port"] = port = doc["listeners"][0]["port"]
    path = write(tmp_path / "gw.yaml", doc)
    assert (
        f"{path}: admin.port: 127.0.0.1:{port} is also the port of listeners[0] ('edge' on 0.0.0.0:{port})"
        in refused(path)
    )


def test_two_listeners_on_one_port_are_both_named(pki, tmp_path):
    doc = document(pki, tmp_path)
    port = doc["listeners"][0]["port"]
    second = copy.deepcopy(doc["listeners"][0]) | {"name": "edge-copy"}
    wildcard = copy.deepcopy(doc["listeners"][0]) | {"name": "edge-any", "address": "0.0.0.0"}
    doc["listeners"] += [second]
    path = write(tmp_path / "same.yaml", doc)
    assert (
        f"{path}: listeners[1].port: 127.0.0.1:{port} ('edge-copy') is already bound by listeners[0] ('edge')"
        in refused(path)
    )
    doc["listeners"][1:] = [wildcard]
    path = write(tmp_path / "overlap.yaml", doc)
    assert (
        f"{path}: listeners[1].address: 0.0.0.0:{port} ('edge-any') overlaps listeners[0] "
        f"('edge' on 127.0.0.1:{port})" in refused(path)
    )


def test_ecdhe_tlcp_without_sm2_trust_anchors_is_a_warning(pki, tmp_path):
    doc = document(pki, tmp_path)
    del doc["listeners"][0]["tls"]["sm2_trust_anchors"]
    path = write(tmp_path / "gw.yaml", doc)
    result = check(path)
    assert result.returncode == 0
    assert result.stdout.strip().endswith("1 warning(s))")
    assert result.stderr.startswith(
        f"{path}: warning: listeners[0].tls.sm2_trust_anchors: ECDHE_SM4_GCM_SM3, ECDHE_SM4_CBC_SM3 make"
    )
    assert check(path, "--strict").returncode == 1
    doc["listeners"][0]["tls"]["cipher_suites"] = {"tlcp": ["ECC_SM4_GCM_SM3"]}
    only_ecc = check(write(tmp_path / "ecc.yaml", doc))
    assert only_ecc.returncode == 0 and only_ecc.stderr == ""


def encrypted_doc(pki: Path, tmp_path: Path) -> dict[str, Any]:
    doc = document(pki, tmp_path)
    doc["listeners"][0]["tls"]["certificates"][0].update(
        sign_cert=str(pki / "locked_sign.pem"),
        sign_key=str(pki / "locked_sign.key"),
        enc_cert=str(pki / "locked_enc.pem"),
        enc_key=str(pki / "locked_enc.key"),
        key_password_env="SMGATE_TEST_KEY_PASSWORD",
    )
    return doc


def test_encrypted_key_names_the_password_variable(pki, tmp_path):
    path = write(tmp_path / "gw.yaml", encrypted_doc(pki, tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "SMGATE_TEST_KEY_PASSWORD"}
    assert (
        f"{path}: listeners[0].tls.certificates[0].key_password_env: environment variable "
        "SMGATE_TEST_KEY_PASSWORD is not set" in refused(path, env)
    )
    wrong = env | {"SMGATE_TEST_KEY_PASSWORD": "wrong"}
    assert (
        f"{path}: listeners[0].tls.certificates[0].sign_key: {pki / 'locked_sign.key'} does not decrypt "
        "with the password in $SMGATE_TEST_KEY_PASSWORD" in refused(path, wrong)
    )
    right = check(path, env=env | {"SMGATE_TEST_KEY_PASSWORD": PASSWORD})
    assert right.returncode == 0, right.stderr


def test_encrypted_key_without_a_password_variable(pki, tmp_path):
    doc = encrypted_doc(pki, tmp_path)
    del doc["listeners"][0]["tls"]["certificates"][0]["key_password_env"]
    doc["listeners"][0]["tls"]["certificates"][0]["tls_certificates"][0].update(
        cert_chain=str(pki / "locked_tls.pem"), private_key=str(pki / "locked_tls.key")
    )
    path = write(tmp_path / "gw.yaml", doc)
    result = check(path)
    assert result.returncode == 1
    assert (
        f"{path}: listeners[0].tls.certificates[0].sign_key: {pki / 'locked_sign.key'} is encrypted: name "
        "the environment variable holding its password in listeners[0].tls.certificates[0].key_password_env"
        in result.stderr
    )
    assert (
        f"{path}: listeners[0].tls.certificates[0].tls_certificates[0].private_key: "
        f"{pki / 'locked_tls.key'} is encrypted and smgate loads this key without a password" in result.stderr
    )


def test_yaml_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("listeners:\n  - name: a\n   port: 1\n")
    result = check(path)
    assert result.returncode == 1
    assert f"{path}: (document): invalid YAML: line 3, column 4: expected <block end>" in result.stderr
    assert "<unicode string>" not in result.stderr


def test_second_instance_is_refused_with_one_line_each(pki, tmp_path):
    """Same admin port, same audit directory: the second `serve` names both and starts nothing."""
    doc = document(pki, tmp_path)
    first = serve(write(tmp_path / "first.yaml", doc))
    try:
        doc["listeners"][0]["port"] = free_ports(1)[0]
        path = write(tmp_path / "second.yaml", doc)
        second = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "serve", str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        admin = doc["admin"]["port"]
        assert (
            f"{path}: admin.port: cannot listen on 127.0.0.1:{admin}: the address is already in use "
            "(another smgate on this host? each instance needs its own admin.port)" in second.stderr
        )
        assert (
            f"{path}: audit.sinks[0].directory: {tmp_path / 'audit'} is being written by another process"
            in second.stderr
        )
        assert check(path).returncode == 0  # the config itself is fine: only this host is taken
    finally:
        assert first.stop() == 0

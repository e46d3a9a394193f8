"""The demo PKI (certs.demo): contents, validation, idempotency and renewal."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certs import Role, TrustStore, load_certificate_file, verify_sm2_chain
from certs.demo import DemoPKI, ensure_demo_pki
from certs.standard import verify_standard_chain

NOW = datetime(2027, 1, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPKI:
    return ensure_demo_pki(tmp_path_factory.mktemp("state"), now=NOW)


def all_files(demo: DemoPKI) -> dict[Path, bytes]:
    return {
        path: path.read_bytes()
        for path in sorted(demo.directory.rglob("*.pem")) + sorted(demo.directory.rglob("*.key"))
    }


def test_tlcp_server_and_client_sets_validate(demo: DemoPKI) -> None:
    trust = demo.sm2_trust_store()
    server = demo.server_certificate_set()
    check = NOW + timedelta(minutes=1)
    for certificate, role in ((server.sign_cert, Role.SERVER_SIGN), (server.enc_cert, Role.SERVER_ENC)):
        for hostname in ("localhost", "127.0.0.1"):
            path = verify_sm2_chain(certificate, server.chain, trust, role=role, now=check, hostname=hostname)
            assert len(path) == 3
    client = demo.client_certificate_set()
    verify_sm2_chain(client.sign_cert, client.chain, trust, role=Role.CLIENT_SIGN, now=check)
    verify_sm2_chain(client.enc_cert, client.chain, trust, role=Role.CLIENT_ENC, now=check)


def test_standard_certificates_validate(demo: DemoPKI) -> None:
    check = NOW + timedelta(minutes=1)
    for paths, key_type in ((demo.rsa, "RSA-2048"), (demo.ecdsa, "ECDSA-P256")):
        trust = TrustStore.from_pem_file(paths.ca_bundle)
        server = load_certificate_file(paths.server.cert)
        client = load_certificate_file(paths.client.cert)
        assert server.key_type == client.key_type == key_type
        verify_standard_chain(server, [], trust, now=check, hostname="127.0.0.1")
        verify_standard_chain(client, [], trust, now=check, server=False)


def test_audit_certificate(demo: DemoPKI) -> None:
    audit = load_certificate_file(demo.audit.cert)
    assert audit.is_sm2 and not audit.is_ca
    assert audit.key_usage == {"digital_signature", "non_repudiation"}
    intermediate = load_certificate_file(demo.sm2.intermediate.cert)
    assert intermediate.issued(audit)


def test_private_keys_are_0600(demo: DemoPKI) -> None:
    keys = sorted(demo.directory.rglob("*.key"))
    assert len(keys) == 13
    assert all(stat.S_IMODE(key.stat().st_mode) == 0o600 for key in keys)


def test_second_run_keeps_files(demo: DemoPKI) -> None:
    before = all_files(demo)
    again = ensure_demo_pki(demo.directory.parent, now=NOW + timedelta(days=30))
    assert again == demo
    assert all_files(demo) == before


def test_missing_file_reissues_only_its_group(tmp_path: Path) -> None:
    demo = ensure_demo_pki(tmp_path, now=NOW)
    before = all_files(demo)
    demo.sm2.server_enc.key.unlink()
    ensure_demo_pki(tmp_path, now=NOW)
    after = all_files(demo)
    assert after[demo.rsa.server.cert] == before[demo.rsa.server.cert]
    assert after[demo.ecdsa.ca.key] == before[demo.ecdsa.ca.key]
    assert after[demo.sm2.root.cert] != before[demo.sm2.root.cert]
    assert after[demo.audit.cert] != before[demo.audit.cert]
    demo.server_certificate_set()

    # Close to expiry, the groups are issued afresh.
    leaf = load_certificate_file(demo.sm2.server_sign.cert)
    later = leaf.not_after - timedelta(hours=1)
    ensure_demo_pki(tmp_path, now=later)
    renewed = load_certificate_file(demo.sm2.server_sign.cert)
    assert renewed.not_after > later + timedelta(days=300)
    assert load_certificate_file(demo.rsa.server.cert).not_after > later + timedelta(days=300)

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from audit.keys import (
    AuditKeyError,
    load_audit_key,
    load_signing_key,
    load_verification_key,
    public_key_from_certificate,
    write_audit_key,
)
from certs.demo import DemoPKI
from tls.crypto import SM2PrivateKey


def test_keygen_writes_private_hex_key_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    write_audit_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_audit_key(path)
    assert len(key) == 32
    with pytest.raises(AuditKeyError, match="refusing to overwrite"):
        write_audit_key(path)
    assert load_audit_key(path) == key


@pytest.mark.parametrize(("content", "message"), [("zz", "hex text"), ("0011", "at least 16 bytes")])
def test_bad_key_files_are_rejected_without_echoing_content(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(AuditKeyError, match=message) as info:
        load_audit_key(path)
    assert content not in str(info.value)


def test_missing_key_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(AuditKeyError, match=r"missing\.key: cannot read"):
        load_audit_key(tmp_path / "missing.key")


def test_certificate_and_spki_give_the_signing_public_key(demo_pki: DemoPKI, tmp_path: Path) -> None:
    private_key = load_signing_key(demo_pki.audit.key)
    from_cert = load_verification_key(demo_pki.audit.cert)
    assert from_cert == private_key.public_key()
    der_cert = tmp_path / "audit.der"
    from asn1crypto import pem

    _type, _headers, der = pem.unarmor(demo_pki.audit.cert.read_bytes())
    der_cert.write_bytes(der)
    assert load_verification_key(der_cert) == private_key.public_key()
    spki = tmp_path / "audit.pub"
    spki.write_bytes(private_key.public_key().spki_pem())
    assert load_verification_key(spki) == private_key.public_key()


def test_non_sm2_certificate_is_rejected(demo_pki: DemoPKI) -> None:
    with pytest.raises(AuditKeyError, match="SM2"):
        public_key_from_certificate(demo_pki.ecdsa.server.cert.read_bytes())


def test_garbage_verification_key(tmp_path: Path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"\x00junk")
    with pytest.raises(AuditKeyError, match="neither"):
        load_verification_key(path)


def test_signing_key_wrong_kind(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(b"not a key")
    with pytest.raises(AuditKeyError, match="not an SM2 private key"):
        load_signing_key(path)
    good = tmp_path / "good.pem"
    good.write_bytes(SM2PrivateKey.generate().to_pkcs8_pem())
    assert isinstance(load_signing_key(good), SM2PrivateKey)

"""RSA/ECDSA issuing with cryptography and validation through OpenSSL (certs.standard)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from certs import (
    BadCertificateSignature,
    Certificate,
    CertificateExpired,
    CertificateNotYetValid,
    HostnameMismatch,
    KeyUsageMismatch,
    NotACertificateAuthority,
    PathLengthExceeded,
    TrustStore,
    UnknownCA,
)
from certs.pki import IssuedStandard, create_standard_ca, issue_standard_certificate
from certs.profile import CertificateProfile, Subject
from certs.standard import build_standard_certificate, generate_private_key, verify_standard_chain
from tests.certs.helpers import NOW


@pytest.fixture(scope="module")
def ecdsa_ca() -> IssuedStandard:
    return create_standard_ca("ecdsa", Subject("EC Root", "tests"), now=NOW - timedelta(days=1))


@pytest.mark.parametrize("key_type", ["rsa", "ecdsa"])
@pytest.mark.parametrize("role", ["server", "client"])
def test_issue_and_verify(ecdsa_ca: IssuedStandard, key_type: str, role: str) -> None:
    issued = issue_standard_certificate(
        key_type, Subject("localhost"), ecdsa_ca, role=role, dns=("localhost",), ips=("127.0.0.1",), now=NOW
    )
    leaf = issued.certificate
    assert leaf.key_type == ("RSA-2048" if key_type == "rsa" else "ECDSA-P256")
    assert leaf.ext_key_usage == {f"{role}_auth"}
    path = verify_standard_chain(
        leaf, [], TrustStore([ecdsa_ca.certificate]), now=NOW, server=role == "server", hostname="127.0.0.1"
    )
    assert path == [leaf, ecdsa_ca.certificate]
    with pytest.raises(KeyUsageMismatch):
        verify_standard_chain(leaf, [], TrustStore([ecdsa_ca.certificate]), now=NOW, server=role != "server")


def test_rsa_ca_with_intermediate() -> None:
    root = create_standard_ca("rsa", Subject("RSA Root"), now=NOW)
    intermediate = create_standard_ca("rsa", Subject("RSA Inter"), issuer=root, path_len=0, now=NOW)
    leaf = issue_standard_certificate(
        "ecdsa", Subject("svc"), intermediate, role="server", dns=("svc.test",), now=NOW
    )
    trust = TrustStore([root.certificate])
    later = NOW + timedelta(hours=1)
    path = verify_standard_chain(
        leaf.certificate, [intermediate.certificate], trust, now=later, hostname="svc.test"
    )
    assert [c.subject for c in path] == ["CN=svc", "CN=RSA Inter", "CN=RSA Root"]
    with pytest.raises(UnknownCA):
        verify_standard_chain(leaf.certificate, [], trust, now=later)
    with pytest.raises(HostnameMismatch):
        verify_standard_chain(
            leaf.certificate, [intermediate.certificate], trust, now=later, hostname="other.test"
        )
    sub = create_standard_ca("rsa", Subject("RSA Sub"), issuer=intermediate, now=later)
    deep = issue_standard_certificate("rsa", Subject("deep"), sub, role="server", now=later)
    with pytest.raises(PathLengthExceeded):
        verify_standard_chain(deep.certificate, [sub.certificate, intermediate.certificate], trust, now=later)


def test_validity_errors(ecdsa_ca: IssuedStandard) -> None:
    leaf = issue_standard_certificate("ecdsa", Subject("svc"), ecdsa_ca, role="server", days=10, now=NOW)
    trust = TrustStore([ecdsa_ca.certificate])
    with pytest.raises(CertificateExpired) as expired:
        verify_standard_chain(leaf.certificate, [], trust, now=NOW + timedelta(days=11))
    assert expired.value.alert == "certificate_expired"
    with pytest.raises(CertificateNotYetValid):
        verify_standard_chain(leaf.certificate, [], trust, now=NOW - timedelta(hours=1))


def test_tampered_signature(ecdsa_ca: IssuedStandard) -> None:
    leaf = issue_standard_certificate(
        "ecdsa", Subject("tamper-me"), ecdsa_ca, role="server", now=NOW
    ).certificate
    tampered = Certificate.from_der(leaf.der.replace(b"tamper-me", b"tamper-mE"))
    with pytest.raises(BadCertificateSignature):
        verify_standard_chain(tampered, [], TrustStore([ecdsa_ca.certificate]), now=NOW)


def test_leaf_used_as_ca(ecdsa_ca: IssuedStandard) -> None:
    fake_ca = issue_standard_certificate("ecdsa", Subject("leaf"), ecdsa_ca, role="server", now=NOW)
    key = generate_private_key("ecdsa")
    profile = CertificateProfile(
        subject=Subject("victim"),
        not_before=NOW - timedelta(minutes=1),
        not_after=NOW + timedelta(days=1),
        key_usage=frozenset({"digital_signature"}),
    )
    victim = build_standard_certificate(profile, key.public_key(), fake_ca.key, fake_ca.certificate)
    with pytest.raises(NotACertificateAuthority):
        verify_standard_chain(victim, [fake_ca.certificate], TrustStore([ecdsa_ca.certificate]), now=NOW)

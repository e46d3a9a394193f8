"""SM2 chain validation: accepted chains and one test per rejection reason (certs.verify)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest

from certs import (
    BadCertificateSignature,
    Certificate,
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    HostnameMismatch,
    KeyUsageMismatch,
    MalformedCertificate,
    NotACertificateAuthority,
    PathLengthExceeded,
    Role,
    TrustStore,
    UnknownCA,
    UnsupportedCertificate,
    verify_sm2_chain,
)
from certs.pki import create_standard_ca
from certs.profile import Subject
from tests.certs.helpers import NOW, Chain, make_sm2


def verify(
    chain: Chain,
    leaf: Certificate,
    role: Role = Role.SERVER_SIGN,
    *,
    intermediates: Sequence[Certificate] | None = None,
    now: datetime = NOW,
    hostname: str | None = None,
) -> list[Certificate]:
    """Validate ``leaf`` against the test root, offering the test intermediate unless told otherwise."""
    offered = [chain.intermediate.certificate] if intermediates is None else intermediates
    trust = TrustStore.from_certificates([chain.root.certificate])
    return verify_sm2_chain(leaf, offered, trust, role=role, now=now, hostname=hostname)


def rejection(
    error: type[CertificateError], chain: Chain, leaf: Certificate, **kwargs: Any
) -> CertificateError:
    """The exception ``verify`` raises, asserting its class."""
    with pytest.raises(error) as info:
        verify(chain, leaf, **kwargs)
    return info.value


@pytest.mark.parametrize(
    ("leaf_name", "role"),
    [
        ("server_sign", Role.SERVER_SIGN),
        ("server_enc", Role.SERVER_ENC),
        ("client_sign", Role.CLIENT_SIGN),
        ("client_enc", Role.CLIENT_ENC),
    ],
)
def test_generated_chain_validates_for_each_role(chain: Chain, leaf_name: str, role: Role) -> None:
    leaf = getattr(chain, leaf_name).certificate
    assert verify(chain, leaf, role) == [leaf, chain.intermediate.certificate, chain.root.certificate]


def test_intermediates_in_any_order_with_extra_certificates(chain: Chain) -> None:
    unrelated = make_sm2("Unrelated CA", is_ca=True).certificate
    offered = [
        chain.server_enc.certificate,
        unrelated,
        chain.intermediate.certificate,
        chain.root.certificate,
    ]
    path = verify(chain, chain.server_sign.certificate, intermediates=offered)
    assert path == [chain.server_sign.certificate, chain.intermediate.certificate, chain.root.certificate]


@pytest.mark.parametrize(
    "hostname", ["localhost", "LOCALHOST.", "api.example.test", "127.0.0.1", "::1", "[::1]"]
)
def test_hostname_accepted(chain: Chain, hostname: str) -> None:
    verify(chain, chain.server_sign.certificate, hostname=hostname)


@pytest.mark.parametrize("hostname", ["example.test", "a.b.example.test", "127.0.0.2", "otherhost"])
def test_hostname_mismatch(chain: Chain, hostname: str) -> None:
    error = rejection(HostnameMismatch, chain, chain.server_sign.certificate, hostname=hostname)
    assert error.alert == "bad_certificate"
    assert "subjectAltName" in str(error)


def test_expired_leaf(chain: Chain) -> None:
    leaf = make_sm2(
        "old", chain.intermediate, not_before=NOW - timedelta(days=20), not_after=NOW - timedelta(seconds=1)
    )
    error = rejection(CertificateExpired, chain, leaf.certificate)
    assert error.alert == "certificate_expired"
    assert "expired" in str(error)


def test_expired_intermediate_is_rejected_too(chain: Chain) -> None:
    short_lived = make_sm2("Short CA", chain.root, is_ca=True, not_after=NOW - timedelta(seconds=1))
    leaf = make_sm2("localhost", short_lived)
    error = rejection(CertificateExpired, chain, leaf.certificate, intermediates=[short_lived.certificate])
    assert "Short CA" in str(error)


def test_not_yet_valid(chain: Chain) -> None:
    leaf = make_sm2("future", chain.intermediate, not_before=NOW + timedelta(hours=1))
    error = rejection(CertificateNotYetValid, chain, leaf.certificate)
    assert error.alert == "certificate_expired"
    assert "not valid before" in str(error)


def test_tampered_tbs_fails_signature(chain: Chain) -> None:
    der = chain.server_sign.certificate.der
    tampered = der.replace(b"localhost", b"localhosu", 1)
    assert tampered != der
    error = rejection(BadCertificateSignature, chain, Certificate.from_der(tampered))
    assert error.alert == "bad_certificate"
    assert "does not verify" in str(error)


def test_same_issuer_name_with_other_key_is_unknown_ca(chain: Chain) -> None:
    # The impostor's authorityKeyIdentifier does not match the real root's subjectKeyIdentifier.
    impostor = make_sm2("Test Root CA", is_ca=True)
    rejection(UnknownCA, chain, make_sm2("localhost", impostor).certificate, intermediates=[])


def test_unknown_ca(chain: Chain) -> None:
    leaf = make_sm2("localhost", make_sm2("Other Root", is_ca=True))
    error = rejection(UnknownCA, chain, leaf.certificate, intermediates=[])
    assert error.alert == "unknown_ca"
    assert "not trusted" in str(error)


def test_missing_intermediate_is_unknown_ca(chain: Chain) -> None:
    rejection(UnknownCA, chain, chain.server_sign.certificate, intermediates=[])


def test_self_signed_root_sent_by_peer_is_not_trusted(chain: Chain) -> None:
    with pytest.raises(UnknownCA):
        verify_sm2_chain(
            chain.server_sign.certificate,
            [chain.intermediate.certificate, chain.root.certificate],
            TrustStore([make_sm2("Other Root", is_ca=True).certificate]),
            role=Role.SERVER_SIGN,
            now=NOW,
        )


def test_empty_trust_store(chain: Chain) -> None:
    with pytest.raises(UnknownCA, match="empty"):
        verify_sm2_chain(chain.root.certificate, [], TrustStore(), role=Role.SERVER_SIGN, now=NOW)


def test_leaf_used_as_ca(chain: Chain) -> None:
    fake_ca = make_sm2("leaf acting as CA", chain.intermediate)
    victim = make_sm2("localhost", fake_ca)
    offered = [fake_ca.certificate, chain.intermediate.certificate]
    error = rejection(NotACertificateAuthority, chain, victim.certificate, intermediates=offered)
    assert error.alert == "bad_certificate"
    assert "not a CA" in str(error)


def test_path_length_exceeded(chain: Chain) -> None:
    # The intermediate has pathLen 0, so a second CA below it is one too many.
    sub_ca = make_sm2("Sub CA", chain.intermediate, is_ca=True)
    leaf = make_sm2("localhost", sub_ca)
    offered = [sub_ca.certificate, chain.intermediate.certificate]
    error = rejection(PathLengthExceeded, chain, leaf.certificate, intermediates=offered)
    assert error.alert == "bad_certificate"
    assert "allows 0" in str(error)


def test_path_length_within_limit() -> None:
    root = make_sm2("Root pathlen 1", is_ca=True, path_len=1)
    first = make_sm2("First CA", root, is_ca=True)
    leaf = make_sm2("localhost", first)
    trust = TrustStore([root.certificate])
    path = verify_sm2_chain(leaf.certificate, [first.certificate], trust, role=Role.SERVER_SIGN, now=NOW)
    assert len(path) == 3


@pytest.mark.parametrize(
    ("leaf_name", "role", "fragment"),
    [
        ("server_sign", Role.SERVER_ENC, "key_encipherment"),
        ("server_enc", Role.SERVER_SIGN, "digital_signature"),
        ("client_sign", Role.SERVER_SIGN, "server_auth"),
        ("server_enc", Role.CLIENT_ENC, "client_auth"),
    ],
)
def test_wrong_key_usage_for_role(chain: Chain, leaf_name: str, role: Role, fragment: str) -> None:
    error = rejection(KeyUsageMismatch, chain, getattr(chain, leaf_name).certificate, role=role)
    assert error.alert == "unsupported_certificate"
    assert fragment in str(error)


def test_enc_role_accepts_key_encipherment_without_key_agreement(chain: Chain) -> None:
    usage = frozenset({"key_encipherment", "data_encipherment"})
    verify(chain, make_sm2("gmssl style", chain.intermediate, key_usage=usage).certificate, Role.SERVER_ENC)


def test_enc_role_accepts_key_agreement_only(chain: Chain) -> None:
    usage = frozenset({"key_agreement"})
    verify(chain, make_sm2("kx only", chain.intermediate, key_usage=usage).certificate, Role.SERVER_ENC)


def test_leaf_without_key_usage_is_rejected(chain: Chain) -> None:
    leaf = make_sm2("no usage", chain.intermediate, key_usage=frozenset())
    error = rejection(KeyUsageMismatch, chain, leaf.certificate)
    assert "no keyUsage" in str(error)


def test_naive_now_is_refused(chain: Chain) -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify(chain, chain.server_sign.certificate, now=NOW.replace(tzinfo=None))


def test_malformed_der_is_rejected() -> None:
    with pytest.raises(MalformedCertificate) as info:
        Certificate.from_der(b"\x30\x03\x02\x01\x01")
    assert info.value.alert == "bad_certificate"


def test_ecdsa_certificate_is_unsupported_in_sm2_chain(chain: Chain) -> None:
    ecdsa_ca = create_standard_ca("ecdsa", Subject("EC CA"), now=NOW)
    error = rejection(UnsupportedCertificate, chain, ecdsa_ca.certificate, intermediates=[])
    assert error.alert == "unsupported_certificate"

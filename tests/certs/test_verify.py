"""SM2 chain validation: accepted chains and one test per rejection reason (certs.verify)."""

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
    MalformedCertificate,
    NotACertificateAuthority,
    PathLengthExceeded,
    Role,
    TrustStore,
    UnknownCA,
    UnsupportedCertificate,
    verify_sm2_chain,
)
from certs.pki import TLCP_ENC_USAGE, create_standard_ca
from certs.profile import Subject
from tests.certs.helpers import NOW, Chain, make_sm2


def trust_of(chain: Chain) -> TrustStore:
    return TrustStore.from_certificates([chain.root.certificate])


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
    path = verify_sm2_chain(leaf, [chain.intermediate.certificate], trust_of(chain), role=role, now=NOW)
    assert path == [leaf, chain.intermediate.certificate, chain.root.certificate]


def test_intermediates_in_any_order_with_extra_certificates(chain: Chain) -> None:
    unrelated = make_sm2("Unrelated CA", is_ca=True).certificate
    candidates = [
        chain.server_enc.certificate,
        unrelated,
        chain.intermediate.certificate,
        chain.root.certificate,
    ]
    path = verify_sm2_chain(
        chain.server_sign.certificate, candidates, trust_of(chain), role=Role.SERVER_SIGN, now=NOW
    )
    assert [c.subject for c in path] == [
        chain.server_sign.certificate.subject,
        chain.intermediate.certificate.subject,
        chain.root.certificate.subject,
    ]


@pytest.mark.parametrize(
    "hostname", ["localhost", "LOCALHOST.", "api.example.test", "127.0.0.1", "::1", "[::1]"]
)
def test_hostname_accepted(chain: Chain, hostname: str) -> None:
    verify_sm2_chain(
        chain.server_sign.certificate,
        [chain.intermediate.certificate],
        trust_of(chain),
        role=Role.SERVER_SIGN,
        now=NOW,
        hostname=hostname,
    )


@pytest.mark.parametrize("hostname", ["example.test", "a.b.example.test", "127.0.0.2", "otherhost"])
def test_hostname_mismatch(chain: Chain, hostname: str) -> None:
    with pytest.raises(HostnameMismatch) as info:
        verify_sm2_chain(
            chain.server_sign.certificate,
            [chain.intermediate.certificate],
            trust_of(chain),
            role=Role.SERVER_SIGN,
            now=NOW,
            hostname=hostname,
        )
    assert info.value.alert == "bad_certificate"
    assert "subjectAltName" in str(info.value)


def test_expired_leaf(chain: Chain) -> None:
    leaf = make_sm2(
        "old", chain.intermediate, not_before=NOW - timedelta(days=20), not_after=NOW - timedelta(seconds=1)
    )
    with pytest.raises(CertificateExpired) as info:
        verify_sm2_chain(
            leaf.certificate,
            [chain.intermediate.certificate],
            trust_of(chain),
            role=Role.SERVER_SIGN,
            now=NOW,
        )
    assert info.value.alert == "certificate_expired"
    assert "expired" in str(info.value)


def test_expired_intermediate_is_rejected_too(chain: Chain) -> None:
    later = chain.intermediate.certificate.not_after + timedelta(days=1)
    with pytest.raises(CertificateExpired):
        verify_sm2_chain(
            chain.server_sign.certificate,
            [chain.intermediate.certificate],
            trust_of(chain),
            role=Role.SERVER_SIGN,
            now=later,
        )


def test_not_yet_valid(chain: Chain) -> None:
    leaf = make_sm2("future", chain.intermediate, not_before=NOW + timedelta(hours=1))
    with pytest.raises(CertificateNotYetValid) as info:
        verify_sm2_chain(
            leaf.certificate,
            [chain.intermediate.certificate],
            trust_of(chain),
            role=Role.SERVER_SIGN,
            now=NOW,
        )
    assert info.value.alert == "certificate_expired"
    assert "not valid before" in str(info.value)


def test_tampered_tbs_fails_signature(chain: Chain) -> None:
    der = chain.server_sign.certificate.der
    marker = b"localhost"
    tampered = der.replace(marker, b"localhosu", 1)
    assert tampered != der
    leaf = Certificate.from_der(tampered)
    with pytest.raises(BadCertificateSignature) as info:
        verify_sm2_chain(
            leaf, [chain.intermediate.certificate], trust_of(chain), role=Role.SERVER_SIGN, now=NOW
        )
    assert info.value.alert == "bad_certificate"
    assert "does not verify" in str(info.value)


def test_same_issuer_name_with_other_key_is_unknown_ca(chain: Chain) -> None:
    # The impostor's authorityKeyIdentifier does not match the real root's subjectKeyIdentifier.
    impostor = make_sm2("Test Root CA", is_ca=True)
    leaf = make_sm2("localhost", impostor)
    with pytest.raises(UnknownCA):
        verify_sm2_chain(leaf.certificate, [], trust_of(chain), role=Role.SERVER_SIGN, now=NOW)


def test_unknown_ca(chain: Chain) -> None:
    other_root = make_sm2("Other Root", is_ca=True)
    leaf = make_sm2("localhost", other_root)
    with pytest.raises(UnknownCA) as info:
        verify_sm2_chain(leaf.certificate, [], trust_of(chain), role=Role.SERVER_SIGN, now=NOW)
    assert info.value.alert == "unknown_ca"
    assert "not trusted" in str(info.value)


def test_missing_intermediate_is_unknown_ca(chain: Chain) -> None:
    with pytest.raises(UnknownCA):
        verify_sm2_chain(chain.server_sign.certificate, [], trust_of(chain), role=Role.SERVER_SIGN, now=NOW)


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
    with pytest.raises(UnknownCA):
        verify_sm2_chain(chain.root.certificate, [], TrustStore(), role=Role.SERVER_SIGN, now=NOW)


def test_leaf_used_as_ca(chain: Chain) -> None:
    fake_ca = make_sm2("leaf acting as CA", chain.intermediate)
    victim = make_sm2("localhost", fake_ca)
    with pytest.raises(NotACertificateAuthority) as info:
        verify_sm2_chain(
            victim.certificate,
            [fake_ca.certificate, chain.intermediate.certificate],
            trust_of(chain),
            role=Role.SERVER_SIGN,
            now=NOW,
        )
    assert info.value.alert == "bad_certificate"
    assert "not a CA" in str(info.value)


def test_path_length_exceeded(chain: Chain) -> None:
    # The intermediate has pathLen 0, so a second CA below it is one too many.
    sub_ca = make_sm2("Sub CA", chain.intermediate, is_ca=True)
    leaf = make_sm2("localhost", sub_ca)
    with pytest.raises(PathLengthExceeded) as info:
        verify_sm2_chain(
            leaf.certificate,
            [sub_ca.certificate, chain.intermediate.certificate],
            trust_of(chain),
            role=Role.SERVER_SIGN,
            now=NOW,
        )
    assert info.value.alert == "bad_certificate"
    assert "allows 0" in str(info.value)


def test_path_length_within_limit() -> None:
    root = make_sm2("Root pathlen 1", is_ca=True, path_len=1)
    first = make_sm2("First CA", root, is_ca=True)
    leaf = make_sm2("localhost", first)
    path = verify_sm2_chain(
        leaf.certificate, [first.certificate], TrustStore([root.certificate]), role=Role.SERVER_SIGN, now=NOW
    )
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
    leaf = getattr(chain, leaf_name).certificate
    with pytest.raises(KeyUsageMismatch) as info:
        verify_sm2_chain(leaf, [chain.intermediate.certificate], trust_of(chain), role=role, now=NOW)
    assert info.value.alert == "unsupported_certificate"
    assert fragment in str(info.value)


def test_enc_role_accepts_key_encipherment_without_key_agreement(chain: Chain) -> None:
    leaf = make_sm2(
        "gmssl style", chain.intermediate, key_usage=frozenset({"key_encipherment", "data_encipherment"})
    )
    verify_sm2_chain(
        leaf.certificate, [chain.intermediate.certificate], trust_of(chain), role=Role.SERVER_ENC, now=NOW
    )


def test_enc_role_accepts_key_agreement_only(chain: Chain) -> None:
    leaf = make_sm2("kx only", chain.intermediate, key_usage=frozenset({"key_agreement"}))
    verify_sm2_chain(
        leaf.certificate, [chain.intermediate.certificate], trust_of(chain), role=Role.SERVER_ENC, now=NOW
    )


def test_leaf_without_key_usage_is_rejected(chain: Chain) -> None:
    leaf = make_sm2("no usage", chain.intermediate, key_usage=frozenset())
    with pytest.raises(KeyUsageMismatch, match="no keyUsage"):
        verify_sm2_chain(
            leaf.certificate,
            [chain.intermediate.certificate],
            trust_of(chain),
            role=Role.SERVER_SIGN,
            now=NOW,
        )


def test_enc_usage_constant_matches_tlcp_profile() -> None:
    assert {"key_encipherment", "data_encipherment", "key_agreement"} == TLCP_ENC_USAGE


def test_naive_now_is_refused(chain: Chain) -> None:
    with pytest.raises(ValueError, match="timezone"):
        verify_sm2_chain(
            chain.server_sign.certificate,
            [chain.intermediate.certificate],
            trust_of(chain),
            role=Role.SERVER_SIGN,
            now=NOW.replace(tzinfo=None),
        )


def test_malformed_der_is_rejected() -> None:
    with pytest.raises(MalformedCertificate) as info:
        Certificate.from_der(b"\x30\x03\x02\x01\x01")
    assert info.value.alert == "bad_certificate"


def test_ecdsa_certificate_is_unsupported_in_sm2_chain(chain: Chain) -> None:
    ecdsa_ca = create_standard_ca("ecdsa", Subject("EC CA"), now=NOW)
    with pytest.raises(UnsupportedCertificate):
        verify_sm2_chain(ecdsa_ca.certificate, [], trust_of(chain), role=Role.SERVER_SIGN, now=NOW)

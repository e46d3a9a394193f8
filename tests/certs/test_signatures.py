"""SM2 certificate signatures: the user ID, unknown critical extensions and fuzzed DER (certs.builder, certs.verify)."""

from __future__ import annotations

import pytest
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certs import (
    BadCertificateSignature,
    Certificate,
    CertificateError,
    MalformedCertificate,
    Role,
    TrustStore,
    UnsupportedCertificate,
    verify_sm2_chain,
)
from certs.builder import build_sm2_certificate
from certs.certificate import OID_SM2_WITH_SM3
from certs.pki import TLCP_SIGN_USAGE
from certs.profile import CertificateProfile, Subject
from tests.certs.helpers import NOW, Chain, Node
from tls.crypto import DEFAULT_SM2_ID, InvalidSignature, SM2PrivateKey


def test_signature_uses_default_user_id(chain: Chain) -> None:
    leaf = chain.server_sign.certificate
    issuer_key = chain.intermediate.certificate.sm2_public_key()
    issuer_key.verify(leaf.signature, leaf.tbs_der, DEFAULT_SM2_ID)
    with pytest.raises(InvalidSignature):
        issuer_key.verify(leaf.signature, leaf.tbs_der, b"ALICE123@YAHOO.COM")


def test_certificate_signed_with_other_user_id_is_rejected(chain: Chain) -> None:
    key = SM2PrivateKey.generate()
    profile = CertificateProfile(
        subject=Subject("other id"),
        not_before=NOW.replace(year=2026),
        not_after=NOW.replace(year=2028),
        key_usage=TLCP_SIGN_USAGE,
    )
    leaf = build_sm2_certificate(
        profile,
        key.public_key(),
        chain.intermediate.key,
        chain.intermediate.certificate,
        uid=b"ALICE123@YAHOO.COM",
    )
    with pytest.raises(BadCertificateSignature):
        verify_sm2_chain(
            leaf,
            [chain.intermediate.certificate],
            TrustStore([chain.root.certificate]),
            role=Role.SERVER_SIGN,
            now=NOW,
        )


def test_encoding_has_no_signature_parameters(chain: Chain) -> None:
    parsed = asn1_x509.Certificate.load(chain.server_sign.certificate.der)
    for algorithm in (parsed["signature_algorithm"], parsed["tbs_certificate"]["signature"]):
        assert algorithm["algorithm"].dotted == OID_SM2_WITH_SM3
        assert isinstance(algorithm["parameters"], core.Void)
    spki = parsed["tbs_certificate"]["subject_public_key_info"]["algorithm"]
    assert spki["algorithm"].dotted == "1.2.840.10045.2.1"
    assert spki["parameters"].chosen.dotted == "1.2.156.10197.1.301"


def resign_with_extension(leaf: Certificate, issuer: Node, oid: str, critical: bool) -> Certificate:
    tbs = asn1_x509.TbsCertificate.load(leaf.tbs_der)
    extra = asn1_x509.Extension(
        {"extn_id": oid, "critical": critical, "extn_value": core.OctetString(b"x").dump()}
    )
    tbs["extensions"] = [*tbs["extensions"], extra]
    tbs_der = tbs.dump(force=True)
    signed = asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
            "signature_algorithm": {"algorithm": OID_SM2_WITH_SM3},
            "signature_value": issuer.key.sign(tbs_der),
        }
    )
    return Certificate.from_der(signed.dump())


def test_unknown_critical_extension_is_rejected(chain: Chain) -> None:
    trust = TrustStore([chain.root.certificate])
    intermediates = [chain.intermediate.certificate]
    critical = resign_with_extension(
        chain.server_sign.certificate, chain.intermediate, "1.3.6.1.4.1.99999.1", True
    )
    assert critical.unrecognised_critical_extensions == ("1.3.6.1.4.1.99999.1",)
    with pytest.raises(UnsupportedCertificate, match="critical extension") as info:
        verify_sm2_chain(critical, intermediates, trust, role=Role.SERVER_SIGN, now=NOW)
    assert info.value.alert == "unsupported_certificate"
    optional = resign_with_extension(
        chain.server_sign.certificate, chain.intermediate, "1.3.6.1.4.1.99999.1", False
    )
    verify_sm2_chain(optional, intermediates, trust, role=Role.SERVER_SIGN, now=NOW)


def test_duplicate_extension_is_malformed(chain: Chain) -> None:
    with pytest.raises(MalformedCertificate, match="appears twice"):
        resign_with_extension(chain.server_sign.certificate, chain.intermediate, "2.5.29.14", False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_der_raises_only_malformed_or_parses(chain: Chain, data: st.DataObject) -> None:
    der = bytearray(chain.server_enc.certificate.der)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(der) - 1))
        der[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(der)))
    try:
        certificate = Certificate.from_der(bytes(der[:cut]))
    except MalformedCertificate:
        return
    # Whatever still parses must be accepted or rejected by validation with a CertificateError only.
    try:
        verify_sm2_chain(
            certificate,
            [chain.intermediate.certificate],
            TrustStore([chain.root.certificate]),
            role=Role.SERVER_ENC,
            now=NOW,
        )
    except CertificateError:
        pass

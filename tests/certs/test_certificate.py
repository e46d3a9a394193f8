"""Certificate parsing (certs.certificate): fields of known certificates and malformed input."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509

from certs import Certificate, MalformedCertificate, load_certificate_file, load_pem_certificates
from certs.certificate import name_to_rfc4514
from certs.pki import create_standard_ca
from certs.profile import Subject
from tests.certs.helpers import Chain
from tests.conftest import SHARED
from tls.crypto import sm3

TONGSUO = SHARED / "tlcp" / "tongsuo" / "certs"
GMSSL = SHARED / "tlcp" / "gmssl" / "certs"


def test_tongsuo_server_sign_fields() -> None:
    certificate = load_certificate_file(TONGSUO / "server_sign.crt")
    assert certificate.version == 3
    assert certificate.serial == 2
    assert certificate.subject == "CN=localhost,OU=server sign,O=TLCP KAT,C=CN"
    assert certificate.issuer == "CN=TLCP KAT SM2 Root CA,O=TLCP KAT,C=CN"
    assert certificate.not_before == datetime(2026, 11, 25, 9, 38, 56, tzinfo=UTC)
    assert certificate.not_after == datetime(2046, 11, 20, 9, 38, 56, tzinfo=UTC)
    assert certificate.san_dns == ("localhost",)
    assert certificate.san_ip == ("127.0.0.1",)
    assert certificate.key_usage == {"digital_signature", "non_repudiation"}
    assert not certificate.has_ext_key_usage and certificate.ext_key_usage == frozenset()
    assert certificate.has_basic_constraints and not certificate.is_ca and certificate.path_len is None
    assert certificate.is_sm2 and certificate.is_sm2_signed and certificate.key_type == "SM2"
    assert certificate.signature_algorithm == "SM2-with-SM3"
    assert certificate.subject_key_id == bytes.fromhex("B261635F7DBF71BF40EEBAFD45C4A8662734F881")
    assert certificate.authority_key_id is not None
    assert len(certificate.public_key_bytes) == 65 and certificate.public_key_bytes[0] == 4
    assert certificate.sm2_public_key().to_bytes() == certificate.public_key_bytes


def test_gmssl_root_fields_and_names() -> None:
    root = load_certificate_file(GMSSL / "root_ca_cert.pem")
    assert root.is_ca and root.path_len is None
    assert root.key_usage == {"key_cert_sign", "crl_sign"}
    assert root.is_self_issued
    assert root.subject_key_id is None and root.authority_key_id is None
    enc = load_certificate_file(GMSSL / "server_enc_cert.pem")
    assert enc.key_usage == {"key_encipherment", "data_encipherment"}
    assert enc.ext_key_usage == {"server_auth"}
    assert not enc.has_basic_constraints
    assert root.issued(enc) and not enc.issued(root)


def test_fingerprints_and_pem_round_trip() -> None:
    certificate = load_certificate_file(TONGSUO / "ca.crt")
    _, _, der = pem.unarmor((TONGSUO / "ca.crt").read_bytes())
    assert certificate.der == der
    assert certificate.fingerprint_sha256() == hashlib.sha256(der).hexdigest()
    assert certificate.fingerprint_sm3() == sm3(der).hex()
    assert Certificate.from_pem(certificate.to_pem()) == certificate
    assert hash(Certificate.from_der(der)) == hash(certificate)


def test_bundle_loads_every_certificate_in_order() -> None:
    certificates = load_pem_certificates((GMSSL / "server_certs.pem").read_bytes())
    assert [c.key_usage for c in certificates] == [
        {"digital_signature"},
        {"key_encipherment", "data_encipherment"},
    ]


def test_pem_with_key_blocks_skips_them(chain: Chain) -> None:
    data = chain.root.key.to_pkcs8_pem() + chain.root.certificate.to_pem()
    assert load_pem_certificates(data) == [chain.root.certificate]


def test_generated_certificate_fields(chain: Chain) -> None:
    leaf = chain.server_enc.certificate
    assert leaf.san_dns == ("localhost", "*.example.test")
    assert leaf.san_ip == ("127.0.0.1", "::1")
    assert leaf.key_usage == {"key_encipherment", "data_encipherment", "key_agreement"}
    assert leaf.ext_key_usage == {"server_auth"}
    assert leaf.authority_key_id == chain.intermediate.certificate.subject_key_id
    assert chain.intermediate.certificate.path_len == 0
    assert leaf.subject_der != leaf.issuer_der
    assert leaf.issuer_der == chain.intermediate.certificate.subject_der


def test_rfc4514_escaping() -> None:
    name = asn1_x509.Name.build({"common_name": "a,b+c", "organization_name": " lead#"})
    assert name_to_rfc4514(name) == "CN=a\\,b\\+c,O=\\ lead#"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30",
        b"\x30\x82\xff\xff",
        b"not a certificate at all",
        b"\x30\x03\x02\x01\x01",
    ],
)
def test_malformed_der(data: bytes) -> None:
    with pytest.raises(MalformedCertificate) as info:
        Certificate.from_der(data)
    assert info.value.alert == "bad_certificate"


def test_truncated_and_trailing_bytes(chain: Chain) -> None:
    der = chain.server_sign.certificate.der
    with pytest.raises(MalformedCertificate):
        Certificate.from_der(der[:-1])
    with pytest.raises(MalformedCertificate):
        Certificate.from_der(der + b"\x00")


def test_corrupted_inner_field(chain: Chain) -> None:
    der = bytearray(chain.server_sign.certificate.der)
    # Inside the validity SEQUENCE: replace the UTCTime tag (0x17) with a BOOLEAN tag.
    position = der.index(b"\x17\x0d")
    der[position] = 0x01
    with pytest.raises(MalformedCertificate):
        Certificate.from_der(bytes(der))


def test_pem_without_certificate(chain: Chain) -> None:
    with pytest.raises(MalformedCertificate, match="no CERTIFICATE"):
        load_pem_certificates(chain.root.key.to_pkcs8_pem())
    with pytest.raises(MalformedCertificate):
        load_pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")


def test_sm2_public_key_refused_for_other_key_types() -> None:
    certificate = create_standard_ca("rsa", Subject("RSA CA")).certificate
    assert certificate.key_type == "RSA-2048" and not certificate.is_sm2
    assert certificate.signature_algorithm == "sha256WithRSAEncryption"
    with pytest.raises(MalformedCertificate, match="not SM2"):
        certificate.sm2_public_key()

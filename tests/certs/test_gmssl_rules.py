"""smgate's SM2 PKI satisfies the certificate checks GmSSL 3.3 applies to every certificate of a chain.

GmSSL (``x509_cert_check``/``x509_exts_check``/``x509_name_check`` in src/x509_cer.c, x509_ext.c) is
stricter than RFC 5280 in places and rejects a whole TLCP handshake over one field.  The rules are
restated here, per GmSSL certificate type, so a regression shows up without a GmSSL build.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from asn1crypto import core, pem
from asn1crypto import x509 as asn1_x509

from certs.pki import (
    MAX_VALIDITY_DAYS,
    create_sm2_intermediate_ca,
    create_sm2_root_ca,
    issue_tlcp_pair,
)
from certs.profile import Subject
from tests.conftest import SHARED

GMSSL_CERTS = SHARED / "tlcp" / "gmssl" / "certs"

# GmSSL's X509_VALIDITY_MAX_DAYS
GMSSL_MAX_VALIDITY = timedelta(days=3653)
# GmSSL's x509_name_types_info: attribute -> (PrintableString only, min bytes, max bytes)
GMSSL_NAME_TYPES = {
    "country_name": (True, 2, 2),
    "state_or_province_name": (False, 1, 128),
    "locality_name": (False, 1, 128),
    "organization_name": (False, 1, 64),
    "organizational_unit_name": (False, 1, 64),
    "common_name": (False, 1, 64),
    "serial_number": (True, 1, 64),
    "dn_qualifier": (True, 1, 64),
    "title": (False, 1, 64),
    "surname": (False, 1, 32768),
    "given_name": (False, 1, 32768),
    "initials": (False, 1, 32768),
    "generation_qualifier": (False, 1, 32768),
    "pseudonym": (False, 1, 128),
}
ROOT_CA, CA = "root_ca", "ca"
SERVER_SIGN, SERVER_ENC, CLIENT_SIGN, CLIENT_ENC = "server_auth", "server_enc", "client_auth", "client_enc"
LEAF_EKU = {
    SERVER_SIGN: "server_auth",
    SERVER_ENC: "server_auth",
    CLIENT_SIGN: "client_auth",
    CLIENT_ENC: "client_auth",
}
# extensions GmSSL rejects when marked critical (everything but the ones it enforces)
CRITICAL_ALLOWED = {"basic_constraints", "key_usage", "extended_key_usage", "subject_alt_name"}


def name_violations(name: asn1_x509.Name, which: str) -> list[str]:
    problems = []
    for rdn in name.chosen:
        for attribute in rdn:
            kind = attribute["type"].native
            if kind not in GMSSL_NAME_TYPES:
                problems.append(f"{which}: attribute {kind} unknown to GmSSL")
                continue
            printable_only, low, high = GMSSL_NAME_TYPES[kind]
            value = attribute["value"].chosen
            if printable_only and not isinstance(value, core.PrintableString):
                problems.append(f"{which}: {kind} must be a PrintableString")
            if not low <= len(value.contents) <= high:
                problems.append(f"{which}: {kind} is {len(value.contents)} bytes, GmSSL allows {low}..{high}")
    return problems


def gmssl_violations(der: bytes, cert_type: str) -> list[str]:
    """Why GmSSL 3.3's x509_cert_check(cert, cert_type) would fail on ``der`` (empty when it passes)."""
    certificate = asn1_x509.Certificate.load(der)
    tbs = certificate["tbs_certificate"]
    problems = []
    if tbs["version"].native != "v3":
        problems.append("not a v3 certificate")
    if len(tbs["serial_number"].contents) < 4:
        problems.append("serial number shorter than 4 bytes")
    validity = tbs["validity"]
    if validity["not_after"].native - validity["not_before"].native > GMSSL_MAX_VALIDITY:
        problems.append("validity longer than 3653 days")
    if tbs["signature"].dump() != certificate["signature_algorithm"].dump():
        problems.append("inner and outer signature algorithms differ")
    problems += name_violations(tbs["issuer"], "issuer")
    problems += name_violations(tbs["subject"], "subject")
    if not tbs["subject"].chosen:
        problems.append("empty subject")

    is_ca = cert_type in (ROOT_CA, CA)
    basic_constraints_seen = False
    for extension in tbs["extensions"]:
        name, critical, value = (
            extension["extn_id"].native,
            extension["critical"].native,
            extension["extn_value"],
        )
        if critical and name not in CRITICAL_ALLOWED:
            problems.append(f"{name} must not be critical")
        if name == "subject_key_identifier" and not value.parsed.native:
            problems.append("empty subjectKeyIdentifier")
        elif name == "basic_constraints":
            basic_constraints_seen = True
            if not value.contents or value.contents == b"\x30\x00":
                problems.append("empty basicConstraints")
            elif is_ca and not (critical and value.native["ca"]):
                problems.append("CA basicConstraints must be critical with cA TRUE")
            elif not is_ca and (value.native["ca"] or value.native["path_len_constraint"] is not None):
                problems.append("leaf basicConstraints must not say cA or carry a path length")
        elif name == "key_usage":
            bits = value.native
            if not bits:
                problems.append("empty keyUsage")
            elif is_ca and "key_cert_sign" not in bits:
                problems.append("CA keyUsage lacks keyCertSign")
            elif not is_ca and bits & {"key_cert_sign", "crl_sign"}:
                problems.append("leaf keyUsage has keyCertSign/cRLSign")
            elif cert_type in (SERVER_SIGN, CLIENT_SIGN) and "digital_signature" not in bits:
                problems.append("signing keyUsage lacks digitalSignature")
            elif cert_type in (SERVER_ENC, CLIENT_ENC) and "key_encipherment" not in bits:
                problems.append("encryption keyUsage lacks keyEncipherment")
        elif name == "extended_key_usage" and not is_ca and LEAF_EKU[cert_type] not in value.native:
            problems.append(f"extendedKeyUsage lacks {LEAF_EKU[cert_type]}")
        elif name == "policy_mappings":
            problems.append("policyMappings is refused")
    if is_ca and not basic_constraints_seen:
        problems.append("CA without basicConstraints")
    return problems


@pytest.fixture(scope="module")
def smgate_pki() -> list[tuple[str, bytes]]:
    """Every SM2 certificate kind smgate's PKI issues, at the longest validity the CLI allows."""
    root = create_sm2_root_ca(Subject("GmSSL Rules Root", "smgate", "pki", "CN"), days=MAX_VALIDITY_DAYS)
    intermediate = create_sm2_intermediate_ca(
        Subject("GmSSL Rules Sub CA", "smgate", country="CN"), root, days=MAX_VALIDITY_DAYS
    )
    server = issue_tlcp_pair(
        Subject("x" * 64, "o" * 64, "u" * 64, "CN"),
        intermediate,
        role="server",
        dns=("localhost",),
        ips=("127.0.0.1",),
        days=MAX_VALIDITY_DAYS,
    )
    client = issue_tlcp_pair(Subject("国密客户端"), root, role="client", days=MAX_VALIDITY_DAYS)
    return [
        (ROOT_CA, root.certificate.der),
        (CA, intermediate.certificate.der),
        (SERVER_SIGN, server.sign.certificate.der),
        (SERVER_ENC, server.enc.certificate.der),
        (CLIENT_SIGN, client.sign.certificate.der),
        (CLIENT_ENC, client.enc.certificate.der),
    ]


def test_every_issued_certificate_passes_gmssl_checks(smgate_pki: list[tuple[str, bytes]]) -> None:
    for cert_type, der in smgate_pki:
        assert gmssl_violations(der, cert_type) == [], cert_type


def test_checker_flags_what_gmssl_rejects(smgate_pki: list[tuple[str, bytes]]) -> None:
    """The restated rules catch the defects GmSSL actually refused (empty leaf basicConstraints, 65-byte CN)."""
    leaf = asn1_x509.Certificate.load(dict(smgate_pki)[SERVER_SIGN])
    tbs = leaf["tbs_certificate"]
    extensions = list(tbs["extensions"])
    # what the builder wrote before c491228: basicConstraints critical, cA FALSE (DER: empty SEQUENCE)
    extensions.append(asn1_x509.Extension.load(bytes.fromhex("300c0603551d130101ff04023000")))
    tbs["extensions"] = extensions
    tbs["subject"] = asn1_x509.Name.build({"common_name": "x" * 65})
    assert gmssl_violations(leaf.dump(force=True), SERVER_SIGN) == [
        "subject: common_name is 65 bytes, GmSSL allows 1..64",
        "empty basicConstraints",
    ]
    assert gmssl_violations(dict(smgate_pki)[SERVER_ENC], CLIENT_ENC) == [
        "extendedKeyUsage lacks client_auth"
    ]
    assert gmssl_violations(dict(smgate_pki)[SERVER_SIGN], CA) == [
        "CA keyUsage lacks keyCertSign",
        "CA without basicConstraints",
    ]


@pytest.mark.parametrize(
    ("file_name", "cert_type"),
    [
        ("root_ca_cert.pem", ROOT_CA),
        ("server_sign_cert.pem", SERVER_SIGN),
        ("server_enc_cert.pem", SERVER_ENC),
        ("client_sign_cert.pem", CLIENT_SIGN),
        ("client_enc_cert.pem", CLIENT_ENC),
    ],
)
def test_gmssl_issued_certificates_pass_the_restated_rules(file_name: str, cert_type: str) -> None:
    _, _, der = pem.unarmor((GMSSL_CERTS / file_name).read_bytes())
    assert gmssl_violations(der, cert_type) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"common_name": "x" * 65},
        {"common_name": "国" * 22},  # 22 characters, 66 bytes: GmSSL counts bytes
        {"common_name": "ok", "organization": "o" * 65},
        {"common_name": "ok", "organizational_unit": "u" * 65},
    ],
)
def test_subject_fields_over_64_utf8_bytes_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="longer than 64 bytes of UTF-8"):
        Subject(**fields)


def test_first_dns_name_is_the_first_given() -> None:
    """GmSSL clients compare the server name with the first dNSName only, so --dns order must survive."""
    root = create_sm2_root_ca(Subject("Order Root"))
    pair = issue_tlcp_pair(
        Subject("order"), root, role="server", dns=("z.test", "a.test"), ips=("127.0.0.1",)
    )
    for certificate in (pair.sign.certificate, pair.enc.certificate):
        tbs = asn1_x509.Certificate.load(certificate.der)["tbs_certificate"]
        (san,) = [
            e["extn_value"].parsed for e in tbs["extensions"] if e["extn_id"].native == "subject_alt_name"
        ]
        assert [name.native for name in san if name.name == "dns_name"] == ["z.test", "a.test"]

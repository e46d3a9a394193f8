"""What goes into a certificate, independent of its key algorithm: subject name, validity, extensions.

Shared by the SM2 builder (:mod:`certs.builder`, asn1crypto) and the RSA/ECDSA builder
(:mod:`certs.standard`, ``cryptography``) so both PKIs issue the same profiles.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509 as asn1_x509

from certs.certificate import Certificate

KEY_USAGE_NAMES = frozenset(
    {
        "digital_signature",
        "non_repudiation",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    }
)
EXT_KEY_USAGE_NAMES = frozenset({"server_auth", "client_auth"})
# RFC 5280 upper bounds (ub-common-name, ub-organization-name, ub-organizational-unit-name) are 64
# characters; GmSSL 3.x applies them to the encoded bytes and rejects any chain that names a longer
# value, as issuer or subject.  Capping the UTF-8 encoding at 64 bytes satisfies both.
NAME_MAX_UTF8_BYTES = 64


@dataclass(frozen=True)
class Subject:
    """The distinguished name fields smgate's PKI tools set (each optional except the common name)."""

    common_name: str
    organization: str | None = None
    organizational_unit: str | None = None
    country: str | None = None

    def __post_init__(self) -> None:
        if not self.common_name:
            raise ValueError("a subject needs a common name")
        if self.country is not None and (len(self.country) != 2 or not self.country.isascii()):
            raise ValueError("country must be a two-letter ISO 3166 code")
        for label, value in (
            ("common name", self.common_name),
            ("organization", self.organization),
            ("organizational unit", self.organizational_unit),
        ):
            if value and len(value.encode("utf-8")) > NAME_MAX_UTF8_BYTES:
                raise ValueError(f"subject {label} is longer than {NAME_MAX_UTF8_BYTES} bytes of UTF-8")

    def fields(self) -> list[tuple[str, str]]:
        """(asn1crypto attribute name, value) pairs, most general first: C, O, OU, CN."""
        pairs: list[tuple[str, str]] = []
        if self.country:
            pairs.append(("country_name", self.country.upper()))
        if self.organization:
            pairs.append(("organization_name", self.organization))
        if self.organizational_unit:
            pairs.append(("organizational_unit_name", self.organizational_unit))
        pairs.append(("common_name", self.common_name))
        return pairs

    def to_asn1(self) -> asn1_x509.Name:
        return asn1_x509.Name.build(dict(self.fields()))


def key_identifier(public_key_bits: bytes) -> bytes:
    """RFC 7093 section 2 method 1: the leftmost 160 bits of SHA-256 over the subjectPublicKey bits."""
    return hashlib.sha256(public_key_bits).digest()[:20]


def authority_key_identifier(issuer: Certificate) -> bytes:
    """The issuer's subjectKeyIdentifier, or one derived from its key when it has none (e.g. GmSSL roots)."""
    return issuer.subject_key_id or key_identifier(issuer.public_key_bytes)


def random_serial() -> int:
    """A positive 127-bit random serial number (RFC 5280: at most 20 octets; CA/B asks for 64+ random bits)."""
    return secrets.randbits(126) | (1 << 126)


@dataclass(frozen=True)
class CertificateProfile:
    """Everything in one certificate except the keys and the issuer."""

    subject: Subject
    not_before: datetime
    not_after: datetime
    is_ca: bool = False
    path_len: int | None = None
    key_usage: frozenset[str] = frozenset()
    ext_key_usage: tuple[str, ...] = ()
    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    serial: int | None = None

    def __post_init__(self) -> None:
        unknown = self.key_usage - KEY_USAGE_NAMES
        if unknown:
            raise ValueError(f"unknown keyUsage name(s): {', '.join(sorted(unknown))}")
        unknown_eku = set(self.ext_key_usage) - EXT_KEY_USAGE_NAMES
        if unknown_eku:
            raise ValueError(f"unknown extendedKeyUsage name(s): {', '.join(sorted(unknown_eku))}")
        if self.not_before.tzinfo is None or self.not_after.tzinfo is None:
            raise ValueError("certificate times must be timezone-aware")
        if self.not_after <= self.not_before:
            raise ValueError("notAfter must be later than notBefore")
        if self.path_len is not None and (not self.is_ca or self.path_len < 0):
            raise ValueError("pathLen needs a CA certificate and must not be negative")
        for address in self.san_ip:
            ipaddress.ip_address(address)

    def serial_number(self) -> int:
        return self.serial if self.serial is not None else random_serial()

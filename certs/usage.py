"""What a TLCP leaf certificate may be used for: the four roles and their keyUsage/extKeyUsage rules.

TLCP (GB/T 38636) sends two leaf certificates per side: a signing certificate
(ServerKeyExchange/CertificateVerify signatures) and an encryption certificate (the ECC premaster is
SM2-encrypted to it; ECDHE uses its key for SM2 key exchange). keyUsage is what tells them apart:

- signing roles need ``digitalSignature``;
- encryption roles need ``keyEncipherment`` or ``keyAgreement`` (GmSSL issues enc certificates with
  keyEncipherment+dataEncipherment only, Tongsuo adds keyAgreement; both are accepted).

extendedKeyUsage, when present, must include serverAuth (server roles), clientAuth (client roles) or
anyExtendedKeyUsage; when absent it places no restriction (RFC 5280 section 4.2.1.12). A TLCP leaf
without keyUsage is rejected: it cannot be classified as signing or encryption certificate.
"""

from __future__ import annotations

from enum import Enum

from certs.certificate import Certificate
from certs.errors import KeyUsageMismatch

SIGN_USAGES = frozenset({"digital_signature"})
ENC_USAGES = frozenset({"key_encipherment", "key_agreement"})


class Role(Enum):
    """The job a leaf certificate does in a TLCP handshake."""

    SERVER_SIGN = "server_sign"
    SERVER_ENC = "server_enc"
    CLIENT_SIGN = "client_sign"
    CLIENT_ENC = "client_enc"

    @property
    def is_server(self) -> bool:
        return self in (Role.SERVER_SIGN, Role.SERVER_ENC)

    @property
    def is_signing(self) -> bool:
        return self in (Role.SERVER_SIGN, Role.CLIENT_SIGN)

    @property
    def ext_key_usage(self) -> str:
        """The extendedKeyUsage purpose name this role needs when the extension is present."""
        return "server_auth" if self.is_server else "client_auth"


def is_signing_certificate(certificate: Certificate) -> bool:
    """keyUsage includes digitalSignature."""
    return certificate.has_key_usage and bool(certificate.key_usage & SIGN_USAGES)


def is_encryption_certificate(certificate: Certificate) -> bool:
    """keyUsage includes keyEncipherment or keyAgreement."""
    return certificate.has_key_usage and bool(certificate.key_usage & ENC_USAGES)


def check_ext_key_usage(certificate: Certificate, purpose: str, role_name: str) -> None:
    """Raise KeyUsageMismatch when extendedKeyUsage is present without ``purpose`` or anyExtendedKeyUsage."""
    if certificate.has_ext_key_usage and not (
        {purpose, "any_extended_key_usage"} & certificate.ext_key_usage
    ):
        have = ", ".join(sorted(certificate.ext_key_usage)) or "nothing"
        raise KeyUsageMismatch(
            f"certificate {certificate.subject!r} extendedKeyUsage ({have}) lacks {purpose} needed for {role_name}"
        )


def check_role(certificate: Certificate, role: Role) -> None:
    """Raise KeyUsageMismatch unless ``certificate`` may act in ``role``."""
    if not certificate.has_key_usage:
        raise KeyUsageMismatch(
            f"certificate {certificate.subject!r} has no keyUsage extension, so it cannot be a TLCP {role.value} certificate"
        )
    required = SIGN_USAGES if role.is_signing else ENC_USAGES
    if not certificate.key_usage & required:
        wanted = " or ".join(sorted(required))
        have = ", ".join(sorted(certificate.key_usage)) or "nothing"
        raise KeyUsageMismatch(
            f"certificate {certificate.subject!r} keyUsage ({have}) lacks {wanted} needed for {role.value}"
        )
    check_ext_key_usage(certificate, role.ext_key_usage, role.value)

"""Standard-TLS certificates (RSA-2048, ECDSA P-256): issuing with ``cryptography``, validating with OpenSSL.

Chain validation is OpenSSL's (pyOpenSSL ``X509Store`` with a fixed verification time), so RSA/ECDSA
paths get the full RFC 5280 treatment; its error codes are mapped onto the same exception classes as
the SM2 path. Role (extendedKeyUsage/keyUsage) and host name checks reuse :mod:`certs.hostname` so
both sides of the gateway apply identical RFC 6125 rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto as openssl_crypto

from certs.certificate import Certificate
from certs.errors import (
    BadCertificateSignature,
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    HostnameMismatch,
    KeyMismatch,
    KeyUsageMismatch,
    MalformedCertificate,
    NotACertificateAuthority,
    PathLengthExceeded,
    UnknownCA,
    UnsupportedCertificate,
)
from certs.hostname import match_hostname
from certs.profile import CertificateProfile, authority_key_identifier, key_identifier
from certs.trust import TrustStore
from certs.usage import check_ext_key_usage

StandardPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

KEY_TYPES = ("rsa", "ecdsa")

_NAME_OIDS = {
    "country_name": NameOID.COUNTRY_NAME,
    "organization_name": NameOID.ORGANIZATION_NAME,
    "organizational_unit_name": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "common_name": NameOID.COMMON_NAME,
}
_EKU_OIDS = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}

# OpenSSL 3.0 X509_V_ERR_* codes (include/openssl/x509_vfy.h) -> exception class; others map to the base class.
_OPENSSL_ERRORS: dict[int, type[CertificateError]] = {
    2: UnknownCA,  # UNABLE_TO_GET_ISSUER_CERT
    4: BadCertificateSignature,  # UNABLE_TO_DECRYPT_CERT_SIGNATURE
    6: BadCertificateSignature,  # UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY
    7: BadCertificateSignature,  # CERT_SIGNATURE_FAILURE
    9: CertificateNotYetValid,  # CERT_NOT_YET_VALID
    10: CertificateExpired,  # CERT_HAS_EXPIRED
    13: MalformedCertificate,  # ERROR_IN_CERT_NOT_BEFORE_FIELD
    14: MalformedCertificate,  # ERROR_IN_CERT_NOT_AFTER_FIELD
    18: UnknownCA,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: UnknownCA,  # SELF_SIGNED_CERT_IN_CHAIN
    20: UnknownCA,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: UnknownCA,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    22: UnknownCA,  # CERT_CHAIN_TOO_LONG
    24: BadCertificateSignature,  # NO_ISSUER_PUBLIC_KEY
    25: PathLengthExceeded,  # PATH_LENGTH_EXCEEDED
    26: KeyUsageMismatch,  # INVALID_PURPOSE
    27: UnknownCA,  # CERT_UNTRUSTED
    28: UnknownCA,  # CERT_REJECTED
    29: UnknownCA,  # SUBJECT_ISSUER_MISMATCH
    30: UnknownCA,  # AKID_SKID_MISMATCH
    32: NotACertificateAuthority,  # KEYUSAGE_NO_CERTSIGN
    34: UnsupportedCertificate,  # UNHANDLED_CRITICAL_EXTENSION
    37: NotACertificateAuthority,  # INVALID_NON_CA
    39: KeyUsageMismatch,  # KEYUSAGE_NO_DIGITAL_SIGNATURE
    55: UnknownCA,  # PATH_LOOP
    62: HostnameMismatch,  # HOSTNAME_MISMATCH
    64: HostnameMismatch,  # IP_ADDRESS_MISMATCH
    66: UnsupportedCertificate,  # EE_KEY_TOO_SMALL
    67: UnsupportedCertificate,  # CA_KEY_TOO_SMALL
    68: UnsupportedCertificate,  # CA_MD_TOO_WEAK
    76: UnsupportedCertificate,  # UNSUPPORTED_SIGNATURE_ALGORITHM
    77: BadCertificateSignature,  # SIGNATURE_ALGORITHM_MISMATCH
    78: MalformedCertificate,  # SIGNATURE_ALGORITHM_INCONSISTENCY
    79: NotACertificateAuthority,  # INVALID_CA
    80: NotACertificateAuthority,  # PATHLEN_INVALID_FOR_NON_CA
    81: NotACertificateAuthority,  # PATHLEN_WITHOUT_KU_KEY_CERT_SIGN
    82: NotACertificateAuthority,  # KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA
}


def generate_private_key(key_type: str) -> StandardPrivateKey:
    """A fresh ``rsa`` (2048-bit, e=65537) or ``ecdsa`` (P-256) key."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r} (expected one of {', '.join(KEY_TYPES)})")


def private_key_to_pem(key: StandardPrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when a password is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key(data: bytes, password: bytes | None = None) -> StandardPrivateKey:
    """An RSA or EC private key from PEM or DER (PKCS#8, PKCS#1, SEC1)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password)
        else:
            key = serialization.load_der_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise MalformedCertificate(f"private key does not load ({exc.__class__.__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UnsupportedCertificate(f"{type(key).__name__} keys are not supported for standard TLS")
    return key


def _name(profile: CertificateProfile) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(_NAME_OIDS[field], value) for field, value in profile.subject.fields()]
    )


def _public_bits(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """The subjectPublicKey BIT STRING contents, as hashed for key identifiers."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def build_standard_certificate(
    profile: CertificateProfile,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer_key: StandardPrivateKey,
    issuer: Certificate | None = None,
) -> Certificate:
    """Sign an RSA or ECDSA certificate with SHA-256; ``issuer`` None makes it self-signed."""
    subject_key_id = key_identifier(_public_bits(public_key))
    if issuer is None:
        if issuer_key.public_key().public_numbers() != public_key.public_numbers():
            raise KeyMismatch("a self-signed certificate must be signed by its own key")
        issuer_name = _name(profile)
        authority_key_id = subject_key_id
    else:
        issuer_public = issuer_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if issuer_public != issuer.public_key_info_der:
            raise KeyMismatch(f"the issuer key does not match certificate {issuer.subject!r}")
        issuer_name = x509.load_der_x509_certificate(issuer.der).subject
        authority_key_id = authority_key_identifier(issuer)
    usage = profile.key_usage
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(profile))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(profile.serial_number())
        .not_valid_before(profile.not_before.astimezone(UTC).replace(microsecond=0))
        .not_valid_after(profile.not_after.astimezone(UTC).replace(microsecond=0))
        .add_extension(x509.BasicConstraints(ca=profile.is_ca, path_length=profile.path_len), critical=True)
        .add_extension(x509.SubjectKeyIdentifier(subject_key_id), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(authority_key_id, None, None),
            critical=False,
        )
    )
    if usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature="digital_signature" in usage,
                content_commitment="non_repudiation" in usage,
                key_encipherment="key_encipherment" in usage,
                data_encipherment="data_encipherment" in usage,
                key_agreement="key_agreement" in usage,
                key_cert_sign="key_cert_sign" in usage,
                crl_sign="crl_sign" in usage,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if profile.ext_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([_EKU_OIDS[name] for name in profile.ext_key_usage]), critical=False
        )
    general_names: list[x509.GeneralName] = [x509.DNSName(name) for name in profile.san_dns]
    general_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in profile.san_ip]
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=False)
    signed = builder.sign(issuer_key, hashes.SHA256())
    return Certificate.from_der(signed.public_bytes(serialization.Encoding.DER))


def _to_openssl(certificate: Certificate) -> openssl_crypto.X509:
    return openssl_crypto.X509.from_cryptography(x509.load_der_x509_certificate(certificate.der))


def check_standard_role(certificate: Certificate, *, server: bool) -> None:
    """keyUsage/extendedKeyUsage checks for a standard-TLS leaf (RFC 5246 section 7.4.2 / RFC 8446 4.4.2.2)."""
    purpose = "server_auth" if server else "client_auth"
    check_ext_key_usage(certificate, purpose, "a TLS server" if server else "a TLS client")
    if certificate.has_key_usage:
        allowed = {"digital_signature"}
        if certificate.key_type.startswith("RSA") and server:
            allowed.add("key_encipherment")
        if not allowed & certificate.key_usage:
            raise KeyUsageMismatch(
                f"certificate {certificate.subject!r} keyUsage lacks {' or '.join(sorted(allowed))}"
            )


def verify_standard_chain(
    leaf: Certificate,
    intermediates: Sequence[Certificate],
    trust: TrustStore,
    *,
    now: datetime,
    server: bool = True,
    hostname: str | None = None,
) -> list[Certificate]:
    """Validate an RSA/ECDSA chain with OpenSSL at time ``now``; return the path leaf..anchor.

    ``server`` selects the serverAuth (True) or clientAuth (False) role for the leaf.
    """
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not trust.anchors:
        raise UnknownCA("the trust store is empty")
    store = openssl_crypto.X509Store()
    for anchor in trust.anchors:
        store.add_cert(_to_openssl(anchor))
    store.set_time(now.astimezone(UTC).replace(tzinfo=None))
    context = openssl_crypto.X509StoreContext(
        store, _to_openssl(leaf), chain=[_to_openssl(certificate) for certificate in intermediates]
    )
    try:
        verified = context.get_verified_chain()
    except openssl_crypto.X509StoreContextError as exc:
        code, depth, message = exc.errors[0], exc.errors[1], exc.errors[2]
        error_class = _OPENSSL_ERRORS.get(int(code), CertificateError)
        raise error_class(
            f"OpenSSL rejected the chain at depth {depth}: {message} (X509_V_ERR {code})"
        ) from None
    path = [
        Certificate.from_der(x509_cert.to_cryptography().public_bytes(serialization.Encoding.DER))
        for x509_cert in verified
    ]
    check_standard_role(leaf, server=server)
    if hostname is not None:
        match_hostname(hostname, leaf.san_dns, leaf.san_ip, subject=leaf.subject)
    return path

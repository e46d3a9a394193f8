"""Issuing workflows for smgate's two PKIs and writing them to PEM files.

SM2 (TLCP side): root CA, intermediate CA, TLCP double certificates (a signing certificate with
digitalSignature+nonRepudiation and an encryption certificate with
keyEncipherment+dataEncipherment+keyAgreement, same subject and SANs), and plain SM2 signing
certificates (the audit checkpoint signer). RSA-2048 / ECDSA P-256 (standard-TLS side): CA,
intermediate and server/client certificates. For a CA that is not smgate (how banks get their TLCP
certificates), :func:`request_tlcp_pair` makes the two SM2 keys and a PKCS#10 request for each.

Validity defaults stay at or under 3650 days (GmSSL refuses more than 3653) and a certificate never
outlives its issuer. Private keys are written as PKCS#8 PEM with mode 0600, atomically; the files
of one command are written all or none (:func:`write_file_set`).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certs.builder import build_sm2_certificate
from certs.certificate import OID_SM2_WITH_SM3, Certificate, load_pem_certificates
from certs.errors import KeyMismatch
from certs.profile import CertificateProfile, Subject
from certs.standard import (
    StandardPrivateKey,
    build_standard_certificate,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
)
from tls.crypto import SM2PrivateKey, load_sm2_private_key

MAX_VALIDITY_DAYS = 3650
DEFAULT_CA_DAYS = 3650
DEFAULT_INTERMEDIATE_DAYS = 1825
DEFAULT_LEAF_DAYS = 825
#: notBefore is set this far in the past so peers with slightly slow clocks accept new certificates.
BACKDATE = timedelta(minutes=5)

CA_USAGE = frozenset({"key_cert_sign", "crl_sign"})
TLCP_SIGN_USAGE = frozenset({"digital_signature", "non_repudiation"})
TLCP_ENC_USAGE = frozenset({"key_encipherment", "data_encipherment", "key_agreement"})
SIGNING_ONLY_USAGE = frozenset({"digital_signature", "non_repudiation"})
ROLES = ("server", "client")


@dataclass(frozen=True)
class IssuedSM2:
    """An SM2 certificate with its private key."""

    certificate: Certificate
    key: SM2PrivateKey


@dataclass(frozen=True)
class IssuedStandard:
    """An RSA or ECDSA certificate with its private key."""

    certificate: Certificate
    key: StandardPrivateKey


@dataclass(frozen=True)
class TLCPPair:
    """A TLCP double certificate: signing and encryption certificates for one subject."""

    sign: IssuedSM2
    enc: IssuedSM2


Issued = IssuedSM2 | IssuedStandard


def _validity(days: int, now: datetime | None, issuer: Certificate | None) -> tuple[datetime, datetime]:
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise ValueError(f"validity must be between 1 and {MAX_VALIDITY_DAYS} days, not {days}")
    start = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    not_before = start - BACKDATE
    not_after = start + timedelta(days=days)
    if issuer is not None:
        if not issuer.not_before <= start <= issuer.not_after:
            raise ValueError(f"issuer {issuer.subject!r} is not valid at {start.isoformat()}")
        not_before = max(not_before, issuer.not_before)
        not_after = min(not_after, issuer.not_after)
    return not_before, not_after


def _role_eku(role: str) -> tuple[str, ...]:
    if role not in ROLES:
        raise ValueError(f"role must be 'server' or 'client', not {role!r}")
    return ("server_auth",) if role == "server" else ("client_auth",)


def _require_ca(issuer: Certificate) -> None:
    if not issuer.is_ca:
        raise ValueError(f"certificate {issuer.subject!r} is not a CA and cannot issue certificates")


# -- SM2 ------------------------------------------------------------------------------------------


def _ca_profile(
    subject: Subject, issuer: Certificate | None, days: int, path_len: int | None, now: datetime | None
) -> CertificateProfile:
    if issuer is not None:
        _require_ca(issuer)
    not_before, not_after = _validity(days, now, issuer)
    return CertificateProfile(
        subject=subject,
        not_before=not_before,
        not_after=not_after,
        is_ca=True,
        path_len=path_len,
        key_usage=CA_USAGE,
    )


def _leaf_profile(
    subject: Subject,
    issuer: Certificate,
    key_usage: frozenset[str],
    ext_key_usage: tuple[str, ...],
    dns: tuple[str, ...],
    ips: tuple[str, ...],
    days: int,
    now: datetime | None,
) -> CertificateProfile:
    _require_ca(issuer)
    not_before, not_after = _validity(days, now, issuer)
    return CertificateProfile(
        subject=subject,
        not_before=not_before,
        not_after=not_after,
        key_usage=key_usage,
        ext_key_usage=ext_key_usage,
        san_dns=dns,
        san_ip=ips,
    )


def create_sm2_root_ca(
    subject: Subject, *, days: int = DEFAULT_CA_DAYS, path_len: int | None = None, now: datetime | None = None
) -> IssuedSM2:
    """A self-signed SM2 root CA."""
    key = SM2PrivateKey.generate()
    profile = _ca_profile(subject, None, days, path_len, now)
    return IssuedSM2(build_sm2_certificate(profile, key.public_key(), key), key)


def create_sm2_intermediate_ca(
    subject: Subject,
    issuer: IssuedSM2,
    *,
    days: int = DEFAULT_INTERMEDIATE_DAYS,
    path_len: int | None = 0,
    now: datetime | None = None,
) -> IssuedSM2:
    """An SM2 intermediate CA signed by ``issuer``; pathLen 0 by default (it issues leaves only)."""
    key = SM2PrivateKey.generate()
    profile = _ca_profile(subject, issuer.certificate, days, path_len, now)
    return IssuedSM2(build_sm2_certificate(profile, key.public_key(), issuer.key, issuer.certificate), key)


def issue_sm2_certificate(
    subject: Subject,
    issuer: IssuedSM2,
    *,
    key_usage: frozenset[str],
    ext_key_usage: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    days: int = DEFAULT_LEAF_DAYS,
    now: datetime | None = None,
) -> IssuedSM2:
    """One SM2 end-entity certificate with a fresh key."""
    key = SM2PrivateKey.generate()
    profile = _leaf_profile(subject, issuer.certificate, key_usage, ext_key_usage, dns, ips, days, now)
    return IssuedSM2(build_sm2_certificate(profile, key.public_key(), issuer.key, issuer.certificate), key)


def issue_tlcp_pair(
    subject: Subject,
    issuer: IssuedSM2,
    *,
    role: str,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    days: int = DEFAULT_LEAF_DAYS,
    now: datetime | None = None,
) -> TLCPPair:
    """A TLCP signing + encryption certificate pair for a ``server`` or ``client`` (two distinct keys)."""
    eku = _role_eku(role)
    sign, enc = (
        issue_sm2_certificate(
            subject, issuer, key_usage=usage, ext_key_usage=eku, dns=dns, ips=ips, days=days, now=now
        )
        for usage in (TLCP_SIGN_USAGE, TLCP_ENC_USAGE)
    )
    return TLCPPair(sign=sign, enc=enc)


def issue_sm2_signing_certificate(
    subject: Subject, issuer: IssuedSM2, *, days: int = DEFAULT_LEAF_DAYS, now: datetime | None = None
) -> IssuedSM2:
    """An SM2 certificate for signing data (digitalSignature+nonRepudiation, no TLS purpose): audit checkpoints."""
    return issue_sm2_certificate(subject, issuer, key_usage=SIGNING_ONLY_USAGE, days=days, now=now)


# -- certificate requests (PKCS#10) ----------------------------------------------------------------


@dataclass(frozen=True)
class SM2Request:
    """A fresh SM2 key and the DER PKCS#10 request a CA signs for it."""

    key: SM2PrivateKey
    request_der: bytes

    def request_pem(self) -> bytes:
        return asn1_pem.armor("CERTIFICATE REQUEST", self.request_der)


@dataclass(frozen=True)
class TLCPRequestPair:
    """Requests for a TLCP double certificate: one key and request for signing, one for encryption."""

    sign: SM2Request
    enc: SM2Request


def _requested_extensions(
    key_usage: frozenset[str], ext_key_usage: tuple[str, ...], dns: tuple[str, ...], ips: tuple[str, ...]
) -> list[asn1_x509.Extension]:
    extensions = [
        asn1_x509.Extension({"extn_id": "key_usage", "critical": True, "extn_value": set(key_usage)})
    ]
    if ext_key_usage:
        extensions.append(
            asn1_x509.Extension(
                {"extn_id": "extended_key_usage", "critical": False, "extn_value": list(ext_key_usage)}
            )
        )
    names = [asn1_x509.GeneralName(name="dns_name", value=name) for name in dns]
    names += [
        asn1_x509.GeneralName(name="ip_address", value=str(ipaddress.ip_address(address))) for address in ips
    ]
    if names:
        extensions.append(
            asn1_x509.Extension({"extn_id": "subject_alt_name", "critical": False, "extn_value": names})
        )
    return extensions


def build_sm2_request(
    subject: Subject,
    key: SM2PrivateKey,
    *,
    key_usage: frozenset[str],
    ext_key_usage: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> bytes:
    """A DER PKCS#10 request (RFC 2986) signed SM2-with-SM3 by ``key`` (default user ID, as certificates
    are), asking for the given keyUsage, extendedKeyUsage and subjectAltName in an extensionRequest."""
    info = asn1_csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": subject.to_asn1(),
            "subject_pk_info": asn1_keys.PublicKeyInfo.load(key.public_key().spki_der()),
            "attributes": [
                {
                    "type": "extension_request",
                    "values": [_requested_extensions(key_usage, ext_key_usage, dns, ips)],
                }
            ],
        }
    )
    info_der = info.dump()
    return asn1_csr.CertificationRequest(
        {
            "certification_request_info": asn1_csr.CertificationRequestInfo.load(info_der),
            "signature_algorithm": {"algorithm": OID_SM2_WITH_SM3},
            "signature": key.sign(info_der),
        }
    ).dump()


def request_tlcp_pair(
    subject: Subject, *, role: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()
) -> TLCPRequestPair:
    """Two fresh SM2 keys with a request each: the signing and the encryption certificate of a TLCP
    ``server`` or ``client``, with the same key usages :func:`issue_tlcp_pair` gives."""
    eku = _role_eku(role)
    requests = []
    for usage in (TLCP_SIGN_USAGE, TLCP_ENC_USAGE):
        key = SM2PrivateKey.generate()
        der = build_sm2_request(subject, key, key_usage=usage, ext_key_usage=eku, dns=dns, ips=ips)
        requests.append(SM2Request(key, der))
    return TLCPRequestPair(sign=requests[0], enc=requests[1])


# -- RSA / ECDSA ----------------------------------------------------------------------------------


def create_standard_ca(
    key_type: str,
    subject: Subject,
    *,
    issuer: IssuedStandard | None = None,
    days: int = DEFAULT_CA_DAYS,
    path_len: int | None = None,
    now: datetime | None = None,
) -> IssuedStandard:
    """An ``rsa`` (2048) or ``ecdsa`` (P-256) CA: self-signed root, or an intermediate when ``issuer`` is given."""
    key = generate_private_key(key_type)
    issuer_certificate = issuer.certificate if issuer is not None else None
    profile = _ca_profile(subject, issuer_certificate, days, path_len, now)
    signer = issuer.key if issuer is not None else key
    return IssuedStandard(
        build_standard_certificate(profile, key.public_key(), signer, issuer_certificate), key
    )


def issue_standard_certificate(
    key_type: str,
    subject: Subject,
    issuer: IssuedStandard,
    *,
    role: str,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    days: int = DEFAULT_LEAF_DAYS,
    now: datetime | None = None,
) -> IssuedStandard:
    """An ``rsa`` or ``ecdsa`` TLS ``server``/``client`` certificate signed by an RSA or ECDSA CA."""
    eku = _role_eku(role)
    key = generate_private_key(key_type)
    usage = {"digital_signature"}
    if key_type == "rsa" and role == "server":
        usage.add("key_encipherment")
    profile = _leaf_profile(subject, issuer.certificate, frozenset(usage), eku, dns, ips, days, now)
    return IssuedStandard(
        build_standard_certificate(profile, key.public_key(), issuer.key, issuer.certificate), key
    )


# -- files ----------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_private_file(path: str | Path, data: bytes) -> None:
    """Write secret material with mode 0600 (never briefly readable by others)."""
    _write_atomic(Path(path), data, 0o600)


def write_public_file(path: str | Path, data: bytes) -> None:
    """Write a certificate or bundle with mode 0644."""
    _write_atomic(Path(path), data, 0o644)


@dataclass(frozen=True)
class OutputFile:
    """One file a command writes: certificates and requests 0644, keys (``secret``) 0600."""

    path: Path
    data: bytes
    secret: bool = False


def _stage(item: OutputFile) -> Path:
    """Write ``item`` to a temporary sibling of its path (same directory, so the rename is atomic)."""
    item.path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=item.path.parent, prefix=f".{item.path.name}.")
    try:
        os.fchmod(descriptor, 0o600 if item.secret else 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(item.data)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Path(temporary)


def write_file_set(files: Sequence[OutputFile]) -> None:
    """Write every file or none of them.

    Each file is first written to a temporary sibling; only when all are written are they renamed into
    place. Files being replaced are kept aside until the last rename succeeded, so a failure at any
    point removes what was new and puts back what was there: a TLCP pair never ends up half-written.
    """
    staged: list[tuple[Path, Path]] = []
    set_aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for item in files:
            staged.append((_stage(item), item.path))
        for temporary, path in staged:
            if path.is_file():
                backup = path.with_name(f".{path.name}.{secrets.token_hex(8)}.old")
                os.link(path, backup)
                set_aside.append((backup, path))
            os.replace(temporary, path)
            placed.append(path)
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        for path in placed:
            path.unlink(missing_ok=True)
        for backup, path in set_aside:
            os.replace(backup, path)
        raise
    for backup, _ in set_aside:
        backup.unlink(missing_ok=True)


def issued_files(
    issued: Issued, cert_path: Path, key_path: Path, password: bytes | None = None
) -> list[OutputFile]:
    """The certificate PEM and the PKCS#8 key PEM of ``issued``, for :func:`write_file_set`."""
    return [
        OutputFile(cert_path, issued.certificate.to_pem()),
        OutputFile(key_path, key_to_pem(issued.key, password), secret=True),
    ]


def key_to_pem(key: SM2PrivateKey | StandardPrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM for either key family."""
    if isinstance(key, SM2PrivateKey):
        return key.to_pkcs8_pem(password)
    return private_key_to_pem(key, password)


def save_issued(
    issued: Issued, cert_path: str | Path, key_path: str | Path, password: bytes | None = None
) -> None:
    """Write ``issued`` as a certificate PEM (0644) and a PKCS#8 key PEM (0600), both or neither."""
    write_file_set(issued_files(issued, Path(cert_path), Path(key_path), password))


def certificates_pem(certificates: list[Certificate]) -> bytes:
    """Concatenated PEM of ``certificates`` in the given order."""
    return b"".join(certificate.to_pem() for certificate in certificates)


def load_issued(cert_path: str | Path, key_path: str | Path, password: bytes | None = None) -> Issued:
    """A certificate and its private key from files (KeyMismatch unless they belong together).

    SM2 or RSA/ECDSA according to the certificate's key type.
    """
    certificate = load_pem_certificates(Path(cert_path).read_bytes())[0]
    key_data = Path(key_path).read_bytes()
    if certificate.is_sm2:
        sm2_key = load_sm2_private_key(key_data, password)
        if sm2_key.public_key() != certificate.sm2_public_key():
            raise KeyMismatch(f"key {str(key_path)!r} does not match certificate {certificate.subject!r}")
        return IssuedSM2(certificate, sm2_key)
    standard_key = load_private_key(key_data, password)
    public_der = standard_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if public_der != certificate.public_key_info_der:
        raise KeyMismatch(f"key {str(key_path)!r} does not match certificate {certificate.subject!r}")
    return IssuedStandard(certificate, standard_key)


def load_sm2_issuer(cert_path: str | Path, key_path: str | Path, password: bytes | None = None) -> IssuedSM2:
    """:func:`load_issued` for a CA that must be SM2."""
    issuer = load_issued(cert_path, key_path, password)
    if not isinstance(issuer, IssuedSM2):
        raise ValueError(
            f"CA certificate {str(cert_path)!r} has a {issuer.certificate.key_type} key, not SM2"
        )
    return issuer


def load_standard_issuer(
    cert_path: str | Path, key_path: str | Path, password: bytes | None = None
) -> IssuedStandard:
    """:func:`load_issued` for a CA that must be RSA or ECDSA."""
    issuer = load_issued(cert_path, key_path, password)
    if not isinstance(issuer, IssuedStandard):
        raise ValueError(f"CA certificate {str(cert_path)!r} is SM2; use an RSA or ECDSA CA")
    return issuer

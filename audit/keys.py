"""Audit key material: the HMAC chain key file, the SM2 signing key, and verification public keys.

The HMAC key file holds hex text (``smgate audit keygen`` writes 32 random bytes, mode 0600). A
verification key is a PEM/DER X.509 certificate (its SubjectPublicKeyInfo is taken with asn1crypto;
no chain validation happens here, the certificate is the trust input) or an SPKI public key file.
Errors never include key material.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import pem, x509

from audit.checkpoint import CheckpointSigner
from audit.config import AuditConfig
from tls.crypto import CryptoError, SM2PrivateKey, SM2PublicKey, load_sm2_private_key, load_sm2_public_key

MIN_KEY_BYTES = 16
KEY_BYTES = 32


class AuditKeyError(Exception):
    """A key, certificate or key file is missing, malformed or of the wrong kind."""


def generate_audit_key() -> bytes:
    """32 random bytes for the HMAC-SM3 chain."""
    return secrets.token_bytes(KEY_BYTES)


def write_audit_key(path: Path, key: bytes | None = None) -> None:
    """Create ``path`` (mode 0600, never overwriting) holding ``key`` (default: a new key) as hex."""
    key = generate_audit_key() if key is None else key
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditKeyError(f"{path}: already exists; refusing to overwrite an audit key") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")


def load_audit_key(path: Path) -> bytes:
    """Read an HMAC chain key file (hex text, at least 16 bytes)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"{path}: cannot read audit key file ({type(exc).__name__})") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise AuditKeyError(f"{path}: audit key file must contain hex text") from None
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(f"{path}: audit key must be at least {MIN_KEY_BYTES} bytes")
    return key


def load_signing_key(path: Path, password: bytes | None = None) -> SM2PrivateKey:
    """Read the SM2 audit signing key (PKCS#8/SEC1, PEM or DER, optionally encrypted)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot read signing key ({type(exc).__name__})") from None
    try:
        return load_sm2_private_key(data, password)
    except CryptoError:
        raise AuditKeyError(f"{path}: not an SM2 private key (or wrong password)") from None


def public_key_from_certificate(data: bytes) -> SM2PublicKey:
    """The SM2 public key of a PEM or DER certificate (the first one if the PEM holds several)."""
    if pem.detect(data):
        for type_name, _headers, der in pem.unarmor(data, multiple=True):
            if type_name == "CERTIFICATE":
                data = der
                break
        else:
            raise AuditKeyError("no CERTIFICATE block in PEM data")
    try:
        cert = x509.Certificate.load(data)
        spki = cert["tbs_certificate"]["subject_public_key_info"].dump()
    except (ValueError, TypeError, KeyError):
        raise AuditKeyError("malformed certificate") from None
    try:
        return load_sm2_public_key(spki)
    except CryptoError:
        raise AuditKeyError("certificate does not hold an SM2 public key") from None


def load_verification_key(path: Path) -> SM2PublicKey:
    """An SM2 public key from a certificate file (PEM/DER) or a SubjectPublicKeyInfo file (PEM/DER)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot read ({type(exc).__name__})") from None
    if b"-----BEGIN PUBLIC KEY-----" in data:
        try:
            return load_sm2_public_key(data)
        except CryptoError:
            raise AuditKeyError(f"{path}: not an SM2 public key") from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return public_key_from_certificate(data)
        except AuditKeyError as exc:
            raise AuditKeyError(f"{path}: {exc}") from None
    try:
        return public_key_from_certificate(data)
    except AuditKeyError:
        pass
    try:
        return load_sm2_public_key(data)
    except CryptoError:
        raise AuditKeyError(f"{path}: neither an SM2 certificate nor an SM2 public key") from None


@dataclass(frozen=True)
class PipelineKeys:
    """The key material an audit pipeline runs with: the HMAC chain key and the checkpoint signer."""

    audit_key: bytes
    signer: CheckpointSigner | None


def load_pipeline_keys(config: AuditConfig) -> PipelineKeys:
    """Load the key files ``config`` names (raises :class:`AuditKeyError` naming the file); with a
    ``signing_cert`` the certificate must match the signing key."""
    audit_key = load_audit_key(config.key_file)
    if config.signing_key is None:
        return PipelineKeys(audit_key, None)
    password = None
    if config.signing_key_password_file is not None:
        try:
            password = config.signing_key_password_file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise AuditKeyError(
                f"{config.signing_key_password_file}: cannot read ({type(exc).__name__})"
            ) from None
    private_key = load_signing_key(config.signing_key, password)
    if config.signing_cert is not None:
        cert_key = load_verification_key(config.signing_cert)
        if cert_key.spki_der() != private_key.public_key().spki_der():
            raise AuditKeyError(f"{config.signing_cert}: certificate does not match signing_key")
    return PipelineKeys(audit_key, CheckpointSigner(private_key))

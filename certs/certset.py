"""A TLCP endpoint's double certificate: signing and encryption certificates, their keys, the chain.

GB/T 38636 (TLCP) Certificate message: it carries the signing certificate, then the
encryption certificate, then the CA chain. :func:`split_sign_enc` recovers the two leaves from such a
list by keyUsage rather than position, since implementations differ in what they send and in which order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from certs.certificate import Certificate, load_pem_certificates
from certs.errors import KeyMismatch, KeyUsageMismatch, MalformedCertificate
from certs.usage import is_encryption_certificate, is_signing_certificate
from tls.crypto import CryptoError, SM2PrivateKey, load_sm2_private_key


def split_sign_enc(
    certificates: Sequence[Certificate],
) -> tuple[Certificate | None, Certificate | None, list[Certificate]]:
    """Return (signing leaf, encryption leaf, remaining certificates) chosen by keyUsage.

    CA certificates are never picked as leaves. The signing leaf is the first non-CA certificate with
    digitalSignature and without keyEncipherment/keyAgreement, falling back to the first one with
    digitalSignature; the encryption leaf is the first other non-CA certificate with keyEncipherment
    or keyAgreement. Everything not picked is returned in order as chain candidates.
    """
    leaves = [certificate for certificate in certificates if not certificate.is_ca]
    sign_only = [c for c in leaves if is_signing_certificate(c) and not is_encryption_certificate(c)]
    signers = sign_only or [c for c in leaves if is_signing_certificate(c)]
    sign_cert = signers[0] if signers else None
    encrypters = [c for c in leaves if is_encryption_certificate(c) and c is not sign_cert]
    enc_only = [c for c in encrypters if not is_signing_certificate(c)]
    enc_candidates = enc_only or encrypters
    enc_cert = enc_candidates[0] if enc_candidates else None
    rest = [c for c in certificates if c is not sign_cert and c is not enc_cert]
    return sign_cert, enc_cert, rest


@dataclass
class SM2CertificateSet:
    """What one TLCP side presents: two SM2 leaf certificates with their private keys, plus the chain."""

    sign_cert: Certificate
    sign_key: SM2PrivateKey
    enc_cert: Certificate
    enc_key: SM2PrivateKey
    chain: list[Certificate] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not is_signing_certificate(self.sign_cert):
            raise KeyUsageMismatch(f"signing certificate {self.sign_cert.subject!r} lacks digitalSignature")
        if not is_encryption_certificate(self.enc_cert):
            raise KeyUsageMismatch(
                f"encryption certificate {self.enc_cert.subject!r} lacks keyEncipherment and keyAgreement"
            )
        if self.sign_key.public_key() != self.sign_cert.sm2_public_key():
            raise KeyMismatch(f"the signing key does not match certificate {self.sign_cert.subject!r}")
        if self.enc_key.public_key() != self.enc_cert.sm2_public_key():
            raise KeyMismatch(f"the encryption key does not match certificate {self.enc_cert.subject!r}")

    def certificate_list(self) -> list[Certificate]:
        """Certificates in Certificate-message order: signing, encryption, then chain."""
        return [self.sign_cert, self.enc_cert, *self.chain]


def _load_key(path: str | Path, password: bytes | None) -> SM2PrivateKey:
    try:
        return load_sm2_private_key(Path(path).read_bytes(), password)
    except CryptoError as exc:
        raise MalformedCertificate(
            f"private key {str(path)!r} does not load ({exc.__class__.__name__})"
        ) from None


def load_sm2_certificate_set(
    sign_cert: str | Path,
    sign_key: str | Path,
    enc_cert: str | Path,
    enc_key: str | Path,
    chain: str | Path | None = None,
    password: bytes | None = None,
) -> SM2CertificateSet:
    """Load a double certificate from PEM/DER files and check each key matches its certificate.

    The first certificate of each leaf file is the leaf; further certificates in those files and all of
    ``chain`` form the chain (duplicates and the two leaves themselves are dropped, order kept).
    ``password`` decrypts encrypted PKCS#8 keys (e.g. GmSSL's PBKDF2-HMAC-SM3/SM4-CBC).
    """
    sign_list = load_pem_certificates(Path(sign_cert).read_bytes())
    enc_list = load_pem_certificates(Path(enc_cert).read_bytes())
    chain_list = load_pem_certificates(Path(chain).read_bytes()) if chain is not None else []
    leaves = {sign_list[0].der, enc_list[0].der}
    extra: list[Certificate] = []
    for certificate in [*sign_list[1:], *enc_list[1:], *chain_list]:
        if certificate.der not in leaves and certificate not in extra:
            extra.append(certificate)
    return SM2CertificateSet(
        sign_cert=sign_list[0],
        sign_key=_load_key(sign_key, password),
        enc_cert=enc_list[0],
        enc_key=_load_key(enc_key, password),
        chain=extra,
    )

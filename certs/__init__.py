"""X.509 for smgate: parsing (SM2, RSA, ECDSA), SM2 chain validation, TLCP double certificates, and the PKI tools.

Modules: ``certificate`` (parsed certificates), ``errors`` (one exception per rejection reason),
``usage`` (TLCP roles), ``hostname`` (RFC 6125 matching), ``trust`` (anchors), ``verify`` (SM2 chains),
``certset`` (sign/enc certificate sets), ``profile`` (certificate contents shared by both builders),
``builder`` (SM2 certificate construction),
``standard`` (RSA/ECDSA issuing and OpenSSL verification), ``pki`` (issuing workflows and PEM files),
``summary`` (human summaries), ``demo`` (the demo PKI), ``cli`` (``smgate pki``).
"""

from certs.certificate import (
    Certificate,
    load_certificate_chain_file,
    load_certificate_file,
    load_pem_certificates,
)
from certs.certset import SM2CertificateSet, load_sm2_certificate_set, split_sign_enc
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
from certs.trust import TrustStore
from certs.usage import Role, check_role
from certs.verify import verify_sm2_chain

__all__ = [
    "BadCertificateSignature",
    "Certificate",
    "CertificateError",
    "CertificateExpired",
    "CertificateNotYetValid",
    "HostnameMismatch",
    "KeyMismatch",
    "KeyUsageMismatch",
    "MalformedCertificate",
    "NotACertificateAuthority",
    "PathLengthExceeded",
    "Role",
    "SM2CertificateSet",
    "TrustStore",
    "UnknownCA",
    "UnsupportedCertificate",
    "check_role",
    "load_certificate_chain_file",
    "load_certificate_file",
    "load_pem_certificates",
    "load_sm2_certificate_set",
    "match_hostname",
    "split_sign_enc",
    "verify_sm2_chain",
]

"""Certificate rejection reasons: one exception class per reason, each naming the TLS alert to send.

The TLCP engine and the gateway catch :class:`CertificateError` and send ``error.alert``
(TLCP uses the TLS alert names and codes, RFC 5246 section 7.2.2).
Messages name the certificate by subject and never include key material.
"""

from __future__ import annotations


class CertificateError(Exception):
    """Base of every certificate parsing and validation failure."""

    alert: str = "bad_certificate"


class MalformedCertificate(CertificateError):
    """The bytes are not a well-formed X.509 certificate (bad DER, PEM or a field out of range)."""

    alert = "bad_certificate"


class UnknownCA(CertificateError):
    """No path from the certificate to a configured trust anchor."""

    alert = "unknown_ca"


class CertificateExpired(CertificateError):
    """A certificate on the path is past its notAfter time."""

    alert = "certificate_expired"


class CertificateNotYetValid(CertificateError):
    """A certificate on the path is before its notBefore time (TLS has no separate alert for this)."""

    alert = "certificate_expired"


class BadCertificateSignature(CertificateError):
    """A certificate's signature does not verify with its issuer's public key."""

    alert = "bad_certificate"


class KeyUsageMismatch(CertificateError):
    """keyUsage or extendedKeyUsage does not allow the role the certificate is used for."""

    alert = "unsupported_certificate"


class NotACertificateAuthority(CertificateError):
    """A certificate that is not a CA (basicConstraints cA false or no keyCertSign) issued another one."""

    alert = "bad_certificate"


class PathLengthExceeded(CertificateError):
    """More intermediate CAs below a CA than its basicConstraints pathLenConstraint allows."""

    alert = "bad_certificate"


class HostnameMismatch(CertificateError):
    """The expected host name or IP address is not among the leaf's subjectAltName entries."""

    alert = "bad_certificate"


class UnsupportedCertificate(CertificateError):
    """The certificate is well formed but uses an algorithm this path cannot check (e.g. RSA in an SM2 chain)."""

    alert = "unsupported_certificate"


class KeyMismatch(CertificateError):
    """A configured private key does not belong to its certificate (a local configuration error)."""

    alert = "internal_error"

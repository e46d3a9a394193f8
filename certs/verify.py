"""Validation of SM2 certificate chains (TLCP peers), following RFC 5280 section 6 in reduced form.

Steps, each failing with its own :mod:`certs.errors` class:

1. Path building: from the leaf, follow issuer names (and key identifiers when both sides carry
   them) through the peer's intermediates until a trust anchor is reached (:class:`UnknownCA` if
   none is). Every link's signature is checked with SM2-with-SM3 and the default user ID
   ``1234567812345678`` (the GM/T 0009 default; :class:`BadCertificateSignature`). The anchor's own
   self-signature is not checked: it is trusted by configuration, as in OpenSSL.
2. Every certificate on the path must be inside its validity window at ``now``.
3. Every issuer must be a CA: basicConstraints cA=TRUE (an anchor may instead be a v1 certificate
   with no extensions), and keyCertSign when keyUsage is present (:class:`NotACertificateAuthority`);
   pathLenConstraint limits the non-self-issued intermediates below it (:class:`PathLengthExceeded`).
4. No certificate may carry a critical extension smgate does not understand.
5. The leaf must fit the TLCP role (:mod:`certs.usage`) and, when a host name is given, its SAN
   (:mod:`certs.hostname`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from certs.certificate import Certificate
from certs.errors import (
    BadCertificateSignature,
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    NotACertificateAuthority,
    PathLengthExceeded,
    UnknownCA,
    UnsupportedCertificate,
)
from certs.hostname import match_hostname
from certs.trust import TrustStore
from certs.usage import Role, check_role
from tls.crypto import DEFAULT_SM2_ID, CryptoError

#: Verified (child, issuer) signature outcomes kept; chains repeat across handshakes.
SIGNATURE_CACHE_SIZE = 1024
#: Longest path considered (leaf and anchor included); deeper chains are refused as unknown.
MAX_PATH_LENGTH = 8


def verify_sm2_signature(child: Certificate, issuer: Certificate, uid: bytes = DEFAULT_SM2_ID) -> None:
    """Check that ``issuer``'s SM2 key signed ``child``'s TBSCertificate bytes."""
    if not child.is_sm2_signed:
        raise UnsupportedCertificate(
            f"certificate {child.subject!r} is signed with {child.signature_algorithm}, not SM2-with-SM3"
        )
    if not issuer.is_sm2:
        raise UnsupportedCertificate(f"issuer {issuer.subject!r} has a {issuer.key_type} key, not SM2")
    if not _signature_valid(child, issuer, uid):
        raise BadCertificateSignature(
            f"signature on {child.subject!r} does not verify with the key of {issuer.subject!r}"
        )


@lru_cache(maxsize=SIGNATURE_CACHE_SIZE)
def _signature_valid(child: Certificate, issuer: Certificate, uid: bytes) -> bool:
    """Whether ``issuer``'s key signed ``child``; a pure function of the two DER encodings, so cached."""
    public_key = issuer.sm2_public_key()
    try:
        public_key.verify(child.signature, child.tbs_der, uid)
    except CryptoError:
        return False
    return True


def check_validity(certificate: Certificate, now: datetime) -> None:
    """Raise CertificateExpired / CertificateNotYetValid when ``now`` is outside the validity window."""
    if now < certificate.not_before:
        raise CertificateNotYetValid(
            f"certificate {certificate.subject!r} is not valid before {certificate.not_before.isoformat()}"
        )
    if now > certificate.not_after:
        raise CertificateExpired(
            f"certificate {certificate.subject!r} expired at {certificate.not_after.isoformat()}"
        )


def check_issuer_is_ca(issuer: Certificate, *, is_anchor: bool) -> None:
    """Raise NotACertificateAuthority unless ``issuer`` may issue certificates."""
    legacy_root = is_anchor and issuer.version < 3 and not issuer.has_basic_constraints
    if not (issuer.is_ca or legacy_root):
        raise NotACertificateAuthority(
            f"certificate {issuer.subject!r} issued another certificate but is not a CA (basicConstraints)"
        )
    if issuer.has_key_usage and "key_cert_sign" not in issuer.key_usage:
        raise NotACertificateAuthority(f"CA certificate {issuer.subject!r} keyUsage lacks keyCertSign")


def check_path_lengths(path: Sequence[Certificate]) -> None:
    """Enforce pathLenConstraint: count non-self-issued intermediates between each CA and the leaf."""
    for index in range(1, len(path)):
        limit = path[index].path_len
        if limit is None:
            continue
        below = sum(1 for certificate in path[1:index] if not certificate.is_self_issued)
        if below > limit:
            raise PathLengthExceeded(
                f"CA {path[index].subject!r} allows {limit} intermediate CA(s) below it, the chain has {below}"
            )


def _build_path(
    leaf: Certificate, intermediates: Sequence[Certificate], trust: TrustStore
) -> list[Certificate]:
    failures: list[CertificateError] = []

    def extend(path: list[Certificate]) -> list[Certificate] | None:
        current = path[-1]
        if current in trust:
            return path
        if len(path) >= MAX_PATH_LENGTH:
            failures.append(UnknownCA(f"no trust anchor within {MAX_PATH_LENGTH} certificates of the leaf"))
            return None
        candidates = trust.issuers_of(current) + [
            certificate
            for certificate in intermediates
            if certificate.issued(current) and certificate not in path and certificate not in trust
        ]
        if not candidates:
            failures.append(UnknownCA(f"issuer {current.issuer!r} of {current.subject!r} is not trusted"))
            return None
        for candidate in candidates:
            try:
                verify_sm2_signature(current, candidate)
            except CertificateError as exc:
                failures.append(exc)
                continue
            found = extend([*path, candidate])
            if found is not None:
                return found
        return None

    path = extend([leaf])
    if path is not None:
        return path
    # Report the most telling failure: a broken signature or unsupported algorithm says more than
    # "unknown CA" from a dead-end branch.
    for failure in failures:
        if not isinstance(failure, UnknownCA):
            raise failure
    raise failures[0]


def verify_sm2_chain(
    leaf: Certificate,
    intermediates: Sequence[Certificate],
    trust: TrustStore,
    *,
    role: Role,
    now: datetime,
    hostname: str | None = None,
) -> list[Certificate]:
    """Validate ``leaf`` for ``role`` and return the path leaf..anchor, or raise a CertificateError.

    ``intermediates`` are untrusted helpers (usually the rest of the peer's Certificate message, in
    any order; extra certificates are ignored). ``now`` must be timezone-aware.
    """
    if now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not trust.anchors:
        raise UnknownCA("the trust store is empty")
    if not leaf.is_sm2:
        raise UnsupportedCertificate(f"certificate {leaf.subject!r} has a {leaf.key_type} key, not SM2")
    path = _build_path(leaf, intermediates, trust)
    for certificate in path:
        check_validity(certificate, now)
    for index in range(1, len(path)):
        check_issuer_is_ca(path[index], is_anchor=index == len(path) - 1)
    check_path_lengths(path)
    for certificate in path:
        if certificate.unrecognised_critical_extensions:
            raise UnsupportedCertificate(
                f"certificate {certificate.subject!r} has unsupported critical extension(s) "
                + ", ".join(certificate.unrecognised_critical_extensions)
            )
    check_role(leaf, role)
    if hostname is not None:
        match_hostname(hostname, leaf.san_dns, leaf.san_ip, subject=leaf.subject)
    return path

"""Construction of SM2-signed X.509 v3 certificates with asn1crypto.

Encoding choices (GM/T 0015; accepted by OpenSSL 3, GmSSL and Tongsuo):

- signatureAlgorithm ``1.2.156.10197.1.501`` (SM2-with-SM3) with the parameters field absent;
- subjectPublicKeyInfo ``id-ecPublicKey`` with namedCurve ``1.2.156.10197.1.301``, uncompressed point;
- the signature is SM2 over the DER TBSCertificate with the default user ID ``1234567812345678``
  (``Z`` is computed by the provider), DER ``SEQUENCE {r, s}``;
- extensions: basicConstraints (critical), keyUsage (critical), extendedKeyUsage, subjectAltName,
  subjectKeyIdentifier (:func:`certs.profile.key_identifier`) and authorityKeyIdentifier;
- times as UTCTime up to 2049 and GeneralizedTime from 2050 (RFC 5280 section 4.1.2.5).
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509

from certs.certificate import OID_SM2_WITH_SM3, Certificate
from certs.errors import KeyMismatch
from certs.profile import CertificateProfile, authority_key_identifier, key_identifier
from tls.crypto import DEFAULT_SM2_ID, SM2PrivateKey, SM2PublicKey


def _time(value: datetime) -> asn1_x509.Time:
    value = value.astimezone(UTC).replace(microsecond=0)
    if value.year < 2050:
        return asn1_x509.Time(name="utc_time", value=value)
    return asn1_x509.Time(name="general_time", value=value)


def _extension(name: str, value: object, *, critical: bool) -> asn1_x509.Extension:
    return asn1_x509.Extension({"extn_id": name, "critical": critical, "extn_value": value})


def _extensions(
    profile: CertificateProfile, subject_key_id: bytes, authority_key_id: bytes
) -> list[asn1_x509.Extension]:
    extensions: list[asn1_x509.Extension] = []
    # End-entity certificates carry no basicConstraints at all: DER encodes cA=FALSE as an empty
    # SEQUENCE, and GmSSL 3.x rejects leaf certificates that contain one.
    if profile.is_ca:
        constraints: dict[str, object] = {"ca": True}
        if profile.path_len is not None:
            constraints["path_len_constraint"] = profile.path_len
        extensions.append(_extension("basic_constraints", constraints, critical=True))
    if profile.key_usage:
        extensions.append(_extension("key_usage", set(profile.key_usage), critical=True))
    if profile.ext_key_usage:
        extensions.append(_extension("extended_key_usage", list(profile.ext_key_usage), critical=False))
    names = [asn1_x509.GeneralName(name="dns_name", value=name) for name in profile.san_dns]
    names += [
        asn1_x509.GeneralName(name="ip_address", value=str(ipaddress.ip_address(address)))
        for address in profile.san_ip
    ]
    if names:
        extensions.append(_extension("subject_alt_name", names, critical=False))
    extensions.append(_extension("key_identifier", subject_key_id, critical=False))
    extensions.append(
        _extension("authority_key_identifier", {"key_identifier": authority_key_id}, critical=False)
    )
    return extensions


def build_sm2_certificate(
    profile: CertificateProfile,
    public_key: SM2PublicKey,
    issuer_key: SM2PrivateKey,
    issuer: Certificate | None = None,
    *,
    uid: bytes = DEFAULT_SM2_ID,
) -> Certificate:
    """Sign a certificate for ``public_key`` with ``issuer_key``; ``issuer`` None makes it self-signed.

    The issuer key must match the issuer certificate (or, self-signed, ``public_key``): KeyMismatch otherwise.
    """
    subject_key_id = key_identifier(public_key.to_bytes())
    if issuer is None:
        if issuer_key.public_key() != public_key:
            raise KeyMismatch("a self-signed certificate must be signed by its own key")
        issuer_name = profile.subject.to_asn1()
        authority_key_id = subject_key_id
    else:
        if issuer_key.public_key() != issuer.sm2_public_key():
            raise KeyMismatch(f"the issuer key does not match certificate {issuer.subject!r}")
        issuer_name = asn1_x509.Name.load(issuer.subject_der)
        authority_key_id = authority_key_identifier(issuer)
    signature_algorithm = {"algorithm": OID_SM2_WITH_SM3}
    tbs = asn1_x509.TbsCertificate(
        {
            "version": "v3",
            "serial_number": profile.serial_number(),
            "signature": signature_algorithm,
            "issuer": issuer_name,
            "validity": {"not_before": _time(profile.not_before), "not_after": _time(profile.not_after)},
            "subject": profile.subject.to_asn1(),
            "subject_public_key_info": asn1_keys.PublicKeyInfo.load(public_key.spki_der()),
            "extensions": _extensions(profile, subject_key_id, authority_key_id),
        }
    )
    tbs_der = tbs.dump()
    signature = issuer_key.sign(tbs_der, uid)
    certificate = asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs_der),
            "signature_algorithm": signature_algorithm,
            "signature_value": signature,
        }
    )
    return Certificate.from_der(certificate.dump())

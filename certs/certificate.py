"""Parsed X.509 certificates (SM2, RSA, ECDSA) as immutable values, decoded with asn1crypto.

:class:`Certificate` keeps the exact DER it was built from (``der``, ``tbs_der``) so signatures are
checked over the received bytes, and exposes the fields TLCP and the gateway need: names, validity,
subjectAltName, keyUsage/extendedKeyUsage, basicConstraints, key identifiers and the public key.
Every decoding problem becomes :class:`~certs.errors.MalformedCertificate`; nothing is validated
against a trust anchor here (that is :mod:`certs.verify`).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from asn1crypto import core, keys, pem
from asn1crypto import x509 as asn1_x509

from certs.errors import MalformedCertificate
from tls.crypto import SM2PublicKey, sm3

#: GM/T 0006: SM2 signature with SM3 (``SM2-with-SM3``); encoded with no parameters.
OID_SM2_WITH_SM3 = "1.2.156.10197.1.501"
#: RFC 5480 id-ecPublicKey, used for both NIST curves and curveSM2.
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
#: GM/T 0006 curveSM2 (``sm2p256v1``), the namedCurve parameter of an SM2 public key.
OID_CURVE_SM2 = "1.2.156.10197.1.301"
OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_ED25519 = "1.3.101.112"

_CURVE_NAMES = {
    OID_CURVE_SM2: "SM2",
    "1.2.840.10045.3.1.7": "ECDSA-P256",
    "1.3.132.0.34": "ECDSA-P384",
    "1.3.132.0.35": "ECDSA-P521",
}

#: Signature algorithm names for summaries; anything else is shown as its dotted OID.
SIGNATURE_ALGORITHM_NAMES = {
    OID_SM2_WITH_SM3: "SM2-with-SM3",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.10": "rsassa-pss",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    OID_ED25519: "Ed25519",
}

OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_KEY_USAGE = "2.5.29.15"
OID_EXT_KEY_USAGE = "2.5.29.37"
OID_SUBJECT_ALT_NAME = "2.5.29.17"
OID_SUBJECT_KEY_ID = "2.5.29.14"
OID_AUTHORITY_KEY_ID = "2.5.29.35"

#: Extensions whose semantics smgate understands or may safely ignore when marked critical
#: (RFC 5280 section 4.2: an unrecognised critical extension makes the certificate unusable).
RECOGNISED_EXTENSIONS = frozenset(
    {
        OID_BASIC_CONSTRAINTS,
        OID_KEY_USAGE,
        OID_EXT_KEY_USAGE,
        OID_SUBJECT_ALT_NAME,
        OID_SUBJECT_KEY_ID,
        OID_AUTHORITY_KEY_ID,
        "2.5.29.32",  # certificatePolicies (no policy constraints are enforced, as in OpenSSL's default)
        "2.5.29.31",  # cRLDistributionPoints
        "2.5.29.18",  # issuerAltName
        "1.3.6.1.5.5.7.1.1",  # authorityInfoAccess
    }
)

# RFC 4514 section 3 short names; other attribute types are written as dotted OIDs.
_RFC4514_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}

#: Parsed certificates kept for reuse (failures are not cached: they raise).
PARSE_CACHE_SIZE = 512

_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError)


def _escape_rfc4514(value: str) -> str:
    out = []
    for index, char in enumerate(value):
        if char in '"+,;<>\\' or (char == "#" and index == 0):
            out.append("\\" + char)
        elif char == " " and (index == 0 or index == len(value) - 1):
            out.append("\\ ")
        elif char == "\x00":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)


def name_to_rfc4514(name: asn1_x509.Name) -> str:
    """Format a Name as an RFC 4514 string (most specific RDN first, as ``cryptography`` does)."""
    rdns = []
    for rdn in reversed(list(name.chosen)):
        parts = []
        for atv in rdn:
            oid = atv["type"].dotted
            label = _RFC4514_NAMES.get(oid, oid)
            value = atv["value"].native
            if isinstance(value, str):
                parts.append(f"{label}={_escape_rfc4514(value)}")
            else:
                parts.append(f"{label}=#{atv['value'].dump().hex()}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def _key_type(spki: keys.PublicKeyInfo) -> tuple[str, bytes]:
    """(key type label, subjectPublicKey bits) of a SubjectPublicKeyInfo.

    The bits are the EC point for EC keys, the RSAPublicKey DER for RSA, the raw key for Ed25519.
    """
    algorithm = spki["algorithm"]["algorithm"].dotted
    public_key = spki["public_key"]
    # BIT STRING contents: one octet counting unused bits, then the key; keys are whole octets.
    contents = bytes(public_key.contents)
    if not contents or contents[0] != 0:
        raise MalformedCertificate("subjectPublicKey is not a whole number of octets")
    bits = contents[1:]
    if algorithm == OID_EC_PUBLIC_KEY:
        parameters = spki["algorithm"]["parameters"]
        if parameters.name != "named":
            raise MalformedCertificate("EC public key without a named curve is not supported")
        curve = parameters.chosen.dotted
        return _CURVE_NAMES.get(curve, f"EC-{curve}"), bits
    if algorithm == OID_RSA_ENCRYPTION:
        modulus = public_key.parsed["modulus"].native
        return f"RSA-{modulus.bit_length()}", bits
    if algorithm == OID_ED25519:
        return "Ed25519", bits
    return algorithm, bits


@dataclass(frozen=True, eq=False)
class Certificate:
    """One parsed X.509 certificate. Equality and hashing are by DER bytes."""

    der: bytes
    tbs_der: bytes
    version: int
    serial: int
    subject: str
    issuer: str
    subject_der: bytes
    issuer_der: bytes
    not_before: datetime
    not_after: datetime
    signature_algorithm_oid: str
    signature: bytes
    key_type: str
    public_key_bytes: bytes
    public_key_info_der: bytes
    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    key_usage: frozenset[str] = frozenset()
    has_key_usage: bool = False
    ext_key_usage: frozenset[str] = frozenset()
    has_ext_key_usage: bool = False
    is_ca: bool = False
    has_basic_constraints: bool = False
    path_len: int | None = None
    subject_key_id: bytes | None = None
    authority_key_id: bytes | None = None
    unrecognised_critical_extensions: tuple[str, ...] = ()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_der(cls, der: bytes) -> Certificate:
        """Parse one DER certificate; trailing bytes or any malformed field raise MalformedCertificate.

        Results are cached by DER (certificates are immutable values): peers resend the same
        certificates on every handshake, and decoding with asn1crypto costs about 2 ms each.
        """
        if not isinstance(der, bytes | bytearray) or not der:
            raise MalformedCertificate("certificate is empty")
        return _parse_der(bytes(der))

    @classmethod
    def _parse(cls, der: bytes) -> Certificate:
        try:
            parsed = asn1_x509.Certificate.load(der, strict=True)
            return cls._from_asn1(der, parsed)
        except MalformedCertificate:
            raise
        except _DECODE_ERRORS as exc:
            raise MalformedCertificate(f"certificate DER does not decode: {exc.__class__.__name__}") from None

    @classmethod
    def from_pem(cls, data: bytes) -> Certificate:
        """Parse the first ``CERTIFICATE`` block of a PEM text."""
        certificates = load_pem_certificates(data)
        return certificates[0]

    @classmethod
    def _from_asn1(cls, der: bytes, parsed: asn1_x509.Certificate) -> Certificate:
        tbs = parsed["tbs_certificate"]
        outer_algorithm = parsed["signature_algorithm"]["algorithm"].dotted
        if tbs["signature"]["algorithm"].dotted != outer_algorithm:
            raise MalformedCertificate("signatureAlgorithm differs from the TBSCertificate signature field")
        if outer_algorithm == OID_SM2_WITH_SM3:
            parameters = parsed["signature_algorithm"]["parameters"]
            if not isinstance(parameters, core.Void | core.Null):
                raise MalformedCertificate("SM2-with-SM3 signature algorithm must have no parameters")
        version = int(tbs["version"].native[1:])
        validity = tbs["validity"]
        not_before = validity["not_before"].native
        not_after = validity["not_after"].native
        if not isinstance(not_before, datetime) or not isinstance(not_after, datetime):
            raise MalformedCertificate("validity times do not decode")
        spki = tbs["subject_public_key_info"]
        key_type, public_key_bytes = _key_type(spki)

        values: dict[str, Any] = {}
        seen: set[str] = set()
        unrecognised: list[str] = []
        extensions = tbs["extensions"]
        if version != 3 and len(extensions):
            raise MalformedCertificate("extensions are only allowed in v3 certificates")
        for extension in extensions:
            oid = extension["extn_id"].dotted
            if oid in seen:
                raise MalformedCertificate(f"extension {oid} appears twice")
            seen.add(oid)
            critical = bool(extension["critical"].native)
            if critical and oid not in RECOGNISED_EXTENSIONS:
                unrecognised.append(oid)
            if extension["extn_id"].native == oid:
                # An extension asn1crypto has no spec for: keep it opaque (critical ones are recorded above).
                continue
            value = extension["extn_value"].parsed
            if oid == OID_BASIC_CONSTRAINTS:
                values["has_basic_constraints"] = True
                values["is_ca"] = bool(value["ca"].native)
                values["path_len"] = value["path_len_constraint"].native
            elif oid == OID_KEY_USAGE:
                values["has_key_usage"] = True
                values["key_usage"] = frozenset(value.native)
            elif oid == OID_EXT_KEY_USAGE:
                values["has_ext_key_usage"] = True
                values["ext_key_usage"] = frozenset(str(purpose) for purpose in value.native)
            elif oid == OID_SUBJECT_ALT_NAME:
                dns: list[str] = []
                ips: list[str] = []
                for general_name in value:
                    if general_name.name == "dns_name":
                        dns.append(str(general_name.native))
                    elif general_name.name == "ip_address":
                        ips.append(str(ipaddress.ip_address(general_name.chosen.contents)))
                values["san_dns"] = tuple(dns)
                values["san_ip"] = tuple(ips)
            elif oid == OID_SUBJECT_KEY_ID:
                values["subject_key_id"] = bytes(value.native)
            elif oid == OID_AUTHORITY_KEY_ID:
                key_id = value["key_identifier"].native
                values["authority_key_id"] = bytes(key_id) if key_id is not None else None
            else:
                # Decode the other known extensions too, so malformed contents are caught here.
                _ = value.native
        signature = parsed["signature_value"].native
        if not isinstance(signature, bytes):
            raise MalformedCertificate("signature value does not decode")
        return cls(
            der=der,
            tbs_der=tbs.dump(),
            version=version,
            serial=int(tbs["serial_number"].native),
            subject=name_to_rfc4514(tbs["subject"]),
            issuer=name_to_rfc4514(tbs["issuer"]),
            subject_der=tbs["subject"].dump(),
            issuer_der=tbs["issuer"].dump(),
            not_before=not_before,
            not_after=not_after,
            signature_algorithm_oid=outer_algorithm,
            signature=signature,
            key_type=key_type,
            public_key_bytes=public_key_bytes,
            public_key_info_der=spki.dump(),
            unrecognised_critical_extensions=tuple(unrecognised),
            **values,
        )

    # -- value semantics ----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    def __repr__(self) -> str:
        return f"<Certificate subject={self.subject!r} issuer={self.issuer!r} serial={self.serial:#x}>"

    # -- derived properties -------------------------------------------------------------------

    @property
    def is_sm2(self) -> bool:
        """True when the subject key is an SM2 key (id-ecPublicKey on curveSM2)."""
        return self.key_type == "SM2"

    @property
    def is_sm2_signed(self) -> bool:
        """True when the issuer signed this certificate with SM2-with-SM3."""
        return self.signature_algorithm_oid == OID_SM2_WITH_SM3

    @property
    def signature_algorithm(self) -> str:
        """Readable signature algorithm name (dotted OID when unknown)."""
        return SIGNATURE_ALGORITHM_NAMES.get(self.signature_algorithm_oid, self.signature_algorithm_oid)

    @cached_property
    def _subject_match(self) -> str:
        return str(asn1_x509.Name.load(self.subject_der).hashable)

    @cached_property
    def _issuer_match(self) -> str:
        return str(asn1_x509.Name.load(self.issuer_der).hashable)

    @property
    def is_self_issued(self) -> bool:
        """Subject and issuer are the same name (RFC 5280 section 3.2); e.g. a root CA."""
        return self.subject_der == self.issuer_der or self._subject_match == self._issuer_match

    def issued(self, child: Certificate) -> bool:
        """True when ``child`` names this certificate as issuer (names compared per RFC 5280 section 7.1)
        and the key identifiers, where both are present, agree."""
        if self.subject_der != child.issuer_der and self._subject_match != child._issuer_match:
            return False
        if child.authority_key_id is not None and self.subject_key_id is not None:
            return child.authority_key_id == self.subject_key_id
        return True

    def sm2_public_key(self) -> SM2PublicKey:
        """The subject's SM2 public key; MalformedCertificate when the key is not SM2 or not on the curve.

        The key object is cached: the provider keeps its libcrypto key alive for reuse across handshakes.
        """
        return self._sm2_public_key

    @cached_property
    def _sm2_public_key(self) -> SM2PublicKey:
        if not self.is_sm2:
            raise MalformedCertificate(f"certificate {self.subject!r} has a {self.key_type} key, not SM2")
        try:
            return SM2PublicKey.from_bytes(self.public_key_bytes)
        except Exception as exc:  # the provider raises InvalidKey; keep its class in the message
            raise MalformedCertificate(
                f"certificate {self.subject!r} has an invalid SM2 public key ({exc.__class__.__name__})"
            ) from None

    def fingerprint_sm3(self) -> str:
        """SM3 digest of the DER, lowercase hex."""
        return sm3(self.der).hex()

    def fingerprint_sha256(self) -> str:
        """SHA-256 digest of the DER, lowercase hex."""
        return hashlib.sha256(self.der).hexdigest()

    def to_pem(self) -> bytes:
        """PEM text of the certificate."""
        return bytes(pem.armor("CERTIFICATE", self.der))


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_der(der: bytes) -> Certificate:
    return Certificate._parse(der)


def load_pem_certificates(data: bytes) -> list[Certificate]:
    """Every ``CERTIFICATE`` block of a PEM text, in order; DER input gives one certificate.

    Other PEM blocks (keys, parameters) are skipped; text with no certificate raises MalformedCertificate.
    """
    if not data.lstrip().startswith(b"-----BEGIN"):
        return [Certificate.from_der(data)]
    certificates = []
    try:
        for block_type, _headers, der in pem.unarmor(data, multiple=True):
            if block_type in ("CERTIFICATE", "X509 CERTIFICATE"):
                certificates.append(Certificate.from_der(der))
    except MalformedCertificate:
        raise
    except _DECODE_ERRORS as exc:
        raise MalformedCertificate(f"PEM does not decode: {exc}") from None
    if not certificates:
        raise MalformedCertificate("no CERTIFICATE block in PEM data")
    return certificates


def load_certificate_file(path: str | Path) -> Certificate:
    """The first certificate of a PEM or DER file."""
    return load_pem_certificates(Path(path).read_bytes())[0]


def load_certificate_chain_file(path: str | Path) -> list[Certificate]:
    """All certificates of a PEM (or single DER) file, in file order."""
    return load_pem_certificates(Path(path).read_bytes())

"""Code points of TLS 1.3 with ShangMi algorithms (RFC 8998 section 2) and the few TLS 1.3 ones we name.

RFC 8998 fixes one hash (SM3, 32 bytes) for both cipher suites, 16-byte SM4 keys, 12-byte nonces and
16-byte tags (section 3.1), the signature scheme sm2sig_sm3 and the key-exchange group curveSM2.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

#: supported_versions value of TLS 1.3 (RFC 8446 4.2.1).
TLS13_VERSION = 0x0304
#: legacy_version of every TLS 1.3 ClientHello/ServerHello (RFC 8446 4.1.2/4.1.3).
LEGACY_VERSION = 0x0303
#: legacy_record_version of the first ClientHello record (RFC 8446 5.1 allows 0x0301 for compatibility).
INITIAL_RECORD_VERSION = 0x0301

HASH_LENGTH = 32
KEY_LENGTH = 16
IV_LENGTH = 12
TAG_LENGTH = 16


class CipherSuite(IntEnum):
    TLS_SM4_GCM_SM3 = 0x00C6
    TLS_SM4_CCM_SM3 = 0x00C7


class NamedGroup(IntEnum):
    """Groups we may see; only curveSM2 is implemented (RFC 8998 2, TLS 1.3 code point 41)."""

    secp256r1 = 0x0017
    secp384r1 = 0x0018
    x25519 = 0x001D
    curveSM2 = 0x0029


class SignatureScheme(IntEnum):
    sm2sig_sm3 = 0x0708


class PskKeyExchangeMode(IntEnum):
    psk_ke = 0
    psk_dhe_ke = 1


@dataclass(frozen=True, slots=True)
class SuiteParameters:
    """Record protection of one suite: the AEAD from `tls.crypto` ("gcm" or "ccm")."""

    aead: str


SUITE_PARAMETERS: dict[CipherSuite, SuiteParameters] = {
    CipherSuite.TLS_SM4_GCM_SM3: SuiteParameters("gcm"),
    CipherSuite.TLS_SM4_CCM_SM3: SuiteParameters("ccm"),
}

#: Our default preference: GCM first, as Tongsuo, BabaSSL and GmSSL order them.
DEFAULT_CIPHER_SUITES = (CipherSuite.TLS_SM4_GCM_SM3, CipherSuite.TLS_SM4_CCM_SM3)

"""Cipher suites of GB/T 38636-2020 6.4.5.2 that this engine implements.

Each suite fixes the key exchange (ECC = SM2 encryption of the pre-master to
the server encryption certificate, ECDHE = SM2 key exchange with ephemeral
keys), the record protection (SM4-CBC + HMAC-SM3, or SM4-GCM) and the key
block layout of 6.5.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

TLCP_VERSION = 0x0101

#: TLS_EMPTY_RENEGOTIATION_INFO_SCSV (RFC 5746); Tongsuo offers it, TLCP does not define it.
EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF


class CipherSuite(IntEnum):
    ECC_SM4_CBC_SM3 = 0xE013
    ECC_SM4_GCM_SM3 = 0xE053
    ECDHE_SM4_CBC_SM3 = 0xE011
    ECDHE_SM4_GCM_SM3 = 0xE051


class KeyExchange(Enum):
    ECC = "ECC"
    ECDHE = "ECDHE"


class BulkCipher(Enum):
    SM4_CBC = "SM4_CBC"
    SM4_GCM = "SM4_GCM"


@dataclass(frozen=True, slots=True)
class SuiteParameters:
    key_exchange: KeyExchange
    bulk: BulkCipher
    mac_key_length: int
    key_length: int
    iv_length: int

    @property
    def key_block_length(self) -> int:
        return 2 * (self.mac_key_length + self.key_length + self.iv_length)


_CBC = (32, 16, 16)  # HMAC-SM3 key, SM4 key, CBC IV (unused on the wire: explicit IV per record)
_GCM = (0, 16, 4)  # no MAC key, SM4 key, GCM fixed (implicit) nonce part

SUITE_PARAMETERS: dict[CipherSuite, SuiteParameters] = {
    CipherSuite.ECC_SM4_CBC_SM3: SuiteParameters(KeyExchange.ECC, BulkCipher.SM4_CBC, *_CBC),
    CipherSuite.ECC_SM4_GCM_SM3: SuiteParameters(KeyExchange.ECC, BulkCipher.SM4_GCM, *_GCM),
    CipherSuite.ECDHE_SM4_CBC_SM3: SuiteParameters(KeyExchange.ECDHE, BulkCipher.SM4_CBC, *_CBC),
    CipherSuite.ECDHE_SM4_GCM_SM3: SuiteParameters(KeyExchange.ECDHE, BulkCipher.SM4_GCM, *_GCM),
}

#: ECC first: ECDHE needs a client sign+enc certificate pair (GB/T 38636-2020 6.4.5.3), which
#: most clients do not have.  A client without a certificate set never offers ECDHE.
DEFAULT_CIPHER_SUITES: tuple[CipherSuite, ...] = (
    CipherSuite.ECC_SM4_GCM_SM3,
    CipherSuite.ECC_SM4_CBC_SM3,
    CipherSuite.ECDHE_SM4_GCM_SM3,
    CipherSuite.ECDHE_SM4_CBC_SM3,
)

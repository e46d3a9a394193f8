"""SM2 curve parameters (GB/T 32918.5, curve sm2p256v1) and the curve-level helpers built on SM3.

Owns: the recommended-curve constants, the user-identity hash Z (GB/T 32918.2 clause 5.5), the key
derivation function KDF (GB/T 32918.4 clause 5.4.3, which is ANSI X9.63 KDF with SM3, taken from
``cryptography``), and fixed-width integer/byte conversions.  No point arithmetic lives here: that is the
backends' job.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from tls.crypto.errors import CryptoError, InvalidKey
from tls.crypto.hashes import sm3

DEFAULT_SM2_ID = b"1234567812345678"

#: OID of the SM2 curve / algorithm (GM/T 0006): 1.2.156.10197.1.301.
SM2_CURVE_OID = "1.2.156.10197.1.301"
#: id-ecPublicKey (RFC 5480), the SPKI/PKCS#8 algorithm used with the SM2 named curve.
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
#: OpenSSL's NID for the SM2 curve.
NID_SM2 = 1172

P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0

FIELD_SIZE = 32
POINT_SIZE = 1 + 2 * FIELD_SIZE
GENERATOR = b"\x04" + GX.to_bytes(FIELD_SIZE, "big") + GY.to_bytes(FIELD_SIZE, "big")

_Z_PREFIX = b"".join(v.to_bytes(FIELD_SIZE, "big") for v in (A, B, GX, GY))
_MAX_ID_BYTES = 0xFFFF // 8


def int_to_bytes(value: int) -> bytes:
    return value.to_bytes(FIELD_SIZE, "big")


def check_scalar(d: int) -> int:
    """Private keys must lie in [1, n-2] (GB/T 32918.1 clause 6.1): sign uses (1 + d)^-1 mod n."""
    if not 1 <= d <= N - 2:
        raise InvalidKey("SM2 private scalar out of range [1, n-2]")
    return d


def z_value(uid: bytes, point: bytes) -> bytes:
    """Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA) for an uncompressed 65-byte point."""
    if len(uid) > _MAX_ID_BYTES:
        raise CryptoError("SM2 user ID longer than 8191 bytes")
    if len(point) != POINT_SIZE or point[0] != 4:
        raise InvalidKey("SM2 point must be 65-byte uncompressed")
    entl = (len(uid) * 8).to_bytes(2, "big")
    return sm3(entl + uid + _Z_PREFIX + point[1:])


def kdf(shared: bytes, length: int) -> bytes:
    """KDF(Z, klen) of GB/T 32918: SM3 in counter mode from 1, i.e. the X9.63 KDF with SM3."""
    if length <= 0:
        raise CryptoError("KDF output length must be positive")
    return X963KDF(algorithm=hashes.SM3(), length=length, sharedinfo=None).derive(shared)


def x_bar(x: int) -> int:
    """x̄ = 2^w + (x & (2^w - 1)) with w = ceil(ceil(log2 n) / 2) - 1 = 127 (GB/T 32918.3 clause 6.1)."""
    w = 127
    return (1 << w) + (x & ((1 << w) - 1))

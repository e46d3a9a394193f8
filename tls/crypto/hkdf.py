"""HKDF (RFC 5869) with SM3, from ``cryptography``: the TLS 1.3 key schedule's two primitives.

RFC 8998 section 3.1 makes SM3 the hash of both SM suites, so HKDF-Extract and HKDF-Expand run over
HMAC-SM3.  The label and transcript framing of RFC 8446 section 7.1 (HKDF-Expand-Label, Derive-Secret)
is protocol, and lives in the TLS 1.3 engine.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from tls.crypto.errors import CryptoError
from tls.crypto.hashes import SM3_DIGEST_SIZE

_MAX_OUTPUT = 255 * SM3_DIGEST_SIZE
_SM3 = hashes.SM3()


def hkdf_sm3_extract(salt: bytes, key_material: bytes) -> bytes:
    """HKDF-Extract(salt, IKM) with SM3: the 32-byte pseudorandom key."""
    return HKDF.extract(_SM3, salt, key_material)


def hkdf_sm3_expand(pseudorandom_key: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand(PRK, info, L) with SM3; L is 1..255*32 bytes."""
    if not 1 <= length <= _MAX_OUTPUT:
        raise CryptoError(f"HKDF-SM3 output length must be 1..{_MAX_OUTPUT}")
    if len(pseudorandom_key) < SM3_DIGEST_SIZE:
        raise CryptoError("HKDF-SM3 pseudorandom key shorter than the hash")
    return HKDFExpand(_SM3, length, info).derive(pseudorandom_key)

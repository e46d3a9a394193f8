"""HKDF (RFC 5869) with SM3, from ``cryptography``: the TLS 1.3 key schedule's two primitives.

RFC 8998 section 3.1 makes SM3 the hash of both SM suites, so HKDF-Extract and HKDF-Expand run over
HMAC-SM3.  The label and transcript framing of RFC 8446 section 7.1 (HKDF-Expand-Label, Derive-Secret)
is protocol, and lives in the TLS 1.3 engine.

`HKDFSM3Key` is the key schedule's fast path: TLS 1.3 expands each secret two to four times, always to
at most one SM3 block (keys, IVs and secrets are 12..32 bytes).  HKDF-Expand to L <= HashLen is, by
RFC 5869's definition, the single block T(1) = HMAC-Hash(PRK, info || 0x01); the object keys
``cryptography``'s HMAC-SM3 with the PRK once and copies that keyed state per expansion, instead of
building an ``HKDFExpand`` (and re-keying the HMAC) every time.  Longer outputs go through
``HKDFExpand``.  tests/tls13/test_crypto_rfc8998.py checks both paths against ``HKDFExpand``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from tls.crypto.errors import CryptoError
from tls.crypto.hashes import SM3_DIGEST_SIZE

_MAX_OUTPUT = 255 * SM3_DIGEST_SIZE
_SM3 = hashes.SM3()
_FIRST_BLOCK = b"\x01"


def hkdf_sm3_extract(salt: bytes, key_material: bytes) -> bytes:
    """HKDF-Extract(salt, IKM) with SM3: the 32-byte pseudorandom key."""
    return HKDF.extract(_SM3, salt, key_material)


def _check_expand(pseudorandom_key: bytes, length: int) -> None:
    if not 1 <= length <= _MAX_OUTPUT:
        raise CryptoError(f"HKDF-SM3 output length must be 1..{_MAX_OUTPUT}")
    if len(pseudorandom_key) < SM3_DIGEST_SIZE:
        raise CryptoError("HKDF-SM3 pseudorandom key shorter than the hash")


def hkdf_sm3_expand(pseudorandom_key: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand(PRK, info, L) with SM3; L is 1..255*32 bytes."""
    _check_expand(pseudorandom_key, length)
    return HKDFExpand(_SM3, length, info).derive(pseudorandom_key)


class HKDFSM3Key:
    """A pseudorandom key keyed into HMAC-SM3 once, for several HKDF-Expand calls (see the module doc)."""

    __slots__ = ("_hmac", "_pseudorandom_key")

    def __init__(self, pseudorandom_key: bytes) -> None:
        _check_expand(pseudorandom_key, 1)
        self._pseudorandom_key = pseudorandom_key
        self._hmac = hmac.HMAC(pseudorandom_key, _SM3)

    def __repr__(self) -> str:
        return "HKDFSM3Key()"

    def expand(self, info: bytes, length: int) -> bytes:
        """HKDF-Expand(PRK, info, L) with SM3, equal to `hkdf_sm3_expand`."""
        if not 1 <= length <= SM3_DIGEST_SIZE:
            return hkdf_sm3_expand(self._pseudorandom_key, info, length)
        block = self._hmac.copy()
        block.update(info + _FIRST_BLOCK)
        return block.finalize()[:length]

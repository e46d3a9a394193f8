"""SM2 on the pure-Python ``gmssl`` package (3.2.2): the portable fallback backend.

gmssl supplies the curve arithmetic (``CryptSM2._kg``/``_add_point``/``_double_point``, on hex strings)
and ``CryptSM2.sign``/``verify`` over a precomputed digest e = SM3(Z || M).  Around it this module adds
what gmssl lacks: a CSPRNG nonce (gmssl's own uses ``random``), point validation and decompression,
GM/T 0009 DER, a C3 check on decryption (gmssl's ``decrypt`` never compares C3), and a workaround for
its public-key parsing (``lstrip("04")``) that corrupts keys whose X starts with 0x04.  SM3 and the KDF
come from ``cryptography`` via :mod:`tls.crypto.curve`.

``sign_with_k``/``encrypt_with_k`` fix the nonce for known-answer tests only.
"""

from __future__ import annotations

import hmac
import secrets
from importlib import metadata

from gmssl.sm2 import CryptSM2

from tls.crypto import encoding
from tls.crypto.curve import (
    DEFAULT_SM2_ID,
    FIELD_SIZE,
    GENERATOR,
    POINT_SIZE,
    A,
    B,
    N,
    P,
    int_to_bytes,
    kdf,
    z_value,
)
from tls.crypto.errors import CryptoError, DecryptionError, InvalidKey, InvalidSignature
from tls.crypto.hashes import sm3
from tls.crypto.keys import SM2PrivateKey, SM2PublicKey

_HEX_WIDTH = 2 * FIELD_SIZE
_G_HEX = GENERATOR[1:].hex()


def _hex_to_point(value: str | None) -> bytes:
    if value is None or len(value) != 2 * _HEX_WIDTH:
        raise CryptoError("SM2 point operation produced the point at infinity")
    return b"\x04" + bytes.fromhex(value)


class GmSSLBackend:
    """SM2 on gmssl's pure-Python arithmetic: slow and not constant-time, but needs no native library."""

    name = "gmssl"

    def __init__(self) -> None:
        self.version = metadata.version("gmssl")
        self._curve = CryptSM2(private_key="", public_key=_G_HEX)

    def describe(self) -> str:
        return f"gmssl (pure Python, gmssl {self.version})"

    def _crypt(self, private_hex: str, public_point: bytes) -> CryptSM2:
        crypt = CryptSM2(private_key=private_hex, public_key=_G_HEX, mode=1)
        # Set after construction: CryptSM2.__init__ strips a "04" prefix with str.lstrip("04"), which
        # also eats leading '0'/'4' digits of X and corrupts about one public key in 256.
        crypt.public_key = public_point[1:].hex()
        return crypt

    def decode_point(self, point: bytes) -> bytes:
        if len(point) == 33 and point[0] in (2, 3):
            x = int.from_bytes(point[1:], "big")
            if x >= P:
                raise InvalidKey("SM2 point coordinate out of range")
            rhs = (pow(x, 3, P) + A * x + B) % P
            y = pow(rhs, (P + 1) // 4, P)  # p = 3 (mod 4): the square root, if one exists
            if y * y % P != rhs:
                raise InvalidKey("SM2 point is not on the curve")
            if y & 1 != point[0] & 1:
                y = P - y
            return b"\x04" + point[1:] + int_to_bytes(y)
        if len(point) == POINT_SIZE and point[0] == 4:
            x = int.from_bytes(point[1 : 1 + FIELD_SIZE], "big")
            y = int.from_bytes(point[1 + FIELD_SIZE :], "big")
            if x >= P or y >= P or (y * y - (pow(x, 3, P) + A * x + B)) % P:
                raise InvalidKey("SM2 point is not on the curve")
            return bytes(point)
        raise InvalidKey("SM2 point must be 65-byte uncompressed or 33-byte compressed")

    def point_mul(self, scalar: int, point: bytes | None = None) -> bytes:
        scalar %= N
        if scalar == 0:
            raise CryptoError("SM2 point operation produced the point at infinity")
        base = _G_HEX if point is None else point[1:].hex()
        return _hex_to_point(self._curve._kg(scalar, base))

    def ecdh(self, scalar: int, peer_point: bytes) -> bytes:
        return self.point_mul(scalar, self.decode_point(peer_point))[1 : 1 + FIELD_SIZE]

    def point_add(self, p: bytes, q: bytes) -> bytes:
        if p == q:
            total = self._curve._double_point(p[1:].hex() + "1")
        else:
            total = self._curve._add_point(p[1:].hex() + "1", q[1:].hex())
        return _hex_to_point(self._curve._convert_jacb_to_nor(total))

    def point_add_mul(self, p: bytes, scalar: int, q: bytes) -> bytes:
        return self.point_add(p, self.point_mul(scalar, q))

    def _digest(self, public_point: bytes, message: bytes, uid: bytes) -> bytes:
        return sm3(z_value(uid, public_point) + message)

    def sign(self, key: SM2PrivateKey, message: bytes, uid: bytes = DEFAULT_SM2_ID) -> bytes:
        while True:
            signature = self.sign_with_k(key, message, secrets.randbelow(N - 1) + 1, uid)
            if signature is not None:
                return signature

    def sign_with_k(
        self, key: SM2PrivateKey, message: bytes, k: int, uid: bytes = DEFAULT_SM2_ID
    ) -> bytes | None:
        """Sign with a caller-chosen nonce ``k`` (known-answer tests); None if ``k`` is unusable."""
        public = key.public_key().to_bytes()
        crypt = self._crypt(key.scalar_bytes().hex(), public)
        raw = crypt.sign(self._digest(public, message, uid), f"{k:064x}")
        if raw is None:
            return None
        return encoding.encode_signature(int(raw[:_HEX_WIDTH], 16), int(raw[_HEX_WIDTH:], 16))

    def verify(
        self, key: SM2PublicKey, signature: bytes, message: bytes, uid: bytes = DEFAULT_SM2_ID
    ) -> None:
        r, s = encoding.decode_signature(signature)
        if (r + s) % N == 0:
            raise InvalidSignature("SM2 signature verification failed")
        public = key.to_bytes()
        crypt = self._crypt("", public)
        try:
            valid = crypt.verify(f"{r:064x}{s:064x}", self._digest(public, message, uid))
        except (TypeError, ValueError):  # gmssl hits the point at infinity on forged inputs
            valid = False
        if not valid:
            raise InvalidSignature("SM2 signature verification failed")

    def encrypt(self, key: SM2PublicKey, plaintext: bytes) -> bytes:
        while True:
            ciphertext = self.encrypt_with_k(key, plaintext, secrets.randbelow(N - 1) + 1)
            if ciphertext is not None:
                return ciphertext

    def encrypt_with_k(self, key: SM2PublicKey, plaintext: bytes, k: int) -> bytes | None:
        """GB/T 32918.4 encryption with a caller-chosen ``k`` (known-answer tests); None if unusable."""
        if not plaintext:
            raise CryptoError("SM2 cannot encrypt an empty message")
        c1 = self.point_mul(k)
        shared = self.point_mul(k, key.to_bytes())
        x2, y2 = shared[1 : 1 + FIELD_SIZE], shared[1 + FIELD_SIZE :]
        mask = kdf(x2 + y2, len(plaintext))
        if not any(mask):
            return None
        c2 = bytes(m ^ t for m, t in zip(plaintext, mask, strict=True))
        c3 = sm3(x2 + plaintext + y2)
        return encoding.encode_ciphertext(c1, c3, c2)

    def decrypt(self, key: SM2PrivateKey, ciphertext: bytes) -> bytes:
        c1, c3, c2 = encoding.decode_ciphertext(ciphertext)
        try:
            self.decode_point(c1)
        except InvalidKey:
            raise DecryptionError("SM2 ciphertext C1 is not on the curve") from None
        shared = self.point_mul(key.scalar, c1)
        x2, y2 = shared[1 : 1 + FIELD_SIZE], shared[1 + FIELD_SIZE :]
        mask = kdf(x2 + y2, len(c2))
        if not any(mask):
            raise DecryptionError("SM2 decryption failed")
        plaintext = bytes(c ^ t for c, t in zip(c2, mask, strict=True))
        if not hmac.compare_digest(sm3(x2 + plaintext + y2), c3):
            raise DecryptionError("SM2 decryption failed")
        return plaintext

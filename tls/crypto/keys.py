"""Backend-neutral SM2 key values (Contract 1) and their loaders.

:class:`SM2PublicKey` is an immutable, hashable point; :class:`SM2PrivateKey` a scalar with its public
key.  Operations dispatch to the active backend (:mod:`tls.crypto.backends`); each backend may cache its
own native handle in the key's ``_native`` slot, so a key is parsed into libcrypto once, not per call.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from tls.crypto import encoding
from tls.crypto.backends import current_backend
from tls.crypto.curve import DEFAULT_SM2_ID, FIELD_SIZE, N, check_scalar, int_to_bytes, z_value
from tls.crypto.errors import CryptoError, InvalidKey

_PRIVATE_PEM_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "SM2 PRIVATE KEY")


def _as_bytes(data: object) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidKey(f"SM2 key material must be bytes, not {type(data).__name__}")
    return bytes(data)


class SM2PublicKey:
    """An SM2 public key: a validated point on curve sm2p256v1.  Equal and hashed by its point."""

    __slots__ = ("_native", "_point")

    _point: bytes
    _native: dict[str, Any]

    def __init__(self, point: bytes, *, _validated: bool = False) -> None:
        if not _validated:
            point = current_backend().decode_point(_as_bytes(point))
        object.__setattr__(self, "_point", point)
        object.__setattr__(self, "_native", {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SM2PublicKey is immutable")

    @classmethod
    def from_bytes(cls, point: bytes) -> SM2PublicKey:
        """From 04||X||Y (65 bytes) or a compressed 33-byte point; checks the point is on the curve."""
        return cls(point)

    def to_bytes(self) -> bytes:
        return self._point

    @property
    def x(self) -> int:
        return int.from_bytes(self._point[1 : 1 + FIELD_SIZE], "big")

    @property
    def y(self) -> int:
        return int.from_bytes(self._point[1 + FIELD_SIZE :], "big")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SM2PublicKey) and self._point == other._point

    def __hash__(self) -> int:
        return hash(self._point)

    def __repr__(self) -> str:
        return f"SM2PublicKey({self._point.hex()})"

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        # copy/pickle by value: the cached native handles are per process and cannot be copied.
        return (SM2PublicKey, (self._point,))

    def verify(self, signature: bytes, message: bytes, uid: bytes = DEFAULT_SM2_ID) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` (DER) is valid for ``message``/``uid``."""
        current_backend().verify(self, signature, message, uid)

    def encrypt(self, plaintext: bytes) -> bytes:
        """SM2 public-key encryption; returns GM/T 0009 DER C1C3C2."""
        if not plaintext:
            raise CryptoError("SM2 cannot encrypt an empty message")
        return current_backend().encrypt(self, plaintext)

    def z_value(self, uid: bytes = DEFAULT_SM2_ID) -> bytes:
        return z_value(uid, self._point)

    def spki_der(self) -> bytes:
        return encoding.encode_spki(self._point)

    def spki_pem(self) -> bytes:
        return encoding.to_pem("PUBLIC KEY", self.spki_der())


class SM2PrivateKey:
    """An SM2 private key (scalar d in [1, n-2]).  ``repr`` never shows the scalar."""

    __slots__ = ("_d", "_native", "_public")

    _d: int
    _public: SM2PublicKey | None
    _native: dict[str, Any]

    def __init__(self, d: int, *, _public: SM2PublicKey | None = None) -> None:
        self._d = check_scalar(d)
        self._public = _public
        self._native = {}

    @classmethod
    def generate(cls) -> SM2PrivateKey:
        return cls(secrets.randbelow(N - 2) + 1)

    @classmethod
    def from_scalar(cls, d: int | bytes) -> SM2PrivateKey:
        """From an integer or a 32-byte big-endian scalar."""
        if isinstance(d, bytes | bytearray):
            if len(d) != FIELD_SIZE:
                raise InvalidKey("raw SM2 private key must be 32 bytes")
            d = int.from_bytes(d, "big")
        if not isinstance(d, int):
            raise InvalidKey("SM2 private scalar must be int or bytes")
        return cls(d)

    @property
    def scalar(self) -> int:
        return self._d

    def scalar_bytes(self) -> bytes:
        return int_to_bytes(self._d)

    def public_key(self) -> SM2PublicKey:
        if self._public is None:
            self._public = SM2PublicKey(current_backend().point_mul(self._d), _validated=True)
        return self._public

    def __repr__(self) -> str:
        return f"SM2PrivateKey(public={self.public_key().to_bytes().hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SM2PrivateKey) and hmac.compare_digest(
            self.scalar_bytes(), other.scalar_bytes()
        )

    def __hash__(self) -> int:
        return hash(self.public_key())

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (SM2PrivateKey, (self._d,))

    def sign(self, message: bytes, uid: bytes = DEFAULT_SM2_ID) -> bytes:
        """SM2 signature (DER SEQUENCE{r, s}) over SM3(Z_A || message)."""
        return current_backend().sign(self, message, uid)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Decrypt GM/T 0009 DER C1C3C2; raises :class:`DecryptionError`."""
        return current_backend().decrypt(self, ciphertext)

    def exchange(self, peer: SM2PublicKey) -> bytes:
        """Plain ECDH on curveSM2: the 32-byte x coordinate of [d]peer."""
        return current_backend().point_mul(self._d, peer.to_bytes())[1 : 1 + FIELD_SIZE]

    def exchange_point(self, peer_point: bytes) -> bytes:
        """`exchange` with a peer point as received (65-byte uncompressed or 33-byte compressed).

        The backend validates the point (malformed, off the curve or infinity: :class:`InvalidKey`) in
        the same call as the multiplication, instead of once for an `SM2PublicKey` and again here.
        """
        return current_backend().ecdh(self._d, _as_bytes(peer_point))

    def to_pkcs8_der(self, password: bytes | None = None, *, iterations: int | None = None) -> bytes:
        """PKCS#8 DER; with ``password`` GmSSL-compatible PBES2 (PBKDF2-HMAC-SM3, SM4-CBC)."""
        der = encoding.encode_pkcs8(self._d, self.public_key().to_bytes())
        if password is None:
            return der
        return encoding.encrypt_pkcs8(
            der, password, iterations=iterations or encoding.DEFAULT_PBKDF2_ITERATIONS
        )

    def to_pkcs8_pem(self, password: bytes | None = None, *, iterations: int | None = None) -> bytes:
        label = "PRIVATE KEY" if password is None else "ENCRYPTED PRIVATE KEY"
        return encoding.to_pem(label, self.to_pkcs8_der(password, iterations=iterations))

    def to_sec1_der(self) -> bytes:
        return encoding.encode_sec1(self._d, self.public_key().to_bytes())

    def to_sec1_pem(self) -> bytes:
        return encoding.to_pem("EC PRIVATE KEY", self.to_sec1_der())


def load_sm2_private_key(data: bytes, password: bytes | None = None) -> SM2PrivateKey:
    """Load PEM or DER PKCS#8, encrypted PKCS#8 (PBES2), SEC1, or a raw 32-byte scalar.

    An encoded public key, when present, must match the scalar.  Raises :class:`InvalidKey`.
    """
    data = _as_bytes(data)
    if len(data) == FIELD_SIZE:
        return SM2PrivateKey.from_scalar(data)
    der: bytes | None = None
    blocks = encoding.pem_blocks(data)
    if blocks:
        for label, headers, block in blocks:
            if label in _PRIVATE_PEM_LABELS:
                if "DEK-Info" in headers:
                    raise InvalidKey("legacy PEM encryption is not supported; use PKCS#8")
                der = block
                break
        if der is None:
            raise InvalidKey("no private key in PEM input")
    else:
        der = data
    decoded = encoding.decode_private_der(der, password)
    key = SM2PrivateKey(decoded.scalar)
    if decoded.public_point is not None:
        encoded = SM2PublicKey(decoded.public_point)
        if encoded != key.public_key():
            raise InvalidKey("public key in the encoding does not match the private scalar")
    return key


def load_sm2_public_key(data: bytes) -> SM2PublicKey:
    """Load a SubjectPublicKeyInfo (PEM or DER) or a raw point (65-byte uncompressed / 33 compressed)."""
    data = _as_bytes(data)
    blocks = encoding.pem_blocks(data)
    if blocks:
        for label, _headers, block in blocks:
            if label == "PUBLIC KEY":
                return SM2PublicKey(encoding.decode_spki(block))
        raise InvalidKey("no PUBLIC KEY block in PEM input")
    if len(data) in (33, 65) and data[0] in (2, 3, 4):
        return SM2PublicKey(data)
    return SM2PublicKey(encoding.decode_spki(data))

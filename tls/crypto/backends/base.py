"""The interface every SM2 backend implements.

A backend turns backend-neutral key values (:class:`~tls.crypto.keys.SM2PrivateKey`,
:class:`~tls.crypto.keys.SM2PublicKey`) into SM2 operations.  Keys reaching a backend are already
validated; signatures and ciphertexts are not, and every backend applies the same strict DER rules
(:mod:`tls.crypto.encoding`) so both reject exactly the same inputs with :mod:`tls.crypto.errors` types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tls.crypto.curve import DEFAULT_SM2_ID

if TYPE_CHECKING:
    from tls.crypto.keys import SM2PrivateKey, SM2PublicKey


class SM2Backend(Protocol):
    name: str

    def describe(self) -> str:
        """One line naming the implementation and its version."""
        ...

    def decode_point(self, point: bytes) -> bytes:
        """Validate an uncompressed (65) or compressed (33) point; return it uncompressed.

        Raises :class:`InvalidKey` if it is malformed, not on the curve or the point at infinity.
        """
        ...

    def point_mul(self, scalar: int, point: bytes | None = None) -> bytes:
        """[scalar]point (the generator when ``point`` is None); 1 <= scalar < n, result never infinity."""
        ...

    def ecdh(self, scalar: int, peer_point: bytes) -> bytes:
        """The x coordinate of [scalar]peer_point, validating ``peer_point`` as `decode_point` does.

        For a point received from a peer: the validation and the multiplication in one call (a backend
        that validates while it multiplies does not decode the point twice).
        """
        ...

    def point_add(self, p: bytes, q: bytes) -> bytes:
        """p + q for validated points; raises :class:`CryptoError` if the sum is the point at infinity."""
        ...

    def point_add_mul(self, p: bytes, scalar: int, q: bytes) -> bytes:
        """p + [scalar]q for validated points and a PUBLIC scalar (1 <= scalar < n).

        May run in variable time, so it must never see a secret scalar.  Raises :class:`CryptoError` if
        the result is the point at infinity.
        """
        ...

    def sign(self, key: SM2PrivateKey, message: bytes, uid: bytes = DEFAULT_SM2_ID) -> bytes:
        """DER SEQUENCE{r, s} over SM3(Z_A || message)."""
        ...

    def verify(
        self, key: SM2PublicKey, signature: bytes, message: bytes, uid: bytes = DEFAULT_SM2_ID
    ) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` is valid."""
        ...

    def encrypt(self, key: SM2PublicKey, plaintext: bytes) -> bytes:
        """GM/T 0009 DER C1C3C2 ciphertext."""
        ...

    def decrypt(self, key: SM2PrivateKey, ciphertext: bytes) -> bytes:
        """Plaintext of a DER C1C3C2 ciphertext; raises :class:`DecryptionError`."""
        ...

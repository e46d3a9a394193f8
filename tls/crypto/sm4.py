"""SM4 (GB/T 32907) block cipher modes, from ``cryptography``.

One-shot functions (Contract 1) plus reusable per-key objects for the record layers:
:class:`SM4GCM` (AEAD, ciphertext || 16-byte tag), :class:`SM4CCM` (AEAD, RFC 8998 TLS_SM4_CCM_SM3) and
:class:`SM4CBC` (no padding; the record layer pads); `keyed_sm4_gcm` picks the cheapest SM4-GCM for many
messages under one key.
Input errors: a key that is not 16 bytes raises :class:`InvalidKey`; a bad IV/nonce length or a CBC/ECB
input that is not a multiple of 16 bytes raises :class:`CryptoError`; a GCM tag mismatch or a ciphertext
shorter than the tag raises :class:`DecryptionError`.

SM4-CCM comes from a different library: ``cryptography`` has no CCM mode for SM4 (only the ``AESCCM``
AEAD), so :class:`SM4CCM` drives ``sm4-ccm`` in tongsuopy's libcrypto (Tongsuo, BabaSSL 8.3.2) through
tongsuopy's compiled binding (`tls.crypto.sm4_tongsuo`, which also has a reusable-context SM4-GCM).  The
package is the optional ``sm4-ccm`` extra (and a development dependency); without it :class:`SM4CCM`
raises :class:`UnsupportedAlgorithm` and :func:`sm4_ccm_available` is False, so TLS 1.3 simply does not
offer TLS_SM4_CCM_SM3.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tls.crypto.errors import CryptoError, DecryptionError, InvalidKey, UnsupportedAlgorithm
from tls.crypto.sm4_tongsuo import SM4CCM, TongsuoSM4GCM

__all__ = [
    "SM4CBC",
    "SM4CCM",
    "SM4GCM",
    "TongsuoSM4GCM",
    "keyed_sm4_gcm",
    "sm4_cbc_decrypt",
    "sm4_cbc_encrypt",
    "sm4_ccm_available",
    "sm4_ctr",
    "sm4_ecb_decrypt",
    "sm4_ecb_encrypt",
    "sm4_gcm_decrypt",
    "sm4_gcm_encrypt",
]

SM4_BLOCK_SIZE = 16
SM4_KEY_SIZE = 16
GCM_TAG_SIZE = 16


def _algorithm(key: bytes) -> algorithms.SM4:
    if len(key) != SM4_KEY_SIZE:
        raise InvalidKey(f"SM4 key must be {SM4_KEY_SIZE} bytes, got {len(key)}")
    return algorithms.SM4(key)


def _check_blocks(data: bytes) -> None:
    if len(data) % SM4_BLOCK_SIZE:
        raise CryptoError(f"SM4 input length {len(data)} is not a multiple of {SM4_BLOCK_SIZE}")


def _check_iv(iv: bytes) -> None:
    if len(iv) != SM4_BLOCK_SIZE:
        raise CryptoError(f"SM4 IV must be {SM4_BLOCK_SIZE} bytes, got {len(iv)}")


def _check_gcm_nonce(nonce: bytes) -> None:
    if not 8 <= len(nonce) <= 128:
        raise CryptoError(f"SM4-GCM nonce must be 8..128 bytes, got {len(nonce)}")


def sm4_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    _check_blocks(data)
    enc = Cipher(_algorithm(key), modes.ECB()).encryptor()  # noqa: S305 - ECB is a Contract 1 primitive (KATs)
    return enc.update(data) + enc.finalize()


def sm4_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    _check_blocks(data)
    dec = Cipher(_algorithm(key), modes.ECB()).decryptor()  # noqa: S305 - ECB is a Contract 1 primitive (KATs)
    return dec.update(data) + dec.finalize()


class SM4CBC:
    """SM4-CBC without padding, keyed once; each call takes its own 16-byte IV."""

    __slots__ = ("_algorithm",)

    def __init__(self, key: bytes) -> None:
        self._algorithm = _algorithm(key)

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        _check_iv(iv)
        _check_blocks(data)
        enc = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        return enc.update(data) + enc.finalize()

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        _check_iv(iv)
        _check_blocks(data)
        dec = Cipher(self._algorithm, modes.CBC(iv)).decryptor()
        return dec.update(data) + dec.finalize()


class SM4GCM:
    """SM4-GCM AEAD keyed once: ``encrypt`` returns ciphertext || tag, ``decrypt`` checks the tag."""

    __slots__ = ("_algorithm",)

    def __init__(self, key: bytes) -> None:
        self._algorithm = _algorithm(key)

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        _check_gcm_nonce(nonce)
        enc = Cipher(self._algorithm, modes.GCM(nonce)).encryptor()
        if aad:
            enc.authenticate_additional_data(aad)
        ciphertext = enc.update(plaintext) + enc.finalize()
        return ciphertext + enc.tag

    def decrypt(self, nonce: bytes, data: bytes | bytearray, aad: bytes = b"") -> bytes:
        _check_gcm_nonce(nonce)
        if len(data) < GCM_TAG_SIZE:
            raise DecryptionError("SM4-GCM input shorter than the tag")
        body, tag = data[:-GCM_TAG_SIZE], bytes(data[-GCM_TAG_SIZE:])
        dec = Cipher(self._algorithm, modes.GCM(nonce, tag)).decryptor()
        if aad:
            dec.authenticate_additional_data(aad)
        plaintext = dec.update(body)
        try:
            dec.finalize()
        except (InvalidTag, ValueError):
            # A GCM decryptor's finalize can only fail on authentication. ``cryptography`` reports
            # that as InvalidTag only while its OpenSSL error queue is otherwise empty; a stale entry
            # left there by an unrelated call (pyOpenSSL, a failed key load) turns it into ValueError.
            raise DecryptionError("SM4-GCM tag mismatch") from None
        return plaintext


def keyed_sm4_gcm(key: bytes) -> SM4GCM | TongsuoSM4GCM:
    """SM4-GCM for many messages under one key (a record layer direction).

    tongsuopy's reusable context (`TongsuoSM4GCM`) where tongsuopy is installed, else `SM4GCM`; both
    compute the same function (tests/tls13/test_crypto_rfc8998.py).
    """
    try:
        return TongsuoSM4GCM(key)
    except UnsupportedAlgorithm:
        return SM4GCM(key)


def sm4_ccm_available() -> bool:
    """Whether :class:`SM4CCM` works here (tongsuopy installed and its libcrypto has SM4-CCM)."""
    try:
        SM4CCM(bytes(SM4_KEY_SIZE))
    except UnsupportedAlgorithm:
        return False
    return True


def sm4_cbc_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    return SM4CBC(key).encrypt(iv, data)


def sm4_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    return SM4CBC(key).decrypt(iv, data)


def sm4_ctr(key: bytes, nonce16: bytes, data: bytes) -> bytes:
    """SM4-CTR with a 16-byte initial counter block (encryption and decryption are the same)."""
    _check_iv(nonce16)
    ctx = Cipher(_algorithm(key), modes.CTR(nonce16)).encryptor()
    return ctx.update(data) + ctx.finalize()


def sm4_gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    return SM4GCM(key).encrypt(nonce, plaintext, aad)


def sm4_gcm_decrypt(key: bytes, nonce: bytes, data: bytes, aad: bytes = b"") -> bytes:
    return SM4GCM(key).decrypt(nonce, data, aad)

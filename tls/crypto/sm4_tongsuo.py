"""SM4 AEADs from tongsuopy's libcrypto (Tongsuo, BabaSSL 8.3.2) with keyed, reusable cipher contexts.

``cryptography`` has no SM4-CCM, and its ``Cipher`` API builds a context (and validates its arguments in
Python) for every message.  tongsuopy, the pyca/cryptography fork built on Tongsuo, ships a compiled
cffi binding of its libcrypto; through it an ``EVP_CIPHER_CTX`` is keyed once per direction and each
message only installs its nonce, which costs a handful of C calls.  The TLS 1.3 record layer seals and
opens every record with one of these (`tls.crypto.keyed_sm4_gcm`, `SM4CCM`).

Both classes have `SM4GCM`'s interface (``encrypt(nonce, plaintext, aad) -> ciphertext || tag``,
``decrypt`` raising `DecryptionError`) and its tag size (16).  An object serialises its calls with a
lock, so it may be shared between threads like `SM4GCM`.  Without tongsuopy (the optional ``sm4-ccm``
extra) constructing one raises `UnsupportedAlgorithm`.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from tls.crypto.errors import CryptoError, DecryptionError, InvalidKey, UnsupportedAlgorithm

SM4_KEY_SIZE = 16
TAG_SIZE = 16


class _Library:
    """tongsuopy's binding (``lib``, ``ffi``) and the ``EVP_CIPHER`` objects looked up in it."""

    def __init__(self) -> None:
        try:
            from tongsuopy.backends.tongsuo.binding import Binding
        except ImportError:
            raise UnsupportedAlgorithm("needs the tongsuopy package (extra 'sm4-ccm')") from None
        binding = Binding()
        self.lib: Any = binding.lib
        self.ffi: Any = binding.ffi
        #: output buffers are written in full (or dropped on failure), so they need no zeroing first
        self.new_uncleared: Any = binding.ffi.new_allocator(should_clear_after_alloc=False)
        self._ciphers: dict[bytes, Any] = {}

    def cipher(self, name: bytes) -> Any:
        cipher = self._ciphers.get(name)
        if cipher is None:
            cipher = self.lib.EVP_get_cipherbyname(name)
            if cipher == self.ffi.NULL:
                self.lib.ERR_clear_error()
                raise UnsupportedAlgorithm(f"tongsuopy's libcrypto has no {name.decode()}")
            self._ciphers[name] = cipher
        return cipher


_LIBRARY: _Library | None = None
#: the loaded library's lib, ffi and output allocator, for the per-message paths (set with _LIBRARY)
_LIBRARY_LIB: Any = None
_LIBRARY_FFI: Any = None
_NEW_OUTPUT: Any = None


def _library() -> _Library:
    global _LIBRARY, _LIBRARY_LIB, _LIBRARY_FFI, _NEW_OUTPUT
    if _LIBRARY is None:
        library = _Library()
        _LIBRARY, _LIBRARY_LIB, _LIBRARY_FFI = library, library.lib, library.ffi
        _NEW_OUTPUT = library.new_uncleared
    return _LIBRARY


class _TongsuoAEAD:
    """One SM4 key in an ``EVP_CIPHER_CTX`` per direction (made on first use, kept for every message)."""

    _cipher_name: ClassVar[bytes]
    _label: ClassVar[str]
    _nonce_lengths: ClassVar[range]
    #: CCM: the message length goes in before the AAD, and the tag length is fixed when the key is set
    _announces_length: ClassVar[bool] = False

    __slots__ = ("_cipher", "_contexts", "_key", "_lock", "_out_length")

    def __init__(self, key: bytes) -> None:
        if len(key) != SM4_KEY_SIZE:
            raise InvalidKey(f"SM4 key must be {SM4_KEY_SIZE} bytes, got {len(key)}")
        library = _library()
        self._cipher = library.cipher(self._cipher_name)
        self._key = bytes(key)
        #: (encrypt, nonce length) -> keyed context
        self._contexts: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()
        self._out_length = library.ffi.new("int *")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _check_nonce(self, nonce: bytes) -> None:
        if len(nonce) not in self._nonce_lengths:
            raise CryptoError(
                f"{self._label} nonce must be {self._nonce_lengths.start}..{self._nonce_lengths.stop - 1} "
                f"bytes, got {len(nonce)}"
            )

    def _new_context(self, encrypt: int, nonce_length: int) -> Any:
        """A context keyed for one direction and nonce length (one per direction in TLS)."""
        library = _library()
        lib, ffi = library.lib, library.ffi
        ctx = lib.EVP_CIPHER_CTX_new()
        if ctx == ffi.NULL:
            raise MemoryError("EVP_CIPHER_CTX_new")
        ctx = ffi.gc(ctx, lib.EVP_CIPHER_CTX_free)
        ok = (
            lib.EVP_CipherInit_ex(ctx, self._cipher, ffi.NULL, ffi.NULL, ffi.NULL, encrypt) == 1
            and lib.EVP_CIPHER_CTX_ctrl(ctx, lib.EVP_CTRL_AEAD_SET_IVLEN, nonce_length, ffi.NULL) == 1
            and (
                not self._announces_length
                or lib.EVP_CIPHER_CTX_ctrl(ctx, lib.EVP_CTRL_AEAD_SET_TAG, TAG_SIZE, ffi.NULL) == 1
            )
            and lib.EVP_CipherInit_ex(ctx, ffi.NULL, ffi.NULL, self._key, ffi.NULL, encrypt) == 1
        )
        if not ok:
            lib.ERR_clear_error()
            raise CryptoError(f"{self._label} context setup failed")
        self._contexts[(encrypt, nonce_length)] = ctx
        return ctx

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        self._check_nonce(nonce)
        lib, ffi = _LIBRARY_LIB, _LIBRARY_FFI
        size = len(plaintext)
        out = _NEW_OUTPUT("unsigned char[]", size + TAG_SIZE)
        with self._lock:
            ctx = self._contexts.get((1, len(nonce))) or self._new_context(1, len(nonce))
            out_length = self._out_length
            ok = (
                lib.EVP_CipherInit_ex(ctx, ffi.NULL, ffi.NULL, ffi.NULL, nonce, 1) == 1
                and (
                    not self._announces_length
                    or lib.EVP_CipherUpdate(ctx, ffi.NULL, out_length, ffi.NULL, size) == 1
                )
                and (not aad or lib.EVP_CipherUpdate(ctx, ffi.NULL, out_length, aad, len(aad)) == 1)
                and lib.EVP_CipherUpdate(ctx, out, out_length, plaintext, size) == 1
                and lib.EVP_CipherFinal_ex(ctx, out + size, out_length) == 1
                and lib.EVP_CIPHER_CTX_ctrl(ctx, lib.EVP_CTRL_AEAD_GET_TAG, TAG_SIZE, out + size) == 1
            )
            if not ok:
                lib.ERR_clear_error()
                del self._contexts[(1, len(nonce))]
                raise CryptoError(f"{self._label} encryption failed")
        return ffi.buffer(out)[:]

    def decrypt(self, nonce: bytes, data: bytes | bytearray, aad: bytes = b"") -> bytes:
        self._check_nonce(nonce)
        if len(data) < TAG_SIZE:
            raise DecryptionError(f"{self._label} input shorter than the tag")
        lib, ffi = _LIBRARY_LIB, _LIBRARY_FFI
        size = len(data) - TAG_SIZE
        sealed = ffi.from_buffer(data)
        out = _NEW_OUTPUT("unsigned char[]", size or 1)
        with self._lock:
            ctx = self._contexts.get((0, len(nonce))) or self._new_context(0, len(nonce))
            out_length = self._out_length
            ok = (
                lib.EVP_CipherInit_ex(ctx, ffi.NULL, ffi.NULL, ffi.NULL, nonce, 0) == 1
                and lib.EVP_CIPHER_CTX_ctrl(ctx, lib.EVP_CTRL_AEAD_SET_TAG, TAG_SIZE, sealed + size) == 1
                and (
                    not self._announces_length
                    or lib.EVP_CipherUpdate(ctx, ffi.NULL, out_length, ffi.NULL, size) == 1
                )
                and (not aad or lib.EVP_CipherUpdate(ctx, ffi.NULL, out_length, aad, len(aad)) == 1)
                # CCM checks the tag in this update; GCM in the final step
                and lib.EVP_CipherUpdate(ctx, out, out_length, sealed, size) == 1
                and (self._announces_length or lib.EVP_CipherFinal_ex(ctx, out + size, out_length) == 1)
            )
            if not ok:
                lib.ERR_clear_error()
                raise DecryptionError(f"{self._label} tag mismatch")
        return ffi.buffer(out, size)[:]


class TongsuoSM4GCM(_TongsuoAEAD):
    """SM4-GCM (16-byte tag), the same function as `SM4GCM` with a reusable context."""

    _cipher_name = b"sm4-gcm"
    _label = "SM4-GCM"
    _nonce_lengths = range(8, 129)
    __slots__ = ()


class SM4CCM(_TongsuoAEAD):
    """SM4-CCM (16-byte tag; RFC 8998 TLS_SM4_CCM_SM3); the nonce is 7..13 bytes (RFC 3610), 12 in TLS."""

    _cipher_name = b"sm4-ccm"
    _label = "SM4-CCM"
    _nonce_lengths = range(7, 14)
    _announces_length = True
    __slots__ = ()

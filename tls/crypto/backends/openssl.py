"""SM2 on the system libcrypto 3.x through a minimal cffi ABI-mode binding.

The library is the one Python's ``ssl`` module already loaded (found in /proc/self/maps, falling back to
``libcrypto.so.3``), so smgate adds no native build step.  Signatures use ``EVP_DigestSign`` with a
pre-made ``EVP_PKEY_CTX`` on which the distinguishing ID is ALWAYS set explicitly via
``EVP_PKEY_CTX_set1_id`` (a real function in 3.0), because libcrypto's default for an unset ID differs
from GB/T 32918's 1234567812345678.  Key exchange and ECDH use ``EC_POINT`` arithmetic on the SM2 group.

``EVP_PKEY`` handles are cached on each key value (and by point in a small LRU for public keys, since
peer certificates are re-parsed per handshake) and released via ``ffi.gc``.  Every failure path clears
the thread's OpenSSL error queue, which Python's ``ssl`` module shares.
"""

from __future__ import annotations

import ctypes.util
import importlib
import ssl  # noqa: F401 - maps the libcrypto Python's ssl links, for find_libcrypto
import threading
from collections import OrderedDict
from typing import Any

from tls.crypto import encoding
from tls.crypto.curve import DEFAULT_SM2_ID, FIELD_SIZE, NID_SM2, POINT_SIZE
from tls.crypto.errors import CryptoError, DecryptionError, InvalidKey, InvalidSignature, UnsupportedAlgorithm
from tls.crypto.keys import SM2PrivateKey, SM2PublicKey

# cffi ships no type stubs; importing it dynamically keeps the binding typed as Any under strict mypy.
_cffi: Any = importlib.import_module("cffi")

_CDEF = """
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_pkey_ctx_st EVP_PKEY_CTX;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_md_st EVP_MD;
typedef struct engine_st ENGINE;
typedef struct ec_group_st EC_GROUP;
typedef struct ec_point_st EC_POINT;
typedef struct bignum_st BIGNUM;
typedef struct bignum_ctx BN_CTX;

unsigned long OpenSSL_version_num(void);
const char *OpenSSL_version(int type);
unsigned long ERR_get_error(void);
void ERR_clear_error(void);

EVP_PKEY *d2i_AutoPrivateKey(EVP_PKEY **a, const unsigned char **pp, long length);
EVP_PKEY *d2i_PUBKEY(EVP_PKEY **a, const unsigned char **pp, long length);
void EVP_PKEY_free(EVP_PKEY *pkey);
int EVP_PKEY_is_a(const EVP_PKEY *pkey, const char *name);

EVP_PKEY_CTX *EVP_PKEY_CTX_new(EVP_PKEY *pkey, ENGINE *e);
void EVP_PKEY_CTX_free(EVP_PKEY_CTX *ctx);
int EVP_PKEY_CTX_set1_id(EVP_PKEY_CTX *ctx, const void *id, int len);

const EVP_MD *EVP_sm3(void);
EVP_MD_CTX *EVP_MD_CTX_new(void);
void EVP_MD_CTX_free(EVP_MD_CTX *ctx);
void EVP_MD_CTX_set_pkey_ctx(EVP_MD_CTX *ctx, EVP_PKEY_CTX *pctx);
int EVP_DigestSignInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e, EVP_PKEY *pkey);
int EVP_DigestSign(EVP_MD_CTX *ctx, unsigned char *sigret, size_t *siglen,
                   const unsigned char *tbs, size_t tbslen);
int EVP_DigestVerifyInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e, EVP_PKEY *pkey);
int EVP_DigestVerify(EVP_MD_CTX *ctx, const unsigned char *sigret, size_t siglen,
                     const unsigned char *tbs, size_t tbslen);

int EVP_PKEY_encrypt_init(EVP_PKEY_CTX *ctx);
int EVP_PKEY_encrypt(EVP_PKEY_CTX *ctx, unsigned char *out, size_t *outlen,
                     const unsigned char *in, size_t inlen);
int EVP_PKEY_decrypt_init(EVP_PKEY_CTX *ctx);
int EVP_PKEY_decrypt(EVP_PKEY_CTX *ctx, unsigned char *out, size_t *outlen,
                     const unsigned char *in, size_t inlen);

EC_GROUP *EC_GROUP_new_by_curve_name(int nid);
void EC_GROUP_free(EC_GROUP *group);
EC_POINT *EC_POINT_new(const EC_GROUP *group);
void EC_POINT_free(EC_POINT *point);
int EC_POINT_oct2point(const EC_GROUP *group, EC_POINT *p, const unsigned char *buf, size_t len, BN_CTX *ctx);
size_t EC_POINT_point2oct(const EC_GROUP *group, const EC_POINT *p, int form,
                          unsigned char *buf, size_t len, BN_CTX *ctx);
int EC_POINT_mul(const EC_GROUP *group, EC_POINT *r, const BIGNUM *n, const EC_POINT *q,
                 const BIGNUM *m, BN_CTX *ctx);
int EC_POINTs_mul(const EC_GROUP *group, EC_POINT *r, const BIGNUM *n, size_t num,
                  const EC_POINT *p[], const BIGNUM *m[], BN_CTX *ctx);
int EC_POINT_add(const EC_GROUP *group, EC_POINT *r, const EC_POINT *a, const EC_POINT *b, BN_CTX *ctx);
int EC_POINT_is_at_infinity(const EC_GROUP *group, const EC_POINT *p);
int EC_POINT_is_on_curve(const EC_GROUP *group, const EC_POINT *point, BN_CTX *ctx);

BIGNUM *BN_bin2bn(const unsigned char *s, int len, BIGNUM *ret);
void BN_clear_free(BIGNUM *a);
void BN_set_flags(BIGNUM *b, int n);
BN_CTX *BN_CTX_new(void);
void BN_CTX_free(BN_CTX *c);
"""

_POINT_CONVERSION_UNCOMPRESSED = 4
_BN_FLG_CONSTTIME = 0x04
_OPENSSL_VERSION = 0
_PUBLIC_CACHE_SIZE = 512


def libcrypto_candidates() -> list[str]:
    """libcrypto paths to try, best first: those already mapped into this process (Python's ``ssl``,
    imported above, links one), libcrypto.so.3 before other versions, then the linker's default."""
    mapped: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(" ")[-1]
                if "/libcrypto.so" in path and path not in mapped:
                    mapped.append(path)
    except OSError:
        pass
    mapped.sort(key=lambda path: not path.endswith("libcrypto.so.3"))
    fallback = [name for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3") if name]
    return mapped + [name for name in fallback if name not in mapped]


def find_libcrypto() -> str:
    """The first libcrypto candidate (see :func:`libcrypto_candidates`)."""
    return libcrypto_candidates()[0]


class OpenSSLBackend:
    """SM2 over libcrypto 3.x; raises on construction if the library or its SM2 support is missing."""

    name = "openssl"

    def __init__(self, library: str | None = None) -> None:
        self._ffi = _cffi.FFI()
        self._ffi.cdef(_CDEF)
        self.library_path, self._lib = self._open(library)
        self.version = self._ffi.string(self._lib.OpenSSL_version(_OPENSSL_VERSION)).decode(
            "ascii", "replace"
        )
        group = self._lib.EC_GROUP_new_by_curve_name(NID_SM2)
        if group == self._ffi.NULL:
            self._lib.ERR_clear_error()
            raise UnsupportedAlgorithm("libcrypto has no SM2 curve")
        self._group = self._ffi.gc(group, self._lib.EC_GROUP_free)
        self._sm3 = self._lib.EVP_sm3()
        if self._sm3 == self._ffi.NULL:
            raise UnsupportedAlgorithm("libcrypto has no SM3")
        self._public_cache: OrderedDict[bytes, Any] = OrderedDict()
        self._cache_lock = threading.Lock()
        # A build can ship the SM2 curve yet have SM2 signatures disabled by provider configuration.
        probe = SM2PrivateKey(0x1234567, _public=SM2PublicKey(self.point_mul(0x1234567), _validated=True))
        self.verify(probe.public_key(), self.sign(probe, b"probe"), b"probe")

    def _open(self, library: str | None) -> tuple[str, Any]:
        reasons = []
        for path in [library] if library else libcrypto_candidates():
            try:
                lib = self._ffi.dlopen(path)
                if lib.OpenSSL_version_num() >= 0x30000000:
                    return path, lib
                reasons.append(f"{path}: older than 3.0")
            except (OSError, AttributeError) as exc:
                reasons.append(f"{path}: {exc}")
        raise UnsupportedAlgorithm("no usable libcrypto 3.x: " + "; ".join(reasons))

    def describe(self) -> str:
        return f"openssl ({self.version}, {self.library_path})"

    # --- helpers -----------------------------------------------------------------------------------

    def _clear_errors(self) -> None:
        self._lib.ERR_clear_error()

    def _point(self, encoded: bytes) -> Any:
        point = self._ffi.gc(self._lib.EC_POINT_new(self._group), self._lib.EC_POINT_free)
        if point == self._ffi.NULL:
            raise MemoryError("EC_POINT_new")
        ok = self._lib.EC_POINT_oct2point(self._group, point, encoded, len(encoded), self._ffi.NULL)
        if (
            ok != 1
            or self._lib.EC_POINT_is_at_infinity(self._group, point) == 1
            or self._lib.EC_POINT_is_on_curve(self._group, point, self._ffi.NULL) != 1
        ):
            self._clear_errors()
            raise InvalidKey("SM2 point is malformed or not on the curve")
        return point

    def _encode_point(self, point: Any) -> bytes:
        if self._lib.EC_POINT_is_at_infinity(self._group, point) == 1:
            raise CryptoError("SM2 point operation produced the point at infinity")
        buf = self._ffi.new("unsigned char[]", POINT_SIZE)
        size = self._lib.EC_POINT_point2oct(
            self._group, point, _POINT_CONVERSION_UNCOMPRESSED, buf, POINT_SIZE, self._ffi.NULL
        )
        if size != POINT_SIZE:
            self._clear_errors()
            raise CryptoError("EC_POINT_point2oct failed")
        return bytes(self._ffi.buffer(buf, POINT_SIZE))

    def _bignum(self, value: int, *, secret: bool = True) -> Any:
        raw = value.to_bytes(32, "big")
        bn = self._lib.BN_bin2bn(raw, len(raw), self._ffi.NULL)
        if bn == self._ffi.NULL:
            raise MemoryError("BN_bin2bn")
        if secret:
            self._lib.BN_set_flags(bn, _BN_FLG_CONSTTIME)
        return self._ffi.gc(bn, self._lib.BN_clear_free)

    def _private_pkey(self, key: SM2PrivateKey) -> Any:
        pkey = key._native.get(self.name)
        if pkey is None:
            der = encoding.encode_sec1(key.scalar, key.public_key().to_bytes())
            pkey = self._load(self._lib.d2i_AutoPrivateKey, der)
            key._native[self.name] = pkey
        return pkey

    def _public_pkey(self, key: SM2PublicKey) -> Any:
        pkey = key._native.get(self.name)
        if pkey is not None:
            return pkey
        point = key.to_bytes()
        with self._cache_lock:
            pkey = self._public_cache.get(point)
            if pkey is not None:
                self._public_cache.move_to_end(point)
        if pkey is None:
            pkey = self._load(self._lib.d2i_PUBKEY, key.spki_der())
            with self._cache_lock:
                self._public_cache[point] = pkey
                while len(self._public_cache) > _PUBLIC_CACHE_SIZE:
                    self._public_cache.popitem(last=False)
        key._native[self.name] = pkey
        return pkey

    def _load(self, d2i: Any, der: bytes) -> Any:
        buf = self._ffi.from_buffer(der)
        pp = self._ffi.new("const unsigned char **", buf)
        pkey = d2i(self._ffi.NULL, pp, len(der))
        if pkey == self._ffi.NULL:
            self._clear_errors()
            raise InvalidKey("libcrypto rejected the SM2 key")
        pkey = self._ffi.gc(pkey, self._lib.EVP_PKEY_free)
        if self._lib.EVP_PKEY_is_a(pkey, b"SM2") != 1:
            raise InvalidKey("libcrypto did not load the key as SM2")
        return pkey

    def _pkey_ctx(self, pkey: Any) -> Any:
        ctx = self._lib.EVP_PKEY_CTX_new(pkey, self._ffi.NULL)
        if ctx == self._ffi.NULL:
            self._clear_errors()
            raise CryptoError("EVP_PKEY_CTX_new failed")
        return self._ffi.gc(ctx, self._lib.EVP_PKEY_CTX_free)

    def _md_ctx(self, pkey: Any, uid: bytes) -> tuple[Any, Any]:
        """An EVP_MD_CTX whose SM2 pkey ctx carries ``uid``; returns (md_ctx, pkey_ctx) to keep both alive."""
        if len(uid) > 0xFFFF // 8:
            raise CryptoError("SM2 user ID longer than 8191 bytes")
        pctx = self._pkey_ctx(pkey)
        if self._lib.EVP_PKEY_CTX_set1_id(pctx, uid, len(uid)) <= 0:
            self._clear_errors()
            raise CryptoError("EVP_PKEY_CTX_set1_id failed")
        mctx = self._lib.EVP_MD_CTX_new()
        if mctx == self._ffi.NULL:
            raise MemoryError("EVP_MD_CTX_new")
        # The MD ctx does not own a pkey ctx installed with set_pkey_ctx, so it is freed first.
        mctx = self._ffi.gc(mctx, self._lib.EVP_MD_CTX_free)
        self._lib.EVP_MD_CTX_set_pkey_ctx(mctx, pctx)
        return mctx, pctx

    # --- SM2Backend --------------------------------------------------------------------------------

    def decode_point(self, point: bytes) -> bytes:
        if len(point) not in (33, POINT_SIZE) or point[0] not in ((2, 3) if len(point) == 33 else (4,)):
            raise InvalidKey("SM2 point must be 65-byte uncompressed or 33-byte compressed")
        return self._encode_point(self._point(point))

    def point_mul(self, scalar: int, point: bytes | None = None) -> bytes:
        if not 1 <= scalar < 1 << 256:
            raise CryptoError("scalar out of range")
        result = self._ffi.gc(self._lib.EC_POINT_new(self._group), self._lib.EC_POINT_free)
        bn = self._bignum(scalar)
        if point is None:
            ok = self._lib.EC_POINT_mul(
                self._group, result, bn, self._ffi.NULL, self._ffi.NULL, self._ffi.NULL
            )
        else:
            base = self._point(point)
            ok = self._lib.EC_POINT_mul(self._group, result, self._ffi.NULL, base, bn, self._ffi.NULL)
        if ok != 1:
            self._clear_errors()
            raise CryptoError("EC_POINT_mul failed")
        return self._encode_point(result)

    def ecdh(self, scalar: int, peer_point: bytes) -> bytes:
        if len(peer_point) not in (33, POINT_SIZE) or peer_point[0] not in (
            (2, 3) if len(peer_point) == 33 else (4,)
        ):
            raise InvalidKey("SM2 point must be 65-byte uncompressed or 33-byte compressed")
        # point_mul decodes the point with the same checks as decode_point (_point) before multiplying
        return self.point_mul(scalar, peer_point)[1 : 1 + FIELD_SIZE]

    def point_add(self, p: bytes, q: bytes) -> bytes:
        result = self._ffi.gc(self._lib.EC_POINT_new(self._group), self._lib.EC_POINT_free)
        if self._lib.EC_POINT_add(self._group, result, self._point(p), self._point(q), self._ffi.NULL) != 1:
            self._clear_errors()
            raise CryptoError("EC_POINT_add failed")
        return self._encode_point(result)

    def point_add_mul(self, p: bytes, scalar: int, q: bytes) -> bytes:
        # Two points make EC_POINTs_mul take libcrypto's interleaved wNAF path: one variable-time pass
        # over both points instead of a constant-time ladder plus an addition.  The scalars are public.
        if not 1 <= scalar < 1 << 256:
            raise CryptoError("scalar out of range")
        result = self._ffi.gc(self._lib.EC_POINT_new(self._group), self._lib.EC_POINT_free)
        p_point, q_point = self._point(p), self._point(q)
        one, factor = self._bignum(1, secret=False), self._bignum(scalar, secret=False)
        points = self._ffi.new("const EC_POINT *[2]", [p_point, q_point])
        scalars = self._ffi.new("const BIGNUM *[2]", [one, factor])
        if (
            self._lib.EC_POINTs_mul(self._group, result, self._ffi.NULL, 2, points, scalars, self._ffi.NULL)
            != 1
        ):
            self._clear_errors()
            raise CryptoError("EC_POINTs_mul failed")
        return self._encode_point(result)

    def sign(self, key: SM2PrivateKey, message: bytes, uid: bytes = DEFAULT_SM2_ID) -> bytes:
        pkey = self._private_pkey(key)
        mctx, pctx = self._md_ctx(pkey, uid)
        if self._lib.EVP_DigestSignInit(mctx, self._ffi.NULL, self._sm3, self._ffi.NULL, pkey) != 1:
            self._clear_errors()
            raise CryptoError("EVP_DigestSignInit failed")
        siglen = self._ffi.new("size_t *", 80)
        sig = self._ffi.new("unsigned char[]", 80)
        ok = self._lib.EVP_DigestSign(mctx, sig, siglen, message, len(message))
        del mctx, pctx  # free the MD ctx before the pkey ctx it borrows
        if ok != 1:
            self._clear_errors()
            raise CryptoError("SM2 signing failed")
        return bytes(self._ffi.buffer(sig, siglen[0]))

    def verify(
        self, key: SM2PublicKey, signature: bytes, message: bytes, uid: bytes = DEFAULT_SM2_ID
    ) -> None:
        pkey = self._public_pkey(key)
        mctx, pctx = self._md_ctx(pkey, uid)
        if self._lib.EVP_DigestVerifyInit(mctx, self._ffi.NULL, self._sm3, self._ffi.NULL, pkey) != 1:
            self._clear_errors()
            raise CryptoError("EVP_DigestVerifyInit failed")
        ok = self._lib.EVP_DigestVerify(mctx, signature, len(signature), message, len(message))
        del mctx, pctx  # free the MD ctx before the pkey ctx it borrows
        if ok != 1:
            self._clear_errors()
            raise InvalidSignature("SM2 signature verification failed")

    def encrypt(self, key: SM2PublicKey, plaintext: bytes) -> bytes:
        ctx = self._pkey_ctx(self._public_pkey(key))
        if self._lib.EVP_PKEY_encrypt_init(ctx) != 1:
            self._clear_errors()
            raise CryptoError("EVP_PKEY_encrypt_init failed")
        outlen = self._ffi.new("size_t *")
        if self._lib.EVP_PKEY_encrypt(ctx, self._ffi.NULL, outlen, plaintext, len(plaintext)) != 1:
            self._clear_errors()
            raise CryptoError("SM2 encryption failed")
        out = self._ffi.new("unsigned char[]", outlen[0])
        if self._lib.EVP_PKEY_encrypt(ctx, out, outlen, plaintext, len(plaintext)) != 1:
            self._clear_errors()
            raise CryptoError("SM2 encryption failed")
        return bytes(self._ffi.buffer(out, outlen[0]))

    def decrypt(self, key: SM2PrivateKey, ciphertext: bytes) -> bytes:
        encoding.decode_ciphertext(ciphertext)  # same strict DER rules as the gmssl backend
        ctx = self._pkey_ctx(self._private_pkey(key))
        if self._lib.EVP_PKEY_decrypt_init(ctx) != 1:
            self._clear_errors()
            raise CryptoError("EVP_PKEY_decrypt_init failed")
        outlen = self._ffi.new("size_t *")
        if self._lib.EVP_PKEY_decrypt(ctx, self._ffi.NULL, outlen, ciphertext, len(ciphertext)) != 1:
            self._clear_errors()
            raise DecryptionError("SM2 decryption failed")
        out = self._ffi.new("unsigned char[]", max(outlen[0], 1))
        if self._lib.EVP_PKEY_decrypt(ctx, out, outlen, ciphertext, len(ciphertext)) != 1:
            self._clear_errors()
            raise DecryptionError("SM2 decryption failed")
        return bytes(self._ffi.buffer(out, outlen[0]))

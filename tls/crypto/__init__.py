"""smgate's crypto provider (Contract 1): SM2, SM3, HMAC-SM3 and SM4 behind one small interface.

Everything else in smgate imports from here.  Modules:

- :mod:`~tls.crypto.errors` — :class:`CryptoError` and its subclasses (the only exceptions raised).
- :mod:`~tls.crypto.hashes` — SM3 / HMAC-SM3 (``cryptography``).
- :mod:`~tls.crypto.sm4` — SM4 ECB/CBC/CTR/GCM (``cryptography``) and SM4-CCM (``tongsuopy``, optional).
- :mod:`~tls.crypto.sm4_tongsuo` — SM4-GCM/CCM with keyed contexts reused per message (``tongsuopy``).
- :mod:`~tls.crypto.hkdf` — HKDF-Extract/Expand with SM3 (``cryptography``), for the TLS 1.3 key schedule;
  ``HKDFSM3Key(prk).expand(info, length)`` keys HMAC-SM3 once for several expansions.
- :mod:`~tls.crypto.curve` — sm2p256v1 constants, Z value, KDF.
- :mod:`~tls.crypto.keys` — backend-neutral :class:`SM2PrivateKey` / :class:`SM2PublicKey` and loaders.
- :mod:`~tls.crypto.encoding` — SPKI / PKCS#8 / SEC1 / PBES2 / signature / ciphertext DER.
- :mod:`~tls.crypto.ciphertext` — DER ↔ raw C1C3C2 ↔ legacy C1C2C3.
- :mod:`~tls.crypto.kx` — SM2 key exchange (GB/T 32918.3).
- :mod:`~tls.crypto.backends` — ``openssl`` (cffi → system libcrypto 3.x, default) and ``gmssl``.
- :mod:`~tls.crypto.kat` — published known-answer vectors and the runtime self-check.
- :mod:`~tls.crypto.cli` — ``register(subparsers)`` adds ``smgate selfcheck``; ``describe()`` is the
  provider summary ``smgate version`` prints.

Backend selection: automatic (openssl if it loads and supports SM2, else gmssl), overridable with the
environment variable ``SMGATE_CRYPTO_BACKEND=openssl|gmssl``, :func:`set_backend` (process-wide) or
``with use_backend("gmssl"):`` (current thread / asyncio task).  ``get_backend(name)`` returns a backend
object with ``sign(key, msg, uid)``, ``verify(pub, sig, msg, uid)``, ``encrypt(pub, pt)``,
``decrypt(key, ct)``, for per-operation cross-backend checks.

Reusable contexts for the record layer (key schedule once per connection direction, not per record):

- ``SM4GCM(key)``: ``.encrypt(nonce, plaintext, aad) -> ciphertext || tag``,
  ``.decrypt(nonce, data, aad)`` (raises :class:`DecryptionError` on a bad tag).
- ``SM4CCM(key)``: same interface as ``SM4GCM`` (RFC 8998 TLS_SM4_CCM_SM3); ``sm4_ccm_available()``.
- ``keyed_sm4_gcm(key)``: SM4-GCM for many messages under one key (``TongsuoSM4GCM``, a keyed tongsuopy
  context reused per message, when tongsuopy is installed; else ``SM4GCM``).
- ``SM4CBC(key)``: ``.encrypt(iv, data)`` / ``.decrypt(iv, data)``, no padding (len % 16 == 0).
- ``HMACSM3(key)``: keyed once; ``.compute(*parts) -> 32-byte MAC`` without touching the keyed state,
  ``.verify(expected, *parts) -> bool`` (constant time), and incremental ``update``/``copy``/``digest``.
- ``SM3Hash()``: incremental SM3 with ``copy()`` for handshake transcripts; ``digest()`` is repeatable.

Public/private keys cache their libcrypto ``EVP_PKEY`` after first use, so keep key objects around
(e.g. in the certificate set) rather than re-loading them per handshake.
"""

from __future__ import annotations

from tls.crypto.backends import (
    available_backends,
    backend_name,
    current_backend,
    get_backend,
    set_backend,
    use_backend,
)
from tls.crypto.ciphertext import (
    sm2_c1c2c3_to_c1c3c2,
    sm2_c1c3c2_to_c1c2c3,
    sm2_c1c3c2_to_der,
    sm2_ciphertext_to_c1c3c2,
)
from tls.crypto.curve import DEFAULT_SM2_ID, SM2_CURVE_OID
from tls.crypto.errors import CryptoError, DecryptionError, InvalidKey, InvalidSignature, UnsupportedAlgorithm
from tls.crypto.hashes import HMACSM3, SM3Hash, hmac_sm3, sm3
from tls.crypto.hkdf import HKDFSM3Key, hkdf_sm3_expand, hkdf_sm3_extract
from tls.crypto.keys import SM2PrivateKey, SM2PublicKey, load_sm2_private_key, load_sm2_public_key
from tls.crypto.kx import SM2KeyExchangeResult, sm2_key_exchange
from tls.crypto.sm4 import (
    SM4CBC,
    SM4CCM,
    SM4GCM,
    TongsuoSM4GCM,
    keyed_sm4_gcm,
    sm4_cbc_decrypt,
    sm4_cbc_encrypt,
    sm4_ccm_available,
    sm4_ctr,
    sm4_ecb_decrypt,
    sm4_ecb_encrypt,
    sm4_gcm_decrypt,
    sm4_gcm_encrypt,
)

__all__ = [
    "DEFAULT_SM2_ID",
    "HMACSM3",
    "SM2_CURVE_OID",
    "SM4CBC",
    "SM4CCM",
    "SM4GCM",
    "CryptoError",
    "DecryptionError",
    "HKDFSM3Key",
    "InvalidKey",
    "InvalidSignature",
    "SM2KeyExchangeResult",
    "SM2PrivateKey",
    "SM2PublicKey",
    "SM3Hash",
    "TongsuoSM4GCM",
    "UnsupportedAlgorithm",
    "available_backends",
    "backend_name",
    "current_backend",
    "get_backend",
    "hkdf_sm3_expand",
    "hkdf_sm3_extract",
    "hmac_sm3",
    "keyed_sm4_gcm",
    "load_sm2_private_key",
    "load_sm2_public_key",
    "set_backend",
    "sm2_c1c2c3_to_c1c3c2",
    "sm2_c1c3c2_to_c1c2c3",
    "sm2_c1c3c2_to_der",
    "sm2_ciphertext_to_c1c3c2",
    "sm2_key_exchange",
    "sm3",
    "sm4_cbc_decrypt",
    "sm4_cbc_encrypt",
    "sm4_ccm_available",
    "sm4_ctr",
    "sm4_ecb_decrypt",
    "sm4_ecb_encrypt",
    "sm4_gcm_decrypt",
    "sm4_gcm_encrypt",
    "use_backend",
]

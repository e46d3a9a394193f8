"""Conversions between SM2 ciphertext layouts.

- DER: GM/T 0009 SEQUENCE{x INTEGER, y INTEGER, hash OCTET STRING, ciphertext OCTET STRING} (what
  :meth:`SM2PublicKey.encrypt` returns and TLCP carries in ClientKeyExchange).
- raw C1C3C2: 04||x||y (65) || C3 (32) || C2 (GB/T 32918.4 2016 order).
- raw C1C2C3: 04||x||y (65) || C2 || C3 (32) (the 2010 draft order some legacy peers still emit).

Malformed input raises :class:`DecryptionError`.
"""

from __future__ import annotations

from tls.crypto.curve import POINT_SIZE
from tls.crypto.encoding import decode_ciphertext, encode_ciphertext
from tls.crypto.errors import DecryptionError

_C3_SIZE = 32


def _split_c1(raw: bytes) -> tuple[bytes, bytes]:
    if len(raw) <= POINT_SIZE + _C3_SIZE or raw[0] != 4:
        raise DecryptionError("raw SM2 ciphertext must start with a 65-byte uncompressed C1 and carry C2")
    return raw[:POINT_SIZE], raw[POINT_SIZE:]


def sm2_ciphertext_to_c1c3c2(der: bytes) -> bytes:
    c1, c3, c2 = decode_ciphertext(der)
    return c1 + c3 + c2


def sm2_c1c3c2_to_der(raw: bytes) -> bytes:
    c1, rest = _split_c1(raw)
    return encode_ciphertext(c1, rest[:_C3_SIZE], rest[_C3_SIZE:])


def sm2_c1c3c2_to_c1c2c3(raw: bytes) -> bytes:
    c1, rest = _split_c1(raw)
    return c1 + rest[_C3_SIZE:] + rest[:_C3_SIZE]


def sm2_c1c2c3_to_c1c3c2(raw: bytes) -> bytes:
    c1, rest = _split_c1(raw)
    return c1 + rest[-_C3_SIZE:] + rest[:-_C3_SIZE]

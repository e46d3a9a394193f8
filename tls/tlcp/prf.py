"""The TLCP pseudo-random function (GB/T 38636-2020 6.5.1).

PRF(secret, label, seed) = P_SM3(secret, label || seed), the TLS 1.2 P_hash
construction (RFC 5246 section 5) with HMAC-SM3.  Pure function; HMAC comes
from `tls.crypto`.
"""

from __future__ import annotations

from tls.crypto import hmac_sm3


def p_sm3(secret: bytes, seed: bytes, length: int) -> bytes:
    """P_SM3: A(i) = HMAC(secret, A(i-1)), output = HMAC(secret, A(1) || seed) || ..."""
    output = bytearray()
    a = seed
    while len(output) < length:
        a = hmac_sm3(secret, a)
        output += hmac_sm3(secret, a + seed)
    return bytes(output[:length])


def prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    return p_sm3(secret, label + seed, length)

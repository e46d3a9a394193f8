"""The TLCP pseudo-random function (GB/T 38636-2020 6.5.1).

PRF(secret, label, seed) = P_SM3(secret, label || seed), the TLS 1.2 P_hash
construction (RFC 5246 section 5) with HMAC-SM3.  Pure functions; HMAC comes
from `tls.crypto`.  Every HMAC of one PRF uses the same secret, so it is keyed
once; the `_keyed` forms take that keyed HMAC, which lets a handshake key it
once for the key block and both Finished messages (all under the master secret).
"""

from __future__ import annotations

from tls.crypto import HMACSM3


def p_sm3_keyed(mac: HMACSM3, seed: bytes, length: int) -> bytes:
    """P_SM3 with `mac` keyed by the secret: A(i) = HMAC(secret, A(i-1)), output = HMAC(secret, A(1) || seed) || ..."""
    output = bytearray()
    a = seed
    while len(output) < length:
        a = mac.compute(a)
        output += mac.compute(a, seed)
    return bytes(output[:length])


def p_sm3(secret: bytes, seed: bytes, length: int) -> bytes:
    return p_sm3_keyed(HMACSM3(secret), seed, length)


def prf_keyed(mac: HMACSM3, label: bytes, seed: bytes, length: int) -> bytes:
    return p_sm3_keyed(mac, label + seed, length)


def prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    return prf_keyed(HMACSM3(secret), label, seed, length)

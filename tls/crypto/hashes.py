"""SM3 (GB/T 32905) and HMAC-SM3, from ``cryptography``.

:class:`SM3Hash` is the incremental hash the TLCP handshake transcript uses; :class:`HMACSM3` is a keyed
HMAC whose pre-keyed state can be copied, so the record layer pays for the key schedule once per
connection direction instead of once per record.
"""

from __future__ import annotations

import hmac as _stdlib_hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

SM3_DIGEST_SIZE = 32


def sm3(data: bytes) -> bytes:
    """Return the 32-byte SM3 digest of ``data``."""
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


class SM3Hash:
    """Incremental SM3; :meth:`digest` does not consume the state, :meth:`copy` forks it."""

    __slots__ = ("_ctx",)

    def __init__(self, data: bytes = b"", *, _ctx: hashes.Hash | None = None) -> None:
        self._ctx = _ctx if _ctx is not None else hashes.Hash(hashes.SM3())
        if data:
            self._ctx.update(data)

    def update(self, data: bytes) -> None:
        self._ctx.update(data)

    def copy(self) -> SM3Hash:
        return SM3Hash(_ctx=self._ctx.copy())

    def digest(self) -> bytes:
        return self._ctx.copy().finalize()


class HMACSM3:
    """HMAC-SM3 with a reusable keyed state.

    ``mac = HMACSM3(key)`` keys once; ``mac.copy()`` forks the state (cheap), ``update``/``digest`` work as
    for :class:`SM3Hash`, and ``mac.compute(data)`` is a one-shot MAC over the current state that leaves
    ``mac`` unchanged (the record-layer fast path).
    """

    __slots__ = ("_ctx",)

    def __init__(self, key: bytes, *, _ctx: _hmac.HMAC | None = None) -> None:
        self._ctx = _ctx if _ctx is not None else _hmac.HMAC(key, hashes.SM3())

    def update(self, data: bytes) -> None:
        self._ctx.update(data)

    def copy(self) -> HMACSM3:
        return HMACSM3(b"", _ctx=self._ctx.copy())

    def digest(self) -> bytes:
        return self._ctx.copy().finalize()

    def compute(self, *parts: bytes) -> bytes:
        ctx = self._ctx.copy()
        for part in parts:
            ctx.update(part)
        return ctx.finalize()

    def verify(self, expected: bytes, *parts: bytes) -> bool:
        """Constant-time check of ``expected`` against the MAC of ``parts``."""
        return _stdlib_hmac.compare_digest(self.compute(*parts), expected)


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """Return HMAC-SM3(key, data), 32 bytes."""
    ctx = _hmac.HMAC(key, hashes.SM3())
    ctx.update(data)
    return ctx.finalize()

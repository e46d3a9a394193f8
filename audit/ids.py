"""Identifiers for audit events: UUIDv7 (RFC 9562 section 5.7) and connection/request ids.

A UUIDv7 is a 48-bit Unix millisecond timestamp followed by random bits, so ids sort by creation time
and join events across sinks. This is an identifier layout, not a cryptographic primitive: the random
bits come from ``os.urandom``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_VERSION_7 = 0x7
_VARIANT_RFC = 0b10


_POOL_SIZE = 4096
_pool = b""
_pool_offset = _POOL_SIZE
_pool_lock = threading.Lock()


def _random_bytes(count: int) -> bytes:
    """``count`` bytes of ``os.urandom``, drawn from a pooled read (one syscall per ~400 ids)."""
    global _pool, _pool_offset
    with _pool_lock:
        if _pool_offset + count > len(_pool):
            _pool = os.urandom(_POOL_SIZE)
            _pool_offset = 0
        chunk = _pool[_pool_offset : _pool_offset + count]
        _pool_offset += count
    return chunk


def _uuid7_int(unix_ns: int) -> int:
    if unix_ns < 0:
        raise ValueError("UUIDv7 timestamp must not be negative")
    unix_ms = (unix_ns // 1_000_000) & ((1 << 48) - 1)
    rand = int.from_bytes(_random_bytes(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    return (unix_ms << 80) | (_VERSION_7 << 76) | (rand_a << 64) | (_VARIANT_RFC << 62) | rand_b


def uuid7(unix_ns: int | None = None) -> uuid.UUID:
    """Return a UUIDv7 whose timestamp is ``unix_ns`` (nanoseconds since the epoch; default now)."""
    return uuid.UUID(int=_uuid7_int(time.time_ns() if unix_ns is None else unix_ns))


_UUID7_FIXED = (_VERSION_7 << 76) | (_VARIANT_RFC << 62)
_RAND_A_MASK = ((1 << 12) - 1) << 64
_RAND_B_MASK = (1 << 62) - 1


def uuid7_text(unix_ns: int) -> str:
    """``str(uuid7(unix_ns))`` without building a ``UUID`` object (the per-event hot path)."""
    if unix_ns < 0:
        raise ValueError("UUIDv7 timestamp must not be negative")
    rand = int.from_bytes(_random_bytes(10), "big")
    value = (
        (((unix_ns // 1_000_000) & ((1 << 48) - 1)) << 80)
        | _UUID7_FIXED
        | ((rand >> 4) & _RAND_A_MASK)
        | (rand & _RAND_B_MASK)
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def uuid7_timestamp_ms(value: uuid.UUID) -> int:
    """The Unix millisecond timestamp carried by a UUIDv7."""
    if value.version != _VERSION_7:
        raise ValueError("not a UUIDv7")
    return value.int >> 80


def new_connection_id() -> str:
    """A fresh id joining every event of one downstream connection (``conn_id``)."""
    return str(uuid7())


def new_request_id() -> str:
    """A fresh id joining every event of one HTTP request (``request_id``)."""
    return str(uuid7())

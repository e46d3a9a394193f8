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


_hex_pool = ""
_hex_offset = 0
#: a random hex digit -> the RFC 9562 variant digit (``10`` then its two low random bits)
_VARIANT_DIGIT = {digit: format(0b1000 | (int(digit, 16) & 0b11), "x") for digit in "0123456789abcdef"}


def _random_hex(count: int) -> str:
    """``count`` random hex digits (``os.urandom``), drawn from a pooled read like :func:`_random_bytes`."""
    global _hex_pool, _hex_offset
    with _pool_lock:
        if _hex_offset + count > len(_hex_pool):
            _hex_pool = os.urandom(_POOL_SIZE).hex()
            _hex_offset = 0
        chunk = _hex_pool[_hex_offset : _hex_offset + count]
        _hex_offset += count
    return chunk


def uuid7_text(unix_ns: int) -> str:
    """``str(uuid7(unix_ns))`` built as text (the per-event hot path): 48-bit millisecond time, version
    digit ``7``, 12 random bits, the variant digit (2 random bits), 60 random bits."""
    if unix_ns < 0:
        raise ValueError("UUIDv7 timestamp must not be negative")
    time_hex = f"{(unix_ns // 1_000_000) & ((1 << 48) - 1):012x}"
    rand = _random_hex(19)
    return f"{time_hex[:8]}-{time_hex[8:]}-7{rand[:3]}-{_VARIANT_DIGIT[rand[3]]}{rand[4:7]}-{rand[7:]}"


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

"""Identifiers for audit events: UUIDv7 (RFC 9562 section 5.7) and connection/request ids.

A UUIDv7 is a 48-bit Unix millisecond timestamp followed by random bits, so ids sort by creation time
and join events across sinks. This is an identifier layout, not a cryptographic primitive: the random
bits come from ``os.urandom``.
"""

from __future__ import annotations

import operator
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


_TAIL_BATCH = 256
#: random id tails ``7xxx-Vxxx-xxxxxxxxxxxx`` (version digit, 12 random bits, the variant bits ``10`` and
#: 62 random bits); ``list.pop`` is atomic, so each tail goes to exactly one id without a lock
_tails: list[str] = []
#: (Unix millisecond, its id prefix ``tttttttt-tttt-``): replaced whole, so readers see a consistent pair
_ms_prefix: tuple[int, str] = (-1, "")
#: byte -> the same byte with its high nibble the version (7) / its two high bits the variant (10)
_VERSION_BYTE = bytes((_VERSION_7 << 4) | (byte & 0x0F) for byte in range(256))
_VARIANT_BYTE = bytes((_VARIANT_RFC << 6) | (byte & 0x3F) for byte in range(256))
_HEAD_SLICES = [slice(10 * index, 10 * index + 10) for index in range(_TAIL_BATCH)]
_NODE_SLICES = [slice(12 * index, 12 * index + 12) for index in range(_TAIL_BATCH)]


def _fresh_tails() -> list[str]:
    """A batch of random tails from two ``os.urandom`` reads, formatted by whole-batch operations: the
    version and variant bits set by ``translate`` on every fourth byte, the dashes by ``hex(sep)``."""
    head = bytearray(os.urandom(4 * _TAIL_BATCH))  # per id: version byte, byte, variant byte, byte
    head[0::4] = head[0::4].translate(_VERSION_BYTE)
    head[2::4] = head[2::4].translate(_VARIANT_BYTE)
    heads = head.hex("-", 2) + "-"  # per id: "7xxx-Vxxx-"
    nodes = os.urandom(6 * _TAIL_BATCH).hex()  # per id: 12 hex digits
    return list(map(operator.add, map(heads.__getitem__, _HEAD_SLICES), map(nodes.__getitem__, _NODE_SLICES)))


def _next_tail() -> str:
    """The next tail, refilling the batch when it is empty (a racing refill only wastes a batch)."""
    global _tails
    try:
        return _tails.pop()
    except IndexError:
        fresh = _fresh_tails()
        tail = fresh.pop()
        _tails = fresh
        return tail


def uuid7_text(unix_ns: int) -> str:
    """``str(uuid7(unix_ns))`` built as text (the per-event hot path): 48-bit millisecond time, version
    digit ``7``, 12 random bits, the variant bits, 62 random bits. The time part is formatted once per
    millisecond, the rest comes from a batch formatted per 256 ids."""
    global _ms_prefix
    if unix_ns < 0:
        raise ValueError("UUIDv7 timestamp must not be negative")
    unix_ms = unix_ns // 1_000_000
    cached = _ms_prefix
    if cached[0] != unix_ms:
        time_hex = f"{unix_ms & ((1 << 48) - 1):012x}"
        cached = _ms_prefix = (unix_ms, f"{time_hex[:8]}-{time_hex[8:]}-")
    try:
        return cached[1] + _tails.pop()
    except IndexError:
        return cached[1] + _next_tail()


def _forget_random_pools() -> None:
    """A forked child must not hand out the random bits its parent will also use."""
    global _pool, _pool_offset, _tails
    _pool, _pool_offset = b"", _POOL_SIZE
    _tails = []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_random_pools)


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

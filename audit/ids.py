"""Identifiers for audit events: UUIDv7 (RFC 9562 section 5.7) and connection/request ids.

A UUIDv7 is a 48-bit Unix millisecond timestamp followed by random bits, so ids sort by creation time
and join events across sinks. This is an identifier layout, not a cryptographic primitive: the random
bits come from ``os.urandom``.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7
_VARIANT_RFC = 0b10


def uuid7(unix_ns: int | None = None) -> uuid.UUID:
    """Return a UUIDv7 whose timestamp is ``unix_ns`` (nanoseconds since the epoch; default now)."""
    if unix_ns is None:
        unix_ns = time.time_ns()
    if unix_ns < 0:
        raise ValueError("UUIDv7 timestamp must not be negative")
    unix_ms = (unix_ns // 1_000_000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (unix_ms << 80) | (_VERSION_7 << 76) | (rand_a << 64) | (_VARIANT_RFC << 62) | rand_b
    return uuid.UUID(int=value)


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

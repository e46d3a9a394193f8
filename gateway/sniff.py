"""Classify a connection by its first record header, read with MSG_PEEK so nothing is consumed.

A TLS/TLCP record header is ``type(1) version(2) length(2)``. TLCP (GB/T 38636-2020 §6.3.3.1) uses
version 0x0101 in the ClientHello record; TLS uses 0x0301..0x0303 (TLS 1.3 hellos carry 0x0301/0x0303).
Anything that is not a handshake record is plaintext (if the listener allows it) or garbage.
"""

from __future__ import annotations

from enum import Enum

RECORD_HEADER_LEN = 5
CONTENT_TYPE_HANDSHAKE = 0x16
TLCP_VERSION = 0x0101
MAX_RECORD_PAYLOAD = 16384 + 2048


class FirstRecord(Enum):
    TLCP = "tlcp"
    TLS = "tls"
    PLAIN = "plain"
    OVERSIZED = "oversized_first_record"
    GARBAGE = "garbage_first_record"


def classify(header: bytes, *, max_record: int = MAX_RECORD_PAYLOAD) -> FirstRecord:
    """Classify the first ``RECORD_HEADER_LEN`` bytes of a connection."""
    if len(header) < RECORD_HEADER_LEN:
        raise ValueError("need the full 5-byte record header")
    if header[0] != CONTENT_TYPE_HANDSHAKE:
        return FirstRecord.PLAIN if header[0] >= 0x20 else FirstRecord.GARBAGE
    version = int.from_bytes(header[1:3], "big")
    length = int.from_bytes(header[3:5], "big")
    if length == 0:
        return FirstRecord.GARBAGE
    if length > max_record:
        return FirstRecord.OVERSIZED
    if version == TLCP_VERSION:
        return FirstRecord.TLCP
    if 0x0300 <= version <= 0x0304:
        return FirstRecord.TLS
    return FirstRecord.GARBAGE

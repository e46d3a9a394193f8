"""Format 1, read only: trails written before format 2 (records without a ``format`` member).

Format 1 MACed a re-serialisation instead of the stored bytes: ``mac = HMAC-SM3(key, prev || canonical)``
with ``canonical`` the record without ``prev``/``mac`` as :func:`audit.canonical.canonical_bytes`
writes it, and the stored line was that canonical object with ``"prev"`` and ``"mac"`` appended. A
checkpoint's signature covered the canonical record without ``signature``, ``prev`` and ``mac``. The
verifier re-serialises each parsed record and insists the result is the stored line, so nothing but
the canonical bytes can carry a valid MAC.
"""

from __future__ import annotations

from typing import Any

from audit.canonical import canonical_bytes, unb64
from tls.crypto import HMACSM3

_CHAIN_MEMBERS = ("prev", "mac")
_UNSIGNED_MEMBERS = ("signature", "prev", "mac")


class LegacyFormatError(ValueError):
    """The stored line is not the canonical form of the record it parses to."""


def mac_input(record: dict[str, Any], line: bytes) -> bytes:
    """What the format-1 MAC of ``record`` (parsed from ``line``) covers: ``prev || canonical``."""
    body = {key: value for key, value in record.items() if key not in _CHAIN_MEMBERS}
    try:
        canonical = canonical_bytes(body)
    except (TypeError, ValueError):
        raise LegacyFormatError("malformed record: not canonical JSON") from None
    prev_hex, mac_hex = record["prev"], record["mac"]
    tail = b'"prev":"' + prev_hex.encode() + b'","mac":"' + mac_hex.encode() + b'"}'
    separator = b"," if len(canonical) > 2 else b""
    if canonical[:-1] + separator + tail != line:
        # Same parsed content, different bytes (duplicate keys, spacing, order): a reader of the raw
        # line could see other values than the MAC covers.
        raise LegacyFormatError("record is not in canonical form (line bytes were edited)")
    return bytes.fromhex(prev_hex) + canonical


def mac_matches(chain_mac: HMACSM3, record: dict[str, Any], line: bytes) -> bool:
    """Constant-time check of a format-1 record's MAC."""
    return chain_mac.verify(bytes.fromhex(record["mac"]), mac_input(record, line))


def signed_input(record: dict[str, Any]) -> bytes:
    """What a format-1 checkpoint signature covers."""
    return canonical_bytes(
        {
            key: value
            for key, value in record.items()
            if key not in _UNSIGNED_MEMBERS and not key.startswith("_")
        }
    )


def signature(record: dict[str, Any]) -> bytes | None:
    """The DER signature of a format-1 checkpoint (``None`` if unsigned or not base64)."""
    text = record.get("signature")
    if not isinstance(text, str):
        return None
    try:
        return unb64(text)
    except ValueError:
        return None

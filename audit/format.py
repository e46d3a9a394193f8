"""Record format 2: the exact bytes the HMAC-SM3 chain and the SM2 checkpoint signatures cover.

A stored line is built in three steps from ``body``, the record's canonical JSON object (every member
except ``prev``, ``signature`` and ``mac``), and is never re-serialised afterwards::

    sealed  = body[:-1] + b',"prev":"' + hex(prev) + b'"'          # the record, linked to its predecessor
    signed  = sealed + b',"signature":"' + base64(SM2-SM3(sealed)) + b'"'   # checkpoints only
    line    = signed + b',"mac":"' + hex(HMAC-SM3(key, signed)) + b'"}'

so the MAC input is the line minus its last 74 bytes (``,"mac":"<64 hex>"}``), and a signature covers
the line up to the last ``,"signature":"``. A verifier slices bytes; it never needs our JSON encoder.
``audit/FORMAT.md`` specifies this byte by byte. Format 1 (no ``format`` member) MACed a re-serialised
canonical form instead; :mod:`audit.legacy` still verifies it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

#: the ``format`` member every format-2 record carries (format-1 records have none)
FORMAT_FIELD = "format"
FORMAT_VERSION = 2

#: members the pipeline writes after the body, in this order (``signature`` on signed checkpoints only)
PREV_MEMBER = b',"prev":"'
SIGNATURE_MEMBER = b',"signature":"'
MAC_MEMBER = b',"mac":"'
#: ``,"mac":"`` + 64 hex digits + ``"}``: what follows the MAC input at the end of every line
MAC_TAIL_BYTES = len(MAC_MEMBER) + 64 + 2
#: ``,"prev":"`` + 64 hex digits + ``"``: how every signed input ends
PREV_TAIL_BYTES = len(PREV_MEMBER) + 64 + 1

#: ``prev`` of the first record of a chain: 32 zero bytes
GENESIS = bytes(32)

_HEX64 = re.compile(rb"[0-9a-f]{64}")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


class FormatError(ValueError):
    """A line that does not have the format-2 layout."""


def seal(
    body: bytes, prev: bytes, mac: Callable[[bytes], bytes], sign: Callable[[bytes], bytes] | None = None
) -> tuple[bytes, bytes]:
    """The stored line (without its newline) for canonical ``body``, and its MAC.

    ``mac`` computes HMAC-SM3 under the chain key; ``sign`` (checkpoints) returns a DER SM2 signature.
    """
    if body[:1] != b"{" or body[-1:] != b"}" or len(body) < 3:
        raise ValueError("a record body is a non-empty JSON object")
    signed = b"".join((body[:-1], PREV_MEMBER, prev.hex().encode(), b'"'))
    if sign is not None:
        signature = base64.b64encode(sign(signed))
        signed = b"".join((signed, SIGNATURE_MEMBER, signature, b'"'))
    tag = mac(signed)
    return b"".join((signed, MAC_MEMBER, tag.hex().encode(), b'"}')), tag


@dataclass(frozen=True, slots=True)
class SealedLine:
    """A format-2 line taken apart by position (see the module docstring)."""

    #: what the MAC covers: the line without ``,"mac":"<hex>"}``
    mac_input: bytes
    mac_hex: str
    prev_hex: str
    #: what the signature covers (``None``: the record is not signed)
    signed_input: bytes | None
    #: base64 text of the DER signature, as stored
    signature_b64: str | None

    @property
    def signature(self) -> bytes | None:
        if self.signature_b64 is None:
            return None
        return base64.b64decode(self.signature_b64, validate=True)


def split_sealed(line: bytes) -> SealedLine:
    """Locate MAC, signature and prev in ``line`` (no newline) by the layout alone; raise
    :class:`FormatError` if the tail is not exactly the format-2 members."""
    if len(line) < MAC_TAIL_BYTES + PREV_TAIL_BYTES + 2 or line[-2:] != b'"}':
        raise FormatError("line does not end with the mac member")
    mac_input = line[:-MAC_TAIL_BYTES]
    mac_hex = line[-MAC_TAIL_BYTES + len(MAC_MEMBER) : -2]
    if line[-MAC_TAIL_BYTES : -MAC_TAIL_BYTES + len(MAC_MEMBER)] != MAC_MEMBER or not _HEX64.fullmatch(
        mac_hex
    ):
        raise FormatError("line does not end with the mac member")
    signed_input: bytes | None = None
    signature: bytes | None = None
    linked = mac_input
    if not _ends_with_prev(mac_input):
        at = mac_input.rfind(SIGNATURE_MEMBER)
        signature = mac_input[at + len(SIGNATURE_MEMBER) : -1]
        if at < 0 or mac_input[-1:] != b'"' or not _BASE64.fullmatch(signature):
            raise FormatError("no prev member (or signature member) before the mac member")
        try:
            binascii.a2b_base64(signature, strict_mode=True)
        except binascii.Error:
            raise FormatError("signature member is not base64") from None
        signed_input = linked = mac_input[:at]
        if not _ends_with_prev(linked):
            raise FormatError("signature member does not follow the prev member")
    prev_hex = linked[-65:-1]
    return SealedLine(
        mac_input=mac_input,
        mac_hex=mac_hex.decode(),
        prev_hex=prev_hex.decode(),
        signed_input=signed_input,
        signature_b64=None if signature is None else signature.decode(),
    )


def _ends_with_prev(data: bytes) -> bool:
    return (
        data[-PREV_TAIL_BYTES : -PREV_TAIL_BYTES + len(PREV_MEMBER)] == PREV_MEMBER
        and data[-1:] == b'"'
        and _HEX64.fullmatch(data[-65:-1]) is not None
    )

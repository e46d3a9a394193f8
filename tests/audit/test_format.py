"""Format 2 byte layout: sealing a body and taking a stored line apart by position alone."""

from __future__ import annotations

import base64
import json

import pytest

from audit.format import MAC_TAIL_BYTES, FormatError, seal, split_sealed
from tls.crypto import HMACSM3, SM2PrivateKey

KEY = bytes(range(32))
BODY = b'{"event":"conn.open","format":2,"seq":7}'
PREV = bytes.fromhex("ab" * 32)


def test_seal_appends_prev_then_mac_over_everything_before_it() -> None:
    mac = HMACSM3(KEY)
    line, tag = seal(BODY, PREV, mac.compute)
    assert line == BODY[:-1] + b',"prev":"' + b"ab" * 32 + b'","mac":"' + tag.hex().encode() + b'"}'
    assert tag == mac.compute(line[:-MAC_TAIL_BYTES])
    assert list(json.loads(line))[-2:] == ["prev", "mac"]
    sealed = split_sealed(line)
    assert (sealed.mac_hex, sealed.prev_hex, sealed.signed_input) == (tag.hex(), "ab" * 32, None)
    assert sealed.mac_input == line[:-MAC_TAIL_BYTES]


def test_a_signed_line_carries_the_signature_over_the_linked_body() -> None:
    private_key = SM2PrivateKey.generate()
    line, _ = seal(BODY, PREV, HMACSM3(KEY).compute, private_key.sign)
    sealed = split_sealed(line)
    assert sealed.signed_input == BODY[:-1] + b',"prev":"' + b"ab" * 32 + b'"'
    assert sealed.signature is not None
    private_key.public_key().verify(sealed.signature, sealed.signed_input)
    record = json.loads(line)
    assert list(record)[-3:] == ["prev", "signature", "mac"]
    assert base64.b64decode(record["signature"]) == sealed.signature


def test_a_caller_field_named_signature_does_not_make_a_record_signed() -> None:
    body = b'{"event":"x","format":2,"signature":"AAAA"}'
    line, _ = seal(body, PREV, HMACSM3(KEY).compute)
    assert split_sealed(line).signed_input is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"event":"x"}', "mac member"),
        (BODY[:-1] + b',"prev":"' + b"ab" * 32 + b'","mac":"' + b"AB" * 32 + b'"}', "mac member"),
        (BODY[:-1] + b',"mac":"' + b"ab" * 32 + b'","prev":"' + b"ab" * 32 + b'"}', "mac member"),
        (BODY[:-1] + b',"xxxx":"' + b"ab" * 32 + b'","mac":"' + b"ab" * 32 + b'"}', "no prev member"),
        (
            BODY[:-1]
            + b',"prev":"'
            + b"ab" * 32
            + b'","signature":"not base64!","mac":"'
            + b"ab" * 32
            + b'"}',
            "no prev member",
        ),
        (
            BODY[:-1] + b',"signature":"AAAA","prev":"' + b"ab" * 32 + b'x","mac":"' + b"ab" * 32 + b'"}',
            "no prev member",
        ),
    ],
)
def test_lines_without_the_layout_are_refused(line: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        split_sealed(line)


def test_seal_refuses_a_body_that_is_not_an_object() -> None:
    with pytest.raises(ValueError):
        seal(b"[]", PREV, HMACSM3(KEY).compute)
    with pytest.raises(ValueError):
        seal(b"{}", PREV, HMACSM3(KEY).compute)

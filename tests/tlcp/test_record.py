"""Record layer: protection round trips, tampering, framing limits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tls.tlcp.alerts import BadRecordMac, ProtocolVersion, RecordOverflow, UnexpectedMessage
from tls.tlcp.record import (
    MAX_PLAINTEXT_LENGTH,
    CBCProtection,
    GCMProtection,
    RecordProtection,
    RecordReader,
    RecordWriter,
)

KEY = bytes(range(16))
MAC_KEY = bytes(range(32))


def counter_random(length: int) -> bytes:
    return bytes(length)


def pair(kind: str) -> tuple[RecordWriter, RecordReader]:
    writer, reader = RecordWriter(), RecordReader()
    if kind == "cbc":
        writer.protection = CBCProtection(MAC_KEY, KEY, counter_random)
        reader.protection = CBCProtection(MAC_KEY, KEY, None)
    elif kind == "gcm":
        writer.protection = GCMProtection(KEY, b"\x01\x02\x03\x04", 5)
        reader.protection = GCMProtection(KEY, b"\x01\x02\x03\x04", 0)
    return writer, reader


def read_all(reader: RecordReader) -> list[tuple[int, bytes]]:
    records = []
    while (record := reader.next_record()) is not None:
        records.append(record)
    return records


@pytest.mark.parametrize("kind", ["plain", "cbc", "gcm"])
@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=40000))
def test_roundtrip_and_fragmentation(kind: str, data: bytes) -> None:
    writer, reader = pair(kind)
    writer.write(23, data)
    wire = writer.data_to_send()
    reader.feed(wire)
    records = read_all(reader)
    assert b"".join(payload for _, payload in records) == data
    assert all(len(payload) <= MAX_PLAINTEXT_LENGTH for _, payload in records)
    assert len(records) == max(1, -(-len(data) // MAX_PLAINTEXT_LENGTH))
    assert writer.sequence == reader.sequence or kind == "plain"


@pytest.mark.parametrize("kind", ["plain", "gcm"])
@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_many_records_per_feed_in_arbitrary_chunks(kind: str, cuts: list[int]) -> None:
    """Records are read from a cursor into the buffered bytes; any chunking gives the same records."""
    writer, reader = pair(kind)
    messages = [bytes([index]) * (index * 7) for index in range(12)]
    for message in messages:
        writer.write(23, message)
    wire = writer.data_to_send()
    bounds = sorted({min(cut, len(wire)) for cut in cuts} | {0, len(wire)})
    records: list[tuple[int, bytes]] = []
    overhead = 5 + (24 if kind == "gcm" else 0)  # header, explicit nonce and tag
    for start, end in itertools.pairwise(bounds):
        reader.feed(wire[start:end])
        records.extend(read_all(reader))
        assert reader.pending_bytes() == end - sum(overhead + len(payload) for _, payload in records)
    assert records == [(23, message) for message in messages]
    assert reader.pending_bytes() == 0


@pytest.mark.parametrize("kind", ["cbc", "gcm"])
def test_byte_by_byte_feeding(kind: str) -> None:
    writer, reader = pair(kind)
    writer.write(23, b"hello")
    writer.write(23, b"")
    writer.write(21, b"\x01\x00")
    records = []
    for byte in writer.data_to_send():
        reader.feed(bytes((byte,)))
        records.extend(read_all(reader))
    assert records == [(23, b"hello"), (23, b""), (21, b"\x01\x00")]


@pytest.mark.parametrize("kind", ["cbc", "gcm"])
def test_every_bit_flip_is_bad_record_mac(kind: str) -> None:
    writer, _ = pair(kind)
    writer.write(23, b"attack at dawn")
    wire = writer.data_to_send()
    for index in range(5, len(wire)):
        for bit in (0x01, 0x80):
            tampered = bytearray(wire)
            tampered[index] ^= bit
            _, reader = pair(kind)
            reader.feed(bytes(tampered))
            with pytest.raises(BadRecordMac):
                reader.next_record()


@pytest.mark.parametrize("kind", ["cbc", "gcm"])
def test_wrong_sequence_or_type_is_bad_record_mac(kind: str) -> None:
    writer, reader = pair(kind)
    writer.write(23, b"one")
    first = writer.data_to_send()
    writer.write(23, b"two")
    second = writer.data_to_send()
    reader.feed(second)  # replayed out of order
    with pytest.raises(BadRecordMac):
        reader.next_record()
    _, reader = pair(kind)
    reader.feed(bytes((22,)) + first[1:])  # content type is authenticated
    with pytest.raises(BadRecordMac):
        reader.next_record()


def _cbc_record(body: bytes) -> bytes:
    """A CBC record whose decrypted body (MAC and padding included) is `body`."""
    from tls.crypto import SM4CBC

    iv = bytes(16)
    fragment = iv + SM4CBC(KEY).encrypt(iv, body)
    return b"\x17\x01\x01" + len(fragment).to_bytes(2, "big") + fragment


@pytest.mark.parametrize(
    "body",
    [
        bytes(47) + b"\x0f",  # padding length beyond the MAC
        bytes(46) + b"\x01\x00",  # inconsistent padding bytes
        bytes(48),  # valid padding, MAC wrong
        bytes(63) + b"\x3f",  # padding longer than record
    ],
)
def test_cbc_padding_and_mac_errors_are_indistinguishable(body: bytes) -> None:
    reader = RecordReader()
    reader.protection = CBCProtection(MAC_KEY, KEY, None)
    reader.feed(_cbc_record(body))
    with pytest.raises(BadRecordMac):
        reader.next_record()


@pytest.mark.parametrize("length", [0, 16, 32, 48, 63, 65])
def test_cbc_short_or_unaligned_fragment(length: int) -> None:
    reader = RecordReader()
    reader.protection = CBCProtection(MAC_KEY, KEY, None)
    reader.feed(b"\x17\x01\x01" + length.to_bytes(2, "big") + bytes(length))
    with pytest.raises(BadRecordMac):
        reader.next_record()


def test_gcm_short_fragment() -> None:
    reader = RecordReader()
    reader.protection = GCMProtection(KEY, bytes(4), 0)
    reader.feed(b"\x17\x01\x01\x00\x17" + bytes(23))
    with pytest.raises(BadRecordMac):
        reader.next_record()


def test_gcm_explicit_nonce_is_start_plus_sequence() -> None:
    writer, _ = pair("gcm")
    writer.write(23, b"a")
    writer.write(23, b"b")
    wire = writer.data_to_send()
    assert wire[5:13] == (5).to_bytes(8, "big")
    assert wire[5 + 8 + 1 + 16 + 5 : 5 + 8 + 1 + 16 + 13] == (6).to_bytes(8, "big")


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (b"\x18\x01\x01\x00\x01", UnexpectedMessage),  # heartbeat / unknown type
        (b"\x50\x01\x01\x00\x01", UnexpectedMessage),  # site2site is not supported
        (b"\x16\x03\x03\x00\x01", ProtocolVersion),  # TLS 1.2 record
        (b"\x16\x01\x00\x00\x01", ProtocolVersion),
        (b"\x16\x01\x01\x40\x01", RecordOverflow),  # plaintext > 2^14
    ],
)
def test_header_checks(header: bytes, error: type[Exception]) -> None:
    reader = RecordReader()
    reader.feed(header)
    with pytest.raises(error):
        reader.next_record()


def test_ciphertext_limit() -> None:
    reader = RecordReader()
    reader.protection = GCMProtection(KEY, bytes(4), 0)
    reader.feed(b"\x17\x01\x01" + (MAX_PLAINTEXT_LENGTH + 2049).to_bytes(2, "big"))
    with pytest.raises(RecordOverflow):
        reader.next_record()


def test_decrypted_plaintext_over_limit_is_record_overflow() -> None:
    protection: RecordProtection = GCMProtection(KEY, bytes(4), 0)
    fragment = protection.seal(23, 0, bytes(MAX_PLAINTEXT_LENGTH + 1))
    reader = RecordReader()
    reader.protection = GCMProtection(KEY, bytes(4), 0)
    reader.feed(b"\x17\x01\x01" + len(fragment).to_bytes(2, "big") + fragment)
    with pytest.raises(RecordOverflow):
        reader.next_record()


def test_change_cipher_spec_resets_sequence_and_needs_pending() -> None:
    writer = RecordWriter(max_fragment_size=1)
    writer.write(22, b"abc")
    assert writer.data_to_send() == b"\x16\x01\x01\x00\x01a\x16\x01\x01\x00\x01b\x16\x01\x01\x00\x01c"
    writer.pending = GCMProtection(KEY, bytes(4), 0)
    writer.change_cipher_spec()
    assert writer.sequence == 0 and writer.pending is None
    assert KEY.hex() not in repr(writer.protection)

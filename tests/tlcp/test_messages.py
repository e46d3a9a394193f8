"""Handshake message codecs: hypothesis round trips and strict decoding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tls.tlcp.alerts import DecodeError, IllegalParameter, TLCPAlert, UnexpectedMessage
from tls.tlcp.buffer import Buffer, BufferReadError, pull_block, pull_opaque, push_block
from tls.tlcp.messages import (
    Certificate,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    ClientKeyExchange,
    Finished,
    ServerHello,
    ServerHelloDone,
    ServerKeyExchange,
    pull_certificate,
    pull_certificate_request,
    pull_certificate_verify,
    pull_client_hello,
    pull_client_key_exchange,
    pull_finished,
    pull_server_hello,
    pull_server_hello_done,
    pull_server_key_exchange,
    pull_server_name_extension,
    push_certificate,
    push_certificate_request,
    push_certificate_verify,
    push_client_hello,
    push_client_key_exchange,
    push_finished,
    push_server_hello,
    push_server_hello_done,
    push_server_key_exchange,
    push_server_name_extension,
)
from tls.tlcp.suites import KeyExchange

from .recordings import all_recordings, handshake_messages

uint16 = st.integers(0, 0xFFFF)
random32 = st.binary(min_size=32, max_size=32)
session_ids = st.binary(max_size=32)
points = st.binary(min_size=64, max_size=64).map(lambda b: b"\x04" + b)
opaque = st.binary(min_size=1, max_size=300)


def unique_extensions() -> st.SearchStrategy[list[tuple[int, bytes]] | None]:
    return st.none() | st.dictionaries(uint16, st.binary(max_size=40), max_size=5).map(
        lambda d: list(d.items())
    )


def roundtrip(push: Callable[[Buffer, Any], None], pull: Callable[[Buffer], Any], message: object) -> bytes:
    buf = Buffer()
    push(buf, message)
    data = buf.data
    decoded = pull(Buffer(data))
    assert decoded == message
    assert int.from_bytes(data[1:4], "big") == len(data) - 4
    return data


@given(
    st.builds(
        ClientHello,
        version=uint16,
        random=random32,
        session_id=session_ids,
        cipher_suites=st.lists(uint16, min_size=1, max_size=20),
        compression_methods=st.lists(st.integers(0, 255), min_size=1, max_size=5),
        extensions=unique_extensions(),
    )
)
def test_client_hello_roundtrip(hello: ClientHello) -> None:
    roundtrip(push_client_hello, pull_client_hello, hello)


@given(
    st.builds(
        ServerHello,
        version=uint16,
        random=random32,
        session_id=session_ids,
        cipher_suite=uint16,
        compression_method=st.integers(0, 255),
        extensions=unique_extensions(),
    )
)
def test_server_hello_roundtrip(hello: ServerHello) -> None:
    roundtrip(push_server_hello, pull_server_hello, hello)


@given(st.builds(Certificate, st.lists(opaque, max_size=4)))
def test_certificate_roundtrip(message: Certificate) -> None:
    roundtrip(push_certificate, pull_certificate, message)


@given(opaque, st.none() | points)
def test_server_key_exchange_roundtrip(signature: bytes, point: bytes | None) -> None:
    message = ServerKeyExchange(signature, point)
    key_exchange = KeyExchange.ECC if point is None else KeyExchange.ECDHE
    roundtrip(push_server_key_exchange, lambda buf: pull_server_key_exchange(buf, key_exchange), message)


@given(
    st.builds(
        CertificateRequest,
        st.lists(st.integers(0, 255), min_size=1, max_size=4),
        st.lists(opaque, max_size=4),
    )
)
def test_certificate_request_roundtrip(message: CertificateRequest) -> None:
    roundtrip(push_certificate_request, pull_certificate_request, message)


def test_server_hello_done_roundtrip() -> None:
    assert roundtrip(push_server_hello_done, pull_server_hello_done, ServerHelloDone()) == b"\x0e\x00\x00\x00"


@given(opaque)
def test_client_key_exchange_ecc_roundtrip(ciphertext: bytes) -> None:
    message = ClientKeyExchange(encrypted_pre_master_secret=ciphertext)
    roundtrip(push_client_key_exchange, lambda buf: pull_client_key_exchange(buf, KeyExchange.ECC), message)


@given(points, st.booleans())
def test_client_key_exchange_ecdhe_both_forms(point: bytes, as_vector: bool) -> None:
    message = ClientKeyExchange(ecdh_public=point, params_as_vector=as_vector)
    data = roundtrip(
        push_client_key_exchange, lambda buf: pull_client_key_exchange(buf, KeyExchange.ECDHE), message
    )
    # GB/T 38636-2020 6.4.5.8 / GmSSL: 00 45 03 00 29 41 04..; Tongsuo: 03 00 29 41 04..
    assert data[4:9] == (b"\x00\x45\x03\x00\x29" if as_vector else b"\x03\x00\x29\x41\x04")


@given(opaque)
def test_certificate_verify_roundtrip(signature: bytes) -> None:
    roundtrip(push_certificate_verify, pull_certificate_verify, CertificateVerify(signature))


@given(st.binary(min_size=12, max_size=12))
def test_finished_roundtrip(verify_data: bytes) -> None:
    roundtrip(push_finished, pull_finished, Finished(verify_data))


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=60))
def test_server_name_roundtrip(name: str) -> None:
    assert pull_server_name_extension(push_server_name_extension(name)) == name


RECORDINGS = all_recordings()
PULLERS: dict[int, Callable[[Buffer, KeyExchange], object]] = {
    1: lambda buf, kx: pull_client_hello(buf),
    2: lambda buf, kx: pull_server_hello(buf),
    11: lambda buf, kx: pull_certificate(buf),
    12: pull_server_key_exchange,
    13: lambda buf, kx: pull_certificate_request(buf),
    14: lambda buf, kx: pull_server_hello_done(buf),
    15: lambda buf, kx: pull_certificate_verify(buf),
    16: pull_client_key_exchange,
}
PUSHERS: dict[int, Callable[[Buffer, Any], None]] = {
    1: push_client_hello,
    2: push_server_hello,
    11: push_certificate,
    12: push_server_key_exchange,
    13: push_certificate_request,
    14: push_server_hello_done,
    15: push_certificate_verify,
    16: push_client_key_exchange,
}


@pytest.mark.parametrize("recording", RECORDINGS, ids=repr)
def test_recorded_messages_reencode_identically(recording: Any) -> None:
    """Every plaintext message of every recording decodes and re-encodes to the same bytes."""
    key_exchange = KeyExchange.ECDHE if recording.ecdhe else KeyExchange.ECC
    for message in handshake_messages(recording.client_records) + handshake_messages(
        recording.server_records
    ):
        if message[0] == 4:  # NewSessionTicket: not a TLCP message
            continue
        decoded = PULLERS[message[0]](Buffer(message), key_exchange)
        buf = Buffer()
        PUSHERS[message[0]](buf, decoded)
        assert buf.data == message


def _hello_bytes(**changes: Any) -> bytes:
    hello = ClientHello(0x0101, bytes(32), b"", [0xE013], [0], None)
    for key, value in changes.items():
        setattr(hello, key, value)
    buf = Buffer()
    push_client_hello(buf, hello)
    return buf.data


def _with_trailing_byte() -> bytes:
    data = _hello_bytes()
    return data[:1] + (len(data) - 3).to_bytes(3, "big") + data[4:] + b"\x00"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (_hello_bytes()[:-1], BufferReadError),  # truncated body
        (_with_trailing_byte(), BufferReadError),  # a stray byte where extensions would start
        (_hello_bytes(session_id=bytes(33)), DecodeError),
        (_hello_bytes(cipher_suites=[]), DecodeError),
        (_hello_bytes(compression_methods=[]), BufferReadError),
        (_hello_bytes(extensions=[(0, b""), (0, b"")]), IllegalParameter),
        (b"\x02" + _hello_bytes()[1:], UnexpectedMessage),
    ],
)
def test_client_hello_strict_decoding(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        pull_client_hello(Buffer(data))


def test_odd_cipher_suites_length_is_decode_error() -> None:
    data = bytearray(_hello_bytes())
    index = 4 + 2 + 32 + 1
    data[index : index + 4] = b"\x00\x03\xe0\x13"[:4]
    with pytest.raises((DecodeError, BufferReadError)):
        pull_client_hello(Buffer(bytes(data)))


@pytest.mark.parametrize(
    "body",
    [
        b"\x03\x00\x29\x41" + b"\x04" + bytes(63),  # short point
        b"\x01\x00\x29\x41\x04" + bytes(64),  # explicit prime curve
        b"\x03\x00\x17\x41\x04" + bytes(64),  # secp256r1
        b"\x03\x00\x29\x41\x02" + bytes(64),  # not uncompressed
    ],
)
def test_bad_ecdhe_params(body: bytes) -> None:
    data = b"\x10" + len(body).to_bytes(3, "big") + body
    with pytest.raises((TLCPAlert, BufferReadError)):
        pull_client_key_exchange(Buffer(data), KeyExchange.ECDHE)


def test_finished_must_be_twelve_bytes() -> None:
    with pytest.raises(DecodeError):
        pull_finished(Buffer(b"\x14\x00\x00\x0b" + bytes(11)))


def test_buffer_blocks() -> None:
    buf = Buffer()
    with push_block(buf, 2):
        buf.push_bytes(b"abc")
    assert buf.data == b"\x00\x03abc"
    with pytest.raises(BufferReadError):
        pull_opaque(Buffer(b"\x00\x04abc"), 2)
    reader = Buffer(b"\x00\x02abc")
    with pytest.raises(BufferReadError), pull_block(reader, 2):
        reader.pull_bytes(1)

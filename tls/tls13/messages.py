"""TLS 1.3 handshake messages and extensions (RFC 8446 4), each a dataclass with pull_/push_ codecs.

Every vector goes through the `Buffer` block helpers of `tls.tlcp.buffer` (shared with the TLCP
engine), so lengths are checked where they are read: a short read, a length that overruns its
container or leftover bytes raise `BufferReadError`, which the connection turns into decode_error.
Limits from the presentation language (`<2..2^16-2>` and so on) are enforced here as decode_error;
semantic checks (which values are acceptable) are the handshake's.  Handshake messages are hashed
exactly as received: codecs never re-encode what they parse.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

from tls.tlcp.buffer import (
    Buffer,
    BufferReadError,
    BufferWriteError,
    pull_block,
    pull_list,
    pull_opaque,
    push_block,
    push_list,
    push_opaque,
)

from .alerts import DecodeError, IllegalParameter, UnexpectedMessage

HANDSHAKE_HEADER_LENGTH = 4
#: Largest handshake body accepted: a certificate chain of several SM2 certificates fits easily.
MAX_HANDSHAKE_MESSAGE_LENGTH = 1 << 16
RANDOM_LENGTH = 32
#: ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 8446 4.1.3).
HELLO_RETRY_REQUEST_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
#: SEC1 uncompressed curveSM2 point: 0x04 || x || y (RFC 8998 3.3 uses the RFC 8446 4.2.8.2 form).
SM2_POINT_LENGTH = 65


class HandshakeType(IntEnum):
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    NEW_SESSION_TICKET = 4
    END_OF_EARLY_DATA = 5
    ENCRYPTED_EXTENSIONS = 8
    CERTIFICATE = 11
    CERTIFICATE_REQUEST = 13
    CERTIFICATE_VERIFY = 15
    FINISHED = 20
    KEY_UPDATE = 24
    MESSAGE_HASH = 254


class ExtensionType(IntEnum):
    SERVER_NAME = 0
    SUPPORTED_GROUPS = 10
    SIGNATURE_ALGORITHMS = 13
    APPLICATION_LAYER_PROTOCOL_NEGOTIATION = 16
    PRE_SHARED_KEY = 41
    EARLY_DATA = 42
    SUPPORTED_VERSIONS = 43
    COOKIE = 44
    PSK_KEY_EXCHANGE_MODES = 45
    CERTIFICATE_AUTHORITIES = 47
    POST_HANDSHAKE_AUTH = 49
    SIGNATURE_ALGORITHMS_CERT = 50
    KEY_SHARE = 51


class KeyUpdateRequest(IntEnum):
    update_not_requested = 0
    update_requested = 1


Extension = tuple[int, bytes]


def _uint(value: int, width: int) -> bytes:
    """`value` as a big-endian unsigned integer of `width` bytes (the encoders' only integer writer)."""
    if not 0 <= value < 1 << (8 * width):
        raise BufferWriteError(f"value does not fit in {width} byte(s)")
    return value.to_bytes(width, "big")


def _check_type(buf: Buffer, expected: HandshakeType) -> None:
    if buf.pull_uint8() != expected:
        raise UnexpectedMessage("handshake type mismatch")


def handshake_header(message_type: HandshakeType, body_length: int) -> bytes:
    return bytes((message_type,)) + body_length.to_bytes(3, "big")


def encode_handshake(message_type: HandshakeType, body: bytes) -> bytes:
    """A whole handshake message: type, uint24 length, body."""
    return bytes((message_type,)) + _uint(len(body), 3) + body


# extensions block


def pull_extensions(buf: Buffer, minimum: int = 0) -> list[Extension]:
    """`Extension extensions<minimum..2^16-1>`; a repeated type is illegal_parameter (RFC 8446 4.2)."""
    with pull_block(buf, 2) as length:
        if length < minimum:
            raise DecodeError("extensions block too short")
        block = buf.pull_bytes(length)
    extensions: list[Extension] = []
    seen: set[int] = set()
    position, end = 0, len(block)
    while position < end:
        if end - position < 4:
            raise BufferReadError("read out of bounds")
        extension_type = (block[position] << 8) | block[position + 1]
        data_end = position + 4 + ((block[position + 2] << 8) | block[position + 3])
        if data_end > end:
            raise BufferReadError("vector longer than its container")
        if extension_type in seen:
            raise IllegalParameter(f"duplicate extension {extension_type}")
        seen.add(extension_type)
        extensions.append((extension_type, block[position + 4 : data_end]))
        position = data_end
    return extensions


def encode_extensions(extensions: Sequence[Extension]) -> bytes:
    """`Extension extensions<0..2^16-1>` as bytes."""
    body = b"".join(
        _uint(extension_type, 2) + _uint(len(data), 2) + data for extension_type, data in extensions
    )
    return _uint(len(body), 2) + body


def push_extensions(buf: Buffer, extensions: Sequence[Extension]) -> None:
    buf.push_bytes(encode_extensions(extensions))


def find_extension(extensions: Sequence[Extension], extension_type: int) -> bytes | None:
    for key, data in extensions:
        if key == extension_type:
            return data
    return None


def _end(buf: Buffer) -> None:
    if not buf.eof():
        raise DecodeError("trailing bytes in extension")


# extension bodies


def pull_server_name(data: bytes) -> str:
    """RFC 6066 ServerNameList: the single host_name (ASCII, 1..255 bytes)."""
    buf = Buffer(data)
    host_name: str | None = None
    with pull_block(buf, 2) as length:
        if length == 0:
            raise DecodeError("empty server name list")
        while not buf.eof():
            name_type = buf.pull_uint8()
            name = pull_opaque(buf, 2, minimum=1)
            if name_type != 0:
                continue
            if host_name is not None:
                raise IllegalParameter("more than one host_name")
            try:
                host_name = name.decode("ascii")
            except UnicodeDecodeError:
                raise DecodeError("host_name is not ASCII") from None
            if len(name) > 255 or "\x00" in host_name:
                raise IllegalParameter("host_name is not a DNS name")
    _end(buf)
    if host_name is None:
        raise IllegalParameter("no host_name in server_name")
    return host_name


def push_server_name(host_name: str) -> bytes:
    buf = Buffer()
    with push_block(buf, 2):
        buf.push_uint8(0)
        push_opaque(buf, 2, host_name.encode("ascii"))
    return buf.data


def pull_uint16_list(data: bytes, capacity: int, *, minimum: int = 2) -> list[int]:
    """A vector of uint16 values with a `capacity`-byte length (groups, signature schemes, versions).

    The vector must fill `data` exactly (an extension body holds nothing else).
    """
    if len(data) < capacity:
        raise BufferReadError("read out of bounds")
    length = int.from_bytes(data[:capacity], "big")
    if length != len(data) - capacity:
        raise DecodeError("uint16 vector length does not match its extension")
    if length < minimum or length % 2:
        raise DecodeError("bad uint16 vector length")
    return list(struct.unpack(f">{length // 2}H", data[capacity:]))


def push_uint16_list(values: Sequence[int], capacity: int) -> bytes:
    buf = Buffer()
    push_list(buf, capacity, buf.push_uint16, values)
    return buf.data


def pull_uint16_value(data: bytes) -> int:
    buf = Buffer(data)
    value = buf.pull_uint16()
    _end(buf)
    return value


def push_uint16_value(value: int) -> bytes:
    return value.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class KeyShareEntry:
    group: int
    key_exchange: bytes


def _pull_key_share_entry(buf: Buffer) -> KeyShareEntry:
    return KeyShareEntry(buf.pull_uint16(), pull_opaque(buf, 2, minimum=1))


def _push_key_share_entry(buf: Buffer, entry: KeyShareEntry) -> None:
    buf.push_uint16(entry.group)
    push_opaque(buf, 2, entry.key_exchange)


def pull_client_key_shares(data: bytes) -> list[KeyShareEntry]:
    """KeyShareClientHello: client_shares<0..2^16-1>; a group twice is illegal_parameter (4.2.8)."""
    buf = Buffer(data)
    entries = pull_list(buf, 2, lambda: _pull_key_share_entry(buf))
    _end(buf)
    groups = [entry.group for entry in entries]
    if len(set(groups)) != len(groups):
        raise IllegalParameter("key_share offers a group twice")
    return entries


def push_client_key_shares(entries: Sequence[KeyShareEntry]) -> bytes:
    buf = Buffer()
    with push_block(buf, 2):
        for entry in entries:
            _push_key_share_entry(buf, entry)
    return buf.data


def pull_server_key_share(data: bytes) -> KeyShareEntry:
    buf = Buffer(data)
    entry = _pull_key_share_entry(buf)
    _end(buf)
    return entry


def push_server_key_share(entry: KeyShareEntry) -> bytes:
    """KeyShareServerHello: one KeyShareEntry."""
    return _uint(entry.group, 2) + _uint(len(entry.key_exchange), 2) + entry.key_exchange


def pull_alpn(data: bytes) -> list[str]:
    """ProtocolNameList protocol_name_list<2..2^16-1> of ProtocolName<1..2^8-1> (RFC 7301)."""
    buf = Buffer(data)

    def pull_name() -> str:
        name = pull_opaque(buf, 1, minimum=1)
        try:
            return name.decode("ascii")
        except UnicodeDecodeError:
            return name.decode("latin-1")

    names = pull_list(buf, 2, pull_name)
    _end(buf)
    if not names:
        raise DecodeError("empty ALPN list")
    return names


def push_alpn(names: Sequence[str]) -> bytes:
    buf = Buffer()
    with push_block(buf, 2):
        for name in names:
            push_opaque(buf, 1, name.encode("latin-1"))
    return buf.data


def pull_psk_key_exchange_modes(data: bytes) -> list[int]:
    buf = Buffer(data)
    modes = list(pull_opaque(buf, 1, minimum=1))
    _end(buf)
    return modes


@dataclass(frozen=True, slots=True)
class PskIdentity:
    identity: bytes
    obfuscated_ticket_age: int


@dataclass(frozen=True, slots=True)
class OfferedPsks:
    """pre_shared_key in ClientHello; `binders_length` is the encoded size of the binders vector."""

    identities: list[PskIdentity]
    binders: list[bytes]

    @property
    def binders_length(self) -> int:
        return 2 + sum(1 + len(binder) for binder in self.binders)


def pull_offered_psks(data: bytes) -> OfferedPsks:
    buf = Buffer(data)

    def pull_identity() -> PskIdentity:
        return PskIdentity(pull_opaque(buf, 2, minimum=1), buf.pull_uint32())

    identities = pull_list(buf, 2, pull_identity)
    binders = pull_list(buf, 2, lambda: pull_opaque(buf, 1, minimum=32))
    _end(buf)
    if not identities or len(identities) != len(binders):
        raise IllegalParameter("pre_shared_key identities and binders do not pair up")
    return OfferedPsks(identities, binders)


def push_offered_psks(psks: OfferedPsks) -> bytes:
    buf = Buffer()
    with push_block(buf, 2):
        for identity in psks.identities:
            push_opaque(buf, 2, identity.identity)
            buf.push_uint32(identity.obfuscated_ticket_age)
    push_list(buf, 2, lambda binder: push_opaque(buf, 1, binder), psks.binders)
    return buf.data


def pull_certificate_authorities(data: bytes) -> list[bytes]:
    buf = Buffer(data)
    names = pull_list(buf, 2, lambda: pull_opaque(buf, 2, minimum=1))
    _end(buf)
    return names


def push_certificate_authorities(names: Sequence[bytes]) -> bytes:
    buf = Buffer()
    push_list(buf, 2, lambda name: push_opaque(buf, 2, name), names)
    return buf.data


def pull_cookie(data: bytes) -> bytes:
    """Cookie: opaque cookie<1..2^16-1> (RFC 8446 4.2.2)."""
    buf = Buffer(data)
    cookie = pull_opaque(buf, 2, minimum=1)
    _end(buf)
    return cookie


def push_cookie(cookie: bytes) -> bytes:
    buf = Buffer()
    push_opaque(buf, 2, cookie)
    return buf.data


# ClientHello


@dataclass
class ClientHello:
    legacy_version: int
    random: bytes
    legacy_session_id: bytes
    cipher_suites: list[int]
    legacy_compression_methods: bytes
    extensions: list[Extension] = field(default_factory=list)

    def extension(self, extension_type: int) -> bytes | None:
        return find_extension(self.extensions, extension_type)


def pull_client_hello(buf: Buffer) -> ClientHello:
    _check_type(buf, HandshakeType.CLIENT_HELLO)
    with pull_block(buf, 3):
        legacy_version = buf.pull_uint16()
        random = buf.pull_bytes(RANDOM_LENGTH)
        legacy_session_id = pull_opaque(buf, 1)
        if len(legacy_session_id) > 32:
            raise DecodeError("legacy_session_id longer than 32 bytes")
        with pull_block(buf, 2) as length:
            if length < 2 or length % 2:
                raise DecodeError("bad cipher_suites length")
            cipher_suites = [buf.pull_uint16() for _ in range(length // 2)]
        compression = pull_opaque(buf, 1, minimum=1)
        extensions = pull_extensions(buf) if not buf.eof() else []
    return ClientHello(legacy_version, random, legacy_session_id, cipher_suites, compression, extensions)


def push_client_hello(buf: Buffer, hello: ClientHello) -> None:
    buf.push_uint8(HandshakeType.CLIENT_HELLO)
    with push_block(buf, 3):
        buf.push_uint16(hello.legacy_version)
        buf.push_bytes(hello.random)
        push_opaque(buf, 1, hello.legacy_session_id)
        push_list(buf, 2, buf.push_uint16, hello.cipher_suites)
        push_opaque(buf, 1, hello.legacy_compression_methods)
        push_extensions(buf, hello.extensions)


# ServerHello and HelloRetryRequest


@dataclass
class ServerHello:
    legacy_version: int
    random: bytes
    legacy_session_id_echo: bytes
    cipher_suite: int
    legacy_compression_method: int
    extensions: list[Extension] = field(default_factory=list)

    @property
    def is_hello_retry_request(self) -> bool:
        return self.random == HELLO_RETRY_REQUEST_RANDOM

    def extension(self, extension_type: int) -> bytes | None:
        return find_extension(self.extensions, extension_type)


def pull_server_hello(buf: Buffer) -> ServerHello:
    _check_type(buf, HandshakeType.SERVER_HELLO)
    with pull_block(buf, 3):
        legacy_version = buf.pull_uint16()
        random = buf.pull_bytes(RANDOM_LENGTH)
        session_id = pull_opaque(buf, 1)
        if len(session_id) > 32:
            raise DecodeError("legacy_session_id_echo longer than 32 bytes")
        cipher_suite = buf.pull_uint16()
        compression = buf.pull_uint8()
        extensions = pull_extensions(buf, minimum=6) if not buf.eof() else []
    return ServerHello(legacy_version, random, session_id, cipher_suite, compression, extensions)


def encode_server_hello(hello: ServerHello) -> bytes:
    body = (
        _uint(hello.legacy_version, 2)
        + hello.random
        + _uint(len(hello.legacy_session_id_echo), 1)
        + hello.legacy_session_id_echo
        + _uint(hello.cipher_suite, 2)
        + _uint(hello.legacy_compression_method, 1)
        + encode_extensions(hello.extensions)
    )
    return encode_handshake(HandshakeType.SERVER_HELLO, body)


def push_server_hello(buf: Buffer, hello: ServerHello) -> None:
    buf.push_bytes(encode_server_hello(hello))


# EncryptedExtensions


@dataclass
class EncryptedExtensions:
    extensions: list[Extension] = field(default_factory=list)


def pull_encrypted_extensions(buf: Buffer) -> EncryptedExtensions:
    _check_type(buf, HandshakeType.ENCRYPTED_EXTENSIONS)
    with pull_block(buf, 3):
        extensions = pull_extensions(buf)
    return EncryptedExtensions(extensions)


def push_encrypted_extensions(buf: Buffer, message: EncryptedExtensions) -> None:
    buf.push_bytes(
        encode_handshake(HandshakeType.ENCRYPTED_EXTENSIONS, encode_extensions(message.extensions))
    )


# CertificateRequest


@dataclass
class CertificateRequest:
    certificate_request_context: bytes
    extensions: list[Extension] = field(default_factory=list)


def pull_certificate_request(buf: Buffer) -> CertificateRequest:
    _check_type(buf, HandshakeType.CERTIFICATE_REQUEST)
    with pull_block(buf, 3):
        context = pull_opaque(buf, 1)
        extensions = pull_extensions(buf, minimum=2)
    return CertificateRequest(context, extensions)


def push_certificate_request(buf: Buffer, message: CertificateRequest) -> None:
    buf.push_uint8(HandshakeType.CERTIFICATE_REQUEST)
    with push_block(buf, 3):
        push_opaque(buf, 1, message.certificate_request_context)
        push_extensions(buf, message.extensions)


@lru_cache(maxsize=64)
def encode_certificate_request(extensions: tuple[Extension, ...]) -> bytes:
    """The whole CertificateRequest (empty context) for `extensions`, cached: it is the same every time."""
    buf = Buffer()
    push_certificate_request(buf, CertificateRequest(b"", list(extensions)))
    return buf.data


# Certificate


@dataclass(frozen=True, slots=True)
class CertificateEntry:
    cert_data: bytes
    extensions: tuple[Extension, ...] = ()


@dataclass
class Certificate:
    certificate_request_context: bytes
    certificate_list: list[CertificateEntry] = field(default_factory=list)


def pull_certificate(buf: Buffer) -> Certificate:
    _check_type(buf, HandshakeType.CERTIFICATE)
    with pull_block(buf, 3):
        context = pull_opaque(buf, 1)

        def pull_entry() -> CertificateEntry:
            return CertificateEntry(pull_opaque(buf, 3, minimum=1), tuple(pull_extensions(buf)))

        entries = pull_list(buf, 3, pull_entry)
    return Certificate(context, entries)


def push_certificate(buf: Buffer, message: Certificate) -> None:
    buf.push_uint8(HandshakeType.CERTIFICATE)
    with push_block(buf, 3):
        push_opaque(buf, 1, message.certificate_request_context)
        with push_block(buf, 3):
            for entry in message.certificate_list:
                push_opaque(buf, 3, entry.cert_data)
                push_extensions(buf, entry.extensions)


@lru_cache(maxsize=64)
def encode_certificate(ders: tuple[bytes, ...]) -> bytes:
    """The whole Certificate message (empty context, no entry extensions), cached per chain."""
    buf = Buffer()
    push_certificate(buf, Certificate(b"", [CertificateEntry(der) for der in ders]))
    return buf.data


# CertificateVerify


@dataclass
class CertificateVerify:
    algorithm: int
    signature: bytes


def pull_certificate_verify(buf: Buffer) -> CertificateVerify:
    _check_type(buf, HandshakeType.CERTIFICATE_VERIFY)
    with pull_block(buf, 3):
        algorithm = buf.pull_uint16()
        signature = pull_opaque(buf, 2, minimum=1)
    return CertificateVerify(algorithm, signature)


def encode_certificate_verify(message: CertificateVerify) -> bytes:
    body = _uint(message.algorithm, 2) + _uint(len(message.signature), 2) + message.signature
    return encode_handshake(HandshakeType.CERTIFICATE_VERIFY, body)


def push_certificate_verify(buf: Buffer, message: CertificateVerify) -> None:
    buf.push_bytes(encode_certificate_verify(message))


# Finished


@dataclass
class Finished:
    verify_data: bytes


def pull_finished(buf: Buffer, hash_length: int) -> Finished:
    _check_type(buf, HandshakeType.FINISHED)
    with pull_block(buf, 3) as length:
        if length != hash_length:
            raise DecodeError("Finished verify_data has the wrong length")
        verify_data = buf.pull_bytes(length)
    return Finished(verify_data)


def encode_finished(message: Finished) -> bytes:
    return encode_handshake(HandshakeType.FINISHED, message.verify_data)


def push_finished(buf: Buffer, message: Finished) -> None:
    buf.push_bytes(encode_finished(message))


# NewSessionTicket


@dataclass
class NewSessionTicket:
    ticket_lifetime: int
    ticket_age_add: int
    ticket_nonce: bytes
    ticket: bytes
    extensions: list[Extension] = field(default_factory=list)


def pull_new_session_ticket(buf: Buffer) -> NewSessionTicket:
    _check_type(buf, HandshakeType.NEW_SESSION_TICKET)
    with pull_block(buf, 3):
        lifetime = buf.pull_uint32()
        age_add = buf.pull_uint32()
        nonce = pull_opaque(buf, 1)
        ticket = pull_opaque(buf, 2, minimum=1)
        extensions = pull_extensions(buf)
    return NewSessionTicket(lifetime, age_add, nonce, ticket, extensions)


def encode_new_session_ticket(message: NewSessionTicket) -> bytes:
    body = (
        _uint(message.ticket_lifetime, 4)
        + _uint(message.ticket_age_add, 4)
        + _uint(len(message.ticket_nonce), 1)
        + message.ticket_nonce
        + _uint(len(message.ticket), 2)
        + message.ticket
        + encode_extensions(message.extensions)
    )
    return encode_handshake(HandshakeType.NEW_SESSION_TICKET, body)


def push_new_session_ticket(buf: Buffer, message: NewSessionTicket) -> None:
    buf.push_bytes(encode_new_session_ticket(message))


# KeyUpdate


@dataclass
class KeyUpdate:
    request_update: KeyUpdateRequest


def pull_key_update(buf: Buffer) -> KeyUpdate:
    _check_type(buf, HandshakeType.KEY_UPDATE)
    with pull_block(buf, 3):
        value = buf.pull_uint8()
    try:
        return KeyUpdate(KeyUpdateRequest(value))
    except ValueError:
        raise IllegalParameter("KeyUpdate request_update is not 0 or 1") from None


def push_key_update(buf: Buffer, message: KeyUpdate) -> None:
    buf.push_uint8(HandshakeType.KEY_UPDATE)
    with push_block(buf, 3):
        buf.push_uint8(message.request_update)


def message_hash(client_hello_hash: bytes) -> bytes:
    """The synthetic message that replaces ClientHello1 in the transcript after a HelloRetryRequest (4.4.1)."""
    return handshake_header(HandshakeType.MESSAGE_HASH, len(client_hello_hash)) + client_hello_hash

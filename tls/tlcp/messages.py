"""Handshake messages of GB/T 38636-2020 6.4.5 with their wire codecs.

Each message is a dataclass plus a `pull_x(buf)` / `push_x(buf, msg)` pair;
`pull_` reads the 4-byte handshake header too and checks the type.  Vectors go
through the block helpers of `buffer.py`, which raise `BufferReadError` on any
length mismatch (the connection maps that to `decode_error`).  Field-level
violations that are not framing errors raise the precise alert here.

TLCP differences from TLS 1.2 kept here:
- ServerKeyExchange / CertificateVerify carry a bare `opaque signature<2>`, no
  SignatureAndHashAlgorithm;
- CertificateRequest has no signature_algorithms field;
- ECDHE parameters are `ECParameters (03 0029) || opaque point<1>`, and the
  ClientKeyExchange may wrap them in an extra `<2>` length (see
  `pull_client_key_exchange`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

from .alerts import DecodeError, IllegalParameter, UnexpectedMessage
from .buffer import (
    Buffer,
    BufferReadError,
    pull_block,
    pull_list,
    pull_opaque,
    push_block,
    push_list,
    push_opaque,
)
from .suites import KeyExchange

HANDSHAKE_HEADER_LENGTH = 4
#: Largest handshake body accepted (a certificate chain of several certs fits easily).
MAX_HANDSHAKE_MESSAGE_LENGTH = 1 << 16

EC_CURVE_TYPE_NAMED_CURVE = 3
#: curveSM2 (RFC 8998 / TLCP implementations; GmSSL and Tongsuo both send 0x0029).
NAMED_CURVE_SM2 = 0x0029
SM2_POINT_LENGTH = 65
#: ECParameters (3) + u8 length + uncompressed point.
EC_PARAMS_LENGTH = 3 + 1 + SM2_POINT_LENGTH

COMPRESSION_NULL = 0


class HandshakeType(IntEnum):
    HELLO_REQUEST = 0
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    NEW_SESSION_TICKET = 4
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20


class ExtensionType(IntEnum):
    SERVER_NAME = 0
    APPLICATION_LAYER_PROTOCOL_NEGOTIATION = 16
    SESSION_TICKET = 35
    RENEGOTIATION_INFO = 0xFF01


class CertificateType(IntEnum):
    """ClientCertificateType of GB/T 38636-2020 6.4.5.5."""

    RSA_SIGN = 1
    ECDSA_SIGN = 64
    IBC_PARAMS = 80


Extension = tuple[int, bytes]


def _check_type(buf: Buffer, expected: HandshakeType) -> None:
    if buf.pull_uint8() != expected:
        raise UnexpectedMessage("handshake type mismatch")


# extensions


def pull_extensions(buf: Buffer) -> list[Extension] | None:
    """Optional trailing extension block; None when absent, duplicates are illegal."""
    if buf.eof():
        return None
    extensions: list[Extension] = []
    seen: set[int] = set()
    with pull_block(buf, 2):
        while not buf.eof():
            extension_type = buf.pull_uint16()
            if extension_type in seen:
                raise IllegalParameter("duplicate extension")
            seen.add(extension_type)
            extensions.append((extension_type, pull_opaque(buf, 2)))
    return extensions


def push_extensions(buf: Buffer, extensions: list[Extension] | None) -> None:
    if extensions is None:
        return
    with push_block(buf, 2):
        for extension_type, data in extensions:
            buf.push_uint16(extension_type)
            push_opaque(buf, 2, data)


def pull_server_name_extension(data: bytes) -> str:
    """RFC 6066 ServerNameList; returns the single host_name entry."""
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
            except UnicodeDecodeError as exc:
                raise DecodeError("host_name is not ASCII") from exc
    if not buf.eof():
        raise DecodeError("trailing bytes after server name list")
    if host_name is None:
        raise IllegalParameter("no host_name in server_name")
    return host_name


def push_server_name_extension(host_name: str) -> bytes:
    buf = Buffer()
    with push_block(buf, 2):
        buf.push_uint8(0)
        push_opaque(buf, 2, host_name.encode("ascii"))
    return buf.data


def pull_alpn_extension(data: bytes) -> list[str]:
    """RFC 7301 3.1 ProtocolNameList: `ProtocolName protocol_name_list<2..2^16-1>`, each
    `opaque ProtocolName<1..2^8-1>`.

    Names are opaque bytes; they come back as latin-1 text (one character per byte, so every name
    round-trips) as `tls.tls13` has them.  An empty list or an empty name is a decode_error (OpenSSL
    and Go answer both so).
    """
    buf = Buffer(data)
    names: list[str] = []
    with pull_block(buf, 2) as length:
        if length == 0:
            raise DecodeError("empty ALPN protocol list")
        while not buf.eof():
            name = pull_opaque(buf, 1)
            if not name:
                raise DecodeError("empty ALPN protocol name")
            names.append(name.decode("latin-1"))
    if not buf.eof():
        raise DecodeError("trailing bytes after the ALPN protocol list")
    return names


def push_alpn_extension(names: Sequence[str]) -> bytes:
    buf = Buffer()
    with push_block(buf, 2):
        for name in names:
            push_opaque(buf, 1, name.encode("latin-1"))
    return buf.data


# ClientHello


@dataclass
class ClientHello:
    version: int
    random: bytes
    session_id: bytes
    cipher_suites: list[int]
    compression_methods: list[int]
    extensions: list[Extension] | None = None

    def extension(self, extension_type: int) -> bytes | None:
        for key, data in self.extensions or ():
            if key == extension_type:
                return data
        return None


def pull_client_hello(buf: Buffer) -> ClientHello:
    _check_type(buf, HandshakeType.CLIENT_HELLO)
    with pull_block(buf, 3):
        version = buf.pull_uint16()
        random = buf.pull_bytes(32)
        session_id = pull_opaque(buf, 1)
        if len(session_id) > 32:
            raise DecodeError("session_id longer than 32 bytes")
        with pull_block(buf, 2) as length:
            if length == 0 or length % 2:
                raise DecodeError("bad cipher_suites length")
            cipher_suites = buf.pull_uint16_array(length // 2)
        compression_methods = list(pull_opaque(buf, 1, minimum=1))
        extensions = pull_extensions(buf)
    return ClientHello(version, random, session_id, cipher_suites, compression_methods, extensions)


def push_client_hello(buf: Buffer, hello: ClientHello) -> None:
    buf.push_uint8(HandshakeType.CLIENT_HELLO)
    with push_block(buf, 3):
        buf.push_uint16(hello.version)
        buf.push_bytes(hello.random)
        push_opaque(buf, 1, hello.session_id)
        push_list(buf, 2, buf.push_uint16, hello.cipher_suites)
        push_opaque(buf, 1, bytes(hello.compression_methods))
        push_extensions(buf, hello.extensions)


# ServerHello


@dataclass
class ServerHello:
    version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int
    extensions: list[Extension] | None = None


def pull_server_hello(buf: Buffer) -> ServerHello:
    _check_type(buf, HandshakeType.SERVER_HELLO)
    with pull_block(buf, 3):
        version = buf.pull_uint16()
        random = buf.pull_bytes(32)
        session_id = pull_opaque(buf, 1)
        if len(session_id) > 32:
            raise DecodeError("session_id longer than 32 bytes")
        cipher_suite = buf.pull_uint16()
        compression_method = buf.pull_uint8()
        extensions = pull_extensions(buf)
    return ServerHello(version, random, session_id, cipher_suite, compression_method, extensions)


def push_server_hello(buf: Buffer, hello: ServerHello) -> None:
    buf.push_uint8(HandshakeType.SERVER_HELLO)
    with push_block(buf, 3):
        buf.push_uint16(hello.version)
        buf.push_bytes(hello.random)
        push_opaque(buf, 1, hello.session_id)
        buf.push_uint16(hello.cipher_suite)
        buf.push_uint8(hello.compression_method)
        push_extensions(buf, hello.extensions)


# Certificate


@dataclass
class Certificate:
    """certificate_list in sender order: sign cert, enc cert, then chain (6.4.5.3)."""

    certificates: list[bytes] = field(default_factory=list)


def pull_certificate(buf: Buffer) -> Certificate:
    _check_type(buf, HandshakeType.CERTIFICATE)
    with pull_block(buf, 3):
        certificates = pull_list(buf, 3, lambda: pull_opaque(buf, 3, minimum=1))
    return Certificate(certificates)


def push_certificate(buf: Buffer, message: Certificate) -> None:
    buf.push_uint8(HandshakeType.CERTIFICATE)
    with push_block(buf, 3):
        push_list(buf, 3, lambda der: push_opaque(buf, 3, der), message.certificates)


@lru_cache(maxsize=64)
def encode_certificate(certificates: tuple[bytes, ...]) -> bytes:
    """The whole Certificate message for `certificates`, cached: an endpoint sends the same list on
    every full handshake, so it is framed once rather than per handshake."""
    buf = Buffer()
    push_certificate(buf, Certificate(list(certificates)))
    return buf.data


# ECDHE parameters


def pull_ec_params(buf: Buffer) -> bytes:
    """ECParameters (named_curve curveSM2) || ECPoint; returns the 65-byte point."""
    if buf.pull_uint8() != EC_CURVE_TYPE_NAMED_CURVE:
        raise IllegalParameter("ECParameters curve_type is not named_curve")
    if buf.pull_uint16() != NAMED_CURVE_SM2:
        raise IllegalParameter("ECParameters named_curve is not curveSM2")
    point = pull_opaque(buf, 1, minimum=1)
    if len(point) != SM2_POINT_LENGTH or point[0] != 0x04:
        raise IllegalParameter("ECPoint is not an uncompressed SM2 point")
    return point


def encode_ec_params(point: bytes) -> bytes:
    buf = Buffer()
    buf.push_uint8(EC_CURVE_TYPE_NAMED_CURVE)
    buf.push_uint16(NAMED_CURVE_SM2)
    push_opaque(buf, 1, point)
    return buf.data


# ServerKeyExchange


@dataclass
class ServerKeyExchange:
    """ECC: signature only.  ECDHE: `ecdh_public` (ServerECDHParams point) then signature."""

    signature: bytes
    ecdh_public: bytes | None = None


def pull_server_key_exchange(buf: Buffer, key_exchange: KeyExchange) -> ServerKeyExchange:
    _check_type(buf, HandshakeType.SERVER_KEY_EXCHANGE)
    with pull_block(buf, 3):
        ecdh_public = pull_ec_params(buf) if key_exchange is KeyExchange.ECDHE else None
        signature = pull_opaque(buf, 2, minimum=1)
    return ServerKeyExchange(signature, ecdh_public)


def push_server_key_exchange(buf: Buffer, message: ServerKeyExchange) -> None:
    buf.push_uint8(HandshakeType.SERVER_KEY_EXCHANGE)
    with push_block(buf, 3):
        if message.ecdh_public is not None:
            buf.push_bytes(encode_ec_params(message.ecdh_public))
        push_opaque(buf, 2, message.signature)


def ecc_signed_params(client_random: bytes, server_random: bytes, enc_cert_der: bytes) -> bytes:
    """Data signed in an ECC ServerKeyExchange: randoms || ASN.1Cert<1..2^24-1> of the enc cert."""
    return client_random + server_random + encode_asn1_cert(enc_cert_der)


@lru_cache(maxsize=64)
def encode_asn1_cert(der: bytes) -> bytes:
    """`opaque ASN.1Cert<1..2^24-1>`, cached: the server signs its enc certificate in this form on
    every ECC full handshake."""
    buf = Buffer()
    push_opaque(buf, 3, der)
    return buf.data


def ecdhe_signed_params(client_random: bytes, server_random: bytes, ecdh_public: bytes) -> bytes:
    """Data signed in an ECDHE ServerKeyExchange: randoms || ServerECDHParams."""
    return client_random + server_random + encode_ec_params(ecdh_public)


# CertificateRequest


@dataclass
class CertificateRequest:
    certificate_types: list[int]
    certificate_authorities: list[bytes] = field(default_factory=list)


def pull_certificate_request(buf: Buffer) -> CertificateRequest:
    _check_type(buf, HandshakeType.CERTIFICATE_REQUEST)
    with pull_block(buf, 3):
        certificate_types = list(pull_opaque(buf, 1, minimum=1))
        authorities = pull_list(buf, 2, lambda: pull_opaque(buf, 2, minimum=1))
    return CertificateRequest(certificate_types, authorities)


def push_certificate_request(buf: Buffer, message: CertificateRequest) -> None:
    buf.push_uint8(HandshakeType.CERTIFICATE_REQUEST)
    with push_block(buf, 3):
        push_opaque(buf, 1, bytes(message.certificate_types))
        push_list(buf, 2, lambda dn: push_opaque(buf, 2, dn), message.certificate_authorities)


@lru_cache(maxsize=64)
def encode_certificate_request(certificate_types: tuple[int, ...], authorities: tuple[bytes, ...]) -> bytes:
    """The whole CertificateRequest message, cached like `encode_certificate`."""
    buf = Buffer()
    push_certificate_request(buf, CertificateRequest(list(certificate_types), list(authorities)))
    return buf.data


# ServerHelloDone


@dataclass
class ServerHelloDone:
    pass


def pull_server_hello_done(buf: Buffer) -> ServerHelloDone:
    _check_type(buf, HandshakeType.SERVER_HELLO_DONE)
    with pull_block(buf, 3):
        pass
    return ServerHelloDone()


def push_server_hello_done(buf: Buffer, message: ServerHelloDone) -> None:
    buf.push_uint8(HandshakeType.SERVER_HELLO_DONE)
    buf.push_uint24(0)


def _encode_server_hello_done() -> bytes:
    buf = Buffer()
    push_server_hello_done(buf, ServerHelloDone())
    return buf.data


#: ServerHelloDone has no content: every server sends these same four bytes.
SERVER_HELLO_DONE_MESSAGE = _encode_server_hello_done()


# HelloRequest


def pull_hello_request(buf: Buffer) -> None:
    _check_type(buf, HandshakeType.HELLO_REQUEST)
    with pull_block(buf, 3):
        pass


# ClientKeyExchange


@dataclass
class ClientKeyExchange:
    """ECC: `encrypted_pre_master_secret` (DER SM2 ciphertext, C1C3C2).

    ECDHE: `ecdh_public` plus `params_as_vector`: whether ClientECDHEParams is
    wrapped in a `<2>` length or sent bare.  GB/T 38636-2020 6.4.5.8 defines
    `case ECDHE: opaque ClientECDHEParams<1..2^16-1>;`, i.e. the vector form
    (quoted in GmSSL's src/tlcp.c, and Tongsuo 8.5's NTLS notes call the bare
    form its legacy-compatible encoding).  GmSSL sends the vector form,
    Tongsuo/BabaSSL the bare `03 00 29 41 04..` form; both are accepted, and
    what we send follows `PeerProfile` (standard = vector).
    """

    encrypted_pre_master_secret: bytes | None = None
    ecdh_public: bytes | None = None
    params_as_vector: bool = True


def pull_client_key_exchange(buf: Buffer, key_exchange: KeyExchange) -> ClientKeyExchange:
    _check_type(buf, HandshakeType.CLIENT_KEY_EXCHANGE)
    with pull_block(buf, 3):
        if key_exchange is KeyExchange.ECC:
            return ClientKeyExchange(encrypted_pre_master_secret=pull_opaque(buf, 2, minimum=1))
        # the bare form starts with curve_type 0x03; the vector form with the length 0x0045
        if buf.remaining() and buf.data_slice(buf.tell(), buf.tell() + 1)[0] == EC_CURVE_TYPE_NAMED_CURVE:
            return ClientKeyExchange(ecdh_public=pull_ec_params(buf), params_as_vector=False)
        with pull_block(buf, 2):
            point = pull_ec_params(buf)
        return ClientKeyExchange(ecdh_public=point, params_as_vector=True)


def push_client_key_exchange(buf: Buffer, message: ClientKeyExchange) -> None:
    buf.push_uint8(HandshakeType.CLIENT_KEY_EXCHANGE)
    with push_block(buf, 3):
        if message.encrypted_pre_master_secret is not None:
            push_opaque(buf, 2, message.encrypted_pre_master_secret)
        elif message.ecdh_public is not None:
            params = encode_ec_params(message.ecdh_public)
            if message.params_as_vector:
                push_opaque(buf, 2, params)
            else:
                buf.push_bytes(params)
        else:
            raise ValueError("ClientKeyExchange has no exchange keys")


# CertificateVerify


@dataclass
class CertificateVerify:
    signature: bytes


def pull_certificate_verify(buf: Buffer) -> CertificateVerify:
    _check_type(buf, HandshakeType.CERTIFICATE_VERIFY)
    with pull_block(buf, 3):
        signature = pull_opaque(buf, 2, minimum=1)
    return CertificateVerify(signature)


def push_certificate_verify(buf: Buffer, message: CertificateVerify) -> None:
    buf.push_uint8(HandshakeType.CERTIFICATE_VERIFY)
    with push_block(buf, 3):
        push_opaque(buf, 2, message.signature)


# Finished


@dataclass
class Finished:
    verify_data: bytes


def pull_finished(buf: Buffer) -> Finished:
    _check_type(buf, HandshakeType.FINISHED)
    with pull_block(buf, 3) as length:
        if length != 12:
            raise DecodeError("Finished verify_data is not 12 bytes")
        verify_data = buf.pull_bytes(12)
    return Finished(verify_data)


def push_finished(buf: Buffer, message: Finished) -> None:
    buf.push_uint8(HandshakeType.FINISHED)
    with push_block(buf, 3):
        buf.push_bytes(message.verify_data)


__all__ = [
    "BufferReadError",
    "Certificate",
    "CertificateRequest",
    "CertificateType",
    "CertificateVerify",
    "ClientHello",
    "ClientKeyExchange",
    "ExtensionType",
    "Finished",
    "HandshakeType",
    "ServerHello",
    "ServerHelloDone",
    "ServerKeyExchange",
]

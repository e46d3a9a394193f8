"""Shared machinery of the client and server handshakes.

A handshake object is Go's `clientHandshakeState`/`serverHandshakeState`: it
lives for one handshake, owns the transcript and the negotiated secrets, and
is dropped once `HandshakeComplete` is emitted.  Messages are dispatched
through a `{(state, HandshakeType): handler}` table; any other pair is an
`unexpected_message`.  Every received message is appended to the transcript
before its handler runs; handlers that need the transcript *before* the
message (CertificateVerify, Finished) use `transcript_before`.

Helpers here that draw on randomness or derive secrets are module-level
functions looked up at call time, so the known-answer replay tests can
substitute the values a recording did not log (ECDHE ephemeral keys).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from certs import Certificate, CertificateError, Role, TrustStore, verify_sm2_chain
from tls.crypto import CryptoError, SM2PrivateKey

from .alerts import BadCertificate, DecryptError, UnexpectedMessage, UnsupportedCertificate, alert_for_name
from .buffer import Buffer
from .config import TLCPConfiguration, TLCPSession
from .events import Event
from .keys import compute_verify_data, derive_key_block
from .messages import Finished, HandshakeType, push_finished
from .record import CBCProtection, ContentType, GCMProtection, RecordProtection, RecordReader, RecordWriter
from .suites import SUITE_PARAMETERS, BulkCipher, CipherSuite

#: Order n of the SM2 curve (GB/T 32918.5); private keys lie in [1, n-2].
SM2_CURVE_ORDER = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123

S = TypeVar("S", bound=Enum)
Handler = Callable[[bytes], None]


def generate_ephemeral_key(random: Callable[[int], bytes]) -> SM2PrivateKey:
    """ECDHE ephemeral key from the configured random source (rejection sampling)."""
    while True:
        scalar = int.from_bytes(random(32), "big")
        if 1 <= scalar <= SM2_CURVE_ORDER - 2:
            return SM2PrivateKey.from_scalar(scalar)


def parse_certificates(ders: Sequence[bytes]) -> list[Certificate]:
    certificates: list[Certificate] = []
    for der in ders:
        try:
            certificates.append(Certificate.from_der(der))
        except CertificateError as exc:
            raise alert_for_name(exc.alert, "malformed certificate") from None
        except (ValueError, TypeError):
            raise BadCertificate("malformed certificate") from None
    return certificates


def require_sm2(*certificates: Certificate | None) -> None:
    """Each certificate must carry a usable SM2 public key."""
    for certificate in certificates:
        if certificate is None:
            continue
        if not certificate.is_sm2:
            raise UnsupportedCertificate("certificate key is not SM2")
        try:
            certificate.sm2_public_key()
        except (CryptoError, CertificateError, ValueError):
            raise BadCertificate("certificate carries an invalid SM2 key") from None


def verify_chain(
    leaf: Certificate,
    intermediates: Sequence[Certificate],
    trust_store: TrustStore,
    role: Role,
    now: datetime,
    hostname: str | None = None,
) -> None:
    try:
        verify_sm2_chain(leaf, intermediates, trust_store, role=role, now=now, hostname=hostname)
    except CertificateError as exc:
        raise alert_for_name(exc.alert, f"{role.name} certificate rejected: {exc}") from None


def make_protection(
    suite: CipherSuite, mac_key: bytes, key: bytes, iv: bytes, random: Callable[[int], bytes] | None
) -> RecordProtection:
    """Cipher state of one direction; `random` is given for the direction we write."""
    if SUITE_PARAMETERS[suite].bulk is BulkCipher.SM4_CBC:
        return CBCProtection(mac_key, key, random)
    nonce_start = int.from_bytes(random(8), "big") if random is not None else 0
    return GCMProtection(key, iv, nonce_start)


class Handshake:
    """Base of `ClientHandshake` and `ServerHandshake`."""

    is_client: bool
    state: Any
    dispatch: dict[tuple[Any, HandshakeType], Handler]

    def __init__(self, configuration: TLCPConfiguration, reader: RecordReader, writer: RecordWriter) -> None:
        self.configuration = configuration
        self.reader = reader
        self.writer = writer
        self.transcript = bytearray()
        self.transcript_mark = 0
        self.events: list[Event] = []
        self.complete = False
        self.client_random = b""
        self.server_random = b""
        self.cipher_suite: CipherSuite | None = None
        self.master_secret = b""
        self.session: TLCPSession | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state={self.state!r})"

    # input

    @property
    def expects_change_cipher_spec(self) -> bool:
        raise NotImplementedError

    def handle_message(self, message_type: int, raw: bytes) -> None:
        try:
            handler = self.dispatch[(self.state, HandshakeType(message_type))]
        except (KeyError, ValueError):
            raise UnexpectedMessage(f"handshake message {message_type} in state {self.state.name}") from None
        self.transcript_mark = len(self.transcript)
        self.transcript += raw
        handler(raw)

    def handle_change_cipher_spec(self) -> None:
        raise NotImplementedError

    @property
    def transcript_before(self) -> bytes:
        """Handshake messages before the one being handled."""
        return bytes(self.transcript[: self.transcript_mark])

    # output

    def send_message(self, push: Callable[[Buffer, Any], None], message: object) -> None:
        buf = Buffer()
        push(buf, message)
        data = buf.data
        self.transcript += data
        self.writer.write(ContentType.HANDSHAKE, data)

    def send_change_cipher_spec(self) -> None:
        self.writer.write(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
        self.writer.change_cipher_spec()

    def send_finished(self, label: bytes) -> None:
        verify_data = compute_verify_data(self.master_secret, label, bytes(self.transcript))
        self.send_message(push_finished, Finished(verify_data))

    def check_finished(self, received: Finished, label: bytes) -> None:
        expected = compute_verify_data(self.master_secret, label, self.transcript_before)
        if not hmac.compare_digest(expected, received.verify_data):
            raise DecryptError("Finished verify_data mismatch")

    # keys

    def install_pending_keys(self) -> None:
        """Derive the key block and stage both directions for ChangeCipherSpec."""
        assert self.cipher_suite is not None
        block = derive_key_block(
            self.master_secret, self.client_random, self.server_random, SUITE_PARAMETERS[self.cipher_suite]
        )
        random = self.configuration.random
        suite = self.cipher_suite
        client_writes = random if self.is_client else None
        server_writes = None if self.is_client else random
        client = make_protection(
            suite, block.client_mac_key, block.client_key, block.client_iv, client_writes
        )
        server = make_protection(
            suite, block.server_mac_key, block.server_key, block.server_iv, server_writes
        )
        if self.is_client:
            self.writer.pending, self.reader.pending = client, server
        else:
            self.writer.pending, self.reader.pending = server, client

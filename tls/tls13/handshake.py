"""Machinery shared by the TLS 1.3 client and server handshakes.

A handshake object is Go's `clientHandshakeState`/`serverHandshakeState`: it lives for one handshake,
owns the transcript and the key schedule, and is dropped once `HandshakeComplete` is emitted (what the
connection needs afterwards, the traffic secrets and the resumption master secret, it hands over in
`TrafficSecrets`).  Messages are dispatched through a `{(state, HandshakeType): handler}` table; any
other pair is an unexpected_message.  Every received message is added to the transcript before its
handler runs; handlers that need the transcript *before* the message (ClientHello binders,
HelloRetryRequest, CertificateVerify, Finished) use `hash_before`, a copy of the running SM3 taken
just before it.

CertificateVerify (RFC 8446 4.4.3) signs 64 spaces, a context string, a zero byte and the transcript
hash; with sm2sig_sm3 the SM2 signature runs over SM3(Z_A || content) with the distinguishing ID of
RFC 8998 3.2.1 (see `config.RFC8998_SM2_ID`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from certs import Certificate, CertificateError, Role, TrustStore
from tls.crypto import CryptoError, InvalidKey, InvalidSignature, SM2PrivateKey, SM2PublicKey, SM3Hash
from tls.tlcp.buffer import Buffer
from tls.tlcp.handshake import VERIFIED_CHAINS

from .alerts import (
    BadCertificate,
    DecryptError,
    IllegalParameter,
    UnexpectedMessage,
    UnsupportedCertificate,
    alert_for_name,
)
from .config import ACCEPTED_SM2_IDS, TLS13Configuration
from .events import Event, HandshakeComplete
from .keyschedule import Secret, finished_verify_data
from .messages import (
    SM2_POINT_LENGTH,
    Finished,
    HandshakeType,
    encode_finished,
    message_hash,
    pull_certificate_verify,
)
from .record import ContentType, RecordProtection, RecordReader, RecordWriter
from .suites import CipherSuite, NamedGroup, SignatureScheme

#: A message handler, called as handler(handshake, raw message).
Handler = Callable[[Any, bytes], None]

SERVER_CERTIFICATE_VERIFY_CONTEXT = b"TLS 1.3, server CertificateVerify"
CLIENT_CERTIFICATE_VERIFY_CONTEXT = b"TLS 1.3, client CertificateVerify"

_HASHED_BEFORE = frozenset(
    (
        HandshakeType.CLIENT_HELLO,
        HandshakeType.SERVER_HELLO,
        HandshakeType.CERTIFICATE_VERIFY,
        HandshakeType.FINISHED,
    )
)


class Transcript:
    """The running SM3 of the handshake messages (RFC 8446 4.4.1)."""

    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = SM3Hash()

    def add(self, message: bytes) -> None:
        self._hash.update(message)

    def digest(self) -> bytes:
        return self._hash.digest()

    def state(self) -> SM3Hash:
        """A copy of the running hash (to extend with a message not yet added)."""
        return self._hash.copy()

    def restart_after_retry(self, client_hello_hash: bytes, hello_retry_request: bytes) -> None:
        """Replace ClientHello1 by its message_hash, then add the HelloRetryRequest (4.4.1)."""
        self._hash = SM3Hash(message_hash(client_hello_hash))
        self._hash.update(hello_retry_request)


def certificate_verify_content(context: bytes, transcript_hash: bytes) -> bytes:
    return b"\x20" * 64 + context + b"\x00" + transcript_hash


def sign_certificate_verify(
    key: SM2PrivateKey, context: bytes, transcript_hash: bytes, sm2_id: bytes
) -> bytes:
    return key.sign(certificate_verify_content(context, transcript_hash), sm2_id)


def verify_certificate_verify(
    public_key: SM2PublicKey, signature: bytes, context: bytes, transcript_hash: bytes
) -> bytes:
    """Check an sm2sig_sm3 CertificateVerify with each accepted SM2 ID; returns the ID that verified."""
    content = certificate_verify_content(context, transcript_hash)
    for sm2_id in ACCEPTED_SM2_IDS:
        try:
            public_key.verify(signature, content, sm2_id)
        except InvalidSignature:
            continue
        return sm2_id
    raise DecryptError("CertificateVerify signature does not verify")


def parse_certificate_chain(ders: Sequence[bytes]) -> tuple[Certificate, ...]:
    """Parse a peer's chain; the leaf must carry a usable SM2 key (sm2sig_sm3 is all we negotiate)."""
    certificates: list[Certificate] = []
    for der in ders:
        try:
            certificates.append(Certificate.from_der(der))
        except CertificateError as exc:
            raise alert_for_name(exc.alert, "malformed certificate") from None
        except (ValueError, TypeError):
            raise BadCertificate("malformed certificate") from None
    leaf = certificates[0]
    if not leaf.is_sm2:
        raise UnsupportedCertificate("certificate key is not SM2")
    try:
        leaf.sm2_public_key()
    except (CryptoError, CertificateError, ValueError):
        raise BadCertificate("certificate carries an invalid SM2 key") from None
    return tuple(certificates)


def verify_chain(
    chain: Sequence[Certificate],
    trust_store: TrustStore,
    role: Role,
    configuration: TLS13Configuration,
    hostname: str | None,
) -> None:
    """`certs` validation of the peer chain (cached per chain by the TLCP engine's shared cache)."""
    try:
        VERIFIED_CHAINS.verify(chain[0], chain[1:], trust_store, role, configuration.now(), hostname)
    except CertificateError as exc:
        raise alert_for_name(exc.alert, f"{role.name} certificate rejected: {exc}") from None


def ecdhe_shared_secret(private_key: SM2PrivateKey, key_exchange: bytes) -> bytes:
    """The ECDHE shared secret with a peer's curveSM2 key_exchange: the x coordinate of [d]Q (RFC 8446
    7.4.2).  Q must be an uncompressed point (RFC 8998 3.3, RFC 8446 4.2.8.2) on the curve; the crypto
    provider checks that as part of the multiplication."""
    if len(key_exchange) != SM2_POINT_LENGTH or key_exchange[0] != 0x04:
        raise IllegalParameter("curveSM2 key share is not an uncompressed point")
    try:
        return private_key.exchange_point(key_exchange)
    except InvalidKey:
        raise IllegalParameter("curveSM2 key share is not on the curve") from None
    except CryptoError:
        raise IllegalParameter("curveSM2 key exchange failed") from None


@dataclass
class TrafficSecrets:
    """What outlives the handshake: application secrets per direction and, for tickets, the resumption one."""

    cipher_suite: CipherSuite
    client_application: Secret = field(repr=False)
    server_application: Secret = field(repr=False)
    exporter: bytes = field(repr=False)
    #: None on a server that issues no tickets (nothing would use it)
    resumption_master: Secret | None = field(repr=False)


class Handshake:
    """Base of `ClientHandshake` and `ServerHandshake`."""

    is_client: bool
    state: Enum
    dispatch: ClassVar[dict[tuple[Any, int], Handler]]

    def __init__(self, configuration: TLS13Configuration, reader: RecordReader, writer: RecordWriter) -> None:
        self.configuration = configuration
        self.reader = reader
        self.writer = writer
        self.transcript = Transcript()
        self.hash_before = SM3Hash()
        self.events: list[Event] = []
        self.complete = False
        self.messages_received = 0
        #: set when a handler installed new read keys: the message must have ended its record (5.1)
        self.read_key_changed = False
        self.cipher_suite: CipherSuite | None = None
        self.secrets: TrafficSecrets | None = None
        self.client_random = b""
        self.alpn_protocol: str | None = None
        self.peer_certificates: tuple[Certificate, ...] = ()
        #: the peer chain was validated against the configured trust anchors (an identity, not a claim)
        self.peer_verified = False
        self.peer_sm2_signature_id: bytes | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state={self.state!r})"

    # input

    def handle_message(self, message_type: int, raw: bytes) -> None:
        handler = self.dispatch.get((self.state, message_type))
        if handler is None:
            raise UnexpectedMessage(f"handshake message {message_type} in state {self.state.name}")
        self.messages_received += 1
        if message_type in _HASHED_BEFORE:
            self.hash_before = self.transcript.state()
        self.transcript.add(raw)
        handler(self, raw)

    # output

    def send_message(self, push: Callable[[Buffer, Any], None], message: object) -> None:
        buf = Buffer()
        push(buf, message)
        self.send_encoded(buf.data)

    def send_encoded(self, data: bytes) -> None:
        self.transcript.add(data)
        self.writer.write(ContentType.HANDSHAKE, data)

    def send_finished(self, base_key: Secret) -> None:
        self.send_encoded(encode_finished(Finished(finished_verify_data(base_key, self.transcript.digest()))))

    def check_finished(self, received: Finished, base_key: Secret) -> None:
        expected = finished_verify_data(base_key, self.hash_before.digest())
        if not hmac.compare_digest(expected, received.verify_data):
            raise DecryptError("Finished verify_data mismatch")

    def check_peer_certificate_verify(self, raw: bytes, context: bytes, other_scheme: str) -> None:
        """The peer's CertificateVerify must be sm2sig_sm3 (``other_scheme``: the refusal otherwise) over
        the transcript before it, by the leaf of `peer_certificates`; remembers the SM2 ID that verified."""
        message = pull_certificate_verify(Buffer(raw))
        if message.algorithm != SignatureScheme.sm2sig_sm3:
            raise IllegalParameter(other_scheme)
        self.peer_sm2_signature_id = verify_certificate_verify(
            self.peer_certificates[0].sm2_public_key(),
            message.signature,
            context,
            self.hash_before.digest(),
        )

    def report_complete(
        self,
        *,
        server_name: str | None,
        session_resumed: bool,
        signature_scheme: SignatureScheme | None,
        certificate_requested: bool = False,
    ) -> None:
        """The handshake is over: `HandshakeComplete` with what both sides negotiated."""
        assert self.cipher_suite is not None
        self.complete = True
        self.events.append(
            HandshakeComplete(
                cipher_suite=self.cipher_suite,
                server_name=server_name,
                alpn_protocol=self.alpn_protocol,
                peer_certificates=self.peer_certificates,
                session_resumed=session_resumed,
                group=NamedGroup.curveSM2,
                signature_scheme=signature_scheme,
                peer_sm2_signature_id=self.peer_sm2_signature_id,
                peer_verified=self.peer_verified,
                certificate_requested=certificate_requested,
            )
        )

    # keys

    def log_secret(self, label: str, secret: bytes) -> None:
        """One NSS key log line, when the configuration asks for them (`TLS13Configuration.key_log`)."""
        key_log = self.configuration.key_log
        if key_log is not None:
            key_log(f"{label} {self.client_random.hex()} {secret.hex()}")

    def log_handshake_secrets(self, client_secret: bytes, server_secret: bytes) -> None:
        self.log_secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET", client_secret)
        self.log_secret("SERVER_HANDSHAKE_TRAFFIC_SECRET", server_secret)

    def log_application_secrets(self, client_secret: bytes, server_secret: bytes, exporter: bytes) -> None:
        self.log_secret("CLIENT_TRAFFIC_SECRET_0", client_secret)
        self.log_secret("SERVER_TRAFFIC_SECRET_0", server_secret)
        self.log_secret("EXPORTER_SECRET", exporter)

    def install_read_keys(self, traffic_secret: Secret) -> None:
        assert self.cipher_suite is not None
        self.reader.set_protection(RecordProtection(self.cipher_suite, traffic_secret))
        self.read_key_changed = True

    def install_write_keys(self, traffic_secret: Secret) -> None:
        assert self.cipher_suite is not None
        self.writer.set_protection(RecordProtection(self.cipher_suite, traffic_secret))

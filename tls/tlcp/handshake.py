"""Shared machinery of the client and server handshakes.

A handshake object is Go's `clientHandshakeState`/`serverHandshakeState`: it
lives for one handshake, owns the transcript and the negotiated secrets, and
is dropped once `HandshakeComplete` is emitted.  Messages are dispatched
through a `{(state, HandshakeType): handler}` table; any other pair is an
`unexpected_message`.  Every received message is appended to the transcript
before its handler runs; handlers that need the transcript *before* the
message (CertificateVerify, Finished) use `transcript_before` and
`transcript_hash_before`.  The `Transcript` hashes messages as they are added,
so Finished and CertificateVerify take a digest of the running SM3 instead of
rehashing every message.

Helpers here that draw on randomness or derive secrets are module-level
functions looked up at call time, so the known-answer replay tests can
substitute the values a recording did not log (ECDHE ephemeral keys).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, TypeVar

from certs import BadCertificateSignature, Certificate, CertificateError, Role, TrustStore, verify_sm2_chain
from tls.crypto import HMACSM3, CryptoError, SM2PrivateKey, SM3Hash

from .alerts import BadCertificate, DecryptError, UnexpectedMessage, UnsupportedCertificate, alert_for_name
from .buffer import Buffer
from .config import TLCPConfiguration, TLCPSession
from .events import Event
from .keys import derive_key_block, verify_data_from_hash
from .messages import Finished, HandshakeType, push_finished
from .record import CBCProtection, ContentType, GCMProtection, RecordProtection, RecordReader, RecordWriter
from .suites import SUITE_PARAMETERS, BulkCipher, CipherSuite

#: Order n of the SM2 curve (GB/T 32918.5); private keys lie in [1, n-2].
SM2_CURVE_ORDER = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123

S = TypeVar("S", bound=Enum)
#: A message handler, called as handler(handshake, raw message).
Handler = Callable[[Any, bytes], None]

#: Added to an SM2 signature failure: signer and verifier must hash the same SM2 ID into Z
#: (GB/T 32918.2); every stack defaults to 1234567812345678 (GM/T 0009), but some CAs and HSMs sign
#: with another, and the signature then fails although key and data are right.
SM2_ID_HINT = (
    " (an SM2 signature that fails with the right key is often made with an SM2 ID other than the "
    "default 1234567812345678)"
)

#: Received messages whose handlers need SM3 of the transcript before them.
_HASHED_BEFORE = frozenset((HandshakeType.CERTIFICATE_VERIFY, HandshakeType.FINISHED))


class Transcript:
    """handshake_messages of GB/T 38636-2020 6.4.5.9/6.4.5.10 with their running SM3.

    `transcript += message` appends; `digest()` is SM3 of everything so far without rehashing it.  The
    bytes are kept as well: GmSSL's CertificateVerify signs the messages themselves.
    """

    __slots__ = ("_hash", "_messages")

    def __init__(self) -> None:
        self._messages = bytearray()
        self._hash = SM3Hash()

    def __iadd__(self, message: bytes) -> Transcript:
        self._messages += message
        self._hash.update(message)
        return self

    def __len__(self) -> int:
        return len(self._messages)

    def __bytes__(self) -> bytes:
        return bytes(self._messages)

    def prefix(self, length: int) -> bytes:
        """The first `length` bytes (the messages before a given one)."""
        return bytes(self._messages[:length])

    def digest(self) -> bytes:
        return self._hash.digest()


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


class VerifiedChains:
    """Peer chains that passed `certs.verify_sm2_chain`, each with the time window its path is valid in.

    Every check of `verify_sm2_chain` except the validity period is a function of the certificates'
    bytes, the trust anchors, the role and the host name: path building and each link's signature,
    CA flags and keyUsage, path lengths, critical extensions, the leaf's usage and SAN.  A peer
    resends the same chain on every handshake, so once a (leaf, intermediates, anchors, role,
    host name) combination has passed, a later handshake only has to re-check the time against the
    window in which every certificate of the path is valid (max notBefore .. min notAfter).  Outside
    that window, or for anything not seen before, the full verification runs again and raises its
    precise error.  Bounded; the oldest entries are dropped first.
    """

    def __init__(self, max_size: int = 256) -> None:
        self.max_size = max_size
        self._windows: dict[tuple[object, ...], tuple[datetime, datetime]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def clear(self) -> None:
        self._windows.clear()

    def verify(
        self,
        leaf: Certificate,
        intermediates: Sequence[Certificate],
        trust_store: TrustStore,
        role: Role,
        now: datetime,
        hostname: str | None = None,
    ) -> None:
        """Raise `CertificateError` unless the chain verifies at `now` (see `certs.verify_sm2_chain`)."""
        key = (leaf, tuple(intermediates), tuple(trust_store.anchors), role, hostname)
        window = self._windows.get(key)
        if window is not None and now.tzinfo is not None and window[0] <= now <= window[1]:
            return
        path = verify_sm2_chain(leaf, intermediates, trust_store, role=role, now=now, hostname=hostname)
        windows = self._windows
        while len(windows) >= self.max_size:
            try:
                del windows[next(iter(windows))]
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                break
        windows[key] = (
            max(certificate.not_before for certificate in path),
            min(certificate.not_after for certificate in path),
        )


#: Shared by every connection of the process.
VERIFIED_CHAINS = VerifiedChains()


def verify_chain(
    leaf: Certificate,
    intermediates: Sequence[Certificate],
    trust_store: TrustStore,
    role: Role,
    now: datetime,
    hostname: str | None = None,
) -> None:
    try:
        VERIFIED_CHAINS.verify(leaf, intermediates, trust_store, role, now, hostname)
    except BadCertificateSignature as exc:
        raise alert_for_name(exc.alert, f"{role.name} certificate rejected: {exc}{SM2_ID_HINT}") from None
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
    dispatch: ClassVar[dict[tuple[Any, int], Handler]]

    def __init__(self, configuration: TLCPConfiguration, reader: RecordReader, writer: RecordWriter) -> None:
        self.configuration = configuration
        self.reader = reader
        self.writer = writer
        self.transcript = Transcript()
        self.transcript_mark = 0
        self.transcript_hash_before = b""
        self.events: list[Event] = []
        self.complete = False
        self.client_random = b""
        self.server_random = b""
        self.cipher_suite: CipherSuite | None = None
        self.master_secret = b""
        self.session: TLCPSession | None = None
        self._master_mac: HMACSM3 | None = None
        self._master_mac_secret = b""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state={self.state!r})"

    # input

    @property
    def expects_change_cipher_spec(self) -> bool:
        raise NotImplementedError

    def handle_message(self, message_type: int, raw: bytes) -> None:
        # the table's HandshakeType keys hash and compare as their int values, so no enum lookup here
        handler = self.dispatch.get((self.state, message_type))
        if handler is None:
            raise UnexpectedMessage(f"handshake message {message_type} in state {self.state.name}")
        transcript = self.transcript
        self.transcript_mark = len(transcript)
        if message_type in _HASHED_BEFORE:
            self.transcript_hash_before = transcript.digest()
        transcript += raw
        handler(self, raw)

    def handle_change_cipher_spec(self) -> None:
        raise NotImplementedError

    @property
    def transcript_before(self) -> bytes:
        """Handshake messages before the one being handled."""
        return self.transcript.prefix(self.transcript_mark)

    # output

    def send_message(self, push: Callable[[Buffer, Any], None], message: object) -> None:
        buf = Buffer()
        push(buf, message)
        self.send_encoded(buf.data)

    def send_encoded(self, data: bytes) -> None:
        """Send a handshake message that is already encoded (a cached Certificate, say)."""
        self.transcript += data
        self.writer.write(ContentType.HANDSHAKE, data)

    def send_change_cipher_spec(self) -> None:
        self.writer.write(ContentType.CHANGE_CIPHER_SPEC, b"\x01")
        self.writer.change_cipher_spec()

    def send_finished(self, label: bytes) -> None:
        verify_data = verify_data_from_hash(
            self.master_secret, label, self.transcript.digest(), mac=self.master_mac()
        )
        self.send_message(push_finished, Finished(verify_data))

    def check_finished(self, received: Finished, label: bytes) -> None:
        expected = verify_data_from_hash(
            self.master_secret, label, self.transcript_hash_before, mac=self.master_mac()
        )
        if not hmac.compare_digest(expected, received.verify_data):
            raise DecryptError("Finished verify_data mismatch")

    # keys

    def resume_session(self, session: TLCPSession) -> None:
        """Take the master secret (and its keyed HMAC) of the session being resumed."""
        self.master_secret = session.master_secret
        self._master_mac = session.master_mac
        self._master_mac_secret = session.master_secret

    def master_mac(self) -> HMACSM3:
        """HMAC-SM3 keyed with the master secret, shared by the key block and both Finished PRFs."""
        if self._master_mac is None or self._master_mac_secret is not self.master_secret:
            self._master_mac = HMACSM3(self.master_secret)
            self._master_mac_secret = self.master_secret
        return self._master_mac

    def install_pending_keys(self) -> None:
        """Derive the key block and stage both directions for ChangeCipherSpec."""
        assert self.cipher_suite is not None
        block = derive_key_block(
            self.master_secret,
            self.client_random,
            self.server_random,
            SUITE_PARAMETERS[self.cipher_suite],
            mac=self.master_mac(),
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

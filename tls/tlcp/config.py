"""User-facing configuration of a TLCP endpoint, sessions and the server session cache.

`TLCPConfiguration` is the one knob set (Go's `tls.Config`): every source of
randomness and time comes from here (`random`, `now`) so that the sans-I/O
core never touches `os.urandom` or a clock and recordings replay exactly.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

from certs import Certificate, SM2CertificateSet, TrustStore

from .suites import DEFAULT_CIPHER_SUITES, CipherSuite


class ClientAuth(Enum):
    """Server policy for client certificates (ECDHE always requests them)."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


class PeerProfile(Enum):
    """Which peer's sender forms we produce where implementations differ.

    What we *accept* never depends on the profile: every known form is accepted.
    What we *send*:

    ============================  ================================  ===================  ==================
    item                          STANDARD (GB/T 38636-2020)        GMSSL                TONGSUO
    ============================  ================================  ===================  ==================
    CertificateVerify signs       SM3(handshake_messages) (6.4.5.9)  raw handshake bytes  SM3(handshake)
    ECDHE ClientKeyExchange       opaque ClientECDHEParams<2>        same as standard     bare ECParams+point
                                  (6.4.5.8)
    client Certificate (ECC)      sign, enc, chain                   sign only            sign, enc, chain
    CertificateRequest types      ecdsa_sign                         ecdsa_sign           rsa_sign, ecdsa_sign
    ClientHello cipher suites     configured suites                  configured suites    + EMPTY_RENEGOTIATION
                                                                                          _INFO_SCSV
    ============================  ================================  ===================  ==================
    """

    STANDARD = "standard"
    GMSSL = "gmssl"
    TONGSUO = "tongsuo"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TLCPSession:
    """A resumable session (GB/T 38636-2020 6.4.4: session ID resumption)."""

    session_id: bytes
    cipher_suite: CipherSuite
    master_secret: bytes = field(repr=False)
    server_name: str | None
    peer_certificates: tuple[Certificate, ...]
    peer_sign_cert: Certificate | None
    peer_enc_cert: Certificate | None
    created_at: datetime
    #: the peer chain was validated against trust anchors when the session was made
    peer_verified: bool = False


class SessionCache:
    """Server-side session store: LRU with a size limit and a lifetime.

    Time is passed in by the caller (the connection uses its configuration's
    `now`), so the cache never reads a clock itself.
    """

    def __init__(self, max_size: int = 1024, lifetime: timedelta = timedelta(hours=2)) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self.lifetime = lifetime
        self._sessions: OrderedDict[bytes, TLCPSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def put(self, session: TLCPSession) -> None:
        self._sessions[session.session_id] = session
        self._sessions.move_to_end(session.session_id)
        while len(self._sessions) > self.max_size:
            self._sessions.popitem(last=False)

    def get(self, session_id: bytes, now: datetime) -> TLCPSession | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if not session.created_at <= now < session.created_at + self.lifetime:
            del self._sessions[session_id]
            return None
        self._sessions.move_to_end(session_id)
        return session

    def remove(self, session_id: bytes) -> None:
        self._sessions.pop(session_id, None)


MAX_FRAGMENT_SIZE = 1 << 14


@dataclass
class TLCPConfiguration:
    """Settings of one TLCP endpoint.

    is_client: role.
    cipher_suites: our preference order; the server picks by its own order.
    certificate_set: our sign+enc pair (required for a server unless
        `certificate_selector` is given; a client needs it for client auth and ECDHE).
    certificate_selector: server hook called with the client's SNI (or None).
    client_auth: server policy; ECDHE suites always request a client certificate
        (GB/T 38636-2020 6.4.5.3: the client encryption key takes part in the exchange).
    trust_store: anchors for peer chains; the server also sends its anchors'
        names in CertificateRequest.
    verify_peer: validate the peer chain (and the server host name) through `certs`.
        A server validates client certificates whenever it has a trust store, so
        with ClientAuth.NONE and ECDHE, certificates are checked if anchors are set.
    server_name: client: SNI to send and the host name to verify (None: no SNI, no
        host name check; the chain is still validated).
    session_cache: server: enables session IDs and resumption.
    session: client: a `TLCPSession` to offer for resumption.
    profile: sender forms where GmSSL/Tongsuo differ (see `PeerProfile`).
    random: source of every random byte the core uses.
    now: clock for certificate validity and the session cache.
    max_fragment_size: largest plaintext per record we send (1..2^14).
    half_close: what receiving the peer's close_notify does to our write side.
        False (the default): our close_notify reply is queued at once and nothing more
        can be sent; the connection is closed both ways.  True: only the peer's side is
        closed (our reader is at EOF); we may go on sending application data and our
        close_notify goes out when `close()` is called.  Both obey RFC 5246 7.2.1 and
        GB/T 38636-2020 6.3.4 (alert protocol): a receiver of close_notify must answer
        with its own before closing its write side, and may finish writing pending data
        first; the initiator need not wait for the answer.  The rule is about the write
        side only: input after the peer's close_notify is ignored in both modes.  Before
        the handshake completes nothing can be written, so a close_notify there is
        answered at once whatever this says.  The asyncio adapter (`tls.tlcp.aio`) sets
        it from its own ``half_close`` argument (default True), because a stream's
        `write_eof()`/`close()` already decide when our close_notify is sent.
    """

    is_client: bool
    cipher_suites: Sequence[CipherSuite] = DEFAULT_CIPHER_SUITES
    certificate_set: SM2CertificateSet | None = None
    certificate_selector: Callable[[str | None], SM2CertificateSet] | None = None
    client_auth: ClientAuth = ClientAuth.NONE
    trust_store: TrustStore | None = None
    verify_peer: bool = True
    server_name: str | None = None
    session_cache: SessionCache | None = None
    session: TLCPSession | None = None
    profile: PeerProfile = PeerProfile.STANDARD
    random: Callable[[int], bytes] = secrets.token_bytes
    now: Callable[[], datetime] = _utcnow
    max_fragment_size: int = MAX_FRAGMENT_SIZE
    half_close: bool = False

    def __post_init__(self) -> None:
        if not self.cipher_suites:
            raise ValueError("cipher_suites is empty")
        self.cipher_suites = tuple(CipherSuite(suite) for suite in self.cipher_suites)
        if len(set(self.cipher_suites)) != len(self.cipher_suites):
            raise ValueError("cipher_suites has duplicates")
        if not 1 <= self.max_fragment_size <= MAX_FRAGMENT_SIZE:
            raise ValueError("max_fragment_size must be within 1..16384")
        if not self.is_client and self.certificate_set is None and self.certificate_selector is None:
            raise ValueError("a server needs certificate_set or certificate_selector")
        if self.verify_peer and self.trust_store is None:
            if self.is_client or self.client_auth is not ClientAuth.NONE:
                raise ValueError("verify_peer needs a trust_store")

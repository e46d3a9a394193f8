"""Events returned by `TLS13Connection.receive_data` (h11 style: frozen, slotted).

`ApplicationData`, `AlertReceived`, `ConnectionClosed` and `AlertSent` mean what they mean for the TLCP
engine; `HandshakeComplete` carries what TLS 1.3 negotiates, and `SessionTicketReceived` hands a client
the session a NewSessionTicket made resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

from certs import Certificate

from .config import TLS13Session
from .suites import TLS13_VERSION, CipherSuite, NamedGroup, SignatureScheme


class Event:
    """Base class of every connection event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """The handshake finished; the connection now carries application data.

    `peer_certificates` is the peer's chain in wire order (leaf first), empty when it sent none; for a
    resumed session it is the chain of the original handshake.  `signature_scheme` is None when the
    peer did not sign (resumption, or a client without a certificate).  `peer_sm2_signature_id` is the
    SM2 distinguishing ID its CertificateVerify verified with (RFC 8998's, or the GM/T default some
    implementations use), for diagnostics.  Only a chain with `peer_verified` names the peer: a server
    that does not verify client certificates (``verify_peer=False``) still reports what was presented,
    for logging, with `peer_verified` False.
    """

    cipher_suite: CipherSuite
    server_name: str | None
    alpn_protocol: str | None
    peer_certificates: tuple[Certificate, ...]
    session_resumed: bool
    group: NamedGroup
    signature_scheme: SignatureScheme | None
    peer_sm2_signature_id: bytes | None = None
    #: the peer chain was validated against the configuration's trust anchors (for a resumed session:
    #: in the original handshake, and it still validates now); an unverified chain is a claim, never an
    #: identity (issue 10)
    peer_verified: bool = False
    #: client: the server sent a CertificateRequest (in a resumed handshake only GmSSL does, which
    #: RFC 8446 4.3.2 forbids and `accept_certificate_request_in_psk` tolerates)
    certificate_requested: bool = False
    version: int = TLS13_VERSION

    @property
    def peer_certificate(self) -> Certificate | None:
        return self.peer_certificates[0] if self.peer_certificates else None


@dataclass(frozen=True, slots=True)
class ApplicationData(Event):
    data: bytes


@dataclass(frozen=True, slots=True)
class AlertReceived(Event):
    """The peer sent an alert (close_notify is reported as `ConnectionClosed` as well)."""

    level: int
    description: int
    name: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The peer sent close_notify: it sends nothing more (EOF for our reader); see `TLS13Configuration.half_close`."""


@dataclass(frozen=True, slots=True)
class AlertSent(Event):
    """We found a fatal error and queued this alert; the connection is closed."""

    description: int
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionTicketReceived(Event):
    """Client: the server sent a NewSessionTicket; `session` resumes it (`TLS13Configuration.session`)."""

    session: TLS13Session


@dataclass(frozen=True, slots=True)
class KeyUpdated(Event):
    """The peer updated its sending key (RFC 8446 4.6.3); `update_requested`: it asked us to update ours."""

    update_requested: bool

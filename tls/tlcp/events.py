"""Events returned by `TLCPConnection.receive_data` (h11 style: frozen, slotted)."""

from __future__ import annotations

from dataclasses import dataclass

from certs import Certificate

from .suites import TLCP_VERSION, CipherSuite


class Event:
    """Base class of every connection event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """The handshake finished; the connection now carries application data.

    `peer_certificates` is the peer's Certificate message in wire order
    (sign, enc, chain); it is empty when the peer sent none.  For a resumed
    session they are the ones of the original handshake.
    """

    cipher_suite: CipherSuite
    server_name: str | None
    peer_certificates: tuple[Certificate, ...]
    peer_sign_cert: Certificate | None
    peer_enc_cert: Certificate | None
    session_id: bytes
    session_resumed: bool
    #: the peer chain was validated against the configuration's trust store (for a resumed session:
    #: when the session was made); an unverified chain is a claim, never an identity
    peer_verified: bool = False
    version: int = TLCP_VERSION


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
    """The peer sent close_notify: it sends nothing more (EOF for our reader).

    Without `TLCPConfiguration.half_close` our close_notify reply is queued with it and
    the connection is closed both ways.  With half_close our write side stays open:
    `send_application_data` still works and `close()` sends our close_notify.  Check
    `TLCPConnection.close_notify_sent` to tell which.
    """


@dataclass(frozen=True, slots=True)
class AlertSent(Event):
    """We found a fatal error and queued this alert; the connection is closed."""

    description: int
    name: str
    reason: str


#: Contract 3 name for the same event.
ConnectionTerminated = AlertSent

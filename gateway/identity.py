"""Who is on the other end of a downstream connection: :class:`PeerIdentity`, built after the handshake.

Routing (access control, consistent hashing), identity request headers and audit records all read this
one value, whichever transport (TLCP, TLS 1.2/1.3, plain) carried the connection.

An identity is a chain that was validated against the listener's trust anchors for the client role,
nothing less: ``peer_chain`` holds only such a chain. A certificate the client presented but nobody
vouched for (TLCP ECDHE asks every client for its certificates, even where client authentication is
off) is a claim; it is kept apart in ``unverified_peer`` for the audit record and used for nothing else.
"""

from __future__ import annotations

import _ssl
import hashlib
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tls.crypto import sm3


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The parts of a client certificate the gateway routes and audits on."""

    der: bytes
    subject: str
    issuer: str
    san_dns: tuple[str, ...]
    san_ip: tuple[str, ...]
    fingerprint_sha256: str
    fingerprint_sm3: str | None
    serial: int

    @property
    def sans(self) -> tuple[str, ...]:
        return self.san_dns + self.san_ip

    def fingerprints(self) -> tuple[str, ...]:
        return tuple(f for f in (self.fingerprint_sha256, self.fingerprint_sm3) if f)

    def pem(self) -> str:
        cert = x509.load_der_x509_certificate(self.der)
        return cert.public_bytes(Encoding.PEM).decode("ascii")


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The negotiated transport and the authenticated client, if any."""

    protocol: str  # "tlcp", "tls1.3", "tls1.3-sm", "tls1.2", "plain"
    version: str  # "TLCPv1.1", "TLSv1.3", "TLSv1.2", "-"
    cipher_suite: str | None = None
    sni: str | None = None
    alpn: str | None = None
    #: The client chain validated against trust anchors, leaf first; empty without one.
    peer_chain: tuple[PeerCertificate, ...] = ()
    #: A client certificate presented without validation (audit only: never access, headers or hashing).
    unverified_peer: PeerCertificate | None = None
    resumed: bool = False
    remote_address: str = ""
    remote_port: int = 0
    extras: dict[str, str] = field(default_factory=dict)

    @property
    def peer(self) -> PeerCertificate | None:
        return self.peer_chain[0] if self.peer_chain else None

    @property
    def authenticated(self) -> bool:
        return bool(self.peer_chain)

    @property
    def secure(self) -> bool:
        return self.protocol != "plain"


def _sm3_hex(der: bytes) -> str:
    return sm3(der).hex()


def peer_certificate_from_der(der: bytes) -> PeerCertificate:
    """Parse a DER certificate with `cryptography` (SM2 certificates parse too: only the key is exotic)."""
    cert = x509.load_der_x509_certificate(der)
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    return PeerCertificate(
        der=der,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        san_dns=dns,
        san_ip=ips,
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        fingerprint_sm3=_sm3_hex(der),
        serial=cert.serial_number,
    )


def verified_chain(ssl_object: ssl.SSLObject) -> tuple[PeerCertificate, ...]:
    """The peer's verified chain, leaf first. Python 3.13 makes this ``get_verified_chain()``; on 3.11 the
    same OpenSSL call is only on the private ``_sslobj``, so a missing method just means leaf only."""
    getter: Any = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        return ()
    try:
        certs = getter() or []
        return tuple(peer_certificate_from_der(c.public_bytes(_ssl.ENCODING_DER)) for c in certs)
    except (ValueError, AttributeError, ssl.SSLError):
        return ()


def chain_or_claim(
    chain: tuple[PeerCertificate, ...], verified: bool
) -> tuple[tuple[PeerCertificate, ...], PeerCertificate | None]:
    """``(peer_chain, unverified_peer)`` for a presented chain: an identity only when it was verified
    against the trust anchors; otherwise its leaf is kept as a claim, for the audit record only."""
    if verified:
        return chain, None
    return (), (chain[0] if chain else None)


def identity_from_ssl(
    ssl_object: ssl.SSLObject, sni: str | None, peername: tuple[str, int] | None
) -> PeerIdentity:
    """Identity of a finished Python ``ssl`` server handshake, with the verified client chain.

    OpenSSL refuses the handshake when a requested certificate does not verify (``CERT_OPTIONAL`` and
    ``CERT_REQUIRED`` alike), so a certificate is an identity exactly when the context verifies peers.
    """
    version = ssl_object.version() or "-"
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    chain: tuple[PeerCertificate, ...] = ()
    unverified: PeerCertificate | None = None
    if der and ssl_object.context.verify_mode is not ssl.CERT_NONE:
        chain = verified_chain(ssl_object) or (peer_certificate_from_der(der),)
    elif der:
        unverified = peer_certificate_from_der(der)
    return PeerIdentity(
        protocol={"TLSv1.3": "tls1.3", "TLSv1.2": "tls1.2"}.get(version, version.lower()),
        version=version,
        cipher_suite=cipher[0] if cipher else None,
        sni=sni,
        alpn=ssl_object.selected_alpn_protocol(),
        peer_chain=chain,
        unverified_peer=unverified,
        resumed=ssl_object.session_reused,
        remote_address=peername[0] if peername else "",
        remote_port=peername[1] if peername else 0,
    )


def plain_identity(peername: tuple[str, int] | None) -> PeerIdentity:
    return PeerIdentity(
        protocol="plain",
        version="-",
        remote_address=peername[0] if peername else "",
        remote_port=peername[1] if peername else 0,
    )

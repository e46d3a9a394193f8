"""User-facing configuration of a TLS 1.3 (RFC 8998) endpoint, its credential and resumable sessions.

`TLS13Configuration` is the one knob set (Go's `tls.Config`).  Every random byte and every reading of
the clock comes from its `random` and `now`, so the sans-I/O core is reproducible and a recording
replays byte for byte.

The SM2 distinguishing identifier (RFC 8998 3.2.1) is the one place where deployed peers could differ:
RFC 8998 fixes ``TLSv1.3+GM+Cipher+Suite`` for the sm2sig_sm3 CertificateVerify, and Tongsuo 8.5
(``HANDSHAKE_SM2_ID`` in ssl/statem/statem_local.h), BabaSSL 8.3.2 and GmSSL 3 (``TLS13_SM2_ID`` in
include/gmssl/tls.h) all use it.  We sign with `sm2_signature_id` (the RFC's by default) and accept both
it and the GM/T 0009 default ``1234567812345678`` on receipt, so a peer that signs with the default
still interoperates (`HandshakeComplete.peer_sm2_signature_id` says which one verified).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path

from certs import Certificate, SM2CertificateSet, TrustStore, load_certificate_chain_file
from certs.usage import is_signing_certificate
from tls.crypto import DEFAULT_SM2_ID, SM2PrivateKey, load_sm2_private_key, sm4_ccm_available
from tls.tlcp.config import ClientAuth

from .messages import encode_certificate
from .suites import DEFAULT_CIPHER_SUITES, SUITE_PARAMETERS, CipherSuite
from .tickets import SessionTicketKeys

#: The SM2 ID RFC 8998 3.2.1 fixes for sm2sig_sm3 in TLS 1.3.
RFC8998_SM2_ID = b"TLSv1.3+GM+Cipher+Suite"
#: Every SM2 ID we accept in a peer's CertificateVerify, in the order tried.
ACCEPTED_SM2_IDS = (RFC8998_SM2_ID, DEFAULT_SM2_ID)

MAX_FRAGMENT_SIZE = 1 << 14

__all__ = [
    "ACCEPTED_SM2_IDS",
    "RFC8998_SM2_ID",
    "ClientAuth",
    "SM2Credential",
    "TLS13Configuration",
    "TLS13Session",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SM2Credential:
    """What one TLS 1.3 side presents: an SM2 certificate with digitalSignature, its key, the chain after it."""

    certificate: Certificate
    private_key: SM2PrivateKey = field(repr=False)
    chain: tuple[Certificate, ...] = ()

    def __post_init__(self) -> None:
        if not self.certificate.is_sm2:
            raise ValueError(f"certificate {self.certificate.subject!r} has no SM2 key")
        if not is_signing_certificate(self.certificate):
            raise ValueError(f"certificate {self.certificate.subject!r} lacks digitalSignature")
        if self.private_key.public_key() != self.certificate.sm2_public_key():
            raise ValueError(f"the private key does not match certificate {self.certificate.subject!r}")

    @classmethod
    def from_certificate_set(cls, certificate_set: SM2CertificateSet) -> SM2Credential:
        """The TLCP signing certificate and key, reused as the TLS 1.3 identity (its usage allows it)."""
        return cls(certificate_set.sign_cert, certificate_set.sign_key, tuple(certificate_set.chain))

    @classmethod
    def load(
        cls,
        certificate: str | Path,
        key: str | Path,
        chain: str | Path | None = None,
        password: bytes | None = None,
    ) -> SM2Credential:
        """From PEM files: the first certificate of `certificate` is the leaf, the rest (and `chain`) follow."""
        certificates = load_certificate_chain_file(certificate)
        extra = load_certificate_chain_file(chain) if chain is not None else []
        private_key = load_sm2_private_key(Path(key).read_bytes(), password)
        return cls(certificates[0], private_key, tuple(certificates[1:] + extra))

    @property
    def certificate_ders(self) -> tuple[bytes, ...]:
        return (self.certificate.der, *(certificate.der for certificate in self.chain))

    @cached_property
    def certificate_message(self) -> bytes:
        """The whole TLS 1.3 Certificate message carrying this chain (built once; a server sends it often)."""
        return encode_certificate(self.certificate_ders)


@dataclass(frozen=True)
class TLS13Session:
    """A client's resumable session, from one NewSessionTicket (RFC 8446 4.6.1)."""

    ticket: bytes = field(repr=False)
    resumption_psk: bytes = field(repr=False)
    cipher_suite: CipherSuite
    ticket_lifetime: int
    ticket_age_add: int = field(repr=False)
    received_at: datetime
    server_name: str | None
    alpn_protocol: str | None
    peer_certificates: tuple[Certificate, ...]
    #: the server chain was validated against the client's trust anchors in the original handshake
    peer_verified: bool = False

    def usable_at(self, now: datetime) -> bool:
        return self.received_at <= now < self.received_at + timedelta(seconds=self.ticket_lifetime)

    def obfuscated_age(self, now: datetime) -> int:
        """obfuscated_ticket_age (RFC 8446 4.2.11.1): milliseconds since receipt plus age_add, mod 2^32."""
        age_ms = max(0, int((now - self.received_at).total_seconds() * 1000))
        return (age_ms + self.ticket_age_add) & 0xFFFFFFFF


@lru_cache(maxsize=1)
def _ccm_available() -> bool:
    return sm4_ccm_available()


@dataclass
class TLS13Configuration:
    """Settings of one TLS 1.3 endpoint with RFC 8998 suites.

    is_client: role.
    cipher_suites: our preference order (the server picks by its own order).  The default offers
        TLS_SM4_CCM_SM3 only where the crypto provider has SM4-CCM (`tls.crypto.sm4_ccm_available`).
    credential: our certificate and key (a server needs it or `credential_selector`; a client needs
        it only to answer a CertificateRequest).
    credential_selector: server hook called with the client's SNI (or None); LookupError means
        unrecognized_name.
    client_auth: server policy: NONE sends no CertificateRequest, OPTIONAL accepts an empty
        Certificate, REQUIRED answers one with certificate_required.
    trust_store / verify_peer: validate the peer chain through `certs` (a client also checks the host
        name against `server_name`).
    server_name: client: SNI to send and the name to verify (None: no SNI, no name check).
    alpn_protocols: ALPN names in preference order (server: its order decides; a client offering none
        the server supports gets no_application_protocol).
    ticket_keys: server: issue session tickets sealed with these keys and resume from them
        (`tls.tls13.SessionTicketKeys`, shared by the server's connections).  None: no resumption.
    new_session_tickets: server: tickets sent after each handshake.
    session: client: a `TLS13Session` to offer (psk_dhe_ke).
    sm2_signature_id: the SM2 ID we sign CertificateVerify with (see the module docstring).
    offer_key_share: client: send a curveSM2 key share in the first ClientHello.  False sends an
        empty key_share, so the server must answer with a HelloRetryRequest (testing, or to save the
        ephemeral key of a connection that may never be used).
    middlebox_compatibility: client: RFC 8446 D.4 compatibility mode (a 32-byte legacy_session_id and
        a dummy change_cipher_spec before the second flight), as OpenSSL, Tongsuo and BabaSSL send.
    accept_certificate_request_in_psk: client: answer a CertificateRequest in a resumed (PSK)
        handshake, which RFC 8446 4.3.2 forbids and GmSSL 3.3's server sends when it asks for client
        certificates, with our Certificate and CertificateVerify (or an empty Certificate without a
        credential) instead of refusing it with unexpected_message.  Off by default.
    key_log: receives NSS key log lines (``CLIENT_HANDSHAKE_TRAFFIC_SECRET <client_random> <secret>``
        and the other TLS 1.3 labels), as Go's KeyLogWriter and OpenSSL's keylog callback do, for
        Wireshark and for the known-answer tests.  It hands out traffic secrets: debugging only.
    random / now: sources of every random byte and of time.
    max_fragment_size: largest plaintext per record we send (1..2^14).
    half_close: what the peer's close_notify does to our write side; see `tls.tlcp.TLCPConfiguration`.
    """

    is_client: bool
    cipher_suites: Sequence[CipherSuite] = DEFAULT_CIPHER_SUITES
    credential: SM2Credential | None = None
    credential_selector: Callable[[str | None], SM2Credential] | None = None
    client_auth: ClientAuth = ClientAuth.NONE
    trust_store: TrustStore | None = None
    verify_peer: bool = True
    server_name: str | None = None
    alpn_protocols: Sequence[str] = ()
    ticket_keys: SessionTicketKeys | None = None
    new_session_tickets: int = 1
    session: TLS13Session | None = None
    sm2_signature_id: bytes = RFC8998_SM2_ID
    offer_key_share: bool = True
    middlebox_compatibility: bool = True
    accept_certificate_request_in_psk: bool = False
    key_log: Callable[[str], None] | None = field(default=None, repr=False)
    random: Callable[[int], bytes] = os.urandom  # the CSPRNG secrets.token_bytes wraps
    now: Callable[[], datetime] = _utcnow
    max_fragment_size: int = MAX_FRAGMENT_SIZE
    half_close: bool = False

    def __post_init__(self) -> None:
        explicit = self.cipher_suites is not DEFAULT_CIPHER_SUITES
        suites = tuple(CipherSuite(suite) for suite in self.cipher_suites)
        if not _ccm_available():
            if explicit and any(SUITE_PARAMETERS[suite].aead == "ccm" for suite in suites):
                raise ValueError("TLS_SM4_CCM_SM3 needs SM4-CCM, which the crypto provider lacks here")
            suites = tuple(suite for suite in suites if SUITE_PARAMETERS[suite].aead != "ccm")
        if not suites:
            raise ValueError("cipher_suites is empty")
        if len(set(suites)) != len(suites):
            raise ValueError("cipher_suites has duplicates")
        self.cipher_suites = suites
        self.alpn_protocols = tuple(self.alpn_protocols)
        for name in self.alpn_protocols:
            if not 1 <= len(name.encode("latin-1")) <= 255:
                raise ValueError(f"ALPN protocol name {name!r} must be 1..255 bytes")
        if not 1 <= self.max_fragment_size <= MAX_FRAGMENT_SIZE:
            raise ValueError("max_fragment_size must be within 1..16384")
        if not 0 <= self.new_session_tickets <= 8:
            raise ValueError("new_session_tickets must be within 0..8")
        if not self.is_client and self.credential is None and self.credential_selector is None:
            raise ValueError("a server needs credential or credential_selector")
        if self.verify_peer and self.trust_store is None:
            if self.is_client or self.client_auth is not ClientAuth.NONE:
                raise ValueError("verify_peer needs a trust_store")

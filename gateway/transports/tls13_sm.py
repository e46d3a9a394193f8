"""The TLS 1.3-SM transport (RFC 8998): the server policy, the accept, and the upstream connector.

Both directions drive the sans-I/O engine (:class:`tls.tls13.TLS13Connection`) from
:class:`Tls13SmStream`, the same :class:`~gateway.transports.engine_stream.EngineStream` as the TLCP
transport's: records in from the transport, plaintext out to the receiver, the engine's alert written
before a refused connection closes.

Downstream, the sniffer has already peeked a TLS 1.3 ClientHello offering an RFC 8998 suite and curveSM2
(see :mod:`gateway.listener_filters.sniff` and ``tls13_sm.selection``). The certificate is each set's SM2
*sign* certificate: TLS 1.3 has one key pair per side, used to sign CertificateVerify, and a TLCP sign
certificate carries exactly the usage that needs (keyUsage digitalSignature), so it is reused as is;
:func:`tls13_credential` checks that usage and, where extendedKeyUsage is present, serverAuth. The TLCP
*enc* certificate (keyEncipherment/keyAgreement) has no role in TLS 1.3. Certificate sets are chosen by
SNI as for TLCP; client certificates are verified against ``sm2_trust_anchors``; session tickets are
sealed with rotating :class:`~tls.tls13.SessionTicketKeys`, the process's own per listener and config
generation, or, with a ``session_store``, shared by every worker and host using that store
(:func:`gateway.session_store.ticket_keys_for`); a resumed client chain is checked against the trust
anchors configured now, so a reload that drops an anchor still stops its sessions.

ALPN is the listener's ``tls.alpn``, as on TLS and TLCP: a client whose offer has nothing in common
with ours gets no ALPN and HTTP/1.1 (``alpn_required=False``), as OpenSSL and the TLCP engine do on the
same listener, rather than the engine's RFC 7301 3.2 alert.

Upstream, :class:`Tls13SmConnector` offers the configured suites, SNI (defaulting to the dialled DNS
name), an optional SM2 client certificate, the last session ticket per endpoint (psk_dhe_ke), and for an
HTTP/2 cluster ALPN ``h2``, which the host must select.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from certs import CertificateError, KeyUsageMismatch, TrustStore
from certs.usage import check_ext_key_usage
from gateway.config import (
    CertificateSet,
    ConfigError,
    DownstreamTls,
    Protocol,
    Tls13SmSelection,
    UpstreamTransport,
)
from gateway.identity import PeerIdentity, chain_or_claim
from gateway.logs.rate_limit import RateLimitedLog
from gateway.logs.setup import get_logger
from gateway.session_store import SharedTicketKeys, ticket_keys_for
from gateway.stream import TransportStream
from gateway.transports.base import (
    AcceptedSocket,
    Connector,
    ServerTransport,
    UpstreamConnectError,
    check_application_protocol,
    connect_stream,
    default_server_name,
    offered_without_default,
)
from gateway.transports.engine_stream import EngineEvents, EngineStream
from gateway.transports.sni import select_certificate_set
from gateway.transports.tlcp import load_certificate_set, load_sm2_sets, load_trust, peer_certificate
from tls import tls13 as tls13_engine
from tls.crypto import CryptoError, sm4_ccm_available
from tls.tls13 import (
    AlertReceived,
    CipherSuite,
    ClientAuth,
    HandshakeComplete,
    SessionTicketReceived,
    SignatureScheme,
    SM2Credential,
    TLS13Configuration,
    TLS13Connection,
    TLS13Session,
)
from tls.tls13.alerts import AlertDescription
from tls.tls13.suites import SUITE_PARAMETERS

logger = logging.getLogger(__name__)

#: The scheme our CertificateVerify uses: the one RFC 8998 defines, and the only one the engine signs with.
SIGNATURE_SCHEME = SignatureScheme.sm2sig_sm3
#: The protocol name of this transport in ``PeerIdentity``, metrics and listener configs.
PROTOCOL = Protocol.TLS13_SM.value
#: close_notify (reported as ConnectionClosed) and user_canceled are the alerts that are not fatal.
_NOT_FATAL = frozenset((AlertDescription.close_notify, AlertDescription.user_canceled))


class Tls13SmStream(EngineStream[TLS13Connection, HandshakeComplete]):
    """A TLS 1.3-SM connection over one TCP transport, driving one :class:`TLS13Connection`.

    A client hands every session a NewSessionTicket makes resumable to ``on_ticket``.
    """

    engine_name = "TLS 1.3-SM"
    events = EngineEvents.of(tls13_engine)

    def __init__(self, configuration: TLS13Configuration) -> None:
        if not configuration.half_close:
            configuration = replace(configuration, half_close=True)
        super().__init__(TLS13Connection(configuration), is_client=configuration.is_client)
        #: Client: the newest session a NewSessionTicket made resumable, also handed to ``on_ticket``.
        self.session: TLS13Session | None = None
        self.on_ticket: Callable[[TLS13Session], None] | None = None

    def _is_fatal(self, alert: AlertReceived) -> bool:
        return alert.description not in _NOT_FATAL  # RFC 8446 6: the level does not matter

    def _on_other_event(self, event: object) -> None:
        if isinstance(event, SessionTicketReceived):
            self.session = event.session
            if self.on_ticket is not None:
                self.on_ticket(event.session)

    @property
    def peer_verified(self) -> bool:
        """Whether the engine validated the peer's chain against the trust anchors (for a resumed session:
        in the original handshake, and it still validates now)."""
        event = self.handshake_event
        return event is not None and bool(event.peer_certificates) and event.peer_verified


def identity_from_tls13(hs: HandshakeComplete, verified: bool, peer: tuple[str, int] | None) -> PeerIdentity:
    """The client's identity: its chain only when it was validated against the trust anchors (issue 10)."""
    chain = tuple(peer_certificate(c) for c in hs.peer_certificates)
    chain, unverified = chain_or_claim(chain, verified)
    extras = {"group": hs.group.name}
    if not hs.session_resumed:
        extras["signature_scheme"] = SIGNATURE_SCHEME.name
    if hs.signature_scheme is not None:
        extras["client_signature_scheme"] = hs.signature_scheme.name
    return PeerIdentity(
        protocol=PROTOCOL,
        version="TLSv1.3",
        cipher_suite=hs.cipher_suite.name,
        sni=hs.server_name,
        alpn=hs.alpn_protocol,
        peer_chain=chain,
        unverified_peer=unverified,
        resumed=hs.session_resumed,
        remote_address=peer[0] if peer else "",
        remote_port=peer[1] if peer else 0,
        extras=extras,
    )


# -- server side ---------------------------------------------------------------------------------


def tls13_credential(cfg: CertificateSet, where: str) -> SM2Credential:
    """The set's TLCP sign certificate and key as the TLS 1.3 identity, after checking its usages."""
    certificate_set = load_certificate_set(cfg, where)
    try:
        check_ext_key_usage(certificate_set.sign_cert, "server_auth", "a TLS 1.3-SM server")
        return SM2Credential.from_certificate_set(certificate_set)
    except (KeyUsageMismatch, ValueError) as exc:
        raise ConfigError([f"{where}.sign_cert: cannot serve TLS 1.3-SM: {exc}"]) from None


def usable_suites(suites: tuple[CipherSuite, ...], where: str) -> tuple[CipherSuite, ...]:
    """The configured suites the crypto provider can run (SM4-CCM comes from a library or not at all)."""
    if sm4_ccm_available():
        return suites
    usable = tuple(s for s in suites if SUITE_PARAMETERS[s].aead != "ccm")
    if not usable:
        raise ConfigError([f"{where}: TLS_SM4_CCM_SM3 needs SM4-CCM, which the crypto provider lacks here"])
    if usable != suites:
        logger.warning("%s: TLS_SM4_CCM_SM3 left out: the crypto provider has no SM4-CCM", where)
    return usable


@dataclass
class Tls13SmServerPolicy:
    """A listener's RFC 8998 server configuration (shared by its connections: credentials, ticket keys)."""

    configuration: TLS13Configuration
    selection: Tls13SmSelection


def build_server_policy(tls: DownstreamTls, where: str) -> Tls13SmServerPolicy | None:
    if Protocol.TLS13_SM not in tls.protocols:
        return None
    errors: list[str] = []
    credentials = load_sm2_sets(tls, where, tls13_credential, errors)
    trust: TrustStore | None = None
    if tls.sm2_trust_anchors is not None and tls.client_auth is not ClientAuth.NONE:
        try:
            trust = load_trust(tls.sm2_trust_anchors, f"{where}.sm2_trust_anchors")
        except ConfigError as exc:
            errors.extend(exc.errors)
    suites: tuple[CipherSuite, ...] = ()
    try:
        suites = usable_suites(tls.cipher_suites.tls13_sm, f"{where}.cipher_suites.tls13_sm")
    except ConfigError as exc:
        errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)

    def selector(server_name: str | None) -> SM2Credential:
        chosen = select_certificate_set(tls.certificates, server_name, "sm2")
        assert chosen is not None
        return credentials[chosen.name]

    options = tls.tls13_sm
    ticket_keys = None
    if options.session_tickets:
        ticket_keys = ticket_keys_for(
            where,
            rotation_interval=timedelta(seconds=options.ticket_key_rotation),
            ticket_lifetime=timedelta(seconds=options.ticket_lifetime),
            client_chains=tls.client_auth is not ClientAuth.NONE,
        )
    configuration = TLS13Configuration(
        is_client=False,
        cipher_suites=suites,
        credential_selector=selector,
        client_auth=tls.client_auth,
        trust_store=trust,
        verify_peer=trust is not None,
        alpn_protocols=tls.alpn,
        alpn_required=False,
        ticket_keys=ticket_keys,
        new_session_tickets=1 if ticket_keys is not None else 0,
        half_close=True,
    )
    return Tls13SmServerPolicy(configuration, options.selection)


class Tls13SmTransport(ServerTransport):
    name = "tls13_sm"

    def __init__(self, policy: Tls13SmServerPolicy) -> None:
        self.policy = policy

    async def accept(self, accepted: AcceptedSocket) -> tuple[TransportStream, PeerIdentity]:
        ticket_keys = self.policy.configuration.ticket_keys
        if isinstance(ticket_keys, SharedTicketKeys):
            await ticket_keys.prepare(accepted.sock)  # keys and client chains other processes made
        stream = Tls13SmStream(self.policy.configuration)
        handshake = await stream.serve_handshake(accepted.sock)
        return stream, identity_from_tls13(handshake, stream.peer_verified, accepted.peer)


# -- upstream side -------------------------------------------------------------------------------


def _client_credential(cfg: UpstreamTransport, where: str) -> SM2Credential | None:
    if cfg.sign_cert is None:
        return None
    assert cfg.sign_key is not None
    try:
        credential = SM2Credential.load(cfg.sign_cert, cfg.sign_key, cfg.chain)
        check_ext_key_usage(credential.certificate, "client_auth", "a TLS 1.3-SM client")
    except (CertificateError, CryptoError, OSError, ValueError) as exc:
        raise ConfigError([f"{where}.sign_cert: cannot load the SM2 client certificate: {exc}"]) from None
    return credential


class Tls13SmConnector(Connector):
    """RFC 8998 TLS 1.3 to the endpoint, optionally with an SM2 client certificate; resumes the last
    session ticket per endpoint. ``speaks``: the cluster's application protocols, offered as for TLCP
    (see :class:`~gateway.transports.tlcp.TlcpConnector`): ``h2`` for an HTTP/2 cluster, else none."""

    kind = "tls13_sm"

    def __init__(
        self, cfg: UpstreamTransport, where: str = "transport_socket", speaks: tuple[str, ...] = ("http/1.1",)
    ) -> None:
        self._cfg = cfg
        self._speaks = speaks
        trust = load_trust(cfg.trust_anchors, f"{where}.trust_anchors") if cfg.trust_anchors else None
        suites = usable_suites(
            cfg.tls13_sm_cipher_suites or tuple(CipherSuite), f"{where}.tls13_sm_cipher_suites"
        )
        self._base = TLS13Configuration(
            is_client=True,
            cipher_suites=suites,
            credential=_client_credential(cfg, where),
            trust_store=trust,
            verify_peer=cfg.verify,
            server_name=cfg.server_name,
            alpn_protocols=offered_without_default(speaks),
            accept_certificate_request_in_psk=cfg.accept_certificate_request_in_psk,
            half_close=True,
        )
        self._sessions: dict[tuple[str, int], TLS13Session] = {}
        self.resumed = 0

    @property
    def configuration(self) -> TLS13Configuration:
        return self._base

    async def connect(
        self, address: str, port: int, timeout: float, *, preamble: bytes = b""
    ) -> TransportStream:
        endpoint = (address, port)
        session = self._sessions.get(endpoint) if self._cfg.session_resumption else None
        if session is not None and not session.usable_at(self._base.now()):
            self._sessions.pop(endpoint, None)
            session = None
        server_name = default_server_name(self._cfg.server_name, address)
        configuration = replace(self._base, session=session, server_name=server_name)
        stream = Tls13SmStream(configuration)
        try:
            await connect_stream(stream, self.kind, address, port, timeout, preamble)
        except UpstreamConnectError:
            self._sessions.pop(endpoint, None)
            raise
        assert stream.handshake_event is not None
        if stream.handshake_event.session_resumed:
            self.resumed += 1
            if stream.handshake_event.certificate_requested:
                _note_certificate_request_in_psk(address, port)
        if self._cfg.session_resumption:
            # Tickets come after the handshake, on a connection the cluster may already be using.
            stream.on_ticket = lambda ticket: self._sessions.__setitem__(endpoint, ticket)
            if stream.session is not None:
                self._sessions[endpoint] = stream.session
        check_application_protocol(stream, self._speaks, self.kind, address, port)
        return stream


#: One line a minute at most: a GmSSL upstream asks on every resumption.
_tolerated_log = RateLimitedLog(get_logger("upstream"), rate=1 / 60, burst=1)


def _note_certificate_request_in_psk(address: str, port: int) -> None:
    """Say that the host broke RFC 8446 4.3.2 and that ``accept_certificate_request_in_psk`` let it."""
    _tolerated_log.warning(
        "upstream asked for a client certificate in a resumed handshake",
        reason="certificate_request_in_psk",
        kind="tls13_sm",
        host=f"{address}:{port}",
        detail="RFC 8446 4.3.2 forbids it (GmSSL 3 does it); answered because "
        "accept_certificate_request_in_psk is set",
    )

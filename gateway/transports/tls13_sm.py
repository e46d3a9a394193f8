"""The TLS 1.3-SM transport (RFC 8998): the server policy, the accept, and the upstream connector.

Both directions drive the sans-I/O engine (:class:`tls.tls13.TLS13Connection`) from
:class:`Tls13SmStream`, the gateway's adapter in the shape of the TLCP transport's: records in from the
transport, plaintext out to the receiver, the engine's alert written before a refused connection closes.

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

Upstream, :class:`Tls13SmConnector` offers the configured suites, SNI (defaulting to the dialled DNS
name), an optional SM2 client certificate, and the last session ticket per endpoint (psk_dhe_ke).
"""

from __future__ import annotations

import asyncio
import ipaddress
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
from gateway.identity import PeerIdentity
from gateway.session_store import SharedTicketKeys, ticket_keys_for
from gateway.stream import TransportStream
from gateway.transports.base import (
    AcceptedSocket,
    Alert,
    Connector,
    HandshakeRefused,
    ServerTransport,
    SessionStream,
    UpstreamConnectError,
    open_connection,
)
from gateway.transports.sni import select_certificate_set
from gateway.transports.tlcp import load_certificate_set, load_trust, peer_certificate
from tls.crypto import CryptoError, sm4_ccm_available
from tls.tls13 import (
    AlertReceived,
    AlertSent,
    ApplicationData,
    CipherSuite,
    ClientAuth,
    ConnectionClosed,
    HandshakeComplete,
    LocalProtocolError,
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

#: Plaintext handed to the engine per call, so one huge write does not double its memory at once.
_WRITE_SLICE = 256 * 1024
#: The scheme our CertificateVerify uses: the one RFC 8998 defines, and the only one the engine signs with.
SIGNATURE_SCHEME = SignatureScheme.sm2sig_sm3
#: The protocol name of this transport in ``PeerIdentity``, metrics and listener configs.
PROTOCOL = Protocol.TLS13_SM.value
#: close_notify (reported as ConnectionClosed) and user_canceled are the alerts that are not fatal.
_NOT_FATAL = frozenset((AlertDescription.close_notify, AlertDescription.user_canceled))


class Tls13SmStream(SessionStream):
    """A TLS 1.3-SM connection over one TCP transport, driving one :class:`TLS13Connection`.

    Half-close as TCP has it: ``write_eof`` sends our close_notify and keeps reading; the peer's
    close_notify is EOF for the reader while we may still write. A client hands every session a
    NewSessionTicket makes resumable to ``on_session``.
    """

    def __init__(self, configuration: TLS13Configuration) -> None:
        super().__init__()
        if not configuration.half_close:
            configuration = replace(configuration, half_close=True)
        self.configuration = configuration
        self.engine = TLS13Connection(configuration)
        self.handshake_event: HandshakeComplete | None = None
        #: Client: the newest session a NewSessionTicket made resumable, also handed to ``on_ticket``.
        self.session: TLS13Session | None = None
        self.on_ticket: Callable[[TLS13Session], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.configuration.is_client:
            self.engine.start_handshake()
            self._flush()

    def _receive_records(self, data: bytes) -> None:
        try:
            events = self.engine.receive_data(data)
        except LocalProtocolError as exc:
            self._refuse(HandshakeRefused("handshake_error", f"TLS 1.3-SM engine refused input: {exc}"))
            return
        self._flush()
        for event in events:
            if isinstance(event, ApplicationData):
                self._plaintext(event.data)
            elif isinstance(event, HandshakeComplete):
                self.handshake_event = event
                self._handshake_complete()
            elif isinstance(event, SessionTicketReceived):
                self.session = event.session
                if self.on_ticket is not None:
                    self.on_ticket(event.session)
            elif isinstance(event, ConnectionClosed):
                self._peer_closed()
            elif isinstance(event, AlertSent):
                self._refuse(
                    HandshakeRefused(
                        "handshake_error",
                        f"sent fatal alert {event.name}: {event.reason}",
                        alert=Alert(event.name, event.description),
                    )
                )
            elif isinstance(event, AlertReceived) and event.description not in _NOT_FATAL:
                self._refuse(
                    HandshakeRefused(
                        "handshake_error",
                        f"received fatal alert {event.name}",
                        alert=Alert(event.name, event.description),
                        alert_sent=False,
                    )
                )

    def _flush(self) -> None:
        data = self.engine.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _write_plaintext(self, data: bytes) -> None:
        if self.engine.close_notify_sent:
            raise ConnectionResetError("cannot write after close_notify")
        view = memoryview(data)
        for offset in range(0, len(view), _WRITE_SLICE):
            self.engine.send_application_data(bytes(view[offset : offset + _WRITE_SLICE]))
        self._flush()

    def _send_close_notify(self) -> None:
        self.engine.close()
        self._flush()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self.handshaken and not self._lingering and not self.is_closing():
            self._send_close_notify()

    @property
    def peer_verified(self) -> bool:
        """Whether the engine validated the peer's chain against the trust anchors (for a resumed session:
        in the original handshake, and it still validates now)."""
        event = self.handshake_event
        return event is not None and bool(event.peer_certificates) and event.peer_verified


def identity_from_tls13(hs: HandshakeComplete, verified: bool, peer: tuple[str, int] | None) -> PeerIdentity:
    """The client's identity: its chain only when it was validated against the trust anchors (issue 10)."""
    chain = tuple(peer_certificate(c) for c in hs.peer_certificates)
    unverified = None
    if not verified:
        unverified, chain = (chain[0] if chain else None), ()
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
    credentials: dict[str, SM2Credential] = {}
    errors: list[str] = []
    for j, cert_set in enumerate(tls.certificates):
        if cert_set.has_sm2:
            try:
                credentials[cert_set.name] = tls13_credential(cert_set, f"{where}.certificates[{j}]")
            except ConfigError as exc:
                errors.extend(exc.errors)
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
        await asyncio.get_running_loop().connect_accepted_socket(lambda: stream, accepted.sock)
        await stream.handshake()
        assert stream.handshake_event is not None
        return stream, identity_from_tls13(stream.handshake_event, stream.peer_verified, accepted.peer)


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
    session ticket per endpoint."""

    kind = "tls13_sm"

    def __init__(self, cfg: UpstreamTransport, where: str = "transport_socket") -> None:
        self._cfg = cfg
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
        configuration = replace(self._base, session=session, server_name=self._server_name(address))
        stream = Tls13SmStream(configuration)
        try:
            async with asyncio.timeout(timeout):
                await open_connection(stream, address, port, preamble)
                await stream.handshake()
        except (OSError, TimeoutError, HandshakeRefused) as exc:
            stream.abort()
            self._sessions.pop(endpoint, None)
            raise UpstreamConnectError(f"tls13_sm connect {address}:{port}: {exc or 'timeout'}") from None
        assert stream.handshake_event is not None
        if stream.handshake_event.session_resumed:
            self.resumed += 1
        if self._cfg.session_resumption:
            # Tickets come after the handshake, on a connection the cluster may already be using.
            stream.on_ticket = lambda ticket: self._sessions.__setitem__(endpoint, ticket)
            if stream.session is not None:
                self._sessions[endpoint] = stream.session
        return stream

    def _server_name(self, address: str) -> str | None:
        """Like Go's tls.Dial: an unset server name defaults to the dialled DNS name (not an IP)."""
        if self._cfg.server_name is not None:
            return self._cfg.server_name
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return address
        return None

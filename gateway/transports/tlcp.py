"""The TLCP transport (GB/T 38636-2020): the server policy, the accept, and the upstream connector.

Both directions drive the sans-I/O engine (:class:`tls.tlcp.TLCPConnection`) from :class:`TlcpStream`
(an :class:`~gateway.transports.engine_stream.EngineStream`, as the TLS 1.3-SM transport's is): records
in from the transport, plaintext out to the receiver, and the engine's alert written before a refused
connection closes. The gateway speaks the engine's types throughout: ``CipherSuite``, ``PeerProfile``,
``ClientAuth``, ``AlertDescription``.

Downstream, the sniffer has already peeked a version-0x0101 ClientHello (nothing consumed); certificate
sets are chosen by SNI through the engine's ``certificate_selector``; sessions are cached per listener;
ALPN follows the listener's ``tls.alpn`` as on TLS (the ALPN extension in the TLCP hellos, as BabaSSL
and Tongsuo carry it), so a client selecting ``h2`` gets the HTTP/2 connection manager.
Upstream, :class:`TlcpConnector` opens TLCP with an optional SM2 client pair and the configured cipher
preference, re-offers the last session per endpoint (GB/T 38636-2020 6.4.4 session resumption), and
for an HTTP/2 cluster offers and requires ALPN ``h2``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from certs import Certificate, CertificateError, SM2CertificateSet, TrustStore, load_sm2_certificate_set
from gateway.config import CertificateSet, ConfigError, DownstreamTls, Protocol, UpstreamTransport
from gateway.identity import PeerCertificate, PeerIdentity, chain_or_claim
from gateway.session_store import SharedSessionCache, session_cache_for
from gateway.stream import TransportStream
from gateway.transports.base import (
    AcceptedSocket,
    Connector,
    HandshakeRefused,
    ServerTransport,
    UpstreamConnectError,
    check_application_protocol,
    default_server_name,
    offered_without_default,
    open_connection,
)
from gateway.transports.engine_stream import EngineEvents, EngineStream
from gateway.transports.sni import select_certificate_set
from tls import tlcp as tlcp_engine
from tls.crypto import CryptoError
from tls.tlcp import (
    AlertLevel,
    AlertReceived,
    CipherSuite,
    DialectCache,
    DialectChoice,
    DialectSource,
    HandshakeComplete,
    PeerProfile,
    TLCPConfiguration,
    TLCPConnection,
    TLCPSession,
)
from tls.tlcp.aio import TLCPHandshakeError, connect_with_dialects
from tls.tlcp.dialect import describe_refusal

logger = logging.getLogger(__name__)

LoadedT = TypeVar("LoadedT")

#: The client's preference when a cluster names none: ECC first (ECDHE needs a client pair), GCM first.
UPSTREAM_DEFAULT_SUITES = (
    CipherSuite.ECC_SM4_GCM_SM3,
    CipherSuite.ECC_SM4_CBC_SM3,
    CipherSuite.ECDHE_SM4_GCM_SM3,
    CipherSuite.ECDHE_SM4_CBC_SM3,
)


def suite_name(suite: int) -> str:
    try:
        return CipherSuite(suite).name
    except ValueError:
        return f"0x{suite:04x}"


class TlcpStream(EngineStream[TLCPConnection, HandshakeComplete]):
    """A TLCP connection over one TCP transport, driving one :class:`TLCPConnection`."""

    engine_name = "TLCP"
    events = EngineEvents.of(tlcp_engine)

    def __init__(self, configuration: TLCPConfiguration) -> None:
        if not configuration.half_close:
            configuration = replace(configuration, half_close=True)
        super().__init__(TLCPConnection(configuration), is_client=configuration.is_client)
        #: Client: the dialect whose forms the handshake sent, and how it was chosen (profile auto).
        self.dialect: DialectChoice | None = None

    def _is_fatal(self, alert: AlertReceived) -> bool:
        return alert.level == AlertLevel.FATAL

    def _on_handshake(self, event: HandshakeComplete) -> None:
        progress = self.engine.client_progress
        self.dialect = progress.dialect if progress is not None else None

    @property
    def session(self) -> TLCPSession | None:
        """Client: the session to offer again for resumption."""
        return self.engine.session


def peer_certificate(cert: Certificate) -> PeerCertificate:
    return PeerCertificate(
        der=cert.der,
        subject=cert.subject,
        issuer=cert.issuer,
        san_dns=tuple(cert.san_dns),
        san_ip=tuple(cert.san_ip),
        fingerprint_sha256=cert.fingerprint_sha256(),
        fingerprint_sm3=cert.fingerprint_sm3(),
        serial=cert.serial,
    )


def identity_from_tlcp(hs: HandshakeComplete, peer: tuple[str, int] | None) -> PeerIdentity:
    """The client's identity: its chain only when the engine validated it against the trust anchors."""
    chain = tuple(peer_certificate(c) for c in hs.peer_certificates)
    if hs.peer_sign_cert is not None:
        # Routing and access control look at the signing certificate first (it authenticates the peer).
        sign = peer_certificate(hs.peer_sign_cert)
        chain = (sign, *(c for c in chain if c.der != sign.der))
    chain, unverified = chain_or_claim(chain, hs.peer_verified)
    return PeerIdentity(
        protocol="tlcp",
        version="TLCPv1.1",
        cipher_suite=suite_name(hs.cipher_suite),
        sni=hs.server_name,
        alpn=hs.alpn_protocol,
        peer_chain=chain,
        unverified_peer=unverified,
        resumed=hs.session_resumed,
        remote_address=peer[0] if peer else "",
        remote_port=peer[1] if peer else 0,
    )


# -- server side ---------------------------------------------------------------------------------


def _password(env: str | None) -> bytes | None:
    if env is None:
        return None
    value = os.environ.get(env)
    return value.encode() if value is not None else None


def load_certificate_set(cfg: CertificateSet, where: str) -> SM2CertificateSet:
    assert cfg.sign_cert and cfg.sign_key and cfg.enc_cert and cfg.enc_key
    try:
        return load_sm2_certificate_set(
            cfg.sign_cert,
            cfg.sign_key,
            cfg.enc_cert,
            cfg.enc_key,
            cfg.chain,
            password=_password(cfg.key_password_env),
        )
    except (CertificateError, CryptoError, OSError, ValueError) as exc:
        raise ConfigError([f"{where}: cannot load SM2 certificate set: {exc}"]) from None


def load_sm2_sets(
    tls: DownstreamTls, where: str, load: Callable[[CertificateSet, str], LoadedT], errors: list[str]
) -> dict[str, LoadedT]:
    """A listener's SM2 certificate sets, each as ``load`` makes it, by set name; what fails to load
    goes to ``errors`` (every failing key reported at once)."""
    loaded: dict[str, LoadedT] = {}
    for j, cert_set in enumerate(tls.certificates):
        if cert_set.has_sm2:
            try:
                loaded[cert_set.name] = load(cert_set, f"{where}.certificates[{j}]")
            except ConfigError as exc:
                errors.extend(exc.errors)
    return loaded


def load_trust(path: Path, where: str) -> TrustStore:
    try:
        return TrustStore.from_pem_file(path)
    except (CertificateError, OSError, ValueError) as exc:
        raise ConfigError([f"{where}: cannot load SM2 trust anchors: {exc}"]) from None


@dataclass
class TlcpServerPolicy:
    """A listener's TLCP server configuration (shared by its connections: certificates, session cache)."""

    configuration: TLCPConfiguration


def build_server_policy(tls: DownstreamTls, where: str) -> TlcpServerPolicy | None:
    if Protocol.TLCP not in tls.protocols:
        return None
    errors: list[str] = []
    sets = load_sm2_sets(tls, where, load_certificate_set, errors)
    trust = None
    if tls.sm2_trust_anchors is not None:
        try:
            trust = load_trust(tls.sm2_trust_anchors, f"{where}.sm2_trust_anchors")
        except ConfigError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)

    def selector(server_name: str | None) -> SM2CertificateSet:
        chosen = select_certificate_set(tls.certificates, server_name, "sm2")
        assert chosen is not None
        return sets[chosen.name]

    configuration = TLCPConfiguration(
        is_client=False,
        cipher_suites=tls.cipher_suites.tlcp,
        certificate_selector=selector,
        client_auth=tls.client_auth,
        trust_store=trust,
        verify_peer=trust is not None,
        session_cache=session_cache_for(where, max(1, tls.session_cache_size)),
        profile=tls.tlcp.profile,
        # As OpenSSL does for the TLS transport: our first preference the client offered, else no ALPN
        # (HTTP/1.1); a client offering none is never refused (GB/T 38636 itself has no ALPN).
        alpn_protocols=tls.alpn,
        half_close=True,
    )
    return TlcpServerPolicy(configuration)


class TlcpTransport(ServerTransport):
    name = "tlcp"

    def __init__(self, policy: TlcpServerPolicy) -> None:
        self.policy = policy

    async def accept(self, accepted: AcceptedSocket) -> tuple[TransportStream, PeerIdentity]:
        cache = self.policy.configuration.session_cache
        if isinstance(cache, SharedSessionCache):
            await cache.prefetch(accepted.sock)  # a session another worker or host made, into the local cache
        stream = TlcpStream(self.policy.configuration)
        handshake = await stream.serve_handshake(accepted.sock)
        return stream, identity_from_tlcp(handshake, accepted.peer)


# -- upstream side -------------------------------------------------------------------------------


class TlcpConnector(Connector):
    """TLCP to the endpoint, optionally with an SM2 client pair; resumes the last session per endpoint.

    ``speaks``: the cluster's application protocols (ALPN names). HTTP/1.1 is what a TLCP connection
    without ALPN carries, so only the others are offered (an HTTP/2 cluster offers ``h2`` and needs the
    host to select it); HTTP/1.1 and TCP clusters offer no ALPN, as GmSSL's ``tlcp_server`` refuses any
    offer it was not started to accept.
    """

    kind = "tlcp"

    def __init__(
        self, cfg: UpstreamTransport, where: str = "transport_socket", speaks: tuple[str, ...] = ("http/1.1",)
    ) -> None:
        self._cfg = cfg
        self._speaks = speaks
        pair = None
        if cfg.sign_cert is not None:
            assert cfg.sign_key and cfg.enc_cert and cfg.enc_key
            try:
                pair = load_sm2_certificate_set(
                    cfg.sign_cert, cfg.sign_key, cfg.enc_cert, cfg.enc_key, cfg.chain
                )
            except (CertificateError, CryptoError, OSError, ValueError) as exc:
                raise ConfigError([f"{where}: cannot load SM2 client pair: {exc}"]) from None
        trust = load_trust(cfg.trust_anchors, f"{where}.trust_anchors") if cfg.trust_anchors else None
        self._base = TLCPConfiguration(
            is_client=True,
            cipher_suites=cfg.cipher_suites or UPSTREAM_DEFAULT_SUITES,
            certificate_set=pair,
            trust_store=trust,
            verify_peer=cfg.verify,
            server_name=cfg.server_name,
            alpn_protocols=offered_without_default(speaks),
            profile=cfg.profile,
            half_close=True,
        )
        self._sessions: dict[tuple[str, int], TLCPSession] = {}
        self.resumed = 0
        #: profile auto: per endpoint, the dialect a retry found (``dialects.stats`` counts dialects used)
        self.dialects = DialectCache()

    @property
    def configuration(self) -> TLCPConfiguration:
        """The client configuration every connection starts from (profile, suites, client pair)."""
        return self._base

    async def connect(
        self, address: str, port: int, timeout: float, *, preamble: bytes = b""
    ) -> TransportStream:
        session = self._sessions.get((address, port)) if self._cfg.session_resumption else None
        server_name = default_server_name(self._cfg.server_name, address)
        configuration = replace(self._base, session=session, server_name=server_name)

        async def handshake(configuration: TLCPConfiguration) -> TlcpStream:
            return await self._handshake(configuration, address, port, timeout, preamble)

        try:
            if configuration.profile is PeerProfile.AUTO:
                # The engine's retry policy: recognise the server's dialect, retry once if refused.
                endpoint = (address, port, configuration.server_name)
                stream = await connect_with_dialects(handshake, endpoint, configuration, self.dialects)
            else:
                stream = await handshake(configuration)
        except (OSError, TLCPHandshakeError) as exc:
            self._sessions.pop((address, port), None)
            raise UpstreamConnectError(f"tlcp connect {address}:{port}: {exc}") from None
        if stream.dialect is not None and stream.dialect.source is DialectSource.RETRIED:
            logger.info("tlcp upstream %s:%s speaks dialect %s", address, port, stream.dialect)
        assert stream.handshake_event is not None
        if stream.handshake_event.session_resumed:
            self.resumed += 1
        if stream.session is not None:
            self._sessions[(address, port)] = stream.session
        check_application_protocol(stream, self._speaks, self.kind, address, port)
        return stream

    async def _handshake(
        self, configuration: TLCPConfiguration, address: str, port: int, timeout: float, preamble: bytes
    ) -> TlcpStream:
        """One connection and client handshake; a failure says what our flight sent (dialect retry)."""
        stream = TlcpStream(configuration)
        try:
            async with asyncio.timeout(timeout):
                await open_connection(stream, address, port, preamble)
                await stream.handshake()
        except TimeoutError:
            stream.abort()
            raise TLCPHandshakeError(
                f"TLCP handshake timed out after {timeout} s",
                client_progress=stream.engine.client_progress,
                timed_out=True,
            ) from None
        except HandshakeRefused as exc:
            progress = stream.engine.client_progress
            alert = exc.alert.name if exc.alert else None
            refusal = "" if exc.alert_sent else describe_refusal(progress, alert)
            raise TLCPHandshakeError(
                f"{exc}; {refusal}" if refusal else str(exc),
                alert=alert,
                alert_sent=exc.alert_sent,
                client_progress=progress,
            ) from None
        return stream

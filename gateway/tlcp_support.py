"""TLCP in the gateway: the per-listener server policy, the downstream handshake, the upstream connector.

Downstream: the listener has already peeked a version-0x0101 ClientHello (nothing consumed), so the
accepted socket goes straight to :func:`tls.tlcp.aio.tlcp_accept_socket`. Certificate sets are chosen
by SNI through the engine's ``certificate_selector``; sessions are cached per listener.
Upstream: :class:`TlcpConnector` opens TLCP with an optional SM2 client pair and the configured cipher
preference, and re-offers the last session per endpoint (GB/T 38636-2020 6.4.4 session resumption).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from certs import Certificate, CertificateError, SM2CertificateSet, TrustStore, load_sm2_certificate_set
from gateway.config import (
    CertificateSet,
    ClientAuthMode,
    ConfigError,
    DownstreamTls,
    Protocol,
    TlcpCipherSuite,
    TlcpPeerProfile,
    UpstreamTransport,
)
from gateway.identity import PeerCertificate, PeerIdentity
from gateway.session_store import SharedSessionCache, session_cache_for
from gateway.stream import ByteStream
from gateway.tls_server import select_certificate_set
from gateway.upstream import UpstreamConnectError, UpstreamConnector
from tls.crypto import CryptoError
from tls.tlcp import CipherSuite, ClientAuth, PeerProfile, TLCPConfiguration, TLCPSession
from tls.tlcp.aio import TLCPStream, TLCPStreamError, tlcp_accept_socket, tlcp_connect

_CLIENT_AUTH = {
    ClientAuthMode.NONE: ClientAuth.NONE,
    ClientAuthMode.OPTIONAL: ClientAuth.OPTIONAL,
    ClientAuthMode.REQUIRED: ClientAuth.REQUIRED,
}


_PROFILES = {
    TlcpPeerProfile.STANDARD: PeerProfile.STANDARD,
    TlcpPeerProfile.GMSSL: PeerProfile.GMSSL,
    TlcpPeerProfile.TONGSUO: PeerProfile.TONGSUO,
}


def suites(names: tuple[TlcpCipherSuite, ...]) -> tuple[CipherSuite, ...]:
    return tuple(CipherSuite[name.value] for name in names)


def suite_name(suite: int) -> str:
    try:
        return CipherSuite(suite).name
    except ValueError:
        return f"0x{suite:04x}"


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


def load_trust(path: Path, where: str) -> TrustStore:
    try:
        return TrustStore.from_pem_file(path)
    except (CertificateError, OSError, ValueError) as exc:
        raise ConfigError([f"{where}: cannot load SM2 trust anchors: {exc}"]) from None


@dataclass
class TlcpServerPolicy:
    configuration: TLCPConfiguration
    handshake_timeout: float


def build_server_tlcp(tls: DownstreamTls, where: str, handshake_timeout: float) -> TlcpServerPolicy | None:
    if Protocol.TLCP not in tls.protocols:
        return None
    sets: dict[str, SM2CertificateSet] = {}
    errors: list[str] = []
    for j, cert_set in enumerate(tls.certificates):
        if cert_set.has_sm2:
            try:
                sets[cert_set.name] = load_certificate_set(cert_set, f"{where}.certificates[{j}]")
            except ConfigError as exc:
                errors.extend(exc.errors)
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
        cipher_suites=suites(tls.cipher_suites.tlcp),
        certificate_selector=selector,
        client_auth=_CLIENT_AUTH[tls.client_auth],
        trust_store=trust,
        verify_peer=trust is not None,
        session_cache=session_cache_for(where, max(1, tls.session_cache_size)),
        profile=_PROFILES[tls.tlcp.profile],
    )
    return TlcpServerPolicy(configuration, handshake_timeout)


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


def identity_from_tlcp(stream: TLCPStream, peer: tuple[str, int] | None) -> PeerIdentity:
    """The client's identity: its chain only when the engine validated it against the trust anchors."""
    hs = stream.handshake
    chain = tuple(peer_certificate(c) for c in hs.peer_certificates)
    if hs.peer_sign_cert is not None:
        # Routing and access control look at the signing certificate first (it authenticates the peer).
        sign = peer_certificate(hs.peer_sign_cert)
        chain = (sign, *(c for c in chain if c.der != sign.der))
    unverified = None
    if not hs.peer_verified:
        unverified, chain = (chain[0] if chain else None), ()
    return PeerIdentity(
        protocol="tlcp",
        version="TLCPv1.1",
        cipher_suite=suite_name(hs.cipher_suite),
        sni=hs.server_name,
        alpn=None,
        peer_chain=chain,
        unverified_peer=unverified,
        resumed=hs.session_resumed,
        remote_address=peer[0] if peer else "",
        remote_port=peer[1] if peer else 0,
    )


async def tlcp_server_handshake(
    sock: socket.socket, peer: tuple[str, int], policy: TlcpServerPolicy, timeout: float
) -> tuple[ByteStream, PeerIdentity]:
    cache = policy.configuration.session_cache
    if isinstance(cache, SharedSessionCache):
        await cache.prefetch(sock)  # a session another worker or host made, into the local cache
    stream = await tlcp_accept_socket(sock, policy.configuration, handshake_timeout=timeout)
    return stream, identity_from_tlcp(stream, peer)


class TlcpConnector(UpstreamConnector):
    """TLCP to the endpoint, optionally with an SM2 client pair; resumes the last session per endpoint."""

    kind = "tlcp"

    def __init__(self, cfg: UpstreamTransport, where: str = "transport_socket") -> None:
        self._cfg = cfg
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
            cipher_suites=suites(cfg.cipher_suites)
            if cfg.cipher_suites
            else (
                CipherSuite.ECC_SM4_GCM_SM3,
                CipherSuite.ECC_SM4_CBC_SM3,
                CipherSuite.ECDHE_SM4_GCM_SM3,
                CipherSuite.ECDHE_SM4_CBC_SM3,
            ),
            certificate_set=pair,
            trust_store=trust,
            verify_peer=cfg.verify,
            server_name=cfg.server_name,
            profile=_PROFILES[cfg.profile],
        )
        self._sessions: dict[tuple[str, int], TLCPSession] = {}
        self.resumed = 0

    @property
    def configuration(self) -> TLCPConfiguration:
        """The client configuration every connection starts from (profile, suites, client pair)."""
        return self._base

    async def connect(self, address: str, port: int, timeout: float) -> ByteStream:
        session = self._sessions.get((address, port)) if self._cfg.session_resumption else None
        configuration = replace(self._base, session=session)
        try:
            stream = await tlcp_connect(address, port, configuration, handshake_timeout=timeout)
        except (OSError, TimeoutError, TLCPStreamError) as exc:
            self._sessions.pop((address, port), None)
            raise UpstreamConnectError(f"tlcp connect {address}:{port}: {exc or 'timeout'}") from None
        if stream.handshake.session_resumed:
            self.resumed += 1
        if stream.session is not None:
            self._sessions[(address, port)] = stream.session
        return stream

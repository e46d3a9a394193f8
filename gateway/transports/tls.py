"""The TLS 1.2/1.3 transport: OpenSSL (Python's ``ssl``) driven over memory BIOs, both directions.

Server policy: one ``SSLContext`` per certificate set (an RSA and an ECDSA certificate may share one;
OpenSSL picks by the client's signature algorithms), chosen *before* the handshake from the SNI the
sniffer read in the ClientHello. There is no SNI callback: CPython decodes the name for it and prints
an unraisable traceback for every non-ASCII name, which the sniffer refuses with an alert instead.

:class:`TlsStream` runs the ``SSLObject`` itself rather than asyncio's SSL transport, so that

* a refused handshake writes the alert OpenSSL queued and closes lingering (asyncio's transport closes at
  once and the client sees a reset);
* a pending handshake holds only the engine's state, not asyncio's 256 KB (stock) or uvloop's read
  buffers, on either event loop;
* the same code reads and writes on stock asyncio and uvloop.

Alerts are OpenSSL's: ``ssl.AlertDescription`` by name, plus the TLS 1.3 alerts (RFC 8446 6) that
Python's enum does not list.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from gateway.config import CertificateSet, ConfigError, DownstreamTls, Protocol, UpstreamTransport
from gateway.identity import PeerIdentity, identity_from_ssl
from gateway.stream import TransportStream
from gateway.transports.base import (
    AcceptedSocket,
    Alert,
    Connector,
    HandshakeRefused,
    ServerTransport,
    SessionStream,
    check_application_protocol,
    connect_stream,
)
from gateway.transports.sni import select_certificate_set
from tls.tlcp import ClientAuth

#: One record's plaintext at most (RFC 8446 5.1): SSL_read returns no more per call, and CPython allocates
#: the whole size asked for before it shrinks the result.
READ_SIZE = 16384

#: TLS 1.3 alerts (RFC 8446 6) that ``ssl.AlertDescription`` lacks.
_RFC8446_ALERTS = {
    "inappropriate_fallback": 86,
    "missing_extension": 109,
    "certificate_required": 116,
    "no_application_protocol": 120,
}

ALERT_CODES: dict[str, int] = {
    **{a.name.removeprefix("ALERT_DESCRIPTION_").lower(): a.value for a in ssl.AlertDescription},
    **_RFC8446_ALERTS,
}

_RECEIVED_ALERT_PREFIXES = ("sslv3_alert_", "tlsv1_alert_", "tlsv13_alert_")

#: OpenSSL failure reasons (``SSLError.reason``) and the alert OpenSSL sends for them.
_SENT_ALERTS: dict[str, str] = {
    "no_shared_cipher": "handshake_failure",
    "no_suitable_signature_algorithm": "handshake_failure",
    "unsupported_protocol": "protocol_version",
    "wrong_version_number": "protocol_version",
    "version_too_low": "protocol_version",
    "version_too_high": "protocol_version",
    "peer_did_not_return_a_certificate": "certificate_required",
    "certificate_verify_failed": "bad_certificate",
    "no_application_protocol": "no_application_protocol",
    "decryption_failed_or_bad_record_mac": "bad_record_mac",
    "record_layer_failure": "decode_error",
    "packet_length_too_long": "record_overflow",
    "unexpected_message": "unexpected_message",
    "bad_key_share": "illegal_parameter",
    "missing_sigalgs_extension": "missing_extension",
}


def alert(name: str) -> Alert:
    return Alert(name, ALERT_CODES.get(name, 0))


def alert_record(fatal: Alert) -> bytes:
    """A fatal alert as a plaintext record (what a server sends before any handshake keys exist)."""
    return bytes((21, 3, 3, 0, 2, 2, fatal.code))


def openssl_alert(reason: str) -> tuple[Alert | None, bool]:
    """The alert behind an OpenSSL failure reason and whether we sent it (``False``: the peer sent it)."""
    reason = reason.lower()
    for prefix in _RECEIVED_ALERT_PREFIXES:
        if reason.startswith(prefix):
            return alert(reason[len(prefix) :]), False
    name = _SENT_ALERTS.get(reason)
    return (alert(name) if name else None), True


def refusal(exc: ssl.SSLError) -> HandshakeRefused:
    found, sent = openssl_alert(exc.reason or "")
    return HandshakeRefused("handshake_error", str(exc), alert=found, alert_sent=sent)


class TlsStream(SessionStream):
    """A TLS connection over one TCP transport, through an ``SSLObject`` and two memory BIOs."""

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        super().__init__()
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._server_side = server_side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._server_side:
            self._advance_handshake()

    # -- records in ------------------------------------------------------------------------------

    def _receive_records(self, data: bytes) -> None:
        self._incoming.write(data)
        if not self.handshaken:
            self._advance_handshake()
            if not self.handshaken:
                return
        self._read_plaintext()

    def _advance_handshake(self) -> None:
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()  # the alert OpenSSL queued for its verdict
            self._refuse(refusal(exc))
            return
        self._flush()
        self._handshake_complete()

    def _read_plaintext(self) -> None:
        ssl_object = self.ssl_object
        while not self._lost and not self._lingering:
            try:
                data = ssl_object.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as exc:
                self._flush()
                self._refuse(refusal(exc))
                return
            if not data:  # the peer's close_notify (CPython answers b"" rather than SSLZeroReturnError)
                self._flush()
                self._peer_closed()
                return
            self._plaintext(data)
            # One record usually carries the whole read: skip the WantRead round trip.
            if not self._incoming.pending and not ssl_object.pending():
                break
        if self._outgoing.pending:
            self._flush()  # post-handshake messages (session tickets, key updates)

    # -- records out -----------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._outgoing.pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._outgoing.read())

    def _write_plaintext(self, data: bytes) -> None:
        try:
            self.ssl_object.write(data)
        except ssl.SSLError as exc:
            raise ConnectionResetError(f"TLS write failed: {exc}") from None
        self._flush()

    def _send_close_notify(self) -> None:
        try:
            self.ssl_object.unwrap()
        except ssl.SSLError:
            pass  # want-read: the peer's close_notify has not arrived; ours is queued all the same
        self._flush()

    def can_write_eof(self) -> bool:
        return False  # close_notify ends both directions in TLS: a half-close closes

    @property
    def alpn_protocol(self) -> str | None:
        return self.ssl_object.selected_alpn_protocol()


# -- server side ---------------------------------------------------------------------------------

_VERIFY_MODES = {
    ClientAuth.NONE: ssl.CERT_NONE,
    ClientAuth.OPTIONAL: ssl.CERT_OPTIONAL,
    ClientAuth.REQUIRED: ssl.CERT_REQUIRED,
}


@dataclass
class TlsServerPolicy:
    """A listener's contexts, one per certificate set with standard certificates."""

    by_set: dict[str, ssl.SSLContext]
    sets: tuple[CertificateSet, ...]
    default: ssl.SSLContext

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        chosen = select_certificate_set(self.sets, server_name, "tls")
        return self.by_set[chosen.name] if chosen is not None else self.default


def _server_context(tls: DownstreamTls, cert_set: CertificateSet, where: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = [
        v
        for p, v in ((Protocol.TLS12, ssl.TLSVersion.TLSv1_2), (Protocol.TLS13, ssl.TLSVersion.TLSv1_3))
        if p in tls.protocols
    ]
    ctx.minimum_version = min(versions)
    ctx.maximum_version = max(versions)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.set_ciphers(tls.cipher_suites.tls12)
    except ssl.SSLError:
        raise ConfigError(
            [f"{where}.cipher_suites.tls12: no usable cipher in {tls.cipher_suites.tls12!r}"]
        ) from None
    for k, cert in enumerate(cert_set.tls_certificates):
        try:
            ctx.load_cert_chain(str(cert.cert_chain), str(cert.private_key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                [
                    f"{where}.tls_certificates[{k}]: cannot load certificate/key: "
                    f"{getattr(exc, 'reason', None) or exc}"
                ]
            ) from None
    if tls.client_auth is not ClientAuth.NONE:
        assert tls.trust_anchors is not None
        try:
            ctx.load_verify_locations(cafile=str(tls.trust_anchors))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError([f"{where}.trust_anchors: cannot load: {exc}"]) from None
        ctx.verify_mode = _VERIFY_MODES[tls.client_auth]
    ctx.set_alpn_protocols(list(tls.alpn))
    return ctx


def build_server_policy(tls: DownstreamTls, where: str) -> TlsServerPolicy | None:
    """Contexts for a listener's standard-TLS protocols, or ``None`` if it accepts none."""
    if Protocol.TLS12 not in tls.protocols and Protocol.TLS13 not in tls.protocols:
        return None
    by_set: dict[str, ssl.SSLContext] = {}
    errors: list[str] = []
    for j, cert_set in enumerate(tls.certificates):
        if cert_set.tls_certificates:
            try:
                by_set[cert_set.name] = _server_context(tls, cert_set, f"{where}.certificates[{j}]")
            except ConfigError as exc:
                errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)
    default_set = select_certificate_set(tls.certificates, None, "tls")
    assert default_set is not None
    return TlsServerPolicy(by_set=by_set, sets=tls.certificates, default=by_set[default_set.name])


class TlsTransport(ServerTransport):
    name = "tls"

    def __init__(self, policy: TlsServerPolicy) -> None:
        self.policy = policy

    async def accept(self, accepted: AcceptedSocket) -> tuple[TransportStream, PeerIdentity]:
        stream = TlsStream(self.policy.context_for(accepted.server_name), server_side=True)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: stream, accepted.sock)
        await stream.handshake()
        return stream, identity_from_ssl(stream.ssl_object, accepted.server_name, accepted.peer)


# -- upstream side -------------------------------------------------------------------------------


def upstream_context(cfg: UpstreamTransport, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.verify:
        assert cfg.trust_anchors is not None
        ctx.load_verify_locations(cafile=str(cfg.trust_anchors))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.client_cert_chain is not None and cfg.client_private_key is not None:
        ctx.load_cert_chain(str(cfg.client_cert_chain), str(cfg.client_private_key))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


class TlsConnector(Connector):
    """TLS 1.2/1.3 to the endpoint; verifies the server name against the CA bundle."""

    kind = "tls"

    def __init__(self, cfg: UpstreamTransport, alpn: tuple[str, ...] = ("http/1.1",)) -> None:
        self._server_name = cfg.server_name
        self._alpn = alpn
        self._context = upstream_context(cfg, alpn)

    async def connect(
        self, address: str, port: int, timeout: float, *, preamble: bytes = b""
    ) -> TransportStream:
        stream = TlsStream(self._context, server_side=False, server_hostname=self._server_name or address)
        await connect_stream(stream, self.kind, address, port, timeout, preamble)
        check_application_protocol(stream, self._alpn, self.kind, address, port)
        return stream

"""Downstream standard TLS: one ``ssl.SSLContext`` per certificate set, chosen by SNI in a callback.

Each certificate set may load an RSA and an ECDSA certificate into the same context (OpenSSL picks by
the client's signature algorithms). The set without ``server_names`` is the default; a set whose
``server_names`` match the SNI (exact or ``*.suffix``) replaces the context during the ClientHello.
"""

from __future__ import annotations

import ssl
import weakref
from dataclasses import dataclass, field

from gateway.config import CertificateSet, ClientAuthMode, ConfigError, DownstreamTls, Protocol


def name_matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower(), name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and name.count(".") == pattern.count(".")
    return pattern == name


def select_certificate_set(
    sets: tuple[CertificateSet, ...], sni: str | None, want: str
) -> CertificateSet | None:
    """The set for ``sni`` having ``want`` ("sm2" or "tls") certificates, else the default such set."""
    usable = [s for s in sets if (s.has_sm2 if want == "sm2" else bool(s.tls_certificates))]
    if sni:
        for cert_set in usable:
            if any(name_matches(p, sni) for p in cert_set.server_names):
                return cert_set
    return next((s for s in usable if not s.server_names), usable[0] if usable else None)


@dataclass
class ServerTlsPolicy:
    """The contexts of one listener; ``sni_of`` remembers the SNI each handshake presented."""

    default: ssl.SSLContext
    by_set: dict[str, ssl.SSLContext]
    sets: tuple[CertificateSet, ...]
    sni_of: weakref.WeakKeyDictionary[ssl.SSLObject, str] = field(default_factory=weakref.WeakKeyDictionary)

    def _sni_callback(self, ssl_object: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if server_name:
            self.sni_of[ssl_object] = server_name
        chosen = select_certificate_set(self.sets, server_name, "tls")
        if chosen is not None:
            target = self.by_set[chosen.name]
            if target is not ctx:
                ssl_object.context = target


def _context(tls: DownstreamTls, cert_set: CertificateSet, where: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = [
        v
        for p, v in ((Protocol.TLS12, ssl.TLSVersion.TLSv1_2), (Protocol.TLS13, ssl.TLSVersion.TLSv1_3))
        if p in tls.protocols
    ]
    ctx.minimum_version = min(versions)
    ctx.maximum_version = max(versions)
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
    if tls.client_auth is not ClientAuthMode.NONE:
        assert tls.trust_anchors is not None
        try:
            ctx.load_verify_locations(cafile=str(tls.trust_anchors))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError([f"{where}.trust_anchors: cannot load: {exc}"]) from None
        ctx.verify_mode = (
            ssl.CERT_REQUIRED if tls.client_auth is ClientAuthMode.REQUIRED else ssl.CERT_OPTIONAL
        )
    ctx.set_alpn_protocols(list(tls.alpn))
    return ctx


def build_server_tls(tls: DownstreamTls, where: str) -> ServerTlsPolicy | None:
    """Contexts for a listener's standard-TLS protocols, or ``None`` if it accepts none."""
    if Protocol.TLS12 not in tls.protocols and Protocol.TLS13 not in tls.protocols:
        return None
    by_set: dict[str, ssl.SSLContext] = {}
    errors: list[str] = []
    for j, cert_set in enumerate(tls.certificates):
        if cert_set.tls_certificates:
            try:
                by_set[cert_set.name] = _context(tls, cert_set, f"{where}.certificates[{j}]")
            except ConfigError as exc:
                errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)
    default_set = select_certificate_set(tls.certificates, None, "tls")
    assert default_set is not None
    policy = ServerTlsPolicy(default=by_set[default_set.name], by_set=by_set, sets=tls.certificates)
    for ctx in by_set.values():
        ctx.sni_callback = policy._sni_callback
    return policy

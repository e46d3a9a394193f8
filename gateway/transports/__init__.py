"""Transports, one module each (Envoy's transport sockets), used by listeners and clusters alike.

``plain`` (raw TCP), ``tls`` (TLS 1.2/1.3 on OpenSSL), ``tlcp`` (GB/T 38636 on the project's engine) and
``tls13_sm`` (TLS 1.3 with the RFC 8998 suites, on the project's engine): each a module with a server
policy, a :class:`~gateway.transports.base.ServerTransport` and a :class:`~gateway.transports.base.Connector`,
built by the two builders below; the sniffer chooses among a listener's transports.
"""

from __future__ import annotations

from gateway.config import ConfigError, ListenerConfig, Protocol, UpstreamTransport
from gateway.transports import plain, tlcp, tls, tls13_sm
from gateway.transports.base import Connector, ServerTransport


def build_server_transports(listener: ListenerConfig, where: str) -> dict[str, ServerTransport]:
    """The transports a listener accepts, by name; raises :class:`ConfigError` naming the failing key."""
    transports: dict[str, ServerTransport] = {}
    errors: list[str] = []
    try:
        tls_policy = tls.build_server_policy(listener.tls, where)
        if tls_policy is not None:
            transports["tls"] = tls.TlsTransport(tls_policy)
    except ConfigError as exc:
        errors.extend(exc.errors)
    try:
        tlcp_policy = tlcp.build_server_policy(listener.tls, where)
        if tlcp_policy is not None:
            transports["tlcp"] = tlcp.TlcpTransport(tlcp_policy)
    except ConfigError as exc:
        errors.extend(exc.errors)
    try:
        sm_policy = tls13_sm.build_server_policy(listener.tls, where)
        if sm_policy is not None:
            transports["tls13_sm"] = tls13_sm.Tls13SmTransport(sm_policy)
    except ConfigError as exc:
        errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)
    if Protocol.PLAIN in listener.tls.protocols:
        transports["plain"] = plain.PlainTransport()
    return transports


def build_connector(
    cfg: UpstreamTransport, where: str = "transport_socket", alpn: tuple[str, ...] = ("http/1.1",)
) -> Connector:
    """The connector a cluster's ``transport_socket`` names (``alpn``: what TLS offers the host)."""
    if cfg.type == "tls":
        return tls.TlsConnector(cfg, alpn)
    if cfg.type == "tlcp":
        return tlcp.TlcpConnector(cfg, where)
    if cfg.type == "tls13_sm":
        return tls13_sm.Tls13SmConnector(cfg, where)
    return plain.PlainConnector()

"""Transports, one module each (Envoy's transport sockets), used by listeners and clusters alike.

``plain`` (raw TCP), ``tls`` (TLS 1.2/1.3 on OpenSSL), ``tlcp`` (GB/T 38636 on the project's engine) and
``tls13_sm`` (TLS 1.3 with the RFC 8998 suites, on the project's engine): each a module with a server
policy, a :class:`~gateway.transports.base.ServerTransport` and a :class:`~gateway.transports.base.Connector`,
built by the two builders below; the sniffer chooses among a listener's transports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.config import ConfigError, DownstreamTls, ListenerConfig, Protocol, UpstreamTransport
from gateway.transports import plain, tlcp, tls, tls13_sm
from gateway.transports.base import Connector, ServerTransport

#: Each secure transport as (its server-policy builder, its transport given the policy).
_SECURE_TRANSPORTS: tuple[
    tuple[Callable[[DownstreamTls, str], Any], Callable[[Any], ServerTransport]], ...
] = (
    (tls.build_server_policy, tls.TlsTransport),
    (tlcp.build_server_policy, tlcp.TlcpTransport),
    (tls13_sm.build_server_policy, tls13_sm.Tls13SmTransport),
)


def build_server_transports(listener: ListenerConfig, where: str) -> dict[str, ServerTransport]:
    """The transports a listener accepts, by name; raises :class:`ConfigError` naming every failing key."""
    transports: dict[str, ServerTransport] = {}
    errors: list[str] = []
    for build_policy, transport_for in _SECURE_TRANSPORTS:
        try:
            policy = build_policy(listener.tls, where)
        except ConfigError as exc:
            errors.extend(exc.errors)
            continue
        if policy is not None:
            transport = transport_for(policy)
            transports[transport.name] = transport
    if errors:
        raise ConfigError(errors)
    if Protocol.PLAIN in listener.tls.protocols:
        transports["plain"] = plain.PlainTransport()
    return transports


def build_connector(
    cfg: UpstreamTransport, where: str = "transport_socket", alpn: tuple[str, ...] = ("http/1.1",)
) -> Connector:
    """The connector a cluster's ``transport_socket`` names; ``alpn``: the application protocols the
    cluster speaks to its hosts (``("h2",)`` for HTTP/2), which a secure transport offers and holds the
    host's choice to (see :func:`~gateway.transports.base.check_application_protocol`)."""
    if cfg.type == "tls":
        return tls.TlsConnector(cfg, alpn)
    if cfg.type == "tlcp":
        return tlcp.TlcpConnector(cfg, where, alpn)
    if cfg.type == "tls13_sm":
        return tls13_sm.Tls13SmConnector(cfg, where, alpn)
    return plain.PlainConnector()

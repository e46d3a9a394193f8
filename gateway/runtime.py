"""A config generation: everything built from one validated :class:`GatewayConfig`.

Connections keep the generation they were accepted under, so a reload changes listeners, routes,
clusters and certificates for new connections only; established ones finish on their own generation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from gateway.auditing import AuditHandle
from gateway.cluster import Cluster
from gateway.codec.base import CodecFactory
from gateway.codec.http1 import Http1CodecFactory
from gateway.config import (
    ConfigError,
    FilterChain,
    GatewayConfig,
    HttpConnectionManagerFilter,
    ListenerConfig,
    RbacFilter,
    TcpProxyFilter,
)
from gateway.filters.base import NetworkFilter
from gateway.filters.http2_connection_manager import Http2ConnectionManager
from gateway.filters.http_connection_manager import HttpConnectionManager
from gateway.filters.rbac import Rbac
from gateway.filters.tcp_proxy import TcpProxy
from gateway.router import RouteTable
from gateway.stats import GatewayStats
from gateway.transports import build_server_transports
from gateway.transports.base import ServerTransport
from gateway.transports.sni import name_matches


def load_codec_factory(spec: str) -> CodecFactory:
    """``http1`` or ``package.module:ClassName`` naming a :class:`CodecFactory` subclass."""
    if spec == "http1":
        return Http1CodecFactory()
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise ValueError("expected 'http1' or 'module:Class'")
    try:
        factory_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load codec {spec!r}: {exc}") from None
    if not (isinstance(factory_class, type) and issubclass(factory_class, CodecFactory)):
        raise ValueError(f"{spec!r} is not a CodecFactory")
    factory: CodecFactory = factory_class()
    return factory


@dataclass
class Generation:
    number: int
    config: GatewayConfig
    stats: GatewayStats
    audit: AuditHandle
    clusters: dict[str, Cluster]
    route_tables: dict[str, RouteTable]
    #: Per listener, the transports it accepts by name (``plain``, ``tls``, ``tlcp``, ``tls13_sm``).
    listener_transports: dict[str, dict[str, ServerTransport]] = field(default_factory=dict)
    codecs: dict[str, CodecFactory] = field(default_factory=dict)

    def listener(self, name: str) -> ListenerConfig:
        return next(x for x in self.config.listeners if x.name == name)

    def select_filter_chain(
        self, listener: ListenerConfig, sni: str | None, transport: str
    ) -> FilterChain | None:
        """First chain whose match accepts the SNI and transport (Envoy picks the most specific; we keep
        config order, which the docs ask to be most-specific-first)."""
        for chain in listener.filter_chains:
            m = chain.filter_chain_match
            if m.transport_protocols and transport not in m.transport_protocols:
                continue
            if m.server_names and not (sni and any(name_matches(p, sni) for p in m.server_names)):
                continue
            return chain
        return None

    def build_filters(self, chain: FilterChain, alpn: str | None = None) -> list[NetworkFilter]:
        """A fresh filter chain for one connection, each filter given the cluster or routes it uses;
        an HTTP connection manager speaks the protocol ALPN chose (``h2``: HTTP/2)."""
        filters: list[NetworkFilter] = []
        for cfg in chain.filters:
            if isinstance(cfg, RbacFilter):
                filters.append(Rbac(cfg))
            elif isinstance(cfg, TcpProxyFilter):
                filters.append(TcpProxy(cfg, self.clusters[cfg.cluster]))
            elif isinstance(cfg, HttpConnectionManagerFilter):
                manager = Http2ConnectionManager if alpn == "h2" else HttpConnectionManager
                filters.append(manager(cfg, self.codecs[cfg.codec], self.route_tables[cfg.route_config]))
        return filters


def build_generation(
    number: int,
    config: GatewayConfig,
    clusters: dict[str, Cluster],
    stats: GatewayStats,
    audit: AuditHandle,
) -> Generation:
    """Build contexts, route tables and codecs; raises :class:`ConfigError` naming the failing key."""
    errors: list[str] = []
    listener_transports: dict[str, dict[str, ServerTransport]] = {}
    codecs: dict[str, CodecFactory] = {}
    for i, listener in enumerate(config.listeners):
        try:
            listener_transports[listener.name] = build_server_transports(listener, f"listeners[{i}].tls")
        except ConfigError as exc:
            errors.extend(exc.errors)
        for j, chain in enumerate(listener.filter_chains):
            for k, flt in enumerate(chain.filters):
                if isinstance(flt, HttpConnectionManagerFilter) and flt.codec not in codecs:
                    try:
                        codecs[flt.codec] = load_codec_factory(flt.codec)
                    except ValueError as exc:
                        errors.append(f"listeners[{i}].filter_chains[{j}].filters[{k}].codec: {exc}")
    if errors:
        raise ConfigError(errors)
    return Generation(
        number=number,
        config=config,
        stats=stats,
        audit=audit,
        clusters=clusters,
        route_tables={rc.name: RouteTable(rc, clusters, stats) for rc in config.route_configs},
        listener_transports=listener_transports,
        codecs=codecs,
    )

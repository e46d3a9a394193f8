"""Route matching: a compiled :class:`RouteConfiguration` picks the :class:`RouteEntry` for a request head.

Protocol-agnostic: it reads only :class:`gateway.codec.base.RequestHead` (authority, path, method,
headers), so every codec shares the same routes. Virtual hosts match the authority (exact, ``*``,
``*.suffix``, ``prefix.*``; most specific wins); routes match in order, the first wins.

Everything a route decides that does not depend on the request is worked out once, when the
generation is built (:class:`RouteEntry`): its cluster object, the header names it drops and the
headers it adds (lower-cased), its retry statuses, its direct reply bytes, its metric labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.codec.base import Headers, RequestHead
from gateway.config import (
    AccessControl,
    DirectResponse,
    ForwardAction,
    HeaderMatch,
    Redirect,
    Route,
    RouteConfiguration,
    VirtualHost,
)

if TYPE_CHECKING:
    from gateway.cluster import Cluster
    from gateway.stats import GatewayStats, RouteStats

#: Authorities remembered per route table (client-chosen strings: bounded).
_AUTHORITY_CACHE_SIZE = 1024

#: Request headers only the gateway sets (added afresh to every forwarded request).
GATEWAY_SET = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-request-id"})

#: Methods that may be retried after the request went out (RFC 9110 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def _host_only(authority: str) -> str:
    host = authority.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _domain_rank(pattern: str, host: str) -> int | None:
    """Lower is more specific (Envoy's order); ``None`` if no match."""
    pattern = pattern.lower()
    if pattern == host:
        return 0
    if pattern.startswith("*") and pattern != "*" and host.endswith(pattern[1:]):
        return 1
    if pattern.endswith("*") and pattern != "*" and host.startswith(pattern[:-1]):
        return 2
    if pattern == "*":
        return 3
    return None


@dataclass(frozen=True, slots=True)
class Forward:
    """A forwarding route's per-request constants."""

    action: ForwardAction
    cluster: Cluster
    #: Header names dropped from the request: ``request_headers_to_remove``, the ones the route adds and
    #: the ones only the gateway sets (``x-forwarded-for``, ``x-forwarded-proto``, ``x-request-id``).
    drop: frozenset[str]
    add: Headers
    response_add: Headers
    retry_on: frozenset[str]
    retry_statuses: frozenset[int]
    max_attempts: int
    per_try_timeout: float | None


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One compiled route: its matchers and what it does."""

    route: Route
    name: str
    access: AccessControl | None
    prefix: str | None
    path: str | None
    regex: re.Pattern[str] | None
    methods: frozenset[str]
    headers: tuple[tuple[HeaderMatch, re.Pattern[str] | None], ...]
    forward: Forward | None = None
    direct_response: DirectResponse | None = None
    direct_body: bytes = b""
    redirect: Redirect | None = None
    labels: tuple[str] = ("-",)
    stats: RouteStats | None = None

    def matches(self, head: RequestHead, path: str) -> bool:
        if self.prefix is not None and not path.startswith(self.prefix):
            return False
        if self.path is not None and path != self.path:
            return False
        if self.regex is not None and not self.regex.fullmatch(path):
            return False
        if self.methods and head.method.upper() not in self.methods:
            return False
        for rule, pattern in self.headers:
            value = head.header(rule.name)
            if rule.present is not None:
                ok = (value is not None) == rule.present
            elif value is None:
                ok = False
            elif rule.exact is not None:
                ok = value == rule.exact
            elif pattern is not None:
                ok = pattern.fullmatch(value) is not None
            else:
                ok = True
            if ok == rule.invert:
                return False
        return True


def _forward(action: ForwardAction, cluster: Cluster) -> Forward:
    add = tuple((h.name.lower(), h.value) for h in action.request_headers_to_add)
    policy = action.retry_policy
    return Forward(
        action=action,
        cluster=cluster,
        drop=frozenset(n.lower() for n in action.request_headers_to_remove)
        | {k for k, _ in add}
        | GATEWAY_SET,
        add=add,
        response_add=tuple((h.name.lower(), h.value) for h in action.response_headers_to_add),
        retry_on=frozenset(policy.retry_on) if policy else frozenset(),
        retry_statuses=frozenset(int(s) for s in policy.retry_on if s.isdigit()) if policy else frozenset(),
        max_attempts=1 + (policy.num_retries if policy else 0),
        per_try_timeout=policy.per_try_timeout if policy else None,
    )


def compile_route(route: Route, clusters: Mapping[str, Cluster], stats: GatewayStats) -> RouteEntry:
    m = route.match
    return RouteEntry(
        route=route,
        name=route.name,
        access=route.access,
        prefix=m.prefix,
        path=m.path,
        regex=re.compile(m.regex) if m.regex is not None else None,
        methods=frozenset(x.upper() for x in m.methods),
        headers=tuple((h, re.compile(h.regex) if h.regex is not None else None) for h in m.headers),
        forward=_forward(route.route, clusters[route.route.cluster]) if route.route is not None else None,
        direct_response=route.direct_response,
        direct_body=route.direct_response.body.encode() if route.direct_response else b"",
        redirect=route.redirect,
        labels=(route.name,),
        stats=stats.route(route.name),
    )


@dataclass
class RouteTable:
    """A compiled route configuration."""

    config: RouteConfiguration
    clusters: Mapping[str, Cluster]
    stats: GatewayStats
    name: str = ""
    _hosts: list[tuple[VirtualHost, list[RouteEntry]]] = field(default_factory=list)
    _by_authority: dict[str, tuple[VirtualHost, list[RouteEntry]] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.config.name
        self._hosts = [
            (vh, [compile_route(r, self.clusters, self.stats) for r in vh.routes])
            for vh in self.config.virtual_hosts
        ]

    def virtual_host(self, authority: str) -> tuple[VirtualHost, list[RouteEntry]] | None:
        try:
            return self._by_authority[authority]
        except KeyError:
            pass
        host = _host_only(authority)
        best: tuple[int, int] | None = None
        chosen = None
        for index, entry in enumerate(self._hosts):
            ranks = [r for d in entry[0].domains if (r := _domain_rank(d, host)) is not None]
            if ranks and (best is None or (min(ranks), index) < best):
                best = (min(ranks), index)
                chosen = entry
        if len(self._by_authority) >= _AUTHORITY_CACHE_SIZE:
            self._by_authority.clear()
        self._by_authority[authority] = chosen
        return chosen

    def match(self, head: RequestHead) -> RouteEntry | None:
        entry = self.virtual_host(head.authority)
        if entry is None:
            return None
        path = head.path.split("?", 1)[0]
        for route in entry[1]:
            if route.matches(head, path):
                return route
        return None

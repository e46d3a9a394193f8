"""Route matching: a compiled :class:`RouteConfiguration` picks the route for a request head.

Protocol-agnostic: it reads only :class:`gateway.codec.base.RequestHead` (authority, path, method,
headers), so every codec shares the same routes. Virtual hosts match the authority (exact, ``*``,
``*.suffix``, ``prefix.*``; most specific wins); routes match in order, the first wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.codec.base import RequestHead
from gateway.config import HeaderMatch, Route, RouteConfiguration, RouteMatch, VirtualHost


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


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    regex: re.Pattern[str] | None
    headers: tuple[tuple[HeaderMatch, re.Pattern[str] | None], ...]

    def matches(self, head: RequestHead) -> bool:
        m: RouteMatch = self.route.match
        path = head.path.split("?", 1)[0]
        if m.prefix is not None and not path.startswith(m.prefix):
            return False
        if m.path is not None and path != m.path:
            return False
        if self.regex is not None and not self.regex.fullmatch(path):
            return False
        if m.methods and head.method.upper() not in {x.upper() for x in m.methods}:
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


class RouteTable:
    """A compiled route configuration."""

    def __init__(self, config: RouteConfiguration) -> None:
        self.name = config.name
        self._hosts: list[tuple[VirtualHost, list[_CompiledRoute]]] = [
            (
                vh,
                [
                    _CompiledRoute(
                        route=r,
                        regex=re.compile(r.match.regex) if r.match.regex is not None else None,
                        headers=tuple(
                            (h, re.compile(h.regex) if h.regex is not None else None) for h in r.match.headers
                        ),
                    )
                    for r in vh.routes
                ],
            )
            for vh in config.virtual_hosts
        ]

    def virtual_host(self, authority: str) -> tuple[VirtualHost, list[_CompiledRoute]] | None:
        host = _host_only(authority)
        best: tuple[int, int] | None = None
        chosen = None
        for index, entry in enumerate(self._hosts):
            ranks = [r for d in entry[0].domains if (r := _domain_rank(d, host)) is not None]
            if ranks and (best is None or (min(ranks), index) < best):
                best = (min(ranks), index)
                chosen = entry
        return chosen

    def match(self, head: RequestHead) -> Route | None:
        entry = self.virtual_host(head.authority)
        if entry is None:
            return None
        return next((c.route for c in entry[1] if c.matches(head)), None)

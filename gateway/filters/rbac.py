"""RBAC network filter: refuses a connection whose client certificate fails the access rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import audit_events as events
from gateway.access import is_allowed
from gateway.config import RbacFilter
from gateway.filters.base import FilterStatus, NetworkFilter

if TYPE_CHECKING:
    from gateway.connection import Connection


class Rbac(NetworkFilter):
    def __init__(self, config: RbacFilter) -> None:
        self.config = config

    async def on_new_connection(self, conn: Connection) -> FilterStatus:
        if is_allowed(self.config.access, conn.identity):
            return FilterStatus.CONTINUE
        conn.generation.stats.access_denied.inc((f"listener:{conn.listener}",))
        conn.close_reason = "access_denied"
        events.route_decision(
            conn.generation.audit,
            conn.id,
            route=f"filter_chain:{conn.filter_chain}",
            cluster=None,
            upstream=None,
            allow=False,
            reason="rbac",
        )
        return FilterStatus.STOP_ITERATION

"""The network filter interface (Envoy's ``Network::ReadFilter``).

The connection offers the bytes its transport delivers to each filter in order through ``on_data``,
called from the transport's own callback (no task, no await per read); a filter returns
:attr:`FilterStatus.CONTINUE` to pass them on or :attr:`FilterStatus.STOP_ITERATION` to keep them (the
terminal filter always stops). ``on_new_connection`` runs once after the handshake, when the
:class:`~gateway.identity.PeerIdentity` is known (RBAC decides there, a TCP proxy connects);
``on_write_ready`` tells the filters when the downstream's write buffer fills and drains (stop and
resume reading the other side); ``on_drain`` that the gateway started draining; ``on_close`` lets a
terminal filter finish its own work once the connection is gone. Filters own their timers.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from gateway.connection import Connection


class FilterStatus(Enum):
    CONTINUE = "continue"
    STOP_ITERATION = "stop_iteration"


class NetworkFilter:
    #: A reload retires connections with such a filter (see ``Gateway.reload``): an HTTP manager routes
    #: each request by the configuration its connection started under, so the connection drains and
    #: the client's next request meets the new configuration on a new one. A TCP tunnel is one long
    #: exchange and keeps its connection.
    retire_on_reload: ClassVar[bool] = False

    async def on_new_connection(self, conn: Connection) -> FilterStatus:
        return FilterStatus.CONTINUE

    def on_data(self, conn: Connection, data: bytes, end_stream: bool) -> FilterStatus:
        """``data`` is ``b""`` with ``end_stream`` when the peer closed its sending side. A filter that
        does not override this is not offered bytes at all."""
        return FilterStatus.CONTINUE

    def on_write_ready(self, conn: Connection, ready: bool) -> None:
        """The downstream's write buffer went above its high-water mark (``False``) or back below."""
        return None

    def on_drain(self, conn: Connection) -> None:
        """The gateway started draining (``conn.draining`` is now set): finish what is in flight."""
        return None

    async def on_close(self, conn: Connection) -> None:
        return None

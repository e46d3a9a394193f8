"""The network filter interface (Envoy's ``Network::ReadFilter``).

The connection reads bytes and offers them to each filter in order through ``on_data``; a filter
returns :attr:`FilterStatus.CONTINUE` to pass them on or :attr:`FilterStatus.STOP_ITERATION` to keep
them (the terminal filter always stops). ``on_new_connection`` runs once after the handshake, when the
:class:`~gateway.identity.PeerIdentity` is known (RBAC decides there); ``on_close`` lets a terminal
filter finish its own work (the upstream half of a TCP proxy, an in-flight HTTP response).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.connection import Connection


class FilterStatus(Enum):
    CONTINUE = "continue"
    STOP_ITERATION = "stop_iteration"


class NetworkFilter(ABC):
    async def on_new_connection(self, conn: Connection) -> FilterStatus:
        return FilterStatus.CONTINUE

    @abstractmethod
    async def on_data(self, conn: Connection, data: bytes, end_stream: bool) -> FilterStatus:
        """``data`` is ``b""`` with ``end_stream`` when the peer closed its sending side."""

    def read_timeout(self) -> float | None:
        """How long the connection may wait for downstream bytes before calling :meth:`on_idle`."""
        return None

    async def on_idle(self, conn: Connection) -> bool:
        """The read timed out; return ``True`` to keep waiting, ``False`` to close."""
        return False

    async def on_close(self, conn: Connection) -> None:
        return None

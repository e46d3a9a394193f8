"""The listener filter interface.

A listener runs its listener filters in order on every accepted socket, before any transport sees a
byte: each may peek at (or, like a PROXY-protocol header, consume) the first bytes, annotate the
:class:`~gateway.transports.base.AcceptedSocket` (real client address, server name, transport), or
refuse the connection by raising :class:`~gateway.transports.base.HandshakeRefused`. The last one is
always the sniffer, which chooses the transport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from gateway.transports.base import AcceptedSocket, HandshakeRefused


class ListenerFilter(ABC):
    @abstractmethod
    async def on_accept(self, accepted: AcceptedSocket) -> None:
        """Inspect or annotate ``accepted``; raise ``HandshakeRefused`` to close it."""

    def timed_out(self) -> HandshakeRefused:
        """The refusal when ``handshake_timeout`` ends this filter's wait."""
        return HandshakeRefused("handshake_timeout")

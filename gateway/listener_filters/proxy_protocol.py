"""The PROXY-protocol listener filter: the real client address from an L4 load balancer's header.

It runs before the sniffer and consumes exactly the header (:mod:`gateway.proxy_protocol_io`), so the
client's first record stays in the kernel buffer; from then on the connection's peer is the client
the header names (routing, access control, audit, access logs).
"""

from __future__ import annotations

from gateway.listener_filters.base import ListenerFilter
from gateway.proxy_protocol_io import (
    ProxyProtocolConfig,
    ProxyProtocolRefused,
    client_address,
    read_proxy_header,
)
from gateway.transports.base import AcceptedSocket, HandshakeRefused


class ProxyProtocol(ListenerFilter):
    def __init__(self, config: ProxyProtocolConfig) -> None:
        self.config = config

    async def on_accept(self, accepted: AcceptedSocket) -> None:
        try:
            header = await read_proxy_header(accepted.sock, accepted.peer, self.config)
        except ProxyProtocolRefused as exc:
            raise HandshakeRefused("proxy_protocol", str(exc)) from None
        accepted.peer = client_address(header, accepted.peer)

    def timed_out(self) -> HandshakeRefused:
        return HandshakeRefused("proxy_protocol", "timed out waiting for the PROXY header")

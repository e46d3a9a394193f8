"""The plain transport (Envoy's ``raw_buffer``): TCP bytes as they are, both ways."""

from __future__ import annotations

import asyncio

from gateway.identity import PeerIdentity, plain_identity
from gateway.stream import TransportStream
from gateway.transports.base import AcceptedSocket, Connector, ServerTransport, connect_stream


class PlainTransport(ServerTransport):
    name = "plain"

    async def accept(self, accepted: AcceptedSocket) -> tuple[TransportStream, PeerIdentity]:
        stream = TransportStream()
        await asyncio.get_running_loop().connect_accepted_socket(lambda: stream, accepted.sock)
        return stream, plain_identity(accepted.peer)


class PlainConnector(Connector):
    kind = "plain"

    async def connect(
        self, address: str, port: int, timeout: float, *, preamble: bytes = b""
    ) -> TransportStream:
        stream = TransportStream()
        await connect_stream(stream, self.kind, address, port, timeout, preamble)
        return stream

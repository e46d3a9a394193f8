"""A downstream connection after its handshake: drives the read loop through the filter chain."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.filters.base import FilterStatus, NetworkFilter
from gateway.identity import PeerIdentity
from gateway.stream import TransportStream, close_stream

if TYPE_CHECKING:
    from gateway.runtime import Generation

_ids = itertools.count(1)
READ_SIZE = 65536


def next_connection_id() -> int:
    return next(_ids)


@dataclass(eq=False)
class Connection:
    stream: TransportStream
    identity: PeerIdentity
    listener: str
    generation: Generation
    filter_chain: str = "default"
    id: int = field(default_factory=lambda: next(_ids))
    started: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    bytes_received: int = 0
    bytes_sent: int = 0
    closing: bool = False
    #: True while no exchange is in flight (a keep-alive HTTP connection between requests): safe to close.
    idle: bool = True
    close_reason: str = "downstream_closed"
    #: Set when the gateway drains: terminal filters finish the current exchange and stop.
    draining: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.stream.write(data)
        self.bytes_sent += len(data)
        self.generation.stats.bytes.inc((self.listener, "downstream_tx"), len(data))
        self.touch()
        await self.stream.drain()

    def mark_idle(self, _finished: object = None) -> None:
        self.idle = True

    def close(self) -> None:
        self.closing = True
        self.stream.close()

    async def run(self, filters: list[NetworkFilter]) -> None:
        stats = self.generation.stats
        try:
            for flt in filters:
                if await flt.on_new_connection(self) is FilterStatus.STOP_ITERATION:
                    return
            terminal = filters[-1]
            while not self.closing:
                try:
                    async with asyncio.timeout(terminal.read_timeout()):
                        data = await self.stream.read(READ_SIZE)
                except TimeoutError:
                    if await terminal.on_idle(self):
                        continue
                    self.close_reason = "idle_timeout"
                    break
                except (OSError, EOFError) as exc:
                    self.close_reason = f"downstream_error:{type(exc).__name__}"
                    data = b""
                except Exception as exc:  # record-layer failures (bad MAC, alerts) end the connection
                    self.close_reason = f"downstream_error:{type(exc).__name__}"
                    data = b""
                if data:
                    self.bytes_received += len(data)
                    stats.bytes.inc((self.listener, "downstream_rx"), len(data))
                    self.touch()
                for flt in filters:
                    if await flt.on_data(self, data, not data) is FilterStatus.STOP_ITERATION:
                        break
                if not data:
                    break
        finally:
            for flt in reversed(filters):
                try:
                    await flt.on_close(self)
                except Exception as exc:
                    self.close_reason = f"filter_error:{type(exc).__name__}"
            await close_stream(self.stream)

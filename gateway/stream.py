"""The byte-stream interface every transport presents to the gateway (plain, TLS, TLCP; both directions).

Listeners and upstream connectors wrap their transport in a :class:`ByteStream`, so filters, codecs and
the proxy never care which protocol carried the bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol


class ByteStream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...
    async def wait_closed(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class AsyncioByteStream:
    """A :class:`ByteStream` over an asyncio ``StreamReader``/``StreamWriter`` pair (plain or ssl)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def can_write_eof(self) -> bool:
        return self.writer.can_write_eof()

    def write_eof(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            self.writer.write_eof()

    def close(self) -> None:
        self.writer.close()

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def wait_closed(self) -> None:
        try:
            await self.writer.wait_closed()
        except Exception:  # noqa: S110 - close errors (ssl shutdown on a dead peer) change nothing here
            pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.writer.get_extra_info(name, default)


async def close_stream(stream: ByteStream, timeout: float = 2.0) -> None:
    """Close and wait (bounded): a stuck peer must not hold a task forever."""
    stream.close()
    try:
        async with asyncio.timeout(timeout):
            await stream.wait_closed()
    except TimeoutError:
        stream.abort()

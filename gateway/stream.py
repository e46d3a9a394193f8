"""The byte stream every transport presents to the gateway (plain, TLS, TLCP; downstream and upstream).

A :class:`TransportStream` is read one of two ways. Pull: ``await read()``, for health checks, the client and
tests. Push: ``attach(receiver)`` hands every further byte to the receiver's callbacks as the transport
delivers it (no task, no await per read), which is how the HTTP and TCP data paths consume their
connections; ``pause_reading``/``resume_reading`` give the receiver flow control, and the receiver's
``pause_writing``/``resume_writing`` tell it when the stream's own write buffer is full.

:class:`TransportStream` is the stream over an asyncio transport: it is the transport's protocol itself,
so in push mode a read costs one Python call between the event loop and the receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

#: Bytes a pull-mode stream buffers before it stops reading from its transport.
READ_HIGH_WATER = 256 * 1024


class StreamReceiver(Protocol):
    """The push-mode consumer of a stream (the subset of ``asyncio.Protocol`` a stream calls)."""

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class ByteStream(Protocol):
    """The pull-mode face every stream has (the gateway's transports also push: :class:`TransportStream`)."""

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


class TransportStream(asyncio.Protocol):
    """A :class:`ByteStream` that is the protocol of an asyncio transport (plain TCP or ``ssl``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.receiver: StreamReceiver | None = None
        self._buffer = bytearray()
        self._eof = False
        self._lost = False
        self._reading_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; not checked with isinstance: uvloop's transports do not subclass asyncio's.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        receiver = self.receiver
        if receiver is not None:
            receiver.data_received(data)
            return
        self._buffer += data
        self._wake_reader()
        if len(self._buffer) > READ_HIGH_WATER and not self._reading_paused:
            self.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self.receiver is not None:
            self.receiver.eof_received()
        self._wake_reader()
        return True  # keep the write side open: the peer half-closed, we may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._wake_reader()
        self._write_paused = False
        self._release_drain_waiters()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self.receiver is not None:
            self.receiver.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.receiver is not None:
            self.receiver.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_drain_waiters()
        if self.receiver is not None:
            self.receiver.resume_writing()

    # -- reading ---------------------------------------------------------------------------------

    def attach(self, receiver: StreamReceiver) -> None:
        """Push mode from now on: buffered bytes, then EOF/loss already seen, go to ``receiver`` first."""
        self.receiver = receiver
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            receiver.data_received(data)
        if self._reading_paused:
            self.resume_reading()
        if self._lost:
            receiver.connection_lost(None)
        elif self._eof:
            receiver.eof_received()
        elif self._write_paused:
            receiver.pause_writing()

    async def read(self, n: int = -1) -> bytes:
        while not self._buffer and not self._eof:
            if self._read_waiter is not None:
                raise RuntimeError("another task is already reading from this stream")
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        if n < 0 or n >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
        if self._reading_paused and len(self._buffer) <= READ_HIGH_WATER // 4:
            self.resume_reading()
        return data

    def pause_reading(self) -> None:
        if self.transport is not None and not self._reading_paused and not self._lost:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._reading_paused and not self._lost:
            self._reading_paused = False
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- writing and closing ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._lost or self.transport is None:
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionResetError("the connection is closed")
        if self._write_paused:
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self._lost:
                raise ConnectionResetError("the connection is closed")

    def _release_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def can_write_eof(self) -> bool:
        return self.transport is not None and self.transport.can_write_eof()

    def write_eof(self) -> None:
        if self.can_write_eof() and not self.is_closing():
            assert self.transport is not None
            self.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def is_closing(self) -> bool:
        return self._lost or self.transport is None or self.transport.is_closing()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self) -> None:
        if self._lost:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)


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

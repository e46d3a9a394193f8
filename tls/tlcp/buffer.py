"""Byte cursor for TLCP wire structures.

`Buffer` is the only cursor used by the codecs in `messages.py` (aioquic's
`Buffer` is the model).  A short read raises `BufferReadError`; a vector whose
declared length does not match its content raises `BufferReadError` as well,
and the connection turns either into a `decode_error` alert in one place.
Vectors are written with `push_block`, which reserves the length prefix and
fills it in afterwards, so no codec computes an offset by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class BufferReadError(ValueError):
    """Input ended early, or a length prefix disagrees with its content."""


class BufferWriteError(ValueError):
    """A value does not fit the field it is pushed into."""


class Buffer:
    """Read cursor over `data`, or a growing write buffer when built empty."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes = b"") -> None:
        self._data = bytearray(data)
        self._pos = 0
        self._end = len(data)

    # reading

    def eof(self) -> bool:
        return self._pos >= self._end

    def tell(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def data_slice(self, start: int, end: int) -> bytes:
        if not 0 <= start <= end <= len(self._data):
            raise BufferReadError("slice out of bounds")
        return bytes(self._data[start:end])

    def pull_bytes(self, length: int) -> bytes:
        if length < 0 or self._pos + length > self._end:
            raise BufferReadError("read out of bounds")
        value = bytes(self._data[self._pos : self._pos + length])
        self._pos += length
        return value

    def pull_uint8(self) -> int:
        if self._pos + 1 > self._end:
            raise BufferReadError("read out of bounds")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def pull_uint16(self) -> int:
        return int.from_bytes(self.pull_bytes(2), "big")

    def pull_uint24(self) -> int:
        return int.from_bytes(self.pull_bytes(3), "big")

    def pull_uint32(self) -> int:
        return int.from_bytes(self.pull_bytes(4), "big")

    def pull_uint64(self) -> int:
        return int.from_bytes(self.pull_bytes(8), "big")

    # writing

    @property
    def data(self) -> bytes:
        return bytes(self._data)

    def push_bytes(self, value: bytes) -> None:
        self._data += value
        self._pos = self._end = len(self._data)

    def push_uint8(self, value: int) -> None:
        self.push_bytes(_to_bytes(value, 1))

    def push_uint16(self, value: int) -> None:
        self.push_bytes(_to_bytes(value, 2))

    def push_uint24(self, value: int) -> None:
        self.push_bytes(_to_bytes(value, 3))

    def push_uint32(self, value: int) -> None:
        self.push_bytes(_to_bytes(value, 4))

    def push_uint64(self, value: int) -> None:
        self.push_bytes(_to_bytes(value, 8))


def _to_bytes(value: int, width: int) -> bytes:
    if not 0 <= value < 1 << (8 * width):
        raise BufferWriteError(f"value does not fit in {width} byte(s)")
    return value.to_bytes(width, "big")


@contextmanager
def pull_block(buf: Buffer, capacity: int) -> Iterator[int]:
    """Read a `capacity`-byte length; the body must consume exactly that many bytes."""
    length = int.from_bytes(buf.pull_bytes(capacity), "big")
    end = buf.tell() + length
    if end > buf.tell() + buf.remaining():
        raise BufferReadError("vector longer than its container")
    saved_end = buf._end
    buf._end = end
    try:
        yield length
    finally:
        consumed_all = buf.tell() == end
        buf._end = saved_end
    if not consumed_all:
        raise BufferReadError("vector has trailing bytes")


@contextmanager
def push_block(buf: Buffer, capacity: int) -> Iterator[None]:
    """Reserve a `capacity`-byte length prefix and fill it in after the body."""
    start = len(buf._data)
    buf.push_bytes(bytes(capacity))
    yield
    length = len(buf._data) - start - capacity
    buf._data[start : start + capacity] = _to_bytes(length, capacity)


def pull_opaque(buf: Buffer, capacity: int, minimum: int = 0) -> bytes:
    """Read `opaque x<minimum..2^(8*capacity)-1>`."""
    with pull_block(buf, capacity) as length:
        if length < minimum:
            raise BufferReadError("vector shorter than its minimum")
        return buf.pull_bytes(length)


def push_opaque(buf: Buffer, capacity: int, value: bytes) -> None:
    with push_block(buf, capacity):
        buf.push_bytes(value)


def pull_list(buf: Buffer, capacity: int, func: Callable[[], T]) -> list[T]:
    """Read a vector of items, each read by `func`."""
    items: list[T] = []
    with pull_block(buf, capacity):
        while not buf.eof():
            items.append(func())
    return items


def push_list(buf: Buffer, capacity: int, func: Callable[[T], None], values: Sequence[T]) -> None:
    with push_block(buf, capacity):
        for value in values:
            func(value)

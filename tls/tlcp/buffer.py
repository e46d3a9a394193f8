"""Byte cursor for TLCP wire structures.

`Buffer` is the only cursor used by the codecs in `messages.py` (aioquic's
`Buffer` is the model).  A short read raises `BufferReadError`; a vector whose
declared length does not match its content raises `BufferReadError` as well,
and the connection turns either into a `decode_error` alert in one place.
Vectors are written with `push_block`, which reserves the length prefix and
fills it in afterwards, so no codec computes an offset by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
        # reading keeps one immutable copy (slices of it are the values returned); writing grows a bytearray
        self._data: bytes | bytearray = bytes(data) if data else bytearray()
        self._pos = 0
        self._end = len(self._data)

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
        pos = self._pos
        end = pos + length
        if length < 0 or end > self._end:
            raise BufferReadError("read out of bounds")
        self._pos = end
        return bytes(self._data[pos:end])

    def pull_uint8(self) -> int:
        pos = self._pos
        if pos >= self._end:
            raise BufferReadError("read out of bounds")
        self._pos = pos + 1
        return self._data[pos]

    def _pull_uint(self, width: int) -> int:
        pos = self._pos
        end = pos + width
        if end > self._end:
            raise BufferReadError("read out of bounds")
        self._pos = end
        return int.from_bytes(self._data[pos:end], "big")

    def pull_uint16(self) -> int:
        return self._pull_uint(2)

    def pull_uint24(self) -> int:
        return self._pull_uint(3)

    def pull_uint32(self) -> int:
        return self._pull_uint(4)

    def pull_uint64(self) -> int:
        return self._pull_uint(8)

    # writing

    @property
    def data(self) -> bytes:
        return bytes(self._data)

    def _writable(self) -> bytearray:
        data = self._data
        if not isinstance(data, bytearray):
            data = self._data = bytearray(data)
        return data

    def push_bytes(self, value: bytes) -> None:
        self._data += value  # in place for a write buffer; a read buffer becomes a new bytes value
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


class pull_block:
    """Read a `capacity`-byte length; the body must consume exactly that many bytes.

    ``with pull_block(buf, 2) as length:`` narrows the buffer to the vector for the body.  A plain
    class rather than ``@contextmanager``: the codecs enter thousands of these per second.
    """

    __slots__ = ("_buf", "_end", "_saved_end", "length")

    def __init__(self, buf: Buffer, capacity: int) -> None:
        length = buf._pull_uint(capacity)
        end = buf._pos + length
        if end > buf._end:
            raise BufferReadError("vector longer than its container")
        self._buf = buf
        self._end = end
        self._saved_end = buf._end
        self.length = length

    def __enter__(self) -> int:
        self._buf._end = self._end
        return self.length

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, traceback: object) -> None:
        buf = self._buf
        buf._end = self._saved_end
        if exc_type is None and buf._pos != self._end:
            raise BufferReadError("vector has trailing bytes")


class push_block:
    """Reserve a `capacity`-byte length prefix and fill it in after the body."""

    __slots__ = ("_buf", "_capacity", "_start")

    def __init__(self, buf: Buffer, capacity: int) -> None:
        self._buf = buf
        self._capacity = capacity
        self._start = len(buf._data)

    def __enter__(self) -> None:
        self._buf.push_bytes(bytes(self._capacity))

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, traceback: object) -> None:
        if exc_type is not None:
            return
        data = self._buf._writable()
        start, capacity = self._start, self._capacity
        data[start : start + capacity] = _to_bytes(len(data) - start - capacity, capacity)


def pull_opaque(buf: Buffer, capacity: int, minimum: int = 0) -> bytes:
    """Read `opaque x<minimum..2^(8*capacity)-1>`."""
    length = buf._pull_uint(capacity)
    if length < minimum:
        raise BufferReadError("vector shorter than its minimum")
    return buf.pull_bytes(length)


def push_opaque(buf: Buffer, capacity: int, value: bytes) -> None:
    buf.push_bytes(_to_bytes(len(value), capacity) + value)


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

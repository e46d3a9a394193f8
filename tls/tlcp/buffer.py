"""Byte cursor for TLCP wire structures.

`Buffer` is the only cursor used by the codecs in `messages.py` (aioquic's
`Buffer` is the model).  A short read raises `BufferReadError`; a vector whose
declared length does not match its content raises `BufferReadError` as well,
and the connection turns either into a `decode_error` alert in one place.
Vectors are written with `push_block`, which reserves the length prefix and
fills it in afterwards, so no codec computes an offset by hand.

Every handshake goes through these a few hundred times, so the hot methods read
their fields once and index bytes directly instead of calling each other (a
Python call costs more than the work of most of them).
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

    def pull_uint16(self) -> int:
        pos = self._pos
        if pos + 2 > self._end:
            raise BufferReadError("read out of bounds")
        self._pos = pos + 2
        data = self._data
        return data[pos] << 8 | data[pos + 1]

    def pull_uint24(self) -> int:
        pos = self._pos
        if pos + 3 > self._end:
            raise BufferReadError("read out of bounds")
        self._pos = pos + 3
        data = self._data
        return data[pos] << 16 | data[pos + 1] << 8 | data[pos + 2]

    def _pull_uint(self, width: int) -> int:
        pos = self._pos
        end = pos + width
        if end > self._end:
            raise BufferReadError("read out of bounds")
        self._pos = end
        return int.from_bytes(self._data[pos:end], "big")

    def pull_uint32(self) -> int:
        return self._pull_uint(4)

    def pull_uint64(self) -> int:
        return self._pull_uint(8)

    def pull_uint16_array(self, count: int) -> list[int]:
        """`count` consecutive uint16 values (the items of a vector whose length was read)."""
        pos = self._pos
        end = pos + 2 * count
        if count < 0 or end > self._end:
            raise BufferReadError("read out of bounds")
        self._pos = end
        data = self._data
        return [data[index] << 8 | data[index + 1] for index in range(pos, end, 2)]

    def pull_vector(self, capacity: int, minimum: int = 0) -> bytes:
        """`opaque x<minimum..2^(8*capacity)-1>`: the length prefix, then that many bytes."""
        pos = self._pos
        start = pos + capacity
        if start > self._end:
            raise BufferReadError("read out of bounds")
        data = self._data
        length = data[pos] if capacity == 1 else int.from_bytes(data[pos:start], "big")
        if length < minimum:
            raise BufferReadError("vector shorter than its minimum")
        end = start + length
        if end > self._end:
            raise BufferReadError("read out of bounds")
        self._pos = end
        return bytes(data[start:end])

    # writing (a buffer built empty)

    @property
    def data(self) -> bytes:
        return bytes(self._data)

    def push_bytes(self, value: bytes) -> None:
        self._data += value

    def _push_uint(self, value: int, width: int) -> None:
        try:
            self._data += value.to_bytes(width, "big")  # OverflowError: negative or too large
        except OverflowError:
            raise BufferWriteError(f"value does not fit in {width} byte(s)") from None

    def push_uint8(self, value: int) -> None:
        self._push_uint(value, 1)

    def push_uint16(self, value: int) -> None:
        self._push_uint(value, 2)

    def push_uint24(self, value: int) -> None:
        self._push_uint(value, 3)

    def push_uint32(self, value: int) -> None:
        self._push_uint(value, 4)

    def push_uint64(self, value: int) -> None:
        self._push_uint(value, 8)


def _to_bytes(value: int, width: int) -> bytes:
    try:
        return value.to_bytes(width, "big")
    except OverflowError:
        raise BufferWriteError(f"value does not fit in {width} byte(s)") from None


class pull_block:
    """Read a `capacity`-byte length; the body must consume exactly that many bytes.

    ``with pull_block(buf, 2) as length:`` narrows the buffer to the vector for the body.  A plain
    class rather than ``@contextmanager``: the codecs enter thousands of these per second.
    """

    __slots__ = ("_buf", "_end", "_saved_end", "length")

    def __init__(self, buf: Buffer, capacity: int) -> None:
        pos = buf._pos
        start = pos + capacity
        if start > buf._end:
            raise BufferReadError("read out of bounds")
        data = buf._data
        length = data[pos] if capacity == 1 else int.from_bytes(data[pos:start], "big")
        end = start + length
        if end > buf._end:
            raise BufferReadError("vector longer than its container")
        buf._pos = start
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

    __slots__ = ("_capacity", "_data", "_start")

    def __init__(self, buf: Buffer, capacity: int) -> None:
        data = buf._data
        if not isinstance(data, bytearray):
            raise TypeError("push_block needs a write buffer (Buffer())")
        self._data = data
        self._capacity = capacity
        self._start = len(data)

    def __enter__(self) -> None:
        self._data += bytes(self._capacity)

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, traceback: object) -> None:
        if exc_type is None:
            data, start, capacity = self._data, self._start, self._capacity
            data[start : start + capacity] = _to_bytes(len(data) - start - capacity, capacity)


#: ``pull_opaque(buf, capacity, minimum=0)`` reads `opaque x<minimum..2^(8*capacity)-1>`: the method
#: itself, so the codecs' most frequent read costs no extra call.
pull_opaque = Buffer.pull_vector


def push_opaque(buf: Buffer, capacity: int, value: bytes) -> None:
    buf._data += _to_bytes(len(value), capacity)
    buf._data += value


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

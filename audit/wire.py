"""The pipe between a gateway process and its pipeline process (``pipeline: process``).

Messages are pickles, framed as ``multiprocessing.connection.Connection.send_bytes`` frames them (a
4-byte big-endian length, then the bytes), so either end can also use ``Connection``. The gateway
sends ``("batch", drops, items)`` (events in emit order, ``("flush", id)`` markers, and the drop count
to declare after them) and finally ``("stop",)``; the pipeline process reads as many frames as are
waiting at once (:class:`FrameReader`).
"""

from __future__ import annotations

import os
import pickle
import select
import struct
from multiprocessing.connection import Connection
from typing import Any

from audit.pipeline import Drops, Event
from audit.processors import PLAIN_TYPES

#: bytes read from the pipe at a time (and the pipe size the gateway asks the kernel for)
PIPE_BYTES = 1 << 20
#: the largest frame the 4-byte signed length allows
MAX_FRAME = 0x7FFFFFFF
STOP_MESSAGE = pickle.dumps(("stop",))


def frame(message: bytes) -> bytes:
    """``message`` with its length header (``Connection.recv_bytes`` framing; under 2 GiB)."""
    return struct.pack("!i", len(message)) + message


def batch_message(drops: Drops | None, items: list[Any]) -> bytes:
    """One pickle for the whole batch. Events whose fields are not all plain scalars get their fields
    pickled on their own (:func:`_pack`), so one odd value never costs the batch."""
    wire = [
        item if item[0] == "flush" or PLAIN_TYPES.issuperset(map(type, item[2].values())) else _pack(item)
        for item in items
    ]
    return pickle.dumps(("batch", drops, wire), protocol=pickle.HIGHEST_PROTOCOL)


def _pack(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """An event with its fields pickled on their own.

    A value that cannot be pickled is sent as its ``repr`` and named in ``audit_error`` (as the
    canonicaliser does for a value it cannot serialise).
    """
    emit_ns, event_type, fields = item
    try:
        return emit_ns, event_type, pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        lenient: dict[str, object] = {}
        problems = []
        for name, value in fields.items():
            try:
                pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                lenient[name] = value
            except Exception:
                lenient[name] = repr(value)
                problems.append(f"{name} ({type(value).__name__})")
        lenient["audit_error"] = f"unserialisable field: {', '.join(problems) or 'fields'}"
        return emit_ns, event_type, pickle.dumps(lenient, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(item: tuple[Any, ...]) -> Event:
    """An event :func:`_pack` shipped with its fields pickled on their own."""
    emit_ns, event_type, data = item
    try:
        fields = pickle.loads(data)  # noqa: S301 - pickled by our own parent, over a private pipe
    except Exception as exc:
        fields = {"audit_error": f"processing failed: {type(exc).__name__}"}
    return emit_ns, event_type, fields


class FrameReader:
    """The pipeline process's end of the pipe: frames read in chunks as large as are waiting (one
    ``poll`` and one ``read`` per wake-up, not per message)."""

    def __init__(self, connection: Connection) -> None:
        self._fd = connection.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self._data = bytearray()
        self.eof = False

    def read(self, timeout: float) -> list[bytes]:
        """The complete messages that arrive within ``timeout`` seconds (all that are waiting)."""
        if not self.eof and self._poller.poll(int(timeout * 1000)):
            chunk = os.read(self._fd, PIPE_BYTES)
            if chunk:
                self._data += chunk
            else:
                self.eof = True
        messages = []
        data, start = self._data, 0
        while len(data) - start >= 4:
            (size,) = struct.unpack_from("!i", data, start)
            if size < 0:
                raise ValueError("corrupt frame on the audit pipe")
            if len(data) - start - 4 < size:
                break
            messages.append(bytes(data[start + 4 : start + 4 + size]))
            start += 4 + size
        del data[:start]
        return messages

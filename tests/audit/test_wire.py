"""audit/wire.py: framing and batch messages between a gateway process and its pipeline process."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading

import pytest

from audit.pipeline import Drops
from audit.wire import STOP_MESSAGE, FrameReader, batch_message, frame, unpack


def test_frames_written_in_pieces_are_read_whole_and_in_order() -> None:
    reading, writing = multiprocessing.Pipe(duplex=False)
    messages = [b"a", b"", b"x" * 70000, STOP_MESSAGE]
    stream = b"".join(frame(message) for message in messages)
    reader = FrameReader(reading)
    received: list[bytes] = []
    for start in range(0, len(stream), 4099):  # cut anywhere, headers included
        os.write(writing.fileno(), stream[start : start + 4099])
        received += reader.read(1.0)
    writing.close()
    while not reader.eof:
        received += reader.read(1.0)
    assert received == messages


def test_a_negative_frame_length_is_refused() -> None:
    reading, writing = multiprocessing.Pipe(duplex=False)
    os.write(writing.fileno(), b"\xff\xff\xff\xff")
    with pytest.raises(ValueError, match="corrupt frame"):
        FrameReader(reading).read(1.0)


def test_a_batch_keeps_plain_events_as_they_are_and_packs_the_others() -> None:
    drops = Drops(count=2, first_ns=1, last_ns=2, by_event={"conn.open": 2})
    plain = (10, "conn.open", {"conn_id": "c", "n": 1})
    nested = (11, "http.request", {"headers": {"a": "b"}})
    odd = (12, "admin.action", {"lock": threading.Lock(), "ok": "yes"})
    kind, sent_drops, items = pickle.loads(batch_message(drops, [plain, ("flush", 7), nested, odd]))
    assert (kind, sent_drops) == ("batch", drops)
    assert items[0] == plain and items[1] == ("flush", 7)
    assert type(items[2][2]) is bytes and unpack(items[2]) == nested
    _, _, fields = unpack(items[3])
    assert fields["ok"] == "yes" and str(fields["lock"]).startswith("<unlocked _thread.lock")
    assert fields["audit_error"] == "unserialisable field: lock (lock)"

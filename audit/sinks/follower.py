"""Follower sinks: independent consumers fed from the file sink, each in its own thread and event loop.

The pipeline hands each written batch to :meth:`FollowerSink.offer`, which only appends to a bounded
in-memory queue (or, when the queue is full, drops the batch from memory). The sink's sender always
sends ``next_seq``: from the queue when its head is ``next_seq``, otherwise by reading the file
segments (:class:`SegmentReader`) — the file sink is the spool, so a full queue or a dead peer costs
nothing but catch-up reads. ``acked_seq`` (what the peer is known to have) is persisted in
``<cursor_dir>/<name>.cursor`` so a restart resumes there; after a reconnect sending restarts at
``acked_seq + 1 - replay_overlap`` (at-least-once delivery; receivers de-duplicate by ``seq``/``id``).
A slow or dead sink therefore never blocks the pipeline or another sink.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.sinks.file import parse_record

CATCH_UP_BATCH = 512
SEND_BATCH = 512


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One written record as follower sinks see it."""

    seq: int
    event: str
    ts: str
    pid: int
    line: bytes

    @classmethod
    def from_line(cls, line: bytes, record: dict[str, Any]) -> SinkRecord:
        return cls(
            seq=record["seq"],
            event=str(record.get("event", "-")),
            ts=str(record.get("ts", "-")),
            pid=int(record.get("pid", 0)),
            line=line,
        )


class SegmentReader:
    """Reads records with ``seq >= n`` back from the segment files, remembering where it stopped."""

    CHUNK = 1 << 20

    def __init__(self, segments: Callable[[], list[tuple[int, Path]]]) -> None:
        self._segments = segments
        self._path: Path | None = None
        self._offset = 0
        self._next_seq = -1

    def read(self, start_seq: int, stop_seq: int, limit: int) -> list[SinkRecord]:
        """Records with ``start_seq <= seq < stop_seq`` in order, at most ``limit`` (fewer if not on disk)."""
        segments = self._segments()
        if not segments:
            return []
        paths = [path for _first, path in segments]
        if self._path not in paths or start_seq != self._next_seq:
            earlier = [path for first, path in segments if first <= start_seq]
            self._path = earlier[-1] if earlier else paths[0]
            self._offset = 0
        assert self._path is not None
        records: list[SinkRecord] = []
        chunk = self.CHUNK
        while len(records) < limit:
            try:
                with self._path.open("rb") as handle:
                    handle.seek(self._offset)
                    data = handle.read(chunk)
            except FileNotFoundError:
                data = b""
            end = data.rfind(b"\n")
            if end < 0 and len(data) == chunk:
                chunk *= 2  # a line longer than the chunk
                continue
            for line in data[: end + 1].split(b"\n")[:-1]:
                record = parse_record(line) if line else None
                if record is not None and record["seq"] >= stop_seq:
                    self._next_seq = start_seq
                    return records
                self._offset += len(line) + 1
                if record is None or record["seq"] < start_seq:
                    continue
                records.append(SinkRecord.from_line(line, record))
                start_seq = record["seq"] + 1
                if len(records) >= limit:
                    break
            if len(records) >= limit or len(data) == chunk:
                continue
            index = paths.index(self._path)
            if index + 1 >= len(paths):
                break
            self._path = paths[index + 1]  # any unterminated tail of a closed segment is a torn line
            self._offset = 0
        self._next_seq = start_seq
        return records


@dataclass
class SinkMetrics:
    name: str
    kind: str
    connected: bool
    next_seq: int
    acked_seq: int
    head_seq: int
    queued: int
    sent: int
    replayed_from_file: int
    overflowed: int
    reconnects: int
    errors: int
    last_error: str | None


class FollowerSink(abc.ABC):
    """Base of stdout/syslog sinks: queue, catch-up, cursor, reconnect with backoff, drain on stop."""

    kind = "follower"

    def __init__(
        self,
        *,
        name: str,
        queue_size: int,
        cursor_dir: Path,
        segments: Callable[[], list[tuple[int, Path]]],
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        replay_overlap: int = 0,
    ) -> None:
        self.name = name
        self.queue_size = queue_size
        self.cursor_path = cursor_dir / f"{name}.cursor"
        self._reader = SegmentReader(segments)
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._replay_overlap = replay_overlap
        self._lock = threading.Lock()
        self._queue: deque[SinkRecord] = deque()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._waiting = False
        self._stopping = False
        self._drain_deadline = 0.0
        self._floor_seq = 1
        self.head_seq = 0
        self.next_seq = 1
        self.acked_seq = 0
        self.connected = False
        self.sent = 0
        self.replayed_from_file = 0
        self.overflowed = 0
        self.reconnects = 0
        self.errors = 0
        self.last_error: str | None = None
        self._cursor_saved = -1
        self._cursor_time = 0.0

    # -- pipeline side -------------------------------------------------------------------------

    def start(self, head_seq: int) -> None:
        """Begin after ``head_seq`` (last record already written) unless a cursor says otherwise."""
        self.head_seq = head_seq
        cursor = self._load_cursor()
        self.acked_seq = head_seq if cursor is None else min(cursor, head_seq)
        self._cursor_saved = self.acked_seq if cursor is not None else -1
        self._floor_seq = self.acked_seq + 1
        self.next_seq = self.acked_seq + 1
        self._thread = threading.Thread(target=self._thread_main, name=f"audit-sink-{self.name}", daemon=True)
        self._thread.start()

    def offer(self, records: Sequence[SinkRecord]) -> None:
        """Hand over written records; never blocks (a full queue means the sink catches up from disk)."""
        if not records:
            return
        with self._lock:
            if len(self._queue) + len(records) <= self.queue_size:
                self._queue.extend(records)
            else:
                self.overflowed += len(records)
            self.head_seq = records[-1].seq
            waiting = self._waiting
        if waiting:
            self._notify()

    def begin_stop(self, deadline: float) -> None:
        """Deliver what is written until ``deadline`` (``time.monotonic()``), then end the thread."""
        self._drain_deadline = deadline
        self._stopping = True
        self._notify()

    def join(self) -> None:
        """Wait for the thread started by :meth:`start` to end and save the cursor."""
        if self._thread is None:
            return  # never started: the cursor on disk stays as it was
        self._thread.join(max(0.0, self._drain_deadline - time.monotonic()) + 2.0)
        self._save_cursor(force=True)

    def stop(self, timeout: float) -> None:
        self.begin_stop(time.monotonic() + timeout)
        self.join()

    def metrics(self) -> SinkMetrics:
        with self._lock:
            queued = len(self._queue)
        return SinkMetrics(
            name=self.name,
            kind=self.kind,
            connected=self.connected,
            next_seq=self.next_seq,
            acked_seq=self.acked_seq,
            head_seq=self.head_seq,
            queued=queued,
            sent=self.sent,
            replayed_from_file=self.replayed_from_file,
            overflowed=self.overflowed,
            reconnects=self.reconnects,
            errors=self.errors,
            last_error=self.last_error,
        )

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- sink thread ---------------------------------------------------------------------------

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    def _take(self, limit: int) -> list[SinkRecord]:
        with self._lock:
            queue = self._queue
            while queue and queue[0].seq < self.next_seq:
                queue.popleft()
            if queue and queue[0].seq == self.next_seq:
                batch: list[SinkRecord] = []
                expected = self.next_seq
                while queue and len(batch) < limit and queue[0].seq == expected:
                    batch.append(queue.popleft())
                    expected += 1
                return batch
            stop = queue[0].seq if queue else self.head_seq + 1
        if self.next_seq >= stop:
            return []
        records = self._reader.read(self.next_seq, stop, min(limit, CATCH_UP_BATCH))
        found = records[0].seq if records else stop
        if found != self.next_seq:
            # Written records are on disk before they are offered, so these are gone (segments removed).
            self.errors += 1
            self.last_error = f"records {self.next_seq}..{found - 1} not found in the file sink; skipped"
            if not records:
                self.next_seq = stop
        self.replayed_from_file += len(records)
        return records

    def _done(self) -> bool:
        if not self._stopping:
            return False
        if time.monotonic() >= self._drain_deadline:
            return True
        return self.acked_seq >= self.head_seq

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        backoff = self._reconnect_initial
        try:
            while not self._done():
                try:
                    if not self.connected:
                        await asyncio.wait_for(self._connect(), timeout=max(self._reconnect_max, 1.0))
                        backoff = self._reconnect_initial
                        self.connected = True
                        if self.sent:
                            self.reconnects += 1
                        self.next_seq = max(self._floor_seq, self.acked_seq + 1 - self._replay_overlap)
                    await self._step()
                except Exception as exc:  # any transport or file failure: count it, back off, reconnect
                    self._record_error(exc)
                    await self._disconnect()
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self._reconnect_max)
        finally:
            with contextlib.suppress(Exception):
                await self._update_acks()
            await self._disconnect()
            self._loop = None

    async def _step(self) -> None:
        """Send the next batch (from the queue or the file), or wait for more."""
        batch = self._take(SEND_BATCH)
        if not batch:
            await self._update_acks()
            self._save_cursor()
            if not self._done():
                await self._idle()
            return
        await self._send(batch)
        self.next_seq = batch[-1].seq + 1
        self.sent += len(batch)
        await self._update_acks()
        self._save_cursor()

    async def _idle(self) -> None:
        assert self._wake is not None
        with self._lock:
            self._waiting = True
            pending = bool(self._queue) or self.head_seq >= self.next_seq
        if not pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._idle_timeout())
        else:
            await asyncio.sleep(0.01)
        self._wake.clear()
        with self._lock:
            self._waiting = False

    def _idle_timeout(self) -> float:
        return 0.05 if self._stopping else 0.5

    async def _sleep(self, seconds: float) -> None:
        if self._stopping:
            seconds = min(seconds, max(0.0, self._drain_deadline - time.monotonic()))
        await asyncio.sleep(seconds)

    async def _disconnect(self) -> None:
        if self.connected:
            self.connected = False
        with contextlib.suppress(Exception):
            await self._close()

    def _record_error(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def _load_cursor(self) -> int | None:
        try:
            data = json.loads(self.cursor_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        value = data.get("acked_seq") if isinstance(data, dict) else None
        return value if isinstance(value, int) and value >= 0 else None

    def _save_cursor(self, *, force: bool = False) -> None:
        if self.acked_seq == self._cursor_saved:
            return
        if not force and time.monotonic() - self._cursor_time < 1.0:
            return
        self._cursor_time = time.monotonic()
        try:
            self.cursor_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary = self.cursor_path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"acked_seq": self.acked_seq}), encoding="utf-8")
            os.replace(temporary, self.cursor_path)
            self._cursor_saved = self.acked_seq
        except OSError as exc:
            self._record_error(exc)

    # -- transport hooks -----------------------------------------------------------------------

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Open the transport (raise ``OSError`` if the peer is unavailable)."""

    @abc.abstractmethod
    async def _send(self, records: list[SinkRecord]) -> None:
        """Write ``records`` in order (raise ``OSError``/``ConnectionError`` if the transport broke)."""

    async def _update_acks(self) -> None:
        """Advance ``acked_seq``; transports without acknowledgements treat sent as acknowledged."""
        self.acked_seq = max(self.acked_seq, self.next_seq - 1)

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release the transport."""

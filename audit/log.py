"""``AuditLog``: the gateway's handle on the audit trail.

``emit`` only puts ``(emit time, event type, fields)`` on a bounded queue: it never blocks and never
raises. One pipeline thread takes events in queue order and runs the processors (redact, context,
canonicalise, HMAC-SM3 chain), appends whole batches to the file sink, writes checkpoints, rotates,
and hands written records to the follower sinks. Sequence numbers and the chain are therefore assigned
in exactly the order lines reach the file.

Loss accounting: if the queue is full (pipeline stalled, e.g. disk full) ``emit`` counts what it drops
by event type and time; the next written record is an ``audit.gap`` stating how many events were lost
between which times after which ``seq``. A restart after a crash writes an ``audit.gap`` for the
unclean end (torn bytes, last good ``seq``) and a ``recovery`` checkpoint covering the unsealed tail.
``aclose`` drains the queue, writes a ``shutdown`` checkpoint, fsyncs, then drains followers.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from structlog.typing import EventDict, Processor

from audit.checkpoint import Checkpointer, CheckpointSigner
from audit.config import AuditConfig, StdoutSinkConfig, SyslogSinkConfig, followers
from audit.events import INTERNAL_EVENTS, EventType
from audit.keys import AuditKeyError, load_audit_key, load_signing_key, load_verification_key
from audit.processors import (
    EMIT_NS,
    LINE,
    ContextAdder,
    HmacChain,
    Redactor,
    build_processors,
    canonicalise,
    format_timestamp,
    run_processors,
)
from audit.sinks.file import FileSink
from audit.sinks.follower import FollowerSink, SinkMetrics, SinkRecord
from audit.sinks.stdout import StdoutSink
from audit.sinks.syslog import SyslogSink
from tls.crypto import hmac_sm3

_STOP = object()
_WRITE_RETRY_MAX = 1.0


class AuditEmitter(Protocol):
    """What the gateway needs: ``emit`` and ``bind`` (``AuditLog``, ``BoundAudit``, ``NullAuditLog``)."""

    def emit(self, event_type: str, **fields: object) -> None: ...
    def bind(self, **fields: object) -> AuditEmitter: ...


class BoundAudit:
    """Fields bound once (``conn_id``, TLS group, ...) and merged into every ``emit``; call fields win."""

    __slots__ = ("_fields", "_log")

    def __init__(self, log: AuditLog, fields: dict[str, object]) -> None:
        self._log = log
        self._fields = fields

    def emit(self, event_type: str, **fields: object) -> None:
        self._log.emit(event_type, **{**self._fields, **fields})

    def bind(self, **fields: object) -> BoundAudit:
        return BoundAudit(self._log, {**self._fields, **fields})


class NullAuditLog:
    """Audit disabled: same interface, does nothing (for benchmarks and tests of the gateway)."""

    def emit(self, event_type: str, **fields: object) -> None:
        return None

    def bind(self, **fields: object) -> NullAuditLog:
        return self

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def queue_depth(self) -> int:
        return 0


@dataclass
class AuditMetrics:
    """Counters for ``/metrics``."""

    emitted: int
    written: int
    queue_depth: int
    dropped: int
    dropped_after_close: int
    rejected_internal: int
    checkpoints: int
    gaps: int
    write_errors: int
    file_bytes: int
    head_seq: int
    #: False before start, after close, or if the pipeline thread failed (see stderr)
    pipeline_alive: bool
    #: why the pipeline thread ended, if it failed
    pipeline_error: str | None
    sinks: list[SinkMetrics] = field(default_factory=list)


@dataclass
class _Drops:
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0
    by_event: Counter[str] = field(default_factory=Counter)


#: file name prefix of the notes a closing gateway leaves for events it could not hand to the pipeline
UNDELIVERED_PREFIX = "undelivered-"


def note_undelivered(directory: Path, *, lost_count: int | None, lost_at_least: int) -> None:
    """Leave a note in the audit directory that the next start turns into an ``audit.gap``
    (``undelivered_at_shutdown``): used when the pipeline could not take everything at shutdown.
    ``lost_count`` is None when the exact number is unknown (a pipeline process had to be killed with
    events still in its pipe); ``lost_at_least`` is what is known for certain."""
    name = f"{UNDELIVERED_PREFIX}{time.time_ns()}-{os.getpid()}.json"
    temporary = directory / f".{name}.tmp"
    temporary.write_text(json.dumps({"lost_count": lost_count, "lost_at_least": lost_at_least}))
    os.replace(temporary, directory / name)


class AuditLog:
    """Tamper-evident audit trail (see module docstring). Build with :meth:`from_config`."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        audit_key: bytes,
        signer: CheckpointSigner | None,
        instance_id: str | None = None,
    ) -> None:
        self.config = config
        self.instance = instance_id or config.instance_id or socket.gethostname() or "smgate"
        self._key = audit_key
        self._signer = signer
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._max_queue = config.queue_size
        self._closed = False
        self._started = False
        self._drops = _Drops()
        self._drops_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._fatal: str | None = None
        #: pid recorded in every record (0: this process's; a pipeline child records its gateway worker's)
        self._pid = 0
        self.file = FileSink(config.file_sink)
        self.followers: list[FollowerSink] = []
        for sink in followers(config.sinks):
            self.followers.append(self._make_follower(sink))
        self._redactor = Redactor(
            hmac_sm3(audit_key, b"smgate audit redaction key"),
            hash_paths=config.redaction.hash,
            drop_paths=config.redaction.drop,
        )
        self._context = ContextAdder(instance=self.instance, pid=os.getpid())
        self._chain = HmacChain(audit_key)
        self._processors: list[Processor] = build_processors(
            redactor=self._redactor, context=self._context, chain=self._chain
        )
        self._checkpointer = Checkpointer(
            signer=signer,
            every_records=config.checkpoint.every_records,
            every_seconds=config.checkpoint.every_seconds,
            now=time.monotonic(),
        )
        self._emitted = 0
        self._dropped_total = 0
        self._written = 0
        self._dropped_after_close = 0
        self._rejected_internal = 0
        self._checkpoints = 0
        self._gaps = 0
        self._give_up_at: float | None = None
        self._write_errors_at_last_gap = 0
        self._last_error_report = 0.0

    @classmethod
    def from_config(cls, config: AuditConfig, *, instance_id: str | None = None) -> AuditLog:
        """Load the key files named in ``config`` (raises :class:`AuditKeyError` naming the file)."""
        audit_key = load_audit_key(config.key_file)
        signer = None
        if config.signing_key is not None:
            password = None
            if config.signing_key_password_file is not None:
                try:
                    password = config.signing_key_password_file.read_bytes().rstrip(b"\r\n")
                except OSError as exc:
                    raise AuditKeyError(
                        f"{config.signing_key_password_file}: cannot read ({type(exc).__name__})"
                    ) from None
            private_key = load_signing_key(config.signing_key, password)
            if config.signing_cert is not None:
                cert_key = load_verification_key(config.signing_cert)
                if cert_key.spki_der() != private_key.public_key().spki_der():
                    raise AuditKeyError(f"{config.signing_cert}: certificate does not match signing_key")
            signer = CheckpointSigner(private_key)
        if config.pipeline == "process" and cls is AuditLog:
            from audit.process import ProcessAuditLog

            return ProcessAuditLog(config, audit_key=audit_key, signer=signer, instance_id=instance_id)
        return cls(config, audit_key=audit_key, signer=signer, instance_id=instance_id)

    def _make_follower(self, sink: StdoutSinkConfig | SyslogSinkConfig) -> FollowerSink:
        cursor_dir = self.config.cursor_dir
        if isinstance(sink, StdoutSinkConfig):
            return StdoutSink(sink, cursor_dir=cursor_dir, segments=self.file.segments)
        return SyslogSink(sink, cursor_dir=cursor_dir, segments=self.file.segments)

    # -- data path ---------------------------------------------------------------------------

    def emit(self, event_type: str, **fields: object) -> None:
        """Queue one event. Never blocks, never raises; overflow is counted and reported in ``audit.gap``.

        ``fields`` are kept by reference until the pipeline serialises them: do not mutate them after.
        """
        now = time.time_ns()
        try:
            if self._closed:
                self._dropped_after_close += 1
                return
            if event_type in INTERNAL_EVENTS:
                self._rejected_internal += 1
                return
            if self._queue.qsize() >= self._max_queue:
                self._count_drop(now, event_type)
                return
            self._queue.put((now, event_type, fields))
        except Exception:  # the data path must never see an audit failure
            self._count_drop(now, str(event_type))

    def bind(self, **fields: object) -> BoundAudit:
        return BoundAudit(self, dict(fields))

    def _count_drop(self, now: int, event_type: str) -> None:
        with self._drops_lock:
            drops = self._drops
            if not drops.count:
                drops.first_ns = now
            drops.count += 1
            drops.last_ns = now
            drops.by_event[event_type] += 1
            self._dropped_total += 1

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    def start_sync(self, *, thread: bool = True) -> None:
        """Recover the chain head from disk, open a segment, start the follower threads and (unless
        ``thread`` is False, for a caller that feeds :meth:`handle_batch` itself) the pipeline thread.

        Calling it again (or after ``aclose``) does nothing.
        """
        if self._started or self._closed:
            return  # idempotent: the gateway and its callers may both start it
        self._started = True
        try:
            self._start(thread=thread)
        except BaseException:
            self._started = False
            self.file.close()  # release the directory lock so a corrected retry can start
            raise

    def _start(self, *, thread: bool = True) -> None:
        self._context.pid = (
            self._pid or os.getpid()
        )  # the worker that runs the pipeline, even if built before a fork
        recovery = self.file.recover()
        self._checkpointer.reset(checkpoint_seq=0, now=time.monotonic())  # clean slate if a start is retried
        self._context.next_seq = recovery.next_seq
        self._chain.prev = recovery.prev_mac
        self._checkpointer.last_checkpoint_seq = recovery.last_checkpoint_seq
        for seq, line in recovery.uncovered:
            self._checkpointer.observe(seq, line)
        self.file.open_segment(recovery.next_seq)
        if recovery.unclean and recovery.next_seq > 1:
            gap = {
                "event": EventType.AUDIT_GAP.value,
                "reason": "unclean_shutdown",
                "after_seq": recovery.next_seq - 1,
                "after_mac": recovery.prev_mac.hex(),
                "torn_bytes": recovery.torn_bytes,
                "lost_count": None,
            }
            self._write([self._process_internal(gap)])
            self._write([self._checkpoint_record("recovery")])
        self._declare_undelivered()
        for follower in self.followers:
            follower.start(self.file.written_seq)
        if thread:
            self._thread = threading.Thread(target=self._run, name="audit-pipeline", daemon=True)
            self._thread.start()

    def _declare_undelivered(self) -> None:
        """Write an ``audit.gap`` for each note a previous run left (:func:`note_undelivered`): events
        accepted by ``emit`` that never reached the pipeline before that run ended."""
        for note in sorted(self.config.file_sink.directory.glob(f"{UNDELIVERED_PREFIX}*.json")):
            try:
                facts = json.loads(note.read_text())
                lost_count = facts["lost_count"]
                at_least = facts.get("lost_at_least")
            except (OSError, ValueError, KeyError, TypeError):
                lost_count, at_least = None, None  # unreadable: the loss itself is still a fact
            gap = {
                "event": EventType.AUDIT_GAP.value,
                "reason": "undelivered_at_shutdown",
                "after_seq": self._context.next_seq - 1,
                "lost_count": lost_count if isinstance(lost_count, int) else None,
            }
            if isinstance(at_least, int):
                gap["lost_at_least"] = at_least
            self._write([self._process_internal(gap)])
            note.unlink(missing_ok=True)

    async def aclose(self) -> None:
        """Drain and checkpoint (``shutdown``), fsync, then give follower sinks time to deliver."""
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        deadline = time.monotonic() + self.config.shutdown_timeout
        self._give_up_at = deadline
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(self.config.shutdown_timeout)
            if self._thread.is_alive():
                print("smgate audit: pipeline did not finish before shutdown_timeout", file=sys.stderr)
        elif self._fatal is None:  # fed by the caller (pipeline process): finish here
            self.handle_batch([_STOP])
        follower_deadline = max(deadline, time.monotonic() + 0.1)
        for follower in self.followers:
            follower.begin_stop(follower_deadline)
        for follower in self.followers:
            follower.join()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything emitted so far is written and fsynced (per policy); False on timeout."""
        marker = threading.Event()
        self._queue.put(marker)
        return await asyncio.to_thread(marker.wait, timeout)

    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def pipeline_pid(self) -> int | None:
        """Process id of the pipeline process (``pipeline: process``); None for the thread pipeline."""
        return None

    def metrics(self) -> AuditMetrics:
        return AuditMetrics(
            emitted=self._emitted,
            written=self._written,
            queue_depth=self._queue.qsize(),
            dropped=self._dropped_total,
            dropped_after_close=self._dropped_after_close,
            rejected_internal=self._rejected_internal,
            checkpoints=self._checkpoints,
            gaps=self._gaps,
            write_errors=self.file.write_errors,
            file_bytes=self.file.bytes_written,
            head_seq=self.file.written_seq,
            pipeline_alive=self._pipeline_alive(),
            pipeline_error=self._fatal,
            sinks=[follower.metrics() for follower in self.followers],
        )

    def _pipeline_alive(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        return self._started and not self._closed and self._fatal is None  # fed by a pipeline process

    # -- pipeline thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # reported (stderr, metrics), then the thread ends
            self._fatal = f"{type(exc).__name__}: {exc}"
            print(f"smgate audit: pipeline failed: {self._fatal}", file=sys.stderr)

    def _loop(self) -> None:
        batch_size = self.config.batch_size
        linger = self.config.batch_linger
        busy = False
        while True:
            items: list[Any] = []
            if busy:
                # Under load, poll once per linger instead of blocking on the queue: ``emit`` then never
                # has a waiter to wake, and the pipeline takes the GIL once per batch.
                if linger and self._queue.qsize() < batch_size:
                    time.sleep(linger)
            else:
                try:
                    items.append(self._queue.get(timeout=0.2))
                except queue.Empty:
                    pass
                if items and linger and self._queue.qsize() < batch_size:
                    # Let a few more events arrive: one wake-up (and GIL hand-over) per batch, not per event.
                    time.sleep(linger)
            while len(items) < batch_size:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            busy = bool(items)
            if self.handle_batch(items):
                break
        while True:  # emitted while aclose() was starting: after the shutdown checkpoint, so not written
            try:
                leftover = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(leftover, threading.Event):
                leftover.set()
            elif leftover is not _STOP:
                self._dropped_after_close += 1

    def handle_batch(self, items: list[Any]) -> bool:
        """Process queued items in order: events, flush markers (``threading.Event``, set once synced)
        and ``_STOP``; then the periodic work (time checkpoint, rotation, fsync). An empty list runs only
        the periodic work. After ``_STOP`` the shutdown checkpoint is written, the file closed, and the
        result is True.

        The pipeline thread calls this; a pipeline process calls it directly (``start_sync(thread=False)``).
        """
        every_records = self.config.checkpoint.every_records
        rotate_bytes = self.config.file_sink.rotate_bytes
        stopping = False
        pending: list[EventDict] = []
        pending_bytes = 0
        markers: list[threading.Event] = []
        gap = self._take_drops()
        if gap is not None:
            pending.append(self._process_internal(gap))
        for item in items:
            if item is _STOP:
                stopping = True
                continue
            if isinstance(item, threading.Event):
                markers.append(item)
                continue
            record = self._process(item)
            pending.append(record)
            pending_bytes += len(record[LINE]) + 1
            # Checkpoint and rotation boundaries are exact, not rounded to the batch.
            if self._checkpointer.count + len(pending) >= every_records:
                self._write(pending)
                self._write([self._checkpoint_record("count")])
                pending, pending_bytes = [], 0
            elif self.file.size + pending_bytes >= rotate_bytes:
                self._write(pending)
                self._rotate()
                pending, pending_bytes = [], 0
        if pending:
            self._write(pending)
        reason = "shutdown" if stopping else self._checkpointer.due(time.monotonic())
        if reason is not None:
            self._write([self._checkpoint_record(reason)])
        if not stopping and self.file.should_rotate():
            self._rotate()
        if self.file.sync_due() or markers:
            self.file.sync()
        for marker in markers:
            marker.set()
        if stopping:
            self.file.close()
        return stopping

    def _rotate(self) -> None:
        """Seal the segment with a checkpoint (unless its last record already is one) and open the next."""
        if self._checkpointer.count:
            self._write([self._checkpoint_record("rotation")])
        self.file.rotate(self._context.next_seq)

    def _process(self, item: tuple[int, str, dict[str, object]]) -> EventDict:
        emit_ns, event_type, fields = item
        self._emitted += 1
        # ``fields`` is the dict ``emit(**fields)`` built for this call: the pipeline's own to change.
        event_dict: EventDict = fields
        event_dict["event"] = event_type
        event_dict[EMIT_NS] = emit_ns
        try:
            return run_processors(self._processors, event_dict)
        except Exception as exc:  # keep the fact that something happened
            fallback: EventDict = {
                "event": event_type,
                EMIT_NS: emit_ns,
                "audit_error": f"processing failed: {type(exc).__name__}",
            }
            return run_processors(self._processors, fallback)

    def _process_internal(self, body: dict[str, Any]) -> EventDict:
        """Audit-generated records skip redaction (they carry no caller data)."""
        event_dict = self._context(None, "emit", dict(body))
        return self._chain(None, "emit", canonicalise(None, "emit", event_dict))

    def _checkpoint_record(self, reason: str) -> EventDict:
        """A checkpoint over everything written since the previous one."""
        body = self._checkpointer.body(reason, head_seq=self._context.next_seq - 1, head_mac=self._chain.prev)
        event_dict = self._context(None, "emit", body)
        self._checkpointer.sign(event_dict)
        record = self._chain(None, "emit", canonicalise(None, "emit", event_dict))
        self._checkpointer.reset(record["seq"], time.monotonic())
        self._checkpoints += 1
        return record

    def _take_drops(self) -> dict[str, Any] | None:
        with self._drops_lock:
            drops = self._drops
            if not drops.count:
                return None
            self._drops = _Drops()
        write_failed = self.file.write_errors > self._write_errors_at_last_gap
        self._write_errors_at_last_gap = self.file.write_errors
        self._gaps += 1
        return {
            "event": EventType.AUDIT_GAP.value,
            "reason": "queue_overflow",
            "cause": "file_sink_write_failed" if write_failed else "queue_full",
            "after_seq": self._context.next_seq - 1,
            "lost_count": drops.count,
            "lost_by_event": dict(drops.by_event),
            "first_lost_ts": format_timestamp(drops.first_ns),
            "last_lost_ts": format_timestamp(drops.last_ns),
        }

    def _write(self, records: list[EventDict]) -> None:
        """Append to the file (retrying until it works: the chain is already assigned), then fan out."""
        lines = [record[LINE] for record in records]
        last_seq = records[-1]["seq"]
        delay = 0.01
        while True:
            try:
                data = self.file.write(lines, last_seq)
                break
            except OSError as exc:
                self._report_write_error(exc)
                if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _WRITE_RETRY_MAX)
        self._written += len(records)
        checkpoint = EventType.AUDIT_CHECKPOINT.value
        if all(record["event"] != checkpoint for record in records):
            self._checkpointer.observe_block(records[0]["seq"], len(records), data)
        else:  # checkpoints are not covered by the digest of the range they close
            for record in records:
                if record["event"] != checkpoint:
                    self._checkpointer.observe(record["seq"], record[LINE])
        if self.followers:
            sink_records = [
                SinkRecord(
                    seq=record["seq"],
                    event=record["event"],
                    ts=record["ts"],
                    pid=record["pid"],
                    line=record[LINE],
                )
                for record in records
            ]
            for follower in self.followers:
                follower.offer(sink_records)

    def _report_write_error(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last_error_report >= 5.0:
            self._last_error_report = now
            print(f"smgate audit: file sink write failed ({exc.strerror or exc}); retrying", file=sys.stderr)

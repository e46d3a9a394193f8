"""``AuditPipeline``: everything between an emitted event and a verifiable line on disk, on one thread.

The pipeline owns the processors (:func:`audit.processors.build_processors`), the chain head,
checkpoints, the file sink with its rotation and fsync policy, recovery of the previous run's end, the
``audit.gap`` records, its metrics, the fan-out to follower sinks and the write health that
``on_failure`` acts on. Every record it writes, caller events and its own gap and checkpoint records
alike, goes through the one processor list, so sequence numbers and the chain are assigned in exactly
the order lines reach the file.

It is single-threaded: a front-end (:mod:`audit.thread`, :mod:`audit.process`) delivers events to it
from one thread and uses only the public methods below. The one exception is
:meth:`give_up_writes_at`, which a closing front-end may call from another thread to bound a write
that keeps failing.

A failing disk stalls only the pipeline: a write is retried with backoff until it succeeds (the chain is
already assigned, so the records cannot be dropped or reordered), and meanwhile ``writable`` is False
and ``on_health`` is told, once per change.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from structlog.typing import EventDict, Processor

from audit.checkpoint import Checkpointer, CheckpointSigner
from audit.config import AuditConfig, StdoutSinkConfig, SyslogSinkConfig, followers
from audit.events import EventType
from audit.processors import (
    EMIT_NS,
    LINE,
    ContextAdder,
    HmacChain,
    Redactor,
    build_processors,
    format_timestamp,
    run_processors,
)
from audit.sinks.file import FileSink
from audit.sinks.follower import FollowerSink, SinkMetrics, SinkRecord
from audit.sinks.stdout import StdoutSink
from audit.sinks.syslog import SyslogSink
from tls.crypto import hmac_sm3

#: ``(emit time in Unix ns, event type, fields)``: what a front-end delivers
Event = tuple[int, str, dict[str, object]]
#: called with ``(writable, reason)`` whenever the pipeline's ability to write changes
HealthCallback = Callable[[bool, str | None], None]

#: file name prefix of the notes a closing front-end leaves for events it could not hand to the pipeline
UNDELIVERED_PREFIX = "undelivered-"

_WRITE_RETRY_FIRST = 0.01
_WRITE_RETRY_MAX = 1.0
_ERROR_REPORT_INTERVAL = 5.0
_GAP = EventType.AUDIT_GAP.value
_CHECKPOINT = EventType.AUDIT_CHECKPOINT.value


@dataclass(frozen=True)
class Drops:
    """Events a front-end accepted from the gateway but could not deliver (its queue was full)."""

    count: int
    first_ns: int
    last_ns: int
    by_event: dict[str, int]


@dataclass(frozen=True)
class PipelineMetrics:
    """What the pipeline has done so far (a snapshot; front-ends add their own queue counters)."""

    #: events delivered to the pipeline and turned into records
    processed: int = 0
    #: records in the file, including gaps and checkpoints
    written: int = 0
    checkpoints: int = 0
    gaps: int = 0
    write_errors: int = 0
    file_bytes: int = 0
    head_seq: int = 0
    #: False from a failed write (or sync) until the retry succeeds
    writable: bool = True
    #: why the last write failed, while ``writable`` is False
    write_error: str | None = None
    sinks: list[SinkMetrics] = field(default_factory=list)


class AuditPipeline:
    """Processors, chain, checkpoints, file sink, gaps, recovery and followers (see module docstring)."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        audit_key: bytes,
        signer: CheckpointSigner | None,
        instance: str,
        pid: int,
        on_health: HealthCallback | None = None,
    ) -> None:
        self.config = config
        self._on_health = on_health
        self._file = FileSink(config.file_sink)
        self._followers = [self._make_follower(sink) for sink in followers(config.sinks)]
        self._context = ContextAdder(instance=instance, pid=pid)
        self._chain = HmacChain(audit_key, signer=signer)
        self._processors: list[Processor] = build_processors(
            redactor=Redactor(
                hmac_sm3(audit_key, b"smgate audit redaction key"),
                hash_paths=config.redaction.hash,
                drop_paths=config.redaction.drop,
            ),
            context=self._context,
            chain=self._chain,
        )
        self._checkpointer = Checkpointer(
            signer=signer,
            every_records=config.checkpoint.every_records,
            every_seconds=config.checkpoint.every_seconds,
            now=time.monotonic(),
        )
        self._processed = 0
        self._written = 0
        self._checkpoints = 0
        self._gaps = 0
        self._write_errors = 0
        self._write_errors_at_last_gap = 0
        self._writable = True
        self._write_error: str | None = None
        self._last_error_report = 0.0
        self._give_up_at: float | None = None
        self._open = False

    def _make_follower(self, sink: StdoutSinkConfig | SyslogSinkConfig) -> FollowerSink:
        cursor_dir = self.config.cursor_dir
        if isinstance(sink, StdoutSinkConfig):
            return StdoutSink(sink, cursor_dir=cursor_dir, segments=self._file.segments)
        return SyslogSink(sink, cursor_dir=cursor_dir, segments=self._file.segments)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Take the directory, continue the chain from disk, declare what the previous run left
        unexplained (an unclean end, undelivered events), and start the follower sinks.

        A directory that cannot be written fails the start (after ``shutdown_timeout`` of retries)
        rather than hanging it; on failure the directory is released, so a corrected start can retry."""
        self._give_up_at = time.monotonic() + self.config.shutdown_timeout
        try:
            self._recover()
        except BaseException:
            self._file.close()
            raise
        finally:
            self._give_up_at = None
        self._open = True
        for follower in self._followers:
            follower.start(self._file.written_seq)

    def _recover(self) -> None:
        recovery = self._file.recover()
        self._context.next_seq = recovery.next_seq
        self._chain.prev = recovery.prev_mac
        self._checkpointer.reset(checkpoint_seq=0, now=time.monotonic())
        self._checkpointer.last_checkpoint_seq = recovery.last_checkpoint_seq
        for seq, line in recovery.uncovered:
            self._checkpointer.observe(seq, line)
        self._file.open_segment(recovery.next_seq)
        if recovery.unclean and recovery.next_seq > 1:
            self._write_internal(
                {
                    "event": _GAP,
                    "reason": "unclean_shutdown",
                    "after_seq": recovery.next_seq - 1,
                    "after_mac": recovery.prev_mac.hex(),
                    "torn_bytes": recovery.torn_bytes,
                    "lost_count": None,
                }
            )
            self._write_checkpoint("recovery")
        self._declare_undelivered()

    def _declare_undelivered(self) -> None:
        """An ``audit.gap`` for each note a previous front-end left (:func:`note_undelivered`): events it
        accepted that never reached the pipeline before that run ended."""
        for note in sorted(self.config.file_sink.directory.glob(f"{UNDELIVERED_PREFIX}*.json")):
            try:
                facts = json.loads(note.read_text())
                lost_count = facts["lost_count"]
                at_least = facts.get("lost_at_least")
            except (OSError, ValueError, KeyError, TypeError):
                lost_count, at_least = None, None  # unreadable: the loss itself is still a fact
            gap: dict[str, Any] = {
                "event": _GAP,
                "reason": "undelivered_at_shutdown",
                "after_seq": self._context.next_seq - 1,
                "lost_count": lost_count if isinstance(lost_count, int) else None,
            }
            if isinstance(at_least, int):
                gap["lost_at_least"] = at_least
            self._write_internal(gap)
            note.unlink(missing_ok=True)

    def close(self, follower_deadline: float) -> None:
        """Seal the log with a ``shutdown`` checkpoint, sync and close it, then let the follower sinks
        deliver until ``follower_deadline`` (monotonic seconds). Does nothing unless started."""
        if not self._open:
            return
        self._open = False
        try:
            self._write_checkpoint("shutdown")
            self._sync()
        finally:
            self._file.close()
            self.stop_followers(follower_deadline)

    def abandon(self, follower_deadline: float) -> None:
        """After a failure: release the directory without writing anything more (the next start
        declares the unsealed end) and stop the follower sinks."""
        self._open = False
        try:
            self._file.close()
        except OSError:
            pass
        finally:
            self.stop_followers(follower_deadline)

    def stop_followers(self, deadline: float) -> None:
        """Let the follower sinks deliver what is written until ``deadline``, then stop them."""
        deadline = max(deadline, time.monotonic() + 0.1)
        for follower in self._followers:
            follower.begin_stop(deadline)
        for follower in self._followers:
            follower.join()

    def give_up_writes_at(self, deadline: float) -> None:
        """From then on (monotonic seconds) a failing write raises instead of being retried.

        The one method another thread may call: a closing front-end bounds a stalled pipeline with it."""
        self._give_up_at = deadline

    # -- records -----------------------------------------------------------------------------

    def process(self, events: Sequence[Event]) -> None:
        """Turn ``events`` into records and write them, in order; checkpoint and rotation boundaries
        fall exactly where they are due, not at the end of the batch.

        The loop runs once per event, so it keeps what it needs in locals: the room left before the
        next ``count`` checkpoint and before rotation, counted down as records accumulate."""
        processors = self._processors
        pending: list[EventDict] = []
        pending_bytes = 0
        records_left, bytes_left = self._room()
        for emit_ns, event_type, fields in events:
            # ``fields`` is the dict ``emit(**fields)`` built for this call: the pipeline's own to change.
            fields["event"] = event_type
            fields[EMIT_NS] = emit_ns
            try:
                record = run_processors(processors, fields)
            except Exception as exc:  # keep the fact that something happened
                record = self._fallback_record(emit_ns, event_type, exc)
            pending.append(record)
            pending_bytes += len(record[LINE]) + 1
            if len(pending) >= records_left:
                self._write(pending)
                self._write_checkpoint("count")
            elif pending_bytes >= bytes_left:
                self._write(pending)
                self._rotate()
            else:
                continue
            pending, pending_bytes = [], 0
            records_left, bytes_left = self._room()
        self._processed += len(events)
        if pending:
            self._write(pending)

    def _room(self) -> tuple[int, int]:
        """Records until the next ``count`` checkpoint is due, bytes until the segment rotates."""
        return (
            self.config.checkpoint.every_records - self._checkpointer.count,
            self.config.file_sink.rotate_bytes - self._file.size,
        )

    def _fallback_record(self, emit_ns: int, event_type: str, exc: Exception) -> EventDict:
        """What is kept of an event the processors failed on: that it happened, and why it is bare."""
        fallback: EventDict = {
            "event": event_type,
            EMIT_NS: emit_ns,
            "audit_error": f"processing failed: {type(exc).__name__}",
        }
        return run_processors(self._processors, fallback)

    def declare_drops(self, drops: Drops) -> None:
        """An ``audit.gap`` (``queue_overflow``) for events lost before they reached the pipeline; its
        ``cause`` says whether the file sink was failing meanwhile."""
        errors = self._write_errors
        write_failed = errors > self._write_errors_at_last_gap
        self._write_errors_at_last_gap = errors
        self._write_internal(
            {
                "event": _GAP,
                "reason": "queue_overflow",
                "cause": "file_sink_write_failed" if write_failed else "queue_full",
                "after_seq": self._context.next_seq - 1,
                "lost_count": drops.count,
                "lost_by_event": dict(drops.by_event),
                "first_lost_ts": format_timestamp(drops.first_ns),
                "last_lost_ts": format_timestamp(drops.last_ns),
            }
        )

    def declare_gateway_exit(self) -> None:
        """The gateway ended without closing its audit log: events it had not delivered yet (at most one
        ``batch_linger`` of them) may be missing. Say so in the log."""
        self._write_internal(
            {
                "event": _GAP,
                "reason": "gateway_exited",
                "cause": "pipe closed without stop",
                "after_seq": self._file.written_seq,
                "lost_count": None,
            }
        )

    def tick(self) -> None:
        """The periodic work: a checkpoint when its interval is over, rotation by size or age, fsync
        when the ``interval`` policy is due. Front-ends call it after each batch and when idle."""
        reason = self._checkpointer.due(time.monotonic())
        if reason is not None:
            self._write_checkpoint(reason)
        if self._file.should_rotate():
            self._rotate()
        if self._file.sync_due():
            self._sync()

    def sync(self) -> None:
        """Everything written so far is on disk (per the fsync policy) when this returns."""
        self._sync()

    # -- inside --------------------------------------------------------------------------------

    def _write_internal(self, body: dict[str, Any]) -> None:
        if body["event"] == _GAP:
            self._gaps += 1
        self._write([run_processors(self._processors, body)])

    def _write_checkpoint(self, reason: str) -> None:
        """A checkpoint over everything written since the previous one."""
        body = self._checkpointer.body(reason, head_seq=self._context.next_seq - 1, head_mac=self._chain.prev)
        record = run_processors(self._processors, body)
        self._write([record])
        self._checkpointer.reset(record["seq"], time.monotonic())
        self._checkpoints += 1

    def _rotate(self) -> None:
        """Seal the segment with a checkpoint (unless its last record already is one) and open the next."""
        if self._checkpointer.count:
            self._write_checkpoint("rotation")
        self._retry(lambda: self._file.rotate(self._context.next_seq))

    def _write(self, records: list[EventDict]) -> None:
        """Append to the file (retrying until it works: the chain is already assigned), then fan out."""
        lines = [record[LINE] for record in records]
        last_seq = records[-1]["seq"]
        data: bytes = self._retry(lambda: self._file.write(lines, last_seq))
        self._written += len(records)
        if all(record["event"] != _CHECKPOINT for record in records):
            self._checkpointer.observe_block(records[0]["seq"], len(records), data)
        else:  # checkpoints are not covered by the digest of the range they close
            for record in records:
                if record["event"] != _CHECKPOINT:
                    self._checkpointer.observe(record["seq"], record[LINE])
        if self._followers:
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
            for follower in self._followers:
                follower.offer(sink_records)

    def _sync(self) -> None:
        self._retry(self._file.sync)

    def _retry(self, operation: Callable[[], Any]) -> Any:
        """Run a file operation until it succeeds, backing off; report health changes. Raises only once
        :meth:`give_up_writes_at` has passed."""
        delay = _WRITE_RETRY_FIRST
        while True:
            try:
                result = operation()
            except OSError as exc:
                self._failed(exc)
                if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _WRITE_RETRY_MAX)
                continue
            if not self._writable:
                self._writable, self._write_error = True, None
                print("smgate audit: file sink writable again", file=sys.stderr)
                if self._on_health is not None:
                    self._on_health(True, None)
            return result

    def _failed(self, exc: OSError) -> None:
        reason = exc.strerror or type(exc).__name__
        self._write_errors += 1
        if self._writable:
            self._writable, self._write_error = False, reason
            if self._on_health is not None:
                self._on_health(False, reason)
        now = time.monotonic()
        if now - self._last_error_report >= _ERROR_REPORT_INTERVAL:
            self._last_error_report = now
            print(f"smgate audit: file sink write failed ({reason}); retrying", file=sys.stderr)

    # -- views -------------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._writable

    def metrics(self) -> PipelineMetrics:
        return PipelineMetrics(
            processed=self._processed,
            written=self._written,
            checkpoints=self._checkpoints,
            gaps=self._gaps,
            write_errors=self._write_errors,
            file_bytes=self._file.bytes_written,
            head_seq=self._file.written_seq,
            writable=self._writable,
            write_error=self._write_error,
            sinks=[follower.metrics() for follower in self._followers],
        )


def note_undelivered(directory: Path, *, lost_count: int | None, lost_at_least: int) -> None:
    """Leave a note in the audit directory that the next start turns into an ``audit.gap``
    (``undelivered_at_shutdown``): used when the pipeline could not take everything at shutdown.
    ``lost_count`` is None when the exact number is unknown (a pipeline process had to be killed with
    events still in its pipe); ``lost_at_least`` is what is known for certain."""
    name = f"{UNDELIVERED_PREFIX}{time.time_ns()}-{os.getpid()}.json"
    temporary = directory / f".{name}.tmp"
    temporary.write_text(json.dumps({"lost_count": lost_count, "lost_at_least": lost_at_least}))
    os.replace(temporary, directory / name)

"""``AuditLog``: the gateway's handle on the audit trail, and what every delivery of events shares.

The gateway calls ``emit`` on its data path: it never blocks and never raises. How events then reach
the one :class:`audit.pipeline.AuditPipeline` is a front-end's business: :class:`audit.thread.ThreadAuditLog`
hands them to a pipeline thread through a queue, :class:`audit.process.ProcessAuditLog` ships them in
batches to a pipeline in a child process (``pipeline: process``, the default). Both count what they
cannot deliver (:class:`DropCounter`) and hand that count to the pipeline, which writes it as an
``audit.gap``; neither touches the pipeline's state.

``accepting_allowed()`` is the gateway's ``on_failure`` hook: with ``on_failure: stop_accepting`` it is
False while the pipeline cannot write (or is gone), and listeners stop accepting new connections and
``/ready`` fails until it can again.
"""

from __future__ import annotations

import abc
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from audit.config import AuditConfig
from audit.keys import load_pipeline_keys
from audit.pipeline import Drops, PipelineMetrics
from audit.sinks.follower import SinkMetrics


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

    def accepting_allowed(self) -> bool:
        return True


@dataclass
class AuditMetrics:
    """Counters for ``/metrics``: the front-end's own, and the pipeline's last snapshot."""

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
    #: False before start, after close, or if the pipeline failed (see stderr)
    pipeline_alive: bool
    #: why the pipeline ended, if it failed
    pipeline_error: str | None
    #: False while the pipeline's file sink cannot write (it retries)
    writable: bool = True
    write_error: str | None = None
    #: what ``accepting_allowed()`` answers (always True with ``on_failure: continue``)
    accepting: bool = True
    sinks: list[SinkMetrics] = field(default_factory=list)


class DropCounter:
    """Events ``emit`` accepted but could not queue, by type and time, until the pipeline declares them.

    Thread-safe: ``count`` runs on the gateway's threads, ``take`` on whichever thread delivers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._first_ns = 0
        self._last_ns = 0
        self._by_event: Counter[str] = Counter()
        #: every event counted so far (``metrics().dropped``)
        self.total = 0

    def count(self, now: int, event_type: str) -> None:
        with self._lock:
            if not self._count:
                self._first_ns = now
            self._count += 1
            self._last_ns = now
            self._by_event[event_type] += 1
            self.total += 1

    def take(self) -> Drops | None:
        """The drops counted since the last ``take`` (``None`` if there were none)."""
        with self._lock:
            if not self._count:
                return None
            drops = Drops(self._count, self._first_ns, self._last_ns, dict(self._by_event))
            self._count = 0
            self._by_event = Counter()
        return drops

    def count_undeclared(self, count: int) -> None:
        """Events lost in a way this counter will not hand to the pipeline (a note declares them)."""
        with self._lock:
            self.total += count

    def restore(self, drops: Drops | None) -> None:
        """Put back drops that were taken but not delivered: the next ``take`` carries them again."""
        if drops is None:
            return
        with self._lock:
            if not self._count or drops.first_ns < self._first_ns:
                self._first_ns = drops.first_ns
            self._count += drops.count
            self._last_ns = max(self._last_ns, drops.last_ns)
            self._by_event.update(drops.by_event)


class AuditLog(abc.ABC):
    """Tamper-evident audit trail as the gateway sees it (see module docstring). Build with
    :meth:`from_config`."""

    def __init__(self, config: AuditConfig, *, instance_id: str | None = None) -> None:
        self.config = config
        self.instance = instance_id or config.instance_id or socket.gethostname() or "smgate"
        self._max_queue = config.queue_size
        self._stop_accepting = config.on_failure == "stop_accepting"
        self._drops = DropCounter()
        self._started = False
        self._closed = False
        self._dropped_after_close = 0
        self._rejected_internal = 0
        #: why the pipeline ended, if it failed
        self._fatal: str | None = None

    @classmethod
    def from_config(cls, config: AuditConfig, *, instance_id: str | None = None) -> AuditLog:
        """The front-end ``config.pipeline`` names. Loads the key files here, so a bad one is reported
        now (:class:`audit.keys.AuditKeyError`, naming the file), not by a pipeline that fails later."""
        keys = load_pipeline_keys(config)
        if config.pipeline == "process":
            from audit.process import ProcessAuditLog

            return ProcessAuditLog(config, instance_id=instance_id)
        from audit.thread import ThreadAuditLog

        return ThreadAuditLog(config, keys=keys, instance_id=instance_id)

    # -- data path ---------------------------------------------------------------------------

    @abc.abstractmethod
    def emit(self, event_type: str, **fields: object) -> None:
        """Queue one event. Never blocks, never raises; overflow is counted and declared in ``audit.gap``.

        ``fields`` are kept by reference until the pipeline serialises them: do not mutate them after.
        """

    def bind(self, **fields: object) -> BoundAudit:
        return BoundAudit(self, dict(fields))

    def accepting_allowed(self) -> bool:
        """Whether listeners may accept new connections: always with ``on_failure: continue``; with
        ``stop_accepting`` only while the pipeline runs and can write."""
        return not self._stop_accepting or self._pipeline_can_write()

    @abc.abstractmethod
    def _pipeline_can_write(self) -> bool:
        """Started, not closed, the pipeline alive and its last write (if any) succeeded."""

    def _write_health_changed(self, writable: bool, reason: str | None) -> None:
        """Tell the operator what ``on_failure: stop_accepting`` does about it (the pipeline reports
        the write failure itself)."""
        if not self._stop_accepting:
            return
        if writable:
            print("smgate audit: the trail is writable again: listeners accept connections", file=sys.stderr)
        else:
            print(
                f"smgate audit: the trail cannot be written ({reason}); on_failure: stop_accepting:"
                " listeners accept no new connections and /ready fails until it can",
                file=sys.stderr,
            )

    # -- lifecycle ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the pipeline (recovering the chain head from disk). Calling it again does nothing."""

    @abc.abstractmethod
    def start_sync(self) -> None:
        """:meth:`start` for a caller without an event loop."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Deliver what is queued, seal the log with a ``shutdown`` checkpoint, fsync, then give the
        follower sinks until ``shutdown_timeout`` to deliver."""

    @abc.abstractmethod
    def close_sync(self) -> None:
        """:meth:`aclose` for a caller without an event loop."""

    @abc.abstractmethod
    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything emitted so far is written and synced (per policy); False on timeout."""

    # -- views -------------------------------------------------------------------------------

    @abc.abstractmethod
    def queue_depth(self) -> int:
        """Events emitted but not yet handed to the pipeline."""

    @property
    def pipeline_pid(self) -> int | None:
        """Process id of the pipeline process (``pipeline: process``); None for the thread pipeline."""
        return None

    def _metrics(self, pipeline: PipelineMetrics, *, alive: bool) -> AuditMetrics:
        return AuditMetrics(
            emitted=pipeline.processed,
            written=pipeline.written,
            queue_depth=self.queue_depth(),
            dropped=self._drops.total,
            dropped_after_close=self._dropped_after_close,
            rejected_internal=self._rejected_internal,
            checkpoints=pipeline.checkpoints,
            gaps=pipeline.gaps,
            write_errors=pipeline.write_errors,
            file_bytes=pipeline.file_bytes,
            head_seq=pipeline.head_seq,
            pipeline_alive=alive,
            pipeline_error=self._fatal,
            writable=pipeline.writable,
            write_error=pipeline.write_error,
            accepting=self.accepting_allowed(),
            sinks=pipeline.sinks,
        )

    @abc.abstractmethod
    def metrics(self) -> AuditMetrics: ...

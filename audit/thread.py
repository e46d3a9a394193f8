"""``ThreadAuditLog``: the pipeline in a thread of the gateway process (``pipeline: thread``).

``emit`` puts ``(emit time, event type, fields)`` on a bounded queue. One thread takes batches off it
and delivers them to its :class:`audit.pipeline.AuditPipeline`, which it alone calls: events, the drop
count (written as an ``audit.gap`` before the batch), the periodic work, a sync for ``flush`` markers,
and at ``_STOP`` the pipeline's close. No extra process, but every batch takes the GIL from the event
loop (compare ``bench/audit.py --gateway-only --pipeline thread``).
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading
import time
from typing import Any

from audit.config import AuditConfig
from audit.events import INTERNAL_EVENTS
from audit.keys import PipelineKeys
from audit.log import AuditLog, AuditMetrics
from audit.pipeline import AuditPipeline, Event, PipelineMetrics

_STOP = object()
#: seconds past ``shutdown_timeout`` a closing caller waits for the pipeline thread to finish
_JOIN_GRACE = 1.0


class _FlushMarker:
    """Queued by ``flush``: set once everything before it is written and synced (``synced``), or once
    the pipeline thread ended without getting there."""

    __slots__ = ("done", "synced")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.synced = False


class ThreadAuditLog(AuditLog):
    """Same surface as every :class:`AuditLog`; the pipeline runs in a thread of this process."""

    def __init__(self, config: AuditConfig, *, keys: PipelineKeys, instance_id: str | None = None) -> None:
        super().__init__(config, instance_id=instance_id)
        self._keys = keys
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pipeline: AuditPipeline | None = None
        self._thread: threading.Thread | None = None
        #: True while the pipeline thread delivers (a plain flag: ``accepting_allowed`` reads it per accept)
        self._running = False

    # -- data path ---------------------------------------------------------------------------

    def emit(self, event_type: str, **fields: object) -> None:
        now = time.time_ns()
        try:
            if self._closed:
                self._dropped_after_close += 1
                return
            if event_type in INTERNAL_EVENTS:
                self._rejected_internal += 1
                return
            if self._queue.qsize() >= self._max_queue:
                self._drops.count(now, event_type)
                return
            self._queue.put((now, event_type, fields))
        except Exception:  # the data path must never see an audit failure
            self._drops.count(now, str(event_type))

    def _pipeline_can_write(self) -> bool:
        pipeline = self._pipeline
        return self._running and pipeline is not None and pipeline.writable and not self._closed

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    def start_sync(self) -> None:
        if self._started or self._closed:
            return  # idempotent: the gateway and its callers may both start it
        pipeline = AuditPipeline(
            self.config,
            audit_key=self._keys.audit_key,
            signer=self._keys.signer,
            instance=self.instance,
            pid=os.getpid(),  # the worker that runs it, even if this log was built before a fork
            on_health=self._write_health_changed,
        )
        pipeline.start()  # raises (directory busy, unreadable): not started, a retry may follow
        self._pipeline, self._started, self._running = pipeline, True, True
        self._thread = threading.Thread(
            target=self._run, args=(pipeline,), name="audit-pipeline", daemon=True
        )
        self._thread.start()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        pipeline, thread = self._pipeline, self._thread
        if pipeline is None or thread is None:
            return
        deadline = time.monotonic() + self.config.shutdown_timeout
        pipeline.give_up_writes_at(deadline)
        self._queue.put(_STOP)
        thread.join(max(0.0, deadline - time.monotonic()) + _JOIN_GRACE)
        if thread.is_alive():
            print("smgate audit: pipeline did not finish before shutdown_timeout", file=sys.stderr)

    async def flush(self, timeout: float = 10.0) -> bool:
        if self._closed or not self._running:
            return self._closed or (not self._started and self._queue.empty())
        marker = _FlushMarker()
        self._queue.put(marker)
        return await asyncio.to_thread(marker.done.wait, timeout) and marker.synced

    # -- views -------------------------------------------------------------------------------

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def metrics(self) -> AuditMetrics:
        pipeline = self._pipeline
        snapshot = pipeline.metrics() if pipeline is not None else PipelineMetrics()
        alive = self._running and not self._closed
        return self._metrics(snapshot, alive=alive)

    # -- pipeline thread -----------------------------------------------------------------------

    def _run(self, pipeline: AuditPipeline) -> None:
        try:
            self._deliver(pipeline)
        except Exception as exc:  # reported (stderr, metrics), then the thread ends
            self._fatal = f"{type(exc).__name__}: {exc}"
            print(f"smgate audit: pipeline failed: {self._fatal}", file=sys.stderr)
            pipeline.abandon(time.monotonic() + self.config.shutdown_timeout)
        finally:
            self._running = False
            self._release_waiters()

    def _deliver(self, pipeline: AuditPipeline) -> None:
        """Take batches off the queue until ``_STOP``; then close the pipeline."""
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
            if self._handle(pipeline, items):
                return

    def _handle(self, pipeline: AuditPipeline, items: list[Any]) -> bool:
        """Deliver one batch: the drops counted so far (declared first), the events, the periodic work;
        flush markers are set once the batch is synced. True after ``_STOP`` (the pipeline is closed)."""
        events: list[Event] = [item for item in items if type(item) is tuple]
        markers: list[_FlushMarker] = []
        stopping = False
        if len(events) != len(items):  # rare: a flush marker or the stop
            markers = [item for item in items if isinstance(item, _FlushMarker)]
            stopping = any(item is _STOP for item in items)
        drops = self._drops.take()
        if drops is not None:
            pipeline.declare_drops(drops)
        pipeline.process(events)
        if stopping:
            pipeline.close(time.monotonic() + self.config.shutdown_timeout)
        else:
            pipeline.tick()
            if markers:
                pipeline.sync()
        for marker in markers:
            marker.synced = True
            marker.done.set()
        return stopping

    def _release_waiters(self) -> None:
        """The thread is ending: wake ``flush`` callers still queued and count late events."""
        while True:
            try:
                leftover = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(leftover, _FlushMarker):
                leftover.done.set()
            elif leftover is not _STOP:
                self._dropped_after_close += 1

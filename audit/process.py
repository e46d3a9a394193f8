"""``ProcessAuditLog``: the audit pipeline in a child process (``pipeline: process``).

The gateway process keeps only the cheap part: ``emit`` appends ``(emit time, event type, fields)`` to
a bounded local buffer, and a feeder thread sends the buffer as one pickled batch per ``batch_linger``
over a pipe. The child (``spawn`` context) runs an ordinary thread-pipeline :class:`AuditLog` built from
the same configuration: it owns the directory lock, recovery, chain, checkpoints, file sink and follower
sinks, so the chain work never competes with the gateway's event loop for the GIL.

Ordering, gaps and durability are those of the thread pipeline: batches arrive in emit order, events
dropped because the buffer is full are handed to the child's gap accounting before the next batch, and
``flush`` waits for the child's acknowledgement that everything sent before it is written and synced.
If the gateway process dies, the child sees end-of-file on the pipe, writes what it has received, the
``shutdown`` checkpoint, syncs and exits.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from audit.checkpoint import CheckpointSigner
from audit.config import AuditConfig
from audit.events import INTERNAL_EVENTS
from audit.log import AuditLog, AuditMetrics

_START_TIMEOUT = 60.0
_REPORT_INTERVAL = 0.5


class ProcessAuditLog(AuditLog):
    """Same surface as :class:`AuditLog`; the pipeline runs in a child process."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        audit_key: bytes,
        signer: CheckpointSigner | None,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(config, audit_key=audit_key, signer=signer, instance_id=instance_id)
        #: appended by ``emit`` and ``flush``, popped by the feeder: deque operations are atomic
        self._buffer: deque[Any] = deque()
        self._wake = threading.Event()
        self._acks: dict[int, threading.Event] = {}
        self._ack_ids = itertools.count(1)
        self._snapshot: AuditMetrics | None = None
        self._process: Any = None
        self._to_child: Connection | None = None
        self._from_child: Connection | None = None
        self._feeder: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False

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
            if len(self._buffer) >= self._max_queue:
                self._count_drop(now, event_type)
                return
            self._buffer.append((now, event_type, fields))
        except Exception:  # the data path must never see an audit failure
            self._count_drop(now, str(event_type))

    # -- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        self.file.close()  # the child owns the directory; this handle never opened it
        context = multiprocessing.get_context("spawn")
        child_in, to_child = context.Pipe(duplex=False)
        from_child, child_out = context.Pipe(duplex=False)
        process = context.Process(
            target=_child_main,
            args=(self.config, self.instance, os.getpid(), child_in, child_out),
            name="smgate-audit",
            daemon=False,
        )
        process.start()
        child_in.close()
        child_out.close()
        self._process, self._to_child, self._from_child = process, to_child, from_child
        try:
            if not from_child.poll(_START_TIMEOUT):
                raise RuntimeError("audit pipeline process did not start")
            reply = from_child.recv()
        except (EOFError, OSError, RuntimeError):
            self._kill_child()
            raise RuntimeError("audit pipeline process failed to start") from None
        if reply[0] != "started":
            self._kill_child()
            raise reply[1]
        self._snapshot = reply[1]
        self._reader = threading.Thread(target=self._read_replies, name="audit-replies", daemon=True)
        self._reader.start()
        self._feeder = threading.Thread(target=self._feed, name="audit-feeder", daemon=True)
        self._feeder.start()
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        """Interpreter exit without ``aclose``: end of file tells the child to finish and exit."""
        if not self._closed:
            self.close_sync()

    def _kill_child(self) -> None:
        for connection in (self._to_child, self._from_child):
            if connection is not None:
                connection.close()
        if self._process is not None:
            self._process.join(5.0)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._process = self._to_child = self._from_child = None

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._started or self._feeder is None:
            return
        atexit.unregister(self._at_exit)
        self._stopping = True
        self._wake.set()
        self._feeder.join(self.config.shutdown_timeout)
        if self._process is not None:
            self._process.join(self.config.shutdown_timeout + 5.0)
            if self._process.is_alive():
                print(
                    "smgate audit: pipeline process did not finish before shutdown_timeout", file=sys.stderr
                )
                self._process.kill()
                self._process.join()
        if self._reader is not None:
            self._reader.join(1.0)
        if self._to_child is not None:
            self._to_child.close()
        for ack in list(self._acks.values()):
            ack.set()

    async def flush(self, timeout: float = 10.0) -> bool:
        if self._closed or self._feeder is None:
            return True
        ack_id = next(self._ack_ids)
        ack = threading.Event()
        self._acks[ack_id] = ack
        self._buffer.append(("flush", ack_id))
        self._wake.set()
        try:
            return await asyncio.to_thread(ack.wait, timeout)
        finally:
            self._acks.pop(ack_id, None)

    def queue_depth(self) -> int:
        return len(self._buffer)

    def metrics(self) -> AuditMetrics:
        snapshot = self._snapshot
        alive = (
            self._process is not None
            and self._process.is_alive()
            and not self._closed
            and self._fatal is None
        )
        base = snapshot if snapshot is not None else super().metrics()
        return replace(
            base,
            queue_depth=self.queue_depth(),
            dropped=self._dropped_total,
            dropped_after_close=self._dropped_after_close + (snapshot.dropped_after_close if snapshot else 0),
            rejected_internal=self._rejected_internal,
            pipeline_alive=alive and snapshot is not None and snapshot.pipeline_alive,
            pipeline_error=self._fatal or (snapshot.pipeline_error if snapshot else None),
        )

    # -- feeder and reply threads --------------------------------------------------------------

    def _feed(self) -> None:
        assert self._to_child is not None
        linger = self.config.batch_linger or 0.001
        connection = self._to_child
        try:
            while True:
                stopping = self._stopping
                if not self._buffer and not stopping:
                    self._wake.wait(linger)
                    self._wake.clear()
                    continue
                buffer = self._buffer
                batch = [buffer.popleft() for _ in range(len(buffer))]
                drops = self._take_parent_drops()
                if batch or drops is not None:
                    message = ("batch", drops, [_pack(item) for item in batch])
                    connection.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
                if stopping:
                    connection.send_bytes(pickle.dumps(("stop",)))
                    return
                time.sleep(linger)
        except (OSError, ValueError) as exc:  # child gone: nothing more can be written
            self._fatal = f"pipeline process unreachable: {type(exc).__name__}"
            print(f"smgate audit: {self._fatal}", file=sys.stderr)

    def _take_parent_drops(self) -> dict[str, Any] | None:
        with self._drops_lock:
            drops = self._drops
            if not drops.count:
                return None
            self._drops = type(drops)()
        return {
            "count": drops.count,
            "first_ns": drops.first_ns,
            "last_ns": drops.last_ns,
            "by_event": dict(drops.by_event),
        }

    def _read_replies(self) -> None:
        assert self._from_child is not None
        try:
            while True:
                reply = self._from_child.recv()
                kind = reply[0]
                if kind in ("flushed", "metrics", "closed"):
                    self._snapshot = reply[-1]
                if kind == "flushed":
                    ack = self._acks.get(reply[1])
                    if ack is not None:
                        ack.set()
        except (EOFError, OSError):
            return


def _pack(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """An event with its fields pickled on their own, so one odd value never costs a whole batch.

    A value that cannot be pickled is sent as its ``repr`` and named in ``audit_error`` (as the
    canonicaliser does for a value it cannot serialise).
    """
    if item[0] == "flush":
        return item
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


def _unpack(item: tuple[Any, ...]) -> tuple[int, str, dict[str, object]]:
    emit_ns, event_type, data = item
    try:
        fields = pickle.loads(data)  # noqa: S301 - pickled by our own parent, over a private pipe
    except Exception as exc:
        fields = {"audit_error": f"processing failed: {type(exc).__name__}"}
    return emit_ns, event_type, fields


# -- child process -------------------------------------------------------------------------------


def _child_main(
    config: AuditConfig, instance: str, parent_pid: int, inbox: Connection, outbox: Connection
) -> None:
    """Run the thread pipeline until ``stop`` or the gateway process goes away (end of file)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when audit stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            try:
                outbox.send(message)
            except (OSError, ValueError):
                pass  # the gateway process is gone: keep writing what was received

    log = AuditLog.from_config(config.model_copy(update={"pipeline": "thread"}), instance_id=instance)
    log._pid = parent_pid
    try:
        log.start_sync()
    except Exception as exc:
        try:
            pickle.dumps(exc)
            send(("failed_start", exc))
        except Exception:
            send(
                (
                    "failed_start",
                    RuntimeError(f"audit pipeline process failed to start: {type(exc).__name__}"),
                )
            )
        return
    send(("started", log.metrics()))
    done = threading.Event()

    def report() -> None:  # counters for the gateway's /metrics, and a failed pipeline thread
        while not done.wait(_REPORT_INTERVAL):
            send(("metrics", log.metrics()))

    threading.Thread(target=report, name="audit-report", daemon=True).start()

    def acknowledge(ack_id: int, marker: threading.Event) -> None:
        marker.wait()
        send(("flushed", ack_id, log.metrics()))

    try:
        while True:
            try:
                message = pickle.loads(inbox.recv_bytes())  # noqa: S301 - our own parent, over a private pipe
            except (EOFError, OSError):
                break
            if message[0] == "stop":
                break
            _, drops, items = message
            for item in items:
                if item[0] == "flush":
                    marker = threading.Event()
                    log._queue.put(marker)
                    threading.Thread(target=acknowledge, args=(item[1], marker), daemon=True).start()
                else:
                    log._queue.put(_unpack(item))
            if drops is not None:  # lost after the events of this batch were buffered
                _merge_drops(log, drops)
    finally:
        done.set()
        log.close_sync()
        send(("closed", log.metrics()))
        outbox.close()


def _merge_drops(log: AuditLog, drops: dict[str, Any]) -> None:
    """Events the gateway process could not buffer: reported by the child's next ``audit.gap``."""
    with log._drops_lock:
        pending = log._drops
        if not pending.count:
            pending.first_ns = drops["first_ns"]
        pending.count += drops["count"]
        pending.last_ns = drops["last_ns"]
        pending.by_event.update(drops["by_event"])
        log._dropped_total += drops["count"]

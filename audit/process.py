"""``ProcessAuditLog``: the audit pipeline in a child process (``pipeline: process``).

The gateway process keeps only the cheap part: ``emit`` appends ``(emit time, event type, fields)`` to
a bounded local buffer. Once per ``batch_linger`` the buffer goes to the child over a pipe as one
pickled batch. The child (``spawn`` context) runs the ordinary :class:`AuditLog` pipeline on its main
thread (:meth:`AuditLog.handle_batch`): it owns the directory lock, recovery, chain, checkpoints, file
sink and follower sinks, so the chain work never competes with the gateway's event loop for the GIL.

Who ships the batches: when the log is started from a running event loop (the gateway), the loop
itself does, from a ``call_later`` timer, writing to a non-blocking pipe (``add_writer`` when it is
full). There is no thread in the gateway process that takes the GIL per batch; measured, such a
feeder thread cost the event loop more than the whole pipeline saves. Started without a loop
(``start_sync``), a feeder thread ships instead.

Ordering, gaps and durability are those of the thread pipeline: batches arrive in emit order, events
dropped because the buffer is full are handed to the child's gap accounting after the batch they
followed, and ``flush`` waits for the child's acknowledgement that everything sent before it is written
and synced. If the gateway process dies, the child sees end-of-file on the pipe, writes what it has
received, the ``shutdown`` checkpoint, syncs and exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import gc
import itertools
import multiprocessing
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from audit.checkpoint import CheckpointSigner
from audit.config import AuditConfig
from audit.events import INTERNAL_EVENTS, EventType
from audit.log import AuditLog, AuditMetrics

_START_TIMEOUT = 60.0
_REPORT_INTERVAL = 0.5
_IDLE_POLL = 0.2
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # Linux fcntl: grow the pipe so a burst does not wait for the child
_PLAIN = frozenset({str, int, float, bool, type(None)})


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
        #: appended by ``emit`` and ``flush``, emptied by whoever ships: deque operations are atomic
        self._buffer: deque[Any] = deque()
        self._linger = config.batch_linger or 0.001
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
        #: the event loop that ships batches (``start`` from a running loop), and its thread
        self._ship_loop: asyncio.AbstractEventLoop | None = None
        self._ship_thread = 0
        self._armed = False
        #: framed messages not yet in the pipe, from ``_out_start`` on (loop shipping only)
        self._out = bytearray()
        self._out_start = 0
        #: ``[bytes left, events]`` per message in ``_out``; ``_unsent`` sums the events
        self._out_messages: deque[list[int]] = deque()
        self._unsent = 0
        self._writer_registered = False
        self._drained: asyncio.Event | None = None

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
            if len(self._buffer) + self._unsent >= self._max_queue:
                self._count_drop(now, event_type)
                return
            self._buffer.append((now, event_type, fields))
            if not self._armed and self._ship_loop is not None:
                self._arm()
        except Exception:  # the data path must never see an audit failure
            self._count_drop(now, str(event_type))

    def _arm(self) -> None:
        """Ship the buffer one ``batch_linger`` from now, on the shipping loop."""
        loop = self._ship_loop
        assert loop is not None
        self._armed = True
        try:
            if threading.get_ident() == self._ship_thread:
                loop.call_later(self._linger, self._ship)
            else:
                loop.call_soon_threadsafe(loop.call_later, self._linger, self._ship)
        except RuntimeError:  # that loop is closed: ship from the running one, if any
            self._adopt_running_loop()

    def _adopt_running_loop(self) -> None:
        """The shipping loop was closed without ``aclose`` (a caller moved on to a new loop): the loop
        running now ships. Without one, ``close_sync`` (at the latest at exit) ships what is left."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._ship_loop, self._ship_thread = loop, threading.get_ident()
        self._writer_registered = False
        self._armed = True
        loop.call_later(self._linger, self._ship)

    def _ship(self) -> None:
        """Loop thread: serialise the buffer (and any drops) as one message and write what fits."""
        self._armed = False
        if self._to_child is None or self._stopping:
            return
        items = self._take_buffer()
        drops = self._take_parent_drops()
        if items or drops is not None:
            self._enqueue(_batch_message(drops, items), events=len(items))
        self._write_out()

    def _take_buffer(self) -> list[Any]:
        buffer = self._buffer
        return [buffer.popleft() for _ in range(len(buffer))]

    def _enqueue(self, data: bytes, *, events: int) -> None:
        frame = struct.pack("!i", len(data)) + data  # ``Connection.recv_bytes`` framing
        self._out += frame
        self._out_messages.append([len(frame), events])
        self._unsent += events

    def _write_out(self) -> None:
        """Loop thread: write queued frames until the pipe is full; wait for writability if it is."""
        connection = self._to_child
        if connection is None:
            return
        fd = connection.fileno()
        out = self._out
        while self._out_start < len(out):
            try:
                written = os.write(fd, memoryview(out)[self._out_start :])
            except BlockingIOError:
                break
            except OSError as exc:
                self._child_unreachable(exc)
                return
            self._consume(written)
        if self._out_start >= len(out):
            out.clear()
            self._out_start = 0
        elif self._out_start > len(out) // 2:
            del out[: self._out_start]
            self._out_start = 0
        loop = self._ship_loop
        if loop is None:
            return
        if self._out and not self._writer_registered:
            loop.add_writer(fd, self._write_out)
            self._writer_registered = True
        elif not self._out:
            if self._writer_registered:
                loop.remove_writer(fd)
                self._writer_registered = False
            if self._drained is not None:
                self._drained.set()

    def _consume(self, written: int) -> None:
        self._out_start += written
        messages = self._out_messages
        while written:
            head = messages[0]
            taken = min(written, head[0])
            head[0] -= taken
            written -= taken
            if not head[0]:
                messages.popleft()
                self._unsent -= head[1]

    def _child_unreachable(self, exc: OSError) -> None:
        if self._fatal is None:
            self._fatal = f"pipeline process unreachable: {type(exc).__name__}"
            print(f"smgate audit: {self._fatal}", file=sys.stderr)
        self._stopping = True
        if self._writer_registered and self._ship_loop is not None and self._to_child is not None:
            with contextlib.suppress(Exception):
                self._ship_loop.remove_writer(self._to_child.fileno())
            self._writer_registered = False
        if self._drained is not None:
            self._drained.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._started and not self._closed:
            self._ship_loop = asyncio.get_running_loop()
            self._ship_thread = threading.get_ident()
        try:
            await super().start()
        finally:
            if self._feeder is None and self._to_child is None:
                self._ship_loop = None  # did not start: emit must not arm a timer
        if self._ship_loop is not None and self._buffer and not self._armed:
            self._arm()  # emitted while the child was starting

    def _start(self, *, thread: bool = True) -> None:
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
        if self._ship_loop is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(to_child.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
            os.set_blocking(to_child.fileno(), False)
        else:
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

    async def aclose(self) -> None:
        loop = self._ship_loop
        if loop is None or self._closed or asyncio.get_running_loop() is not loop:
            await super().aclose()
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        if not self._stopping:
            self._ship()
            self._stopping = True
            self._enqueue(pickle.dumps(("stop",)), events=0)
            self._drained = asyncio.Event()
            self._write_out()
            if self._out:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), self.config.shutdown_timeout)
            if self._out:
                self._child_unreachable(TimeoutError())
        await asyncio.to_thread(self._finish_close)

    def close_sync(self) -> None:
        if self._closed:
            return
        loop = self._ship_loop
        if loop is not None and not loop.is_closed() and threading.get_ident() != self._ship_thread:
            if loop.is_running():  # the loop owns the pipe: let it close
                asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(
                    self.config.shutdown_timeout + 10.0
                )
                return
        self._closed = True
        if not self._started or self._to_child is None:
            return
        atexit.unregister(self._at_exit)
        if self._feeder is not None:
            self._stopping = True
            self._wake.set()
            self._feeder.join(self.config.shutdown_timeout)
        elif not self._stopping:
            self._ship_blocking()
        self._finish_close()

    def _ship_blocking(self) -> None:
        """Loop shipping, but the loop is gone (or this is its thread): write the rest and ``stop``."""
        connection = self._to_child
        assert connection is not None
        if self._writer_registered and self._ship_loop is not None and not self._ship_loop.is_closed():
            with contextlib.suppress(Exception):
                self._ship_loop.remove_writer(connection.fileno())
        self._writer_registered = False
        self._stopping = True
        items = self._take_buffer()
        drops = self._take_parent_drops()
        if items or drops is not None:
            self._enqueue(_batch_message(drops, items), events=len(items))
        self._enqueue(pickle.dumps(("stop",)), events=0)
        try:
            os.set_blocking(connection.fileno(), True)
            view = memoryview(self._out)[self._out_start :]
            while view:
                written = os.write(connection.fileno(), view)
                self._consume(written)
                view = view[written:]
        except OSError as exc:
            self._child_unreachable(exc)

    def _finish_close(self) -> None:
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
        if self._closed or (self._feeder is None and self._to_child is None):
            return True
        ack_id = next(self._ack_ids)
        ack = threading.Event()
        self._acks[ack_id] = ack
        self._buffer.append(("flush", ack_id))
        loop = self._ship_loop
        if loop is None:
            self._wake.set()
        elif asyncio.get_running_loop() is loop:
            self._ship()
        elif loop.is_closed():
            self._adopt_running_loop()
            self._ship()
        else:
            loop.call_soon_threadsafe(self._ship)
        try:
            return await asyncio.to_thread(ack.wait, timeout)
        finally:
            self._acks.pop(ack_id, None)

    def queue_depth(self) -> int:
        return len(self._buffer) + self._unsent

    @property
    def pipeline_pid(self) -> int | None:
        """Process id of the pipeline child while it runs (for operators and benchmarks)."""
        process = self._process
        return None if process is None else process.pid

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
        """Shipping without an event loop: one batch per ``batch_linger`` from this thread."""
        assert self._to_child is not None
        connection = self._to_child
        try:
            while True:
                stopping = self._stopping
                if not self._buffer and not stopping:
                    self._wake.wait(self._linger)
                    self._wake.clear()
                    continue
                batch = self._take_buffer()
                drops = self._take_parent_drops()
                if batch or drops is not None:
                    connection.send_bytes(_batch_message(drops, batch))
                if stopping:
                    connection.send_bytes(pickle.dumps(("stop",)))
                    return
                time.sleep(self._linger)
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


def _batch_message(drops: dict[str, Any] | None, items: list[Any]) -> bytes:
    """One pickle for the whole batch. Events whose fields are not all plain scalars get their fields
    pickled on their own (:func:`_pack`), so one odd value never costs the batch."""
    wire = [
        item if item[0] == "flush" or _PLAIN.issuperset(map(type, item[2].values())) else _pack(item)
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


def _unpack(item: tuple[Any, ...]) -> tuple[int, str, dict[str, object]]:
    emit_ns, event_type, data = item
    if type(data) is not bytes:
        return emit_ns, event_type, data
    try:
        fields = pickle.loads(data)  # noqa: S301 - pickled by our own parent, over a private pipe
    except Exception as exc:
        fields = {"audit_error": f"processing failed: {type(exc).__name__}"}
    return emit_ns, event_type, fields


# -- child process -------------------------------------------------------------------------------


def _child_main(
    config: AuditConfig, instance: str, parent_pid: int, inbox: Connection, outbox: Connection
) -> None:
    """Run the pipeline on this process's main thread until ``stop`` or end of file (gateway gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when audit stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def send(message: tuple[Any, ...]) -> None:
        try:
            outbox.send(message)
        except (OSError, ValueError):
            pass  # the gateway process is gone: keep writing what was received

    log = AuditLog.from_config(config.model_copy(update={"pipeline": "thread"}), instance_id=instance)
    log._pid = parent_pid
    try:
        log.start_sync(thread=False)
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
    gc.freeze()  # what start-up loaded stays: keep the collector from re-scanning it for every batch
    try:
        if not _serve(log, inbox, send):
            _declare_gateway_exit(log)
    except Exception as exc:  # reported (stderr, metrics); what was written stays verifiable
        log._fatal = f"{type(exc).__name__}: {exc}"
        print(f"smgate audit: pipeline failed: {log._fatal}", file=sys.stderr)
    finally:
        log.close_sync()
        send(("closed", log.metrics()))
        outbox.close()


class _Inbox:
    """The child's end of the batch pipe: frames in ``Connection.send_bytes`` format, read in as large
    chunks as are waiting (one ``poll`` and one ``read`` per wake-up, not per message)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._fd = connection.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self._data = bytearray()
        self.eof = False

    def read(self, timeout: float) -> list[bytes]:
        """The complete messages that arrive within ``timeout`` seconds (all that are waiting)."""
        if not self.eof and self._poller.poll(int(timeout * 1000)):
            chunk = os.read(self._fd, _PIPE_BYTES)
            if chunk:
                self._data += chunk
            else:
                self.eof = True
        messages = []
        data, start = self._data, 0
        while len(data) - start >= 4:
            (size,) = struct.unpack_from("!i", data, start)
            if len(data) - start - 4 < size:
                break
            messages.append(bytes(data[start + 4 : start + 4 + size]))
            start += 4 + size
        del data[:start]
        return messages


def _declare_gateway_exit(log: AuditLog) -> None:
    """End of file without ``stop``: the gateway process ended without closing its audit log, so events
    it had not shipped yet (at most ``batch_linger`` of them) may be missing. Say so in the log."""
    gap = {
        "event": EventType.AUDIT_GAP.value,
        "reason": "gateway_exited",
        "cause": "pipe closed without stop",
        "after_seq": log.file.written_seq,
        "lost_count": None,
    }
    log.handle_batch([])  # anything pending first
    log._write([log._process_internal(gap)])


def _serve(log: AuditLog, inbox: Connection, send: Any) -> bool:
    """Receive batches and run them through ``log`` until ``stop`` (True) or end of file (False).

    All messages waiting in the pipe form one batch, so a busy gateway costs one pipeline pass per
    pipe read, not per message. With nothing to read for ``_IDLE_POLL`` seconds the periodic work (time
    checkpoints, fsync) runs on an empty batch.
    """
    reader = _Inbox(inbox)
    last_report = time.monotonic()
    orderly = False
    while True:
        items: list[Any] = []
        acks: list[int] = []
        drops: list[dict[str, Any]] = []
        stopping = reader.eof
        for data in reader.read(_IDLE_POLL):
            message = pickle.loads(data)  # noqa: S301 - our own parent, over a private pipe
            if message[0] == "stop":
                stopping = orderly = True
                break
            _, dropped, wire = message
            for item in wire:
                if item[0] == "flush":
                    items.append(threading.Event())
                    acks.append(item[1])
                else:
                    items.append(_unpack(item))
            if dropped is not None:  # lost after the events of this message were buffered
                drops.append(dropped)
        stopping = stopping or reader.eof
        log.handle_batch(items)
        for dropped in drops:
            _merge_drops(log, dropped)
        if drops:
            log.handle_batch([])  # the gap record now, not after the next batch
        for ack_id in acks:
            send(("flushed", ack_id, log.metrics()))
        if stopping:
            return orderly
        now = time.monotonic()
        if now - last_report >= _REPORT_INTERVAL:  # counters for the gateway's /metrics
            last_report = now
            send(("metrics", log.metrics()))


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

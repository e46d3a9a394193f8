"""``ProcessAuditLog``: the audit pipeline in a child process (``pipeline: process``).

The gateway process keeps only the cheap part: ``emit`` appends ``(emit time, event type, fields)`` to
a bounded local buffer. Once per ``batch_linger`` the buffer goes to the child over a pipe as one
pickled batch (:mod:`audit.wire`). The child (``spawn`` context, :mod:`audit.pipeline_process`) delivers them to its :class:`audit.pipeline.AuditPipeline`
on its main thread: the pipeline owns the directory lock, recovery, chain, checkpoints, file sink and
follower sinks, so the chain work never competes with the gateway's event loop for the GIL. The parent
holds no pipeline state at all: it learns the pipeline's counters and write health from the child's
replies (``metrics``, ``health``, ``flushed``, ``closed``).

Who ships the batches: when the log is started from a running event loop (the gateway), the loop
itself does, from a ``call_later`` timer, writing to a non-blocking pipe (``add_writer`` when it is
full). There is no thread in the gateway process that takes the GIL per batch; measured, such a
feeder thread cost the event loop more than the whole pipeline saves. Started without a loop
(``start_sync``), a feeder thread ships instead.

Ordering, gaps and durability are those of the thread pipeline: batches arrive in emit order, events
dropped because the buffer is full are handed to the child's gap accounting after the batch they
followed, and ``flush`` waits for the child's acknowledgement that everything sent before it is written
and synced. If the gateway process dies, the child sees end-of-file on the pipe, writes what it has
received, an ``audit.gap`` (``gateway_exited``), the ``shutdown`` checkpoint, syncs and exits. What
the gateway could not hand over at close is counted and left as a note the next start declares.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import itertools
import multiprocessing
import os
import select
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from audit.config import AuditConfig
from audit.events import INTERNAL_EVENTS
from audit.log import AuditLog, AuditMetrics
from audit.pipeline import PipelineMetrics, note_undelivered
from audit.pipeline_process import child_main
from audit.wire import MAX_FRAME, PIPE_BYTES, STOP_MESSAGE, batch_message, frame

_START_TIMEOUT = 60.0
#: seconds (at most; never more than ``shutdown_timeout``) a closing pipeline process gets, after the
#: shutdown deadline, to write what it received
_CHILD_GRACE = 5.0
_F_SETPIPE_SZ = 1031  # Linux fcntl: grow the pipe so a burst does not wait for the child


class ProcessAuditLog(AuditLog):
    """Same surface as :class:`AuditLog`; the pipeline runs in a child process."""

    def __init__(self, config: AuditConfig, *, instance_id: str | None = None) -> None:
        super().__init__(config, instance_id=instance_id)
        #: appended by ``emit`` and ``flush``, emptied by whoever ships: deque operations are atomic
        self._buffer: deque[Any] = deque()
        self._linger = config.batch_linger or 0.001
        self._wake = threading.Event()
        self._acks: dict[int, threading.Event] = {}
        #: flushes the child acknowledged (a waiter woken by close alone is not in here)
        self._acked: set[int] = set()
        self._ack_ids = itertools.count(1)
        #: the pipeline's counters as the child last reported them
        self._snapshot = PipelineMetrics()
        #: the child's pipeline can write (its ``health`` replies) / the child is there (reply pipe open);
        #: plain flags, as ``accepting_allowed`` reads them per accepted connection
        self._child_writable = True
        self._child_running = False
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
                self._drops.count(now, event_type)
                return
            self._buffer.append((now, event_type, fields))
        except Exception:  # the data path must never see an audit failure
            self._drops.count(now, str(event_type))
            return
        loop = self._ship_loop
        if loop is not None and (not self._armed or loop.is_closed()):
            try:
                self._arm()
            except Exception:  # queued: ``flush``, the next emit or ``close`` ships it
                self._armed = False

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
            self._armed = False
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
        self._enqueue_buffer()
        self._write_out()

    def _enqueue_buffer(self) -> None:
        """Move the buffer (and the drop count) into ``_out`` as one message."""
        message = self._take_message()
        if message is not None:
            self._enqueue(*message)

    def _take_message(self) -> tuple[bytes, int] | None:
        """The buffer and the drop count as one serialised message, and its number of events. If it
        cannot be serialised (or would exceed the 2 GiB frame), its events are counted as dropped, so
        the next ``audit.gap`` declares them."""
        items = self._take_buffer()
        drops = self._drops.take()
        if not items and drops is None:
            return None
        try:
            data = batch_message(drops, items)
            if len(data) > MAX_FRAME:
                raise OverflowError("batch larger than one pipe frame")
        except Exception as exc:
            print(
                f"smgate audit: batch not shipped ({type(exc).__name__}); counted as dropped", file=sys.stderr
            )
            self._drops.restore(drops)
            for item in items:
                if item[0] != "flush":
                    self._drops.count(item[0], str(item[1]))
            return None
        return data, len(items)

    def _take_buffer(self) -> list[Any]:
        buffer = self._buffer
        return [buffer.popleft() for _ in range(len(buffer))]

    def _enqueue(self, data: bytes, events: int) -> None:
        framed = frame(data)
        self._out += framed
        self._out_messages.append([len(framed), events])
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
            self._unregister_writer()
            if self._drained is not None:
                self._drained.set()

    def _unregister_writer(self) -> None:
        """Stop waiting for the pipe to become writable (on a loop that may be gone by now)."""
        loop, connection = self._ship_loop, self._to_child
        if self._writer_registered and loop is not None and connection is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.remove_writer(connection.fileno())
        self._writer_registered = False

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
        self._unregister_writer()
        if self._drained is not None:
            self._drained.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if not self._started and not self._closed:
            self._ship_loop = asyncio.get_running_loop()
            self._ship_thread = threading.get_ident()
        try:
            await asyncio.to_thread(self.start_sync)
        finally:
            if self._feeder is None and self._to_child is None:
                self._ship_loop = None  # did not start: emit must not arm a timer
        if self._ship_loop is not None and self._buffer and not self._armed:
            self._arm()  # emitted while the child was starting

    def start_sync(self) -> None:
        if self._started or self._closed:
            return  # idempotent: the gateway and its callers may both start it
        self._start_child()
        self._started = True

    def _start_child(self) -> None:
        context = multiprocessing.get_context("spawn")
        child_in, to_child = context.Pipe(duplex=False)
        from_child, child_out = context.Pipe(duplex=False)
        if self._ship_loop is not None:  # the loop writes: never block it, not even during start-up
            with contextlib.suppress(OSError):
                fcntl.fcntl(to_child.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
            os.set_blocking(to_child.fileno(), False)
        process = context.Process(
            target=child_main,
            args=(self.config, self.instance, os.getpid(), child_in, child_out),
            name="smgate-audit",
            daemon=False,
        )
        process.start()
        child_in.close()
        child_out.close()
        try:
            if not from_child.poll(_START_TIMEOUT):
                raise RuntimeError("audit pipeline process did not start")
            reply = from_child.recv()
        except (EOFError, OSError, RuntimeError):
            _kill_child(process, to_child, from_child)
            raise RuntimeError("audit pipeline process failed to start") from None
        if reply[0] != "started":
            _kill_child(process, to_child, from_child)
            raise reply[1]
        # published only now: until the child has started, ``_ship`` leaves events in the buffer
        self._process, self._to_child, self._from_child = process, to_child, from_child
        self._snapshot = reply[1]
        self._child_running = True
        self._reader = threading.Thread(target=self._read_replies, name="audit-replies", daemon=True)
        self._reader.start()
        if self._ship_loop is None:
            self._feeder = threading.Thread(target=self._feed, name="audit-feeder", daemon=True)
            self._feeder.start()
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        """Interpreter exit without ``aclose``: end of file tells the child to finish and exit."""
        if not self._closed:
            self.close_sync()

    async def aclose(self) -> None:
        loop = self._ship_loop
        if loop is None or self._closed or asyncio.get_running_loop() is not loop:
            await asyncio.to_thread(self.close_sync)
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        deadline = time.monotonic() + self.config.shutdown_timeout
        if not self._stopping:
            self._enqueue_buffer()
            self._stopping = True
            self._enqueue(STOP_MESSAGE, 0)
            self._drained = asyncio.Event()
            self._write_out()
            if self._out:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), deadline - time.monotonic())
            if self._out:
                self._child_unreachable(TimeoutError())
        await asyncio.to_thread(self._finish_close, deadline)

    def close_sync(self) -> None:
        if self._closed:
            return
        loop = self._ship_loop
        if loop is not None and not loop.is_closed() and threading.get_ident() != self._ship_thread:
            if loop.is_running():  # the loop owns the pipe: let it close
                closing = asyncio.run_coroutine_threadsafe(self.aclose(), loop)
                try:
                    closing.result(2 * self.config.shutdown_timeout + 5.0)
                except TimeoutError:
                    print("smgate audit: close did not finish in time", file=sys.stderr)
                return
        self._closed = True
        if not self._started or self._to_child is None:
            self._dropped_after_close += self._buffered_events()  # never started: nothing was written
            self._buffer.clear()
            return
        atexit.unregister(self._at_exit)
        deadline = time.monotonic() + self.config.shutdown_timeout
        if self._feeder is not None:
            self._stopping = True
            self._wake.set()
            self._feeder.join(self.config.shutdown_timeout)
        elif not self._stopping:
            self._ship_blocking(deadline)
        self._finish_close(deadline)

    def _ship_blocking(self, deadline: float) -> None:
        """Loop shipping, but the loop is gone (or this is its thread): write the rest and ``stop``,
        waiting for the pipe until ``deadline`` at most."""
        connection = self._to_child
        assert connection is not None
        fd = connection.fileno()
        self._unregister_writer()
        self._stopping = True
        self._enqueue_buffer()
        self._enqueue(STOP_MESSAGE, 0)
        os.set_blocking(fd, False)
        while self._out_start < len(self._out):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                self._child_unreachable(TimeoutError())
                return
            try:
                self._consume(os.write(fd, memoryview(self._out)[self._out_start :]))
            except BlockingIOError:
                continue
            except OSError as exc:
                self._child_unreachable(exc)
                return

    def _buffered_events(self) -> int:
        return sum(1 for item in self._buffer if item[0] != "flush")

    def _finish_close(self, deadline: float) -> None:
        """End of file for the child (after ``stop``, if it got that far), then wait for it to finish:
        until ``deadline`` plus a grace for writing what it already received. Events that never reached
        the pipe are counted as dropped and reported (the child's log ends with its own gap record)."""
        undelivered = self._unsent + self._buffered_events()
        if undelivered:
            self._drops.count_undeclared(undelivered)
            print(
                f"smgate audit: {undelivered} events not handed to the pipeline process before shutdown",
                file=sys.stderr,
            )
        if self._to_child is not None:
            self._to_child.close()
        killed = False
        if self._process is not None:
            grace = min(_CHILD_GRACE, self.config.shutdown_timeout)
            self._process.join(max(0.0, deadline - time.monotonic()) + grace)
            if self._process.is_alive():
                print("smgate audit: pipeline process did not finish in time; killed", file=sys.stderr)
                self._process.kill()
                self._process.join()
                killed = True
        if undelivered or killed:  # the next start declares it in the log itself
            try:
                note_undelivered(
                    self.config.file_sink.directory,
                    lost_count=None if killed else undelivered,
                    lost_at_least=undelivered,
                )
            except OSError as exc:
                print(f"smgate audit: cannot leave the undelivered-events note ({exc})", file=sys.stderr)
        if self._reader is not None:
            self._reader.join(1.0)
        if self._from_child is not None:
            self._from_child.close()
        if self._process is not None:
            self._process.close()
            self._process = None
        for ack in list(self._acks.values()):
            ack.set()  # waiters wake; ``flush`` still answers False without the child's acknowledgement

    async def flush(self, timeout: float = 10.0) -> bool:
        if self._closed:
            return True
        if self._feeder is None and self._to_child is None:
            return not self._buffer  # not started: nothing emitted is written yet
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
            return await asyncio.to_thread(ack.wait, timeout) and ack_id in self._acked
        finally:
            self._acks.pop(ack_id, None)
            self._acked.discard(ack_id)

    def queue_depth(self) -> int:
        return len(self._buffer) + self._unsent

    @property
    def pipeline_pid(self) -> int | None:
        """Process id of the pipeline child while it runs (for operators and benchmarks)."""
        process = self._process
        return None if process is None else process.pid

    def metrics(self) -> AuditMetrics:
        alive = self._child_running and not self._closed and self._fatal is None
        return self._metrics(self._snapshot, alive=alive)

    def _pipeline_can_write(self) -> bool:
        return self._child_running and self._child_writable and not self._closed and self._fatal is None

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
                message = self._take_message()
                if message is not None:
                    connection.send_bytes(message[0])
                if stopping:
                    connection.send_bytes(STOP_MESSAGE)
                    return
                time.sleep(self._linger)
        except (OSError, ValueError) as exc:  # child gone: nothing more can be written
            self._fatal = f"pipeline process unreachable: {type(exc).__name__}"
            print(f"smgate audit: {self._fatal}", file=sys.stderr)

    def _read_replies(self) -> None:
        """Reply thread: the child's counters, its write health, flush acknowledgements, its end."""
        assert self._from_child is not None
        try:
            while True:
                reply = self._from_child.recv()
                kind = reply[0]
                if kind == "health":
                    self._child_writable = reply[1]
                    self._write_health_changed(reply[1], reply[2])
                elif kind in ("flushed", "metrics", "closed"):
                    self._snapshot = reply[-1]
                    self._child_writable = self._snapshot.writable
                if kind == "flushed":
                    self._acked.add(reply[1])
                    ack = self._acks.get(reply[1])
                    if ack is not None:
                        ack.set()
                elif kind == "closed" and reply[1] is not None and self._fatal is None:
                    self._fatal = reply[1]
        except (EOFError, OSError):
            return
        finally:
            self._child_running = False


def _kill_child(process: Any, *connections: Connection) -> None:
    """A child that failed to start: close its pipes and make sure it is gone."""
    for connection in connections:
        connection.close()
    process.join(5.0)
    if process.is_alive():
        process.kill()
        process.join()

"""``pipeline: process`` specifics: the event loop ships batches, a stopped child fills the pipe, a
killed child is declared on restart, events from other threads still arrive, close is bounded and
declares what it could not hand over, and a log outlives the loop it was started on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from audit.log import AuditLog
from audit.process import ProcessAuditLog
from audit.verify import verify_logs
from tests.audit.conftest import AuditKeys, ConfigFactory, read_records


def _open(index: int) -> dict[str, str]:
    return {"conn_id": f"c{index}", "listener": "l", "client_addr": "192.0.2.1:1"}


async def test_the_event_loop_ships_batches_without_a_feeder_thread(
    make_config: ConfigFactory, log_dir: Path, audit_keys: AuditKeys
) -> None:
    log = AuditLog.from_config(make_config())
    assert isinstance(log, ProcessAuditLog)  # the default pipeline
    await log.start()
    try:
        assert not any(thread.name == "audit-feeder" for thread in threading.enumerate())
        for index in range(50):
            log.emit("conn.open", **_open(index))
            if index % 10 == 0:
                await asyncio.sleep(0.01)  # let the linger timer fire mid-stream
        assert await log.flush()
        assert log.metrics().written == 50 and log.queue_depth() == 0
    finally:
        await log.aclose()
    records = read_records(log_dir)
    assert [record["conn_id"] for record in records if record["event"] == "conn.open"] == [
        f"c{index}" for index in range(50)
    ]
    assert records[-1]["reason"] == "shutdown"
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem


async def test_pipeline_process_overflow_while_the_child_is_stopped_is_declared_exactly(
    make_config: ConfigFactory, log_dir: Path, audit_keys: AuditKeys
) -> None:
    """A stopped child fills the pipe; the loop keeps the rest (writer callback) up to ``queue_size``
    events and counts every event beyond that; after SIGCONT all kept events and one exact gap arrive."""
    log = AuditLog.from_config(make_config(queue_size=64, batch_size=16))
    assert isinstance(log, ProcessAuditLog)
    await log.start()
    pid = log.pipeline_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    total = 30_000  # ~150 bytes each: well past the pipe's capacity
    try:
        for index in range(total):
            log.emit("conn.open", **_open(index))
            if index % 500 == 0:
                await asyncio.sleep(0.006)  # the linger timer ships what fits
        await asyncio.sleep(0.05)
        dropped = log.metrics().dropped
        assert dropped > 0 and log.queue_depth() <= 64
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await log.flush(timeout=60)
    await log.aclose()
    records = read_records(log_dir)
    written = [int(record["conn_id"][1:]) for record in records if record["event"] == "conn.open"]
    assert written == sorted(written)  # emit order kept across the stall
    gaps = [record for record in records if record["event"] == "audit.gap"]
    assert sum(gap["lost_count"] for gap in gaps) == dropped == total - len(written)
    assert all(gap["reason"] == "queue_overflow" for gap in gaps)
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem
    assert sum(gap["lost_count"] for gap in report.declared_gaps) == dropped


async def test_killed_pipeline_process_is_visible_and_declared_on_restart(
    make_config: ConfigFactory, log_dir: Path, audit_keys: AuditKeys
) -> None:
    config = make_config()
    log = AuditLog.from_config(config)
    await log.start()
    for index in range(20):
        log.emit("conn.open", **_open(index))
    assert await log.flush()
    pid = log.pipeline_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if not log.metrics().pipeline_alive:
            break
        await asyncio.sleep(0.02)
    assert not log.metrics().pipeline_alive
    for index in range(20, 40):  # the data path never sees the dead pipeline
        log.emit("conn.open", **_open(index))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(log.aclose(), 30)

    restarted = AuditLog.from_config(config)
    await restarted.start()
    await restarted.aclose()
    records = read_records(log_dir)
    gap = next(record for record in records if record["event"] == "audit.gap")
    assert gap["reason"] == "unclean_shutdown" and gap["after_seq"] == 20
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem
    # the crash of the child, and the 20 events emitted after it that never reached a pipeline
    assert [(declared["reason"], declared["lost_count"]) for declared in report.declared_gaps] == [
        ("unclean_shutdown", None),
        ("undelivered_at_shutdown", 20),
    ]


async def test_events_from_other_threads_reach_the_pipeline_process(
    make_config: ConfigFactory, log_dir: Path
) -> None:
    log = AuditLog.from_config(make_config())
    await log.start()

    def emit_some(prefix: str) -> None:
        for index in range(100):
            log.emit("admin.action", action=f"{prefix}{index}", actor="thread", result="ok")

    threads = [threading.Thread(target=emit_some, args=(prefix,)) for prefix in "ab"]
    for thread in threads:
        thread.start()

    def join_all() -> None:
        for thread in threads:
            thread.join()

    await asyncio.to_thread(join_all)
    await asyncio.sleep(0.05)  # no flush: the foreign threads' events arm the loop's timer themselves
    for _ in range(100):
        if log.metrics().written == 200:
            break
        await asyncio.sleep(0.05)
    assert log.metrics().written == 200
    await log.aclose()
    actions = [record["action"] for record in read_records(log_dir) if record["event"] == "admin.action"]
    for prefix in "ab":
        assert [action for action in actions if action.startswith(prefix)] == [
            f"{prefix}{index}" for index in range(100)
        ]


async def test_close_with_a_stalled_child_is_bounded_counts_what_was_not_handed_over_and_never_acks(
    make_config: ConfigFactory, log_dir: Path, audit_keys: AuditKeys
) -> None:
    config = make_config(shutdown_timeout=0.5)
    log = AuditLog.from_config(config)
    assert isinstance(log, ProcessAuditLog)
    await log.start()
    pid = log.pipeline_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        for index in range(20_000):  # ~4 MB: more than the pipe holds
            log.emit("conn.open", **{**_open(index), "client_addr": f"{index:0200d}"})
            if index % 500 == 0:
                await asyncio.sleep(0.006)
        flushing = asyncio.ensure_future(log.flush(timeout=30))
        await asyncio.sleep(0.05)
        stuck = log.queue_depth()
        assert stuck > 0  # the pipe is full: these never reach the child
        started = time.monotonic()
        await log.aclose()
        assert time.monotonic() - started < 0.5 + 0.5 + 2.0  # shutdown_timeout + grace, with slack
        assert await flushing is False  # woken by close, not acknowledged by the child
        assert log.metrics().dropped == stuck
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    restarted = AuditLog.from_config(config)
    await restarted.start()
    await restarted.aclose()
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem
    # nothing reached the file, so only the note left at close says what was lost: at least the
    # events that never reached the pipe; exactly how many is unknown, as the child had to be killed
    assert [(gap["reason"], gap["lost_count"]) for gap in report.declared_gaps] == [
        ("undelivered_at_shutdown", None)
    ]
    assert (
        next(record for record in read_records(log_dir) if record["event"] == "audit.gap")["lost_at_least"]
        == stuck
    )
    assert not list(log_dir.glob("undelivered-*"))  # declared once, then removed


async def test_flush_before_start_is_false_and_a_never_started_log_counts_its_events(
    make_config: ConfigFactory,
) -> None:
    log = AuditLog.from_config(make_config())
    log.emit("conn.open", **_open(0))
    assert await log.flush() is False
    await log.aclose()
    assert log.metrics().dropped_after_close == 1


def test_a_log_started_on_a_loop_that_closed_ships_from_the_next_loop(
    make_config: ConfigFactory, log_dir: Path
) -> None:
    log = AuditLog.from_config(make_config())

    async def first() -> None:
        await log.start()
        log.emit("conn.open", **_open(0))  # its timer dies with this loop

    async def second() -> None:
        for index in range(1, 50):
            log.emit("conn.open", **_open(index))
            await asyncio.sleep(0.01)
        for _ in range(100):  # no flush: the emits re-arm on this loop by themselves
            if log.metrics().written == 50:
                break
            await asyncio.sleep(0.05)
        assert log.metrics().written == 50
        await log.aclose()

    asyncio.run(first())
    asyncio.run(second())
    opened = [record["conn_id"] for record in read_records(log_dir) if record["event"] == "conn.open"]
    assert opened == [f"c{index}" for index in range(50)]

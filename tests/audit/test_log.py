"""AuditLog end to end: every event type, schema, chain, checkpoints, rotation, restart, crash, overflow."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest

from audit.events import event_schema
from audit.log import AuditLog, NullAuditLog
from audit.sinks.file import FileSink
from audit.verify import verify_logs
from tests.audit.conftest import AuditKeys, ConfigFactory, read_records
from tests.audit.events import SAMPLE_EVENTS
from tests.conftest import REPO


class FailingDisk:
    """``FileSink.write`` fails with ENOSPC while ``full`` (patched into this process: pipeline thread)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = True
        real_write = FileSink.write

        def write(sink: FileSink, lines: list[bytes], last_seq: int) -> bytes:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(sink, lines, last_seq)

        monkeypatch.setattr(FileSink, "write", write)


@pytest.fixture
def failing_disk(monkeypatch: pytest.MonkeyPatch) -> FailingDisk:
    return FailingDisk(monkeypatch)


def _assert_schema_valid(records: list[dict[str, object]]) -> None:
    validator = _validator()
    for record in records:
        errors = [error.message for error in validator.iter_errors(record)]
        assert not errors, (record.get("event"), errors)


def _validator() -> jsonschema.protocols.Validator:
    schema = event_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


async def test_every_event_type_matches_schema_and_verifies(
    make_config: ConfigFactory, pipeline: str, log_dir: Path, audit_keys: AuditKeys
) -> None:
    log = AuditLog.from_config(make_config(pipeline=pipeline, checkpoint={"every_records": 5}))
    await log.start()
    for event_type, fields in SAMPLE_EVENTS:
        log.emit(event_type, **fields)
    await log.aclose()
    records = read_records(log_dir)
    validator = _validator()
    for record in records:
        errors = sorted(validator.iter_errors(record), key=str)
        assert not errors, (record["event"], [error.message for error in errors])
    kinds = {record["event"] for record in records}
    assert kinds >= {event for event, _ in SAMPLE_EVENTS} | {"audit.checkpoint"}
    assert [record["seq"] for record in records] == list(range(1, len(records) + 1))
    assert {record["instance"] for record in records} == {"test-gw"}
    assert {record["pid"] for record in records} == {os.getpid()}
    request = next(record for record in records if record["event"] == "http.request")
    assert request["headers"]["authorization"].startswith("hmac-sm3:")
    assert "secret-token" not in (log_dir / "audit-000000000001.jsonl").read_text()
    handshake = next(record for record in records if record["event"] == "handshake.ok")
    assert handshake["client_cert"]["serial"] == "1f2e3d"
    assert records[-1]["event"] == "audit.checkpoint" and records[-1]["reason"] == "shutdown"
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem
    assert report.signatures_verified == sum(1 for record in records if record["event"] == "audit.checkpoint")


def test_schema_rejects_records_missing_required_fields() -> None:
    validator = _validator()
    base = {
        "event": "conn.close",
        "ts": "2026-01-01T00:00:00.000000Z",
        "id": "01a21246-3596-790d-88f7-175ba5715336",
        "instance": "gw",
        "pid": 1,
        "seq": 1,
        "prev": "00" * 32,
        "mac": "00" * 32,
        "conn_id": "c",
        "bytes_received": 1,
        "bytes_sent": 1,
        "duration_ms": 1.0,
        "reason": "eof",
    }
    assert validator.is_valid(base)
    assert not validator.is_valid({k: v for k, v in base.items() if k != "bytes_sent"})
    assert not validator.is_valid({**base, "ts": "2026-01-01T00:00:00Z"})
    assert not validator.is_valid({**base, "event": "conn.teleport"})
    assert validator.is_valid({**base, "format": 2}) and not validator.is_valid({**base, "format": 3})
    checkpoint = {
        **{key: base[key] for key in ("ts", "id", "instance", "pid", "seq", "prev", "mac")},
        "event": "audit.checkpoint",
        "format": 2,
        "reason": "count",
        "from_seq": 1,
        "to_seq": 1,
        "count": 1,
        "records_sm3": "00" * 32,
        "head_mac": "00" * 32,
        "prev_checkpoint_seq": None,
        "sig_alg": None,
        "signer": None,
    }
    assert validator.is_valid(checkpoint)  # unsigned: no signature member
    signed = {**checkpoint, "sig_alg": "SM2-SM3", "signer": "ab" * 32}
    assert not validator.is_valid(signed) and validator.is_valid({**signed, "signature": "MEUCIQ=="})


async def test_checkpoints_every_n_records_and_rotation_seals_segments(
    make_config: ConfigFactory, pipeline: str, log_dir: Path, audit_keys: AuditKeys
) -> None:
    log = AuditLog.from_config(
        make_config(pipeline=pipeline, checkpoint={"every_records": 10}, file={"rotate_bytes": 8192})
    )
    await log.start()
    for index in range(95):
        log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
    await log.aclose()
    segments = sorted(log_dir.glob("*.jsonl"))
    assert len(segments) > 2
    for path in segments:
        last = json.loads(path.read_bytes().splitlines()[-1])
        assert last["event"] == "audit.checkpoint"
    records = read_records(log_dir)
    checkpoints = [record for record in records if record["event"] == "audit.checkpoint"]
    assert all(record["count"] <= 10 for record in checkpoints)
    assert sum(record["count"] for record in checkpoints) == 95
    assert any(record["reason"] == "count" and record["count"] == 10 for record in checkpoints)
    assert any(record["reason"] == "rotation" for record in checkpoints)
    assert verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key).ok


async def test_restart_continues_the_chain(
    make_config: ConfigFactory, pipeline: str, log_dir: Path, audit_keys: AuditKeys
) -> None:
    for run in range(2):
        log = AuditLog.from_config(make_config(pipeline=pipeline))
        await log.start()
        log.emit("admin.action", action="restart", actor="test", result=str(run))
        await log.aclose()
    records = read_records(log_dir)
    assert [record["seq"] for record in records] == [1, 2, 3, 4]
    assert records[2]["prev"] == records[1]["mac"]
    assert len(list(log_dir.glob("*.jsonl"))) == 2
    assert not any(record["event"] == "audit.gap" for record in records)
    assert verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key).ok


CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from audit.config import load_audit_config
    from audit.log import AuditLog

    async def main() -> None:
        log = AuditLog.from_config(load_audit_config(json.loads(sys.argv[1])))
        await log.start()
        for index in range(25):
            log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
        await log.flush()
        os._exit(0)  # a crash: no aclose, no shutdown checkpoint

    asyncio.run(main())
    """
)


async def test_crash_recovery_declares_the_unclean_end(
    make_config: ConfigFactory, log_dir: Path, audit_keys: AuditKeys
) -> None:
    # pipeline: thread, so the process that dies is the writer (a pipeline process outlives its gateway:
    # test_pipeline_process_outlives_a_crashed_gateway; one killed itself: test_killed_pipeline_process_...)
    config = make_config(checkpoint={"every_records": 10}, pipeline="thread")
    subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, config.model_dump_json()], cwd=REPO, check=True, timeout=60
    )
    segment = log_dir / "audit-000000000001.jsonl"
    with segment.open("ab") as handle:
        handle.write(b'{"event":"conn.open","seq":2')  # torn last write
    report = verify_logs([log_dir], key=audit_keys.key)
    assert not report.ok and report.problem is not None and "truncated record" in report.problem.reason

    log = AuditLog.from_config(config)
    await log.start()
    log.emit("admin.action", action="after-crash", actor="test", result="ok")
    await log.aclose()
    records = read_records(log_dir, complete_only=True)
    gap = next(record for record in records if record["event"] == "audit.gap")
    _assert_schema_valid(records)
    assert gap["reason"] == "unclean_shutdown" and gap["after_seq"] == 27 and gap["torn_bytes"] == 28
    recovery = records[records.index(gap) + 1]
    assert recovery["event"] == "audit.checkpoint" and recovery["reason"] == "recovery"
    assert recovery["from_seq"] == 23 and recovery["count"] == 6  # 5 unsealed records + the gap
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem
    assert [gap["reason"] for gap in report.declared_gaps] == ["unclean_shutdown"]


async def test_queue_overflow_while_disk_full_is_declared_exactly(
    make_config: ConfigFactory, log_dir: Path, audit_keys: AuditKeys, failing_disk: FailingDisk
) -> None:
    # pipeline: thread, as the failing disk is patched into this process (process pipeline overflow:
    # test_pipeline_process_overflow_while_the_child_is_stopped_is_declared_exactly)
    log = AuditLog.from_config(make_config(queue_size=16, batch_size=4, pipeline="thread"))
    await log.start()
    log.emit("conn.open", conn_id="first", listener="l", client_addr="192.0.2.1:1")
    assert await _wait_for(lambda: log.metrics().write_errors > 0), "the pipeline never hit the failing disk"
    metrics = log.metrics()
    assert not metrics.writable and metrics.write_error == "No space left on device"
    assert metrics.accepting  # on_failure: continue
    for index in range(99):
        log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
    dropped = log.metrics().dropped
    assert dropped > 0
    failing_disk.full = False
    assert await _wait_for(lambda: log.metrics().writable)
    await log.aclose()
    records = read_records(log_dir)
    opens = [record for record in records if record["event"] == "conn.open"]
    gap = next(record for record in records if record["event"] == "audit.gap")
    _assert_schema_valid(records)
    assert gap["reason"] == "queue_overflow" and gap["cause"] == "file_sink_write_failed"
    assert gap["lost_count"] == dropped == 100 - len(opens)
    assert gap["lost_by_event"] == {"conn.open": dropped}
    assert gap["first_lost_ts"] <= gap["last_lost_ts"]
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem
    assert report.declared_gaps[0]["lost_count"] == dropped


async def test_emit_never_raises_and_rejects_internal_events(
    make_config: ConfigFactory, pipeline: str, log_dir: Path
) -> None:
    log = AuditLog.from_config(make_config(pipeline=pipeline))
    await log.start()
    log.emit("audit.checkpoint", forged=True)
    log.emit("conn.open", conn_id="c", listener="l", client_addr="x", weird=object())
    bound = log.bind(conn_id="c9", listener="l").bind(client_addr="192.0.2.9:9")
    bound.emit("conn.open")
    assert log.queue_depth() >= 0
    await log.aclose()
    log.emit("conn.open", conn_id="late")
    metrics = log.metrics()
    assert metrics.rejected_internal == 1 and metrics.dropped_after_close == 1
    records = read_records(log_dir)
    assert not any(record.get("forged") for record in records)
    weird = next(record for record in records if record.get("conn_id") == "c")
    assert "audit_error" in weird
    bound_record = next(record for record in records if record.get("conn_id") == "c9")
    assert bound_record["client_addr"] == "192.0.2.9:9"


async def test_flush_makes_records_visible(make_config: ConfigFactory, pipeline: str, log_dir: Path) -> None:
    log = AuditLog.from_config(make_config(pipeline=pipeline, file={"fsync": "always"}))
    await log.start()
    log.emit("admin.action", action="a", actor="t", result="ok")
    assert await log.flush()
    assert [record["event"] for record in read_records(log_dir)] == ["admin.action"]
    await log.aclose()


async def test_null_audit_log_has_the_same_surface() -> None:
    null = NullAuditLog()
    await null.start()
    null.bind(conn_id="c").emit("conn.open", listener="l")
    assert null.queue_depth() == 0
    await null.aclose()


async def test_crash_during_the_first_write_of_a_segment(
    make_config: ConfigFactory, pipeline: str, log_dir: Path, audit_keys: AuditKeys
) -> None:
    config = make_config(pipeline=pipeline, file={"rotate_bytes": 4096})
    log = AuditLog.from_config(config)
    await log.start()
    for index in range(30):
        log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
    await log.aclose()
    head = read_records(log_dir)[-1]["seq"]
    torn = b'{"client_addr":"192.0.2'
    (log_dir / f"audit-{head + 1:012d}.jsonl").write_bytes(torn)
    log = AuditLog.from_config(config)
    await log.start()
    await log.aclose()
    records = read_records(log_dir)
    gap = next(record for record in records if record["event"] == "audit.gap")
    assert gap["after_seq"] == head and gap["torn_bytes"] == len(torn)
    assert (log_dir / f"audit-{head + 1:012d}.jsonl.torn").read_bytes() == torn
    assert verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key).ok


async def test_close_without_start_touches_nothing(
    make_config: ConfigFactory, pipeline: str, log_dir: Path
) -> None:
    log = AuditLog.from_config(make_config(pipeline=pipeline, sinks=[{"type": "stdout"}]))
    log.emit("conn.open", conn_id="c", listener="l", client_addr="x")
    await log.aclose()
    assert not log_dir.exists()


async def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_time_based_checkpoint_and_rotation(
    make_config: ConfigFactory, pipeline: str, log_dir: Path, audit_keys: AuditKeys
) -> None:
    config = make_config(
        pipeline=pipeline,
        checkpoint={"every_records": 1000, "every_seconds": 0.2},
        file={"rotate_seconds": 0.5},
    )
    log = AuditLog.from_config(config)
    await log.start()
    log.emit("admin.action", action="first", actor="t", result="ok")

    def interval_checkpoint_written() -> bool:
        return any(r.get("reason") == "interval" for r in read_records(log_dir, complete_only=True))

    assert await _wait_for(interval_checkpoint_written)
    assert await _wait_for(lambda: len(list(log_dir.glob("*.jsonl"))) == 2)  # rotated by age alone
    log.emit("admin.action", action="second", actor="t", result="ok")
    await log.aclose()
    first_segment, second_segment = sorted(log_dir.glob("*.jsonl"))
    assert json.loads(first_segment.read_bytes().splitlines()[-1])["event"] == "audit.checkpoint"
    assert json.loads(second_segment.read_bytes().splitlines()[0])["action"] == "second"
    assert verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key).ok


async def test_start_is_idempotent_and_ignored_after_close(
    make_config: ConfigFactory, pipeline: str, log_dir: Path
) -> None:
    log = AuditLog.from_config(make_config(pipeline=pipeline))
    await log.start()
    await log.start()
    log.emit("admin.action", action="a", actor="t", result="ok")
    await log.aclose()
    await log.start()
    assert not log.metrics().pipeline_alive
    assert [record["event"] for record in read_records(log_dir)] == ["admin.action", "audit.checkpoint"]


async def test_a_field_named_event_cannot_replace_the_event_type(
    make_config: ConfigFactory, pipeline: str, log_dir: Path
) -> None:
    log = AuditLog.from_config(make_config(pipeline=pipeline))
    await log.start()
    log.emit("admin.action", event="spoof", action="a", actor="t", result="ok")
    await log.aclose()
    assert read_records(log_dir)[0]["event"] == "admin.action"


async def test_failed_start_can_be_retried(
    make_config: ConfigFactory, pipeline: str, log_dir: Path, audit_keys: AuditKeys
) -> None:
    from audit.sinks.file import AuditDirectoryBusy

    config = make_config(pipeline=pipeline)
    holder = AuditLog.from_config(config)
    await holder.start()
    retry = AuditLog.from_config(config)
    with pytest.raises(AuditDirectoryBusy, match="own directory"):
        await retry.start()
    holder.emit("admin.action", action="one", actor="t", result="ok")
    await holder.aclose()
    await retry.start()
    retry.emit("admin.action", action="two", actor="t", result="ok")
    await retry.aclose()
    actions = [record.get("action") for record in read_records(log_dir) if record["event"] == "admin.action"]
    assert actions == ["one", "two"]
    assert verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key).ok


async def test_pipeline_failure_is_visible_and_emit_stays_safe(
    make_config: ConfigFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = AuditLog.from_config(make_config(shutdown_timeout=1, pipeline="thread"))  # patched in-process
    await log.start()

    def broken(self: FileSink, lines: list[bytes], last_seq: int) -> bytes:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(FileSink, "write", broken)
    log.emit("admin.action", action="a", actor="t", result="ok")
    assert await _wait_for(lambda: not log.metrics().pipeline_alive)
    assert log.metrics().pipeline_error == "RuntimeError: simulated bug"
    log.emit("admin.action", action="b", actor="t", result="ok")
    await log.aclose()
    assert "pipeline failed: RuntimeError: simulated bug" in capsys.readouterr().err


async def test_buffer_overflow_before_start_is_declared(
    make_config: ConfigFactory, pipeline: str, log_dir: Path, audit_keys: AuditKeys
) -> None:
    log = AuditLog.from_config(make_config(pipeline=pipeline, queue_size=16))
    for index in range(100):
        log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
    assert log.metrics().dropped == 84
    await log.start()
    await log.aclose()
    records = read_records(log_dir)
    opens = [record["conn_id"] for record in records if record["event"] == "conn.open"]
    assert opens == [f"c{index}" for index in range(16)]
    gap = next(record for record in records if record["event"] == "audit.gap")
    assert gap["reason"] == "queue_overflow" and gap["cause"] == "queue_full"
    assert gap["lost_count"] == 84 and gap["lost_by_event"] == {"conn.open": 84}
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem


CRASHING_GATEWAY = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from audit.config import load_audit_config
    from audit.log import AuditLog

    async def main() -> None:
        log = AuditLog.from_config(load_audit_config(json.loads(sys.argv[1])))
        await log.start()
        for index in range(25):
            log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
        await log.flush()
        os._exit(0)  # the gateway process dies: no aclose

    asyncio.run(main())
    """
)


async def test_pipeline_process_outlives_a_crashed_gateway(
    make_config: ConfigFactory, log_dir: Path, audit_keys: AuditKeys
) -> None:
    config = make_config(pipeline="process", checkpoint={"every_records": 10})
    subprocess.run(
        [sys.executable, "-c", CRASHING_GATEWAY, config.model_dump_json()], cwd=REPO, check=True, timeout=60
    )

    def sealed() -> bool:
        records = read_records(log_dir, complete_only=True)
        return bool(records) and records[-1].get("reason") == "shutdown"

    assert await _wait_for(sealed)
    records = read_records(log_dir)
    assert [record["conn_id"] for record in records if record["event"] == "conn.open"] == [
        f"c{index}" for index in range(25)
    ]
    report = verify_logs([log_dir], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.problem
    # nothing was lost here (flushed before the crash), but the child cannot know that
    assert [(gap["reason"], gap["after_seq"], gap["lost_count"]) for gap in report.declared_gaps] == [
        ("gateway_exited", 27, None)  # 25 events and two checkpoints
    ]
    log = AuditLog.from_config(config)  # the child released the directory when it exited
    assert await _wait_for(lambda: _starts(log))
    await log.aclose()
    assert [record["reason"] for record in read_records(log_dir) if record["event"] == "audit.gap"] == [
        "gateway_exited"
    ]


def _starts(log: AuditLog) -> bool:
    from audit.sinks.file import AuditDirectoryBusy

    try:
        log.start_sync()
    except AuditDirectoryBusy:
        return False
    return True


async def test_pipeline_process_metrics_and_flush(make_config: ConfigFactory, log_dir: Path) -> None:
    log = AuditLog.from_config(make_config(pipeline="process"))
    await log.start()
    for index in range(30):
        log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
    assert await log.flush()
    metrics = log.metrics()
    assert metrics.pipeline_alive and metrics.emitted == 30 and metrics.written == 30
    assert metrics.head_seq == 30 and metrics.file_bytes > 0 and log.queue_depth() == 0
    assert len(read_records(log_dir)) == 30
    await log.aclose()
    metrics = log.metrics()
    assert not metrics.pipeline_alive and metrics.checkpoints == 1 and metrics.head_seq == 31


@pytest.mark.parametrize("on_failure", ["continue", "stop_accepting"])
async def test_accepting_follows_write_health_with_stop_accepting(
    make_config: ConfigFactory,
    log_dir: Path,
    failing_disk: FailingDisk,
    capsys: pytest.CaptureFixture[str],
    on_failure: str,
) -> None:
    # pipeline: thread, as the failing disk is patched into this process (a real unwritable directory
    # under both pipelines: tests/audit/test_on_failure.py)
    log = AuditLog.from_config(make_config(pipeline="thread", on_failure=on_failure))
    assert log.accepting_allowed() is (on_failure == "continue")  # not started: nothing can be written
    await log.start()
    assert log.accepting_allowed()
    log.emit("conn.open", conn_id="c", listener="l", client_addr="192.0.2.1:1")
    assert await _wait_for(lambda: not log.metrics().writable)
    assert log.accepting_allowed() is (on_failure == "continue")
    assert log.metrics().accepting is log.accepting_allowed()
    failing_disk.full = False
    assert await _wait_for(lambda: log.metrics().writable)
    assert log.accepting_allowed()
    await log.aclose()
    assert log.accepting_allowed() is (on_failure == "continue")  # closed
    stopped = "listeners accept no new connections" in capsys.readouterr().err
    assert stopped is (on_failure == "stop_accepting")
    assert [record["event"] for record in read_records(log_dir)] == ["conn.open", "audit.checkpoint"]

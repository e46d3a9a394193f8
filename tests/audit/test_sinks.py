"""File sink (segments, whole-line writes, fsync policy, recovery) and follower independence."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import os
import threading
from pathlib import Path

import pytest

import audit.pipeline
from audit.config import FileSinkConfig
from audit.log import AuditLog
from audit.sinks.file import FileSink, list_segments, recover
from audit.sinks.follower import SegmentReader
from audit.sinks.stdout import StdoutSink
from tests.audit.conftest import ConfigFactory, read_records


def _sink(tmp_path: Path, **options: object) -> FileSink:
    config = FileSinkConfig.model_validate({"type": "file", "directory": str(tmp_path / "seg"), **options})
    sink = FileSink(config)
    sink.recover()
    return sink


def _line(seq: int, event: str = "conn.open", **extra: object) -> bytes:
    return json.dumps(
        {"seq": seq, "event": event, "mac": f"{seq:064x}", **extra}, separators=(",", ":")
    ).encode()


def test_segments_are_named_by_first_seq_and_rotated_files_stay_untouched(tmp_path: Path) -> None:
    sink = _sink(tmp_path, rotate_bytes=4096)
    sink.open_segment(1)
    sink.write([_line(1), _line(2)], 2)
    sink.rotate(3)
    first = sink.directory / "audit-000000000001.jsonl"
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    sink.write([_line(3)], 3)
    sink.close()
    assert [seq for seq, _ in list_segments(sink.directory, "audit")] == [1, 3]
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest
    assert os.stat(first).st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError, match="holds records"):
        sink.open_segment(1)


def test_failed_write_is_cut_back_to_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _sink(tmp_path)
    sink.open_segment(1)
    sink.write([_line(1)], 1)
    real_write = os.write
    calls = 0

    def short_then_fail(fd: int, data: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data)[:10])  # type: ignore[call-overload]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(OSError):
        sink.write([_line(2), _line(3)], 3)
    monkeypatch.undo()
    assert sink.written_seq == 1
    sink.write([_line(2)], 2)
    sink.close()
    assert [
        json.loads(line)["seq"]
        for line in (sink.directory / "audit-000000000001.jsonl").read_bytes().splitlines()
    ] == [1, 2]


@pytest.mark.parametrize(("policy", "expected"), [("always", 3), ("never", 0)])
def test_fsync_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str, expected: int) -> None:
    sink = _sink(tmp_path, fsync=policy)
    sink.open_segment(1)
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    for seq in range(1, 4):
        sink.write([_line(seq)], seq)
    sink.close()
    assert len(calls) == expected


def test_interval_fsync_happens_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = _sink(tmp_path, fsync="interval", fsync_interval=3600)
    sink.open_segment(1)
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    sink.write([_line(1)], 1)
    sink.write([_line(2)], 2)
    assert calls == [] and not sink.sync_due()
    sink.close()
    assert len(calls) == 1


def test_recover_finds_head_uncovered_tail_and_torn_bytes(tmp_path: Path) -> None:
    directory = tmp_path / "seg"
    directory.mkdir()
    (directory / "audit-000000000001.jsonl").write_bytes(
        _line(1) + b"\n" + _line(2, "audit.checkpoint", reason="rotation") + b"\n"
    )
    (directory / "audit-000000000003.jsonl").write_bytes(
        _line(3) + b"\n" + _line(4) + b"\n" + b'{"seq":5,"ev'
    )
    state = recover(directory, "audit")
    assert (state.next_seq, state.prev_mac, state.last_checkpoint_seq) == (5, bytes.fromhex(f"{4:064x}"), 2)
    assert state.unclean and state.torn_bytes == 12
    assert [seq for seq, _ in state.uncovered] == [3, 4]
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    (clean_dir / "audit-000000000001.jsonl").write_bytes(
        _line(1, "audit.checkpoint", reason="shutdown") + b"\n"
    )
    clean = recover(clean_dir, "audit")
    assert not clean.unclean and clean.next_seq == 2 and clean.uncovered == []


def test_segment_reader_reads_across_segments_and_skips_torn_lines(tmp_path: Path) -> None:
    directory = tmp_path / "seg"
    directory.mkdir()
    (directory / "audit-000000000001.jsonl").write_bytes(_line(1) + b"\n" + _line(2) + b"\n" + b'{"torn')
    (directory / "audit-000000000003.jsonl").write_bytes(_line(3) + b"\n" + _line(4) + b"\n")
    reader = SegmentReader(lambda: list_segments(directory, "audit"))
    assert [record.seq for record in reader.read(2, 10, 2)] == [2, 3]
    assert [record.seq for record in reader.read(4, 10, 10)] == [4]
    assert [record.seq for record in reader.read(1, 3, 10)] == [1, 2]
    assert reader.read(5, 10, 10) == []


class BlockingStream(io.BytesIO):
    """A stdout that blocks until released, like a pipe nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, data: object) -> int:
        self.release.wait(timeout=30)
        return super().write(bytes(data))  # type: ignore[call-overload]


async def test_blocked_and_dead_sinks_block_neither_the_file_nor_each_other(
    make_config: ConfigFactory, log_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = {
        "type": "syslog",
        "name": "dead",
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": 9,
        "reconnect_max": 0.2,
    }
    config = make_config(  # pipeline: thread, as the blocked stream is swapped in within this process
        sinks=[{"type": "stdout", "queue_size": 8}, dead], shutdown_timeout=3, pipeline="thread"
    )
    blocked = BlockingStream()
    monkeypatch.setattr(audit.pipeline, "StdoutSink", functools.partial(StdoutSink, stream=blocked))
    log = AuditLog.from_config(config)
    await log.start()
    for index in range(200):
        log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
    assert await log.flush(timeout=20)
    assert len(read_records(log_dir)) == 200  # written although both followers are stuck
    assert log.metrics().sinks[0].overflowed > 0
    blocked.release.set()
    await log.aclose()
    lines = blocked.getvalue().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [record["seq"] for record in read_records(log_dir)]
    dead_metrics = log.metrics().sinks[1]
    assert dead_metrics.connected is False and dead_metrics.errors > 0 and dead_metrics.acked_seq == 0


async def test_stdout_sink_writes_json_lines(
    make_config: ConfigFactory, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # pipeline: thread, as pytest captures this process's stdout (a pipeline process writes its own)
    log = AuditLog.from_config(make_config(sinks=[{"type": "stdout"}], pipeline="thread"))
    await log.start()
    log.emit("admin.action", action="x", actor="t", result="ok")
    await log.aclose()
    await asyncio.sleep(0)
    events = [json.loads(line)["event"] for line in capsysbinary.readouterr().out.splitlines()]
    assert events == ["admin.action", "audit.checkpoint"]


def test_one_writer_per_directory(tmp_path: Path) -> None:
    from audit.sinks.file import AuditDirectoryBusy

    first = _sink(tmp_path)
    with pytest.raises(AuditDirectoryBusy, match="own directory"):
        _sink(tmp_path)
    first.close()
    _sink(tmp_path).close()


def test_segment_holding_only_a_torn_write_is_set_aside(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    torn = sink.directory / "audit-000000000001.jsonl"
    torn.write_bytes(b'{"seq":1,"eve')
    sink.open_segment(1)
    sink.write([_line(1)], 1)
    sink.close()
    assert (sink.directory / "audit-000000000001.jsonl.torn").read_bytes() == b'{"seq":1,"eve'
    assert json.loads(torn.read_bytes())["seq"] == 1

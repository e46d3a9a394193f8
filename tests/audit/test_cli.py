"""``smgate audit verify|export|keygen`` through the argparse wiring the gateway uses."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from audit.cli import register
from audit.export import parse_time
from audit.log import AuditLog
from tests.audit.conftest import AuditKeys, ConfigFactory


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.fixture
async def written_log(make_config: ConfigFactory, log_dir: Path) -> Path:
    log = AuditLog.from_config(make_config(checkpoint={"every_records": 4}))
    await log.start()
    for index in range(10):
        log.emit(
            "http.request",
            conn_id="c",
            request_id=f"r{index}",
            method="GET",
            host="h",
            path=f"/p{index}",
            status=200,
            bytes_received=0,
            bytes_sent=10,
            duration_ms=1.0,
        )
    await log.aclose()
    return log_dir


def test_verify_ok_and_failure_exit_codes(
    written_log: Path, audit_keys: AuditKeys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(
            [
                "audit",
                "verify",
                str(written_log),
                "--key",
                str(audit_keys.key_file),
                "--cert",
                str(audit_keys.signing_cert),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "audit verify: OK" in out and "signatures verified 3" in out and "warning" not in out
    broken = tmp_path / "broken"
    shutil.copytree(written_log, broken)
    segment = next(broken.glob("*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    del lines[1]
    segment.write_bytes(b"".join(lines))
    assert run(["audit", "verify", str(broken), "--key", str(audit_keys.key_file)]) == 1
    out = capsys.readouterr().out
    assert "audit verify: FAILED: 1 of 1 chains" in out
    assert f"first bad record: {segment}:2: seq 3: records 2..2 are missing (deleted lines)" in out


def test_verify_json_summary(
    written_log: Path, audit_keys: AuditKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["audit", "verify", str(written_log), "--cert", str(audit_keys.signing_cert), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (chain,) = summary["chains"]
    assert summary["ok"] is True and summary["status"] == "OK"
    assert summary["totals"]["records"] == chain["records"] == chain["last_seq"]
    assert chain["events"]["http.request"] == 10 and chain["formats"] == {"2": chain["records"]}
    assert summary["warnings"] == [
        "record MACs were not checked (no --key): records are authenticated only through the signed "
        "checkpoints that cover them"
    ]


def test_verify_needs_key_or_cert(written_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["audit", "verify", str(written_log)]) == 2
    assert "--key" in capsys.readouterr().err


def test_export_jsonl_window_and_summary(
    written_log: Path, audit_keys: AuditKeys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        json.loads(line)
        for path in sorted(written_log.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    requests = [record for record in records if record["event"] == "http.request"]
    since, until = requests[2]["ts"], requests[5]["ts"]
    out = tmp_path / "export.jsonl"
    summary = tmp_path / "summary.json"
    code = run(
        [
            "audit",
            "export",
            str(written_log),
            "--key",
            str(audit_keys.key_file),
            "--since",
            since,
            "--until",
            until,
            "--format",
            "jsonl",
            "-o",
            str(out),
            "--summary",
            str(summary),
        ]
    )
    assert code == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [r for r in records if parse_time(since) <= parse_time(r["ts"]) < parse_time(until)]
    assert exported == expected and {r["request_id"] for r in exported if "request_id" in r} >= {
        "r2",
        "r3",
        "r4",
    }
    assert json.loads(summary.read_text())["ok"] is True
    assert "audit verify: OK" in capsys.readouterr().err


def test_export_csv_is_one_table_per_event_type(
    written_log: Path, audit_keys: AuditKeys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = ["--cert", str(audit_keys.signing_cert)]
    assert (
        run(["audit", "export", str(written_log), *cert, "--format", "csv", "--event", "http.request"]) == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["request_id"] for row in rows] == [f"r{index}" for index in range(10)]
    assert rows[0]["path"] == "/p0" and rows[0]["status"] == "200" and rows[0]["bytes_sent"] == "10"
    assert rows[0]["extra"] == "" and len(rows[0]["mac"]) == 64
    assert run(["audit", "export", str(written_log), *cert, "--format", "csv"]) == 2  # two types: where to?
    assert "-o DIRECTORY" in capsys.readouterr().err
    tables = tmp_path / "tables"
    assert run(["audit", "export", str(written_log), *cert, "--format", "csv", "-o", str(tables)]) == 0
    assert sorted(path.name for path in tables.iterdir()) == ["audit.checkpoint.csv", "http.request.csv"]
    checkpoints = list(csv.DictReader((tables / "audit.checkpoint.csv").open()))
    assert "path" not in checkpoints[0] and checkpoints[0]["records_sm3"] and checkpoints[0]["signature"]
    stored = sum(1 for path in written_log.glob("*.jsonl") for _ in path.read_bytes().splitlines())
    assert len(checkpoints) + 10 == stored


def test_export_refuses_a_log_that_does_not_verify(
    written_log: Path, audit_keys: AuditKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    segment = next(written_log.glob("*.jsonl"))
    segment.write_bytes(segment.read_bytes().replace(b"/p3", b"/p9", 1))
    assert run(["audit", "export", str(written_log), "--key", str(audit_keys.key_file)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "nothing exported" in captured.err
    assert run(["audit", "export", str(written_log), "--key", str(audit_keys.key_file), "--unverified"]) == 1
    assert "/p9" in capsys.readouterr().out


def test_export_rejects_bad_time(written_log: Path, audit_keys: AuditKeys) -> None:
    assert (
        run(["audit", "export", str(written_log), "--key", str(audit_keys.key_file), "--since", "yesterday"])
        == 2
    )


def test_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "new.key"
    assert run(["audit", "keygen", str(target)]) == 0
    assert len(bytes.fromhex(target.read_text())) == 32
    assert run(["audit", "keygen", str(target)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


async def _write_worker(make_config: ConfigFactory, directory: Path, worker: int, count: int) -> None:
    config = make_config(pipeline="thread", instance_id=f"gw-w{worker}", checkpoint={"every_records": 3})
    file_sink = config.file_sink.model_copy(update={"directory": directory / f"worker-{worker}"})
    log = AuditLog.from_config(config.model_copy(update={"sinks": (file_sink,)}))
    await log.start()
    for index in range(count):
        log.emit("admin.action", action=f"w{worker}-{index}", actor="t", result="ok")
    await log.aclose()


@pytest.fixture
async def instance_dir(make_config: ConfigFactory, tmp_path: Path) -> Path:
    """An instance directory as ``smgate serve --workers 2`` lays it out: ``worker-0/``, ``worker-1/``."""
    directory = tmp_path / "instance"
    await _write_worker(make_config, directory, 0, 4)
    await _write_worker(make_config, directory, 1, 7)
    return directory


def test_verify_finds_every_worker_chain(
    instance_dir: Path, audit_keys: AuditKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = ["--key", str(audit_keys.key_file), "--cert", str(audit_keys.signing_cert)]
    assert run(["audit", "verify", str(instance_dir), *keys]) == 0
    out = capsys.readouterr().out
    assert out.startswith("audit verify: OK\n")
    assert "  worker-0: OK  instance gw-w0  files 1  records 6" in out
    assert "  worker-1: OK  instance gw-w1  files 1  records 10" in out
    assert (
        "total: chains 2  files 2  records 16  macs verified 16  checkpoints 5  signatures verified 5" in out
    )
    given_apart = [str(instance_dir / "worker-0"), str(instance_dir / "worker-1")]
    assert run(["audit", "verify", *given_apart, *keys]) == 0
    assert "total: chains 2" in capsys.readouterr().out


def test_verify_is_never_ok_with_a_file_left_out(
    instance_dir: Path, audit_keys: AuditKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    segment = next((instance_dir / "worker-1").glob("*.jsonl"))
    shutil.copy(segment, instance_dir / "worker-1" / "old-copy.jsonl")
    assert run(["audit", "verify", str(instance_dir), "--key", str(audit_keys.key_file)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit verify: INCOMPLETE: 1 files found but not verified")
    assert f"not verified: {instance_dir / 'worker-1' / 'old-copy.jsonl'} (not a segment file name)" in out


def test_verify_fails_one_worker_and_names_it(
    instance_dir: Path, audit_keys: AuditKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    segment = next((instance_dir / "worker-1").glob("*.jsonl"))
    segment.write_bytes(segment.read_bytes().replace(b"w1-5", b"w1-9"))
    assert run(["audit", "verify", str(instance_dir), "--key", str(audit_keys.key_file)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit verify: FAILED: 1 of 2 chains")
    assert "  worker-0: OK" in out and "  worker-1: FAILED" in out
    assert f"first bad record: {segment}:7: seq 7: mac mismatch" in out


def test_verify_without_cert_warns_and_live_tail_is_not_loss(
    make_config: ConfigFactory, tmp_path: Path, audit_keys: AuditKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "live"
    config = make_config(pipeline="thread", checkpoint={"every_records": 3})
    file_sink = config.file_sink.model_copy(update={"directory": directory})
    log = AuditLog.from_config(config.model_copy(update={"sinks": (file_sink,)}))
    log.start_sync()
    for index in range(5):
        log.emit("admin.action", action=f"a{index}", actor="t", result="ok")
    try:
        assert asyncio.run(log.flush())
        assert run(["audit", "verify", str(directory), "--key", str(audit_keys.key_file), "--live"]) == 0
    finally:
        log.close_sync()
    out = capsys.readouterr().out
    assert "warning: checkpoint signatures were not checked (no --cert)" in out
    assert (
        f"warning: {directory}: live: records 5..6 are written after the last checkpoint and will be"
        " covered by the next one (MACs checked)"
    ) in out
    for alarming in ("cut off", "missing", "lost"):
        assert alarming not in out


def test_export_merges_workers_by_time(
    instance_dir: Path, audit_keys: AuditKeys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all.jsonl"
    keys = ["--cert", str(audit_keys.signing_cert), "--event", "admin.action"]
    assert run(["audit", "export", str(instance_dir), *keys, "-o", str(out)]) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == 11 and {record["instance"] for record in exported} == {"gw-w0", "gw-w1"}
    assert [record["ts"] for record in exported] == sorted(record["ts"] for record in exported)
    assert "total: chains 2" in capsys.readouterr().err

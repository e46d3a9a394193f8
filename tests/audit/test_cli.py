"""``smgate audit verify|export|keygen`` through the argparse wiring the gateway uses."""

from __future__ import annotations

import argparse
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
    assert "audit verify: OK" in out and "signatures verified: " in out
    broken = tmp_path / "broken"
    shutil.copytree(written_log, broken)
    segment = next(broken.glob("*.jsonl"))
    lines = segment.read_bytes().splitlines(keepends=True)
    del lines[1]
    segment.write_bytes(b"".join(lines))
    assert run(["audit", "verify", str(broken), "--key", str(audit_keys.key_file)]) == 1
    out = capsys.readouterr().out
    assert f"first bad record: {segment}:2: seq 3: records 2..2 are missing (deleted lines)" in out


def test_verify_json_summary(
    written_log: Path, audit_keys: AuditKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["audit", "verify", str(written_log), "--cert", str(audit_keys.signing_cert), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and summary["records"] == summary["last_seq"]
    assert summary["events"]["http.request"] == 10


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


def test_export_csv_keeps_every_field(
    written_log: Path, audit_keys: AuditKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(["audit", "export", str(written_log), "--cert", str(audit_keys.signing_cert), "--format", "csv"])
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    request = next(row for row in rows if row["event"] == "http.request")
    assert request["path"] == "/p0" and request["status"] == "200"
    assert json.loads(request["fields"])["bytes_sent"] == 10
    assert len(rows) == len(
        [1 for path in written_log.glob("*.jsonl") for _ in path.read_bytes().splitlines()]
    )


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

"""Format-1 trails (written before format 2) still verify, tampering in them is still found at the
exact record, and a format-2 pipeline continues such a chain without a break."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from audit.canonical import canonical_bytes
from audit.config import load_audit_config
from audit.keys import load_audit_key, load_verification_key
from audit.log import AuditLog
from audit.verify import verify_logs
from tls.crypto import hmac_sm3

FIXTURE = Path(__file__).parent / "data" / "format1"
KEY = load_audit_key(FIXTURE / "audit.key")
PUBLIC_KEY = load_verification_key(FIXTURE / "audit_sign.pem")


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    target = tmp_path / "log"
    shutil.copytree(FIXTURE / "log", target)
    return target


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_format_1_trail_verifies_with_key_and_certificate(trail: Path) -> None:
    report = verify_logs([trail], key=KEY, public_key=PUBLIC_KEY)
    assert report.ok, report.problem
    assert report.formats == {1: 32} and report.macs_verified == 32 and report.signatures_verified == 6


@pytest.mark.parametrize("kind", ["key", "cert"])
def test_edit_in_a_format_1_record_is_found(trail: Path, kind: str) -> None:
    segment = sorted(trail.glob("*.jsonl"))[1]
    lines = _lines(segment)
    lines[1] = lines[1].replace(b'"status":200', b'"status":201')
    segment.write_bytes(b"".join(lines))
    if kind == "key":
        report = verify_logs([trail], key=KEY)
        assert report.problem is not None and (report.problem.file, report.problem.line) == (segment, 2)
        assert report.problem.reason.startswith("mac mismatch")
    else:
        report = verify_logs([trail], public_key=PUBLIC_KEY)
        covering = next(i for i, line in enumerate(lines) if b'"audit.checkpoint"' in line and i > 1)
        assert report.problem is not None and (report.problem.file, report.problem.line) == (
            segment,
            covering + 1,
        )
        assert report.problem.reason.startswith("records_sm3 mismatch")


def test_non_canonical_bytes_in_a_format_1_record_are_found(trail: Path) -> None:
    segment = sorted(trail.glob("*.jsonl"))[0]
    lines = _lines(segment)
    lines[2] = lines[2].replace(b'"status":200', b'"status": 200')  # same value, other bytes
    segment.write_bytes(b"".join(lines))
    report = verify_logs([trail], public_key=PUBLIC_KEY)
    assert report.problem is not None and (report.problem.line, report.problem.seq) == (3, 3)
    assert report.problem.reason == "record is not in canonical form (line bytes were edited)"


async def test_a_format_2_pipeline_continues_a_format_1_chain(trail: Path) -> None:
    config = load_audit_config(
        {
            "key_file": str(FIXTURE / "audit.key"),
            "instance_id": "gw-v2",
            "pipeline": "thread",
            "sinks": [{"type": "file", "directory": str(trail), "fsync": "never"}],
        }
    )
    log = AuditLog.from_config(config)
    await log.start()
    log.emit("admin.action", action="upgrade", actor="test", result="ok")
    await log.aclose()
    report = verify_logs([trail], key=KEY)
    assert report.ok, report.problem
    assert report.formats == {1: 32, 2: 2} and report.instances == ["gw-v1", "gw-v2"]
    first_new = json.loads(_lines(sorted(trail.glob("*.jsonl"))[-1])[0])
    assert first_new["seq"] == 33 and first_new["format"] == 2


async def test_a_format_1_record_after_format_2_ones_is_a_downgrade(trail: Path) -> None:
    await test_a_format_2_pipeline_continues_a_format_1_chain(trail)
    last_segment = sorted(trail.glob("*.jsonl"))[-1]
    last = json.loads(_lines(last_segment)[-1])
    body = {"event": "admin.action", "action": "old", "actor": "t", "result": "ok", "seq": last["seq"] + 1}
    canonical = canonical_bytes(body)
    mac = hmac_sm3(KEY, bytes.fromhex(last["mac"]) + canonical)  # a valid format-1 MAC, with the key
    line = canonical[:-1] + b',"prev":"' + last["mac"].encode() + b'","mac":"' + mac.hex().encode() + b'"}\n'
    with last_segment.open("ab") as handle:
        handle.write(line)
    report = verify_logs([trail], key=KEY, live=True)
    assert report.problem is not None and report.problem.seq == last["seq"] + 1
    assert report.problem.reason == "format 1 record after format 2 records (downgraded)"

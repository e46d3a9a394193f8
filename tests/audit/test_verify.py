"""Tampering with a copy of a rotated, checkpointed log is found at the exact record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from audit.log import AuditLog
from audit.verify import verify_logs
from tests.audit.conftest import AuditKeys, ConfigFactory

#: enough for five segments, the last one long enough to cut three lines off and still hold records
EVENTS = 135


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, audit_keys: AuditKeys) -> Path:
    """A clean log of ``EVENTS`` events in several rotated segments, checkpoints every 10 records."""
    import asyncio

    from audit.config import load_audit_config

    directory = tmp_path_factory.mktemp("pristine") / "log"
    config = load_audit_config(
        {
            "key_file": str(audit_keys.key_file),
            "signing_key": str(audit_keys.signing_key),
            "instance_id": "gw",
            "checkpoint": {"every_records": 10},
            "sinks": [{"type": "file", "directory": str(directory), "rotate_bytes": 12000, "fsync": "never"}],
        }
    )

    async def write() -> None:
        log = AuditLog.from_config(config)
        await log.start()
        for index in range(EVENTS):
            log.emit("conn.open", conn_id=f"c{index}", listener="public", client_addr=f"192.0.2.{index}:443")
        await log.aclose()

    asyncio.run(write())
    return directory


@pytest.fixture
def copy(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(pristine, target)
    return target


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _seq(line: bytes) -> int:
    return int(json.loads(line)["seq"])


def _first_plain_line(path: Path) -> int:
    """Index of the first non-checkpoint line after line 3 of ``path``."""
    lines = _lines(path)
    return next(i for i in range(3, len(lines)) if b'"audit.checkpoint"' not in lines[i])


def test_pristine_log_verifies_with_key_cert_or_both(pristine: Path, audit_keys: AuditKeys) -> None:
    assert len(_segments(pristine)) >= 3
    for kwargs in (
        {"key": audit_keys.key},
        {"public_key": audit_keys.public_key},
        {"key": audit_keys.key, "public_key": audit_keys.public_key},
    ):
        report = verify_logs([pristine], **kwargs)
        assert report.ok, report.problem
        assert report.records == EVENTS + report.checkpoints
        assert report.first_seq == 1 and report.last_seq == report.records


def test_edited_field_is_found_at_that_record(copy: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[1]
    lines = _lines(path)
    index = _first_plain_line(path)
    seq = _seq(lines[index])
    lines[index] = lines[index].replace(b"192.0.2.", b"203.0.113.")
    path.write_bytes(b"".join(lines))
    report = verify_logs([copy], key=audit_keys.key)
    assert report.problem is not None
    assert (report.problem.file, report.problem.line, report.problem.seq) == (path, index + 1, seq)
    assert report.problem.reason.startswith("mac mismatch")


def test_edited_field_without_key_is_found_by_the_signed_checkpoint(
    copy: Path, audit_keys: AuditKeys
) -> None:
    path = _segments(copy)[1]
    lines = _lines(path)
    index = _first_plain_line(path)
    seq = _seq(lines[index])
    lines[index] = lines[index].replace(b'"listener":"public"', b'"listener":"admin!"')
    path.write_bytes(b"".join(lines))
    report = verify_logs([copy], public_key=audit_keys.public_key)
    assert report.problem is not None and report.problem.file == path
    covering = next(i for i in range(index, len(lines)) if b'"audit.checkpoint"' in lines[i])
    assert (report.problem.line, report.problem.seq) == (covering + 1, _seq(lines[covering]))
    checkpoint = json.loads(lines[covering])
    assert checkpoint["from_seq"] <= seq < checkpoint["seq"]
    assert report.problem.reason == (
        f"records_sm3 mismatch: records {checkpoint['from_seq']}..{checkpoint['seq'] - 1} were altered after signing"
    )


def test_duplicate_key_smuggling_is_found(copy: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[0]
    lines = _lines(path)
    index = _first_plain_line(path)
    lines[index] = lines[index].replace(b'{"client_addr"', b'{"listener":"admin","client_addr"', 1)
    path.write_bytes(b"".join(lines))
    assert json.loads(lines[index])["listener"] == "public"  # the MAC-covered value is unchanged
    report = verify_logs([copy], key=audit_keys.key)
    assert report.problem is not None and (report.problem.line, report.problem.seq) == (
        index + 1,
        _seq(lines[index]),
    )
    assert report.problem.reason == "malformed record: duplicate member 'listener'"


def test_deleted_line_is_found_at_the_next_record(copy: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[0]
    lines = _lines(path)
    index = _first_plain_line(path)
    removed = _seq(lines[index])
    del lines[index]
    path.write_bytes(b"".join(lines))
    for kwargs in ({"key": audit_keys.key}, {"public_key": audit_keys.public_key}):
        report = verify_logs([copy], **kwargs)
        assert report.problem is not None
        assert (report.problem.file, report.problem.line, report.problem.seq) == (
            path,
            index + 1,
            removed + 1,
        )
        assert report.problem.reason == f"records {removed}..{removed} are missing (deleted lines)"


def test_swapped_lines_are_found_at_the_first_swapped_line(copy: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[0]
    lines = _lines(path)
    index = _first_plain_line(path)
    lines[index], lines[index + 1] = lines[index + 1], lines[index]
    path.write_bytes(b"".join(lines))
    report = verify_logs([copy], key=audit_keys.key)
    assert report.problem is not None
    assert (report.problem.line, report.problem.seq) == (index + 1, _seq(lines[index]))
    assert report.problem.reason.startswith(f"records {_seq(lines[index + 1])}..")


def test_reordering_backwards_is_reported_out_of_order(copy: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[0]
    lines = _lines(path)
    index = _first_plain_line(path)
    lines.insert(index + 2, lines[index])  # a replayed (duplicated) record
    path.write_bytes(b"".join(lines))
    report = verify_logs([copy], key=audit_keys.key)
    assert report.problem is not None and report.problem.line == index + 3
    assert report.problem.reason.startswith("out of order")


def test_truncated_tail_is_found(copy: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[-1]
    lines = _lines(path)
    kept = lines[:-3]
    path.write_bytes(b"".join(kept))
    report = verify_logs([copy], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.problem is not None
    last_seq = _seq(kept[-1])
    assert (report.problem.file, report.problem.line, report.problem.seq) == (
        path,
        len(kept) + 1,
        last_seq + 1,
    )
    assert "without a checkpoint" in report.problem.reason
    live = verify_logs([copy], key=audit_keys.key, live=True)
    assert live.ok and live.unsealed_tail is not None and live.unsealed_tail[1] == last_seq


def test_tail_cut_mid_record_is_found(copy: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[-1]
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    lines = _lines(path)
    report = verify_logs([copy], key=audit_keys.key, live=True)
    assert report.problem is not None
    assert (report.problem.file, report.problem.line) == (path, len(lines))
    assert report.problem.seq == _seq(lines[-2]) + 1
    assert report.problem.reason.startswith("truncated record")


def test_dropped_rotated_file_is_found_at_the_next_file(copy: Path, audit_keys: AuditKeys) -> None:
    segments = _segments(copy)
    removed_first = _seq(_lines(segments[1])[0])
    segments[1].unlink()
    report = verify_logs([copy], key=audit_keys.key)
    assert report.problem is not None
    next_first = _seq(_lines(segments[2])[0])
    assert (report.problem.file, report.problem.line, report.problem.seq) == (segments[2], 1, next_first)
    assert report.problem.reason == (
        f"records {removed_first}..{next_first - 1} are missing before this file (a rotated file was removed?)"
    )


def test_dropped_first_file_is_found(copy: Path, audit_keys: AuditKeys) -> None:
    segments = _segments(copy)
    segments[0].unlink()
    report = verify_logs([copy], key=audit_keys.key)
    assert report.problem is not None
    first = _seq(_lines(segments[1])[0])
    assert (report.problem.file, report.problem.line, report.problem.seq) == (segments[1], 1, first)
    assert report.problem.reason.startswith(f"records 1..{first - 1} are missing")


def test_dropped_last_file_is_found(copy: Path, audit_keys: AuditKeys) -> None:
    segments = _segments(copy)
    segments[-1].unlink()
    report = verify_logs([copy], key=audit_keys.key)
    assert report.problem is not None and report.problem.file == segments[-2]
    assert "not a shutdown checkpoint" in report.problem.reason


def test_forged_checkpoint_fails_signature(copy: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[0]
    lines = _lines(path)
    index = next(i for i, line in enumerate(lines) if b'"audit.checkpoint"' in line)
    record = json.loads(lines[index])
    record["reason"] = "interval"
    lines[index] = json.dumps(record, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    report = verify_logs([copy], public_key=audit_keys.public_key)
    assert report.problem is not None and report.problem.line == index + 1
    assert report.problem.reason == "checkpoint signature does not verify"


def test_wrong_key_fails_at_first_record(copy: Path) -> None:
    report = verify_logs([copy], key=b"k" * 32)
    assert report.problem is not None and (report.problem.line, report.problem.seq) == (1, 1)


def test_single_segment_verifies_with_the_certificate_alone(pristine: Path, audit_keys: AuditKeys) -> None:
    middle = _segments(pristine)[1]
    strict = verify_logs([middle], public_key=audit_keys.public_key)
    assert (
        strict.problem is not None
        and strict.problem.line == 1
        and "does not start at seq 1" in strict.problem.reason
    )
    report = verify_logs([middle], public_key=audit_keys.public_key, partial=True)
    assert report.ok, report.problem
    assert report.signatures_verified >= 1


def test_files_given_out_of_order_are_sorted(pristine: Path, audit_keys: AuditKeys) -> None:
    report = verify_logs(list(reversed(_segments(pristine))), key=audit_keys.key)
    assert report.ok, report.problem


def test_malformed_line_and_empty_input(copy: Path, tmp_path: Path, audit_keys: AuditKeys) -> None:
    path = _segments(copy)[0]
    lines = _lines(path)
    lines[2] = b"not json\n"
    path.write_bytes(b"".join(lines))
    report = verify_logs([copy], key=audit_keys.key)
    assert report.problem is not None and report.problem.line == 3 and "not JSON" in report.problem.reason
    empty = verify_logs([tmp_path / "nothing-here"], key=audit_keys.key)
    assert empty.problem is not None


async def test_two_workers_chains_given_together_are_named_as_two_chains(
    make_config: ConfigFactory, tmp_path: Path, audit_keys: AuditKeys
) -> None:
    directories = []
    for worker in range(2):
        directory = tmp_path / f"worker-{worker}"
        log = AuditLog.from_config(
            make_config(file={"directory": str(directory)}, instance_id=f"gw-w{worker}")
        )
        await log.start()
        log.emit("admin.action", action=f"a{worker}", actor="t", result="ok")
        await log.aclose()
        directories.append(directory)
        assert verify_logs([directory], key=audit_keys.key, public_key=audit_keys.public_key).ok
    report = verify_logs(directories, key=audit_keys.key)
    assert report.problem is not None and report.problem.seq == 1
    assert "two chains" in report.problem.reason and "'gw-w1'" in report.problem.reason

"""audit/FORMAT.md's worked example is true: its log is the example trail byte for byte, smgate
verifies that trail, and the shell script it prints checks it with `openssl` as written (and fails
when a record was altered)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from audit.keys import load_audit_key, load_verification_key
from audit.verify import verify_logs
from tests.audit.independent import find_tool
from tests.conftest import REPO

DOC = (REPO / "audit" / "FORMAT.md").read_text(encoding="utf-8")
EXAMPLE = Path(__file__).parent / "data" / "format2-example"
SEGMENT = EXAMPLE / "log" / "audit-000000000001.jsonl"


def _block_after(marker: str, fence: str) -> str:
    return DOC.split(marker, 1)[1].split(fence, 1)[1].split("```", 1)[0]


def test_the_documented_log_is_the_example_trail() -> None:
    assert _block_after("<!-- example-log: log/audit-000000000001.jsonl -->", "```\n") == SEGMENT.read_text(
        "utf-8"
    )


def test_the_documented_sizes_are_those_of_the_example() -> None:
    lines = SEGMENT.read_bytes().splitlines(keepends=True)
    assert f"record 2 ({len(lines[1])} bytes with its LF) and checkpoint 3 ({len(lines[2])} bytes)" in DOC
    assert f"its first {len(lines[1]) - 75} bytes" in DOC
    signed = lines[2].rindex(b',"signature":"')
    assert f"its first {signed} bytes" in DOC
    assert f"first {len(lines[0]) + len(lines[1]):,} bytes" in DOC


def test_smgate_verifies_the_example() -> None:
    report = verify_logs(
        [EXAMPLE / "log"],
        key=load_audit_key(EXAMPLE / "audit.key"),
        public_key=load_verification_key(EXAMPLE / "audit_sign.pem"),
    )
    assert report.ok, report.problem
    assert (report.records, report.macs_verified, report.signatures_verified) == (4, 4, 2)


def _run_script(directory: Path) -> subprocess.CompletedProcess[str]:
    tool = find_tool("openssl")
    if isinstance(tool, str):
        pytest.skip(tool)
    script = _block_after("<!-- example-script -->", "```sh\n")
    path = f"{Path(tool.path).parent}:/usr/bin:/bin"
    return subprocess.run(
        ["bash", "-c", script], cwd=directory, capture_output=True, text=True, timeout=60, env={"PATH": path}
    )


def test_the_documented_script_checks_the_example_with_openssl(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "example")
    done = _run_script(tmp_path / "example")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "record 2 mac: OK",
        "record 2 prev = record 1 mac: OK",
        "checkpoint 3 records_sm3: OK",
        "checkpoint 3 head_mac = record 2 mac: OK",
        "Verified OK",
        "checkpoint 3 signer: OK",
        "checkpoint 3 mac: OK",
    ]


@pytest.mark.parametrize(
    ("old", "new", "failing"),
    [
        (b"page=2", b"page=3", "record 2 mac: MISMATCH"),
        (b'"reason":"count"', b'"reason":"rotation"', "Verification failure"),
    ],
)
def test_the_documented_script_fails_on_an_altered_record(
    tmp_path: Path, old: bytes, new: bytes, failing: str
) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "example")
    segment = tmp_path / "example" / "log" / SEGMENT.name
    segment.write_bytes(segment.read_bytes().replace(old, new, 1))
    done = _run_script(tmp_path / "example")
    assert done.returncode != 0 and failing in done.stdout + done.stderr

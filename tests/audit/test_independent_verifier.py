"""A trail written by a real ``smgate serve --workers 2`` process, checked by a verifier that is not
smgate (tests/audit/independent.py: FORMAT.md, plain byte slicing, ``openssl``/``gmssl`` for every
cryptographic step), then by ``smgate audit verify`` on the instance directory, with tampering in both
workers' chains found at the exact place, and exported across workers."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audit.conftest import AuditKeys
from tests.audit.independent import Line, Tool, chain_files, find_tool
from tests.audit.served import free_port, gateway_config, request, start
from tests.conftest import REPO

REQUESTS = 40


@pytest.fixture(scope="module")
def instance_dir(tmp_path_factory: pytest.TempPathFactory, audit_keys: AuditKeys) -> Path:
    """The audit directory of a two-worker gateway that served ``REQUESTS`` requests and stopped."""
    directory = tmp_path_factory.mktemp("served")
    port = free_port()
    config = gateway_config(
        directory,
        audit_keys,
        port,
        checkpoint={"every_records": 7},
        sinks=[{"type": "file", "directory": str(directory / "log"), "rotate_bytes": 8192}],
    )
    gateway = start(config, workers=2)
    try:
        statuses = [
            request(port, f"/accounts/{index}?token=secret-{index}&page=1") for index in range(REQUESTS)
        ]
    finally:
        gateway.signal(signal.SIGTERM)
        code = gateway.proc.wait(30)
    assert statuses == [200] * REQUESTS and code == 0, gateway.output()
    return directory / "log"


def _records(chain: Path) -> list[dict[str, object]]:
    return [json.loads(line) for path in chain_files(chain) for line in path.read_bytes().splitlines()]


def test_both_workers_wrote_a_chain_of_their_own(instance_dir: Path) -> None:
    chains = sorted(path.name for path in instance_dir.iterdir() if path.is_dir())
    assert chains == ["worker-0", "worker-1"]
    paths = []
    for chain in chains:
        records = _records(instance_dir / chain)
        assert {record["instance"] for record in records} == {f"gw-test-w{chain[-1]}"}
        assert len(chain_files(instance_dir / chain)) >= 2  # rotated
        paths += [record["path"] for record in records if record["event"] == "http.request"]
    assert len(paths) == REQUESTS  # every request, in one worker's chain or the other's
    assert all("secret" not in str(path) and "token=hmac-sm3:" in str(path) for path in paths)


def independent_verify(tool: Tool, chain: Path, key_hex: str, certificate: Path, workdir: Path) -> list[str]:
    """Check one chain as FORMAT.md says, with ``tool`` for the cryptography; the problems found."""
    problems = []
    lines = [Line(raw) for path in chain_files(chain) for raw in path.read_bytes().splitlines(keepends=True)]
    signer = tool.spki_sm3(certificate) if tool.kind == "openssl" else None
    previous_mac = "0" * 64
    covered: list[Line] = []
    for position, line in enumerate(lines, start=1):
        record = json.loads(line.raw)
        where = f"{chain.name} seq {record.get('seq')}"
        if record["seq"] != position or record["format"] != 2:
            problems.append(f"{where}: not record {position} of format 2")
        if record["prev"] != previous_mac:
            problems.append(f"{where}: prev does not link to the previous record")
        if tool.hmac_sm3(key_hex, line.mac_input) != line.mac:
            problems.append(f"{where}: mac mismatch")
        previous_mac = line.mac
        if record["event"] != "audit.checkpoint":
            covered.append(line)
            continue
        if tool.sm3(b"".join(item.raw for item in covered)) != record["records_sm3"] or record[
            "count"
        ] != len(covered):
            problems.append(f"{where}: records_sm3 mismatch")
        if record["head_mac"] != record["prev"]:
            problems.append(f"{where}: head_mac is not the chain head")
        if not tool.verify_sm2(certificate, line.signature, line.signed_input, workdir):
            problems.append(f"{where}: signature does not verify")
        if signer is not None and record["signer"] != signer:
            problems.append(f"{where}: signed by another key")
        covered = []
    if json.loads(lines[-1].raw).get("reason") != "shutdown":
        problems.append(f"{chain.name}: does not end with a shutdown checkpoint")
    return problems


def _tool(kind: str) -> Tool:
    tool = find_tool(kind)
    if isinstance(tool, str):
        pytest.skip(tool)
    return tool


@pytest.mark.parametrize("kind", ["openssl", "gmssl"])
def test_a_verifier_that_is_not_smgate_accepts_every_worker_chain(
    instance_dir: Path, audit_keys: AuditKeys, tmp_path: Path, kind: str
) -> None:
    tool = _tool(kind)
    key_hex = audit_keys.key_file.read_text().strip()
    for chain in ("worker-0", "worker-1"):
        assert (
            independent_verify(tool, instance_dir / chain, key_hex, audit_keys.signing_cert, tmp_path) == []
        )


def _tampered_copy(instance_dir: Path, target: Path) -> dict[str, tuple[Path, int, int]]:
    """Copy the trail and alter one record in each worker's chain: an edited status in worker-0, a
    deleted request in worker-1. Returns where each alteration is (file, line, seq)."""
    shutil.copytree(instance_dir, target)
    places = {}
    for chain, change in (("worker-0", "edit"), ("worker-1", "delete")):
        path = chain_files(target / chain)[1]
        lines = path.read_bytes().splitlines(keepends=True)
        index = next(i for i, raw in enumerate(lines) if b'"event":"http.request"' in raw and i > 0)
        seq = json.loads(lines[index])["seq"]
        if change == "edit":
            lines[index] = lines[index].replace(b'"status":200', b'"status":500')
            places[chain] = (path, index + 1, seq)
        else:
            del lines[index]
            places[chain] = (path, index + 1, seq + 1)  # found at the record after the hole
        path.write_bytes(b"".join(lines))
    return places


def test_tampering_in_both_workers_is_found_at_the_exact_place(
    instance_dir: Path, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    copy = tmp_path / "tampered"
    places = _tampered_copy(instance_dir, copy)
    for keys in (["--key", str(audit_keys.key_file)], ["--cert", str(audit_keys.signing_cert)]):
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "audit", "verify", str(copy), *keys, "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        summary = json.loads(done.stdout)
        assert summary["status"] == "FAILED"
        problems = {chain["name"]: chain["problem"] for chain in summary["chains"]}
        edited_path, edited_line, edited_seq = places["worker-0"]
        if keys[0] == "--key":
            assert problems["worker-0"]["reason"].startswith("mac mismatch")
            assert (problems["worker-0"]["file"], problems["worker-0"]["line"]) == (
                str(edited_path),
                edited_line,
            )
            assert problems["worker-0"]["seq"] == edited_seq
        else:  # found by the checkpoint that covers it
            assert problems["worker-0"]["reason"].startswith("records_sm3 mismatch: records ")
            assert (
                problems["worker-0"]["file"] == str(edited_path) and problems["worker-0"]["seq"] > edited_seq
            )
        deleted_path, deleted_line, next_seq = places["worker-1"]
        assert (problems["worker-1"]["file"], problems["worker-1"]["line"], problems["worker-1"]["seq"]) == (
            str(deleted_path),
            deleted_line,
            next_seq,
        )
        assert (
            problems["worker-1"]["reason"]
            == f"records {next_seq - 1}..{next_seq - 1} are missing (deleted lines)"
        )


def test_the_independent_verifier_finds_the_same_edits(
    instance_dir: Path, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    tool = _tool("openssl")
    copy = tmp_path / "tampered"
    places = _tampered_copy(instance_dir, copy)
    key_hex = audit_keys.key_file.read_text().strip()
    edited = independent_verify(tool, copy / "worker-0", key_hex, audit_keys.signing_cert, tmp_path)
    assert edited[0] == f"worker-0 seq {places['worker-0'][2]}: mac mismatch"
    deleted = independent_verify(tool, copy / "worker-1", key_hex, audit_keys.signing_cert, tmp_path)
    assert (
        deleted[0]
        == f"worker-1 seq {places['worker-1'][2]}: not record {places['worker-1'][2] - 1} of format 2"
    )


def test_smgate_verifies_the_instance_directory_per_worker_and_in_total(
    instance_dir: Path, audit_keys: AuditKeys
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "audit",
            "verify",
            str(instance_dir),
            "--key",
            str(audit_keys.key_file),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    lines = done.stdout.splitlines()
    assert lines[0] == "audit verify: OK"
    assert [line.split(":")[0].strip() for line in lines if line.startswith("  worker-")] == [
        "worker-0",
        "worker-1",
    ]
    records = sum(len(_records(instance_dir / chain)) for chain in ("worker-0", "worker-1"))
    assert (
        f"total: chains 2  files {sum(len(chain_files(instance_dir / c)) for c in ('worker-0', 'worker-1'))}  records {records}"
        in done.stdout
    )
    assert "warning: checkpoint signatures were not checked (no --cert)" in done.stdout


def test_export_merges_both_workers_by_time_into_one_table_per_event_type(
    instance_dir: Path, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    out = tmp_path / "tables"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "audit",
            "export",
            str(instance_dir),
            "--cert",
            str(audit_keys.signing_cert),
            "--format",
            "csv",
            "-o",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    requests = list(csv.DictReader((out / "http.request.csv").open()))
    assert len(requests) == REQUESTS and {row["instance"] for row in requests} == {"gw-test-w0", "gw-test-w1"}
    assert [row["ts"] for row in requests] == sorted(row["ts"] for row in requests)
    assert all(row["path"].startswith("/accounts/") for row in requests)
    loaded = list(csv.DictReader((out / "cert.loaded.csv").open()))
    assert loaded and all(row["path"].endswith(".pem") and row["cert.subject"] for row in loaded)

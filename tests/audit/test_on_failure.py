"""``audit.on_failure``: what the gateway does when its audit trail cannot be written.

The failure is real: the log's files are made immutable (``chattr +i``) while a ``smgate serve``
process runs, so the pipeline's writes fail with EPERM until the flag is removed. With
``stop_accepting`` the listener accepts no new connection and ``/ready`` fails until audit writes again,
and every request that was answered is in the trail afterwards, in order, with no gap."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from audit.trail import verify_trail
from tests.audit.conftest import AuditKeys
from tests.audit.served import free_port, gateway_config, request, start
from tests.gateway.process import GatewayProcess


def _chattr(flag: str, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True, check=False)


@pytest.fixture
def immutable_supported(tmp_path: Path) -> None:
    """``chattr +i`` needs the tool, CAP_LINUX_IMMUTABLE and a file system that keeps the flag."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr (e2fsprogs): cannot make the log unwritable at run time")
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    done = _chattr("+i", [probe])
    if done.returncode:
        pytest.skip(f"chattr +i refused here ({done.stderr.strip()}): needs root and ext4/xfs/btrfs")
    try:
        with pytest.raises(PermissionError), probe.open("ab") as handle:
            handle.write(b"x")
    finally:
        _chattr("-i", [probe])


@contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """The directory and every file in it immutable: appends to open files fail, nothing can be created."""
    paths = [directory, *sorted(directory.iterdir())]
    done = _chattr("+i", paths)
    assert done.returncode == 0, done.stderr
    try:
        yield
    finally:
        _chattr("-i", paths)


def _ready(gateway: GatewayProcess) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.port('admin')}/ready", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def _wait_for(predicate: object, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def _trail(log: Path) -> list[dict[str, object]]:
    return [
        json.loads(line) for path in sorted(log.glob("*.jsonl")) for line in path.read_bytes().splitlines()
    ]


@pytest.mark.parametrize("pipeline", ["process", "thread"])
def test_stop_accepting_while_the_log_is_unwritable_serves_nothing_unaudited(
    immutable_supported: None, tmp_path: Path, audit_keys: AuditKeys, pipeline: str
) -> None:
    port = free_port()
    config = gateway_config(
        tmp_path, audit_keys, port, admin=True, on_failure="stop_accepting", pipeline=pipeline
    )
    gateway = start(config)
    log = tmp_path / "log"
    answered: dict[str, int | None] = {}
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        for index in range(3):
            answered[f"/before/{index}"] = request(port, f"/before/{index}")
        assert _wait_for(lambda: sum(r["event"] == "conn.close" for r in _trail(log)) == 3)
        assert _ready(gateway) == 200
        with unwritable(log):
            # Nothing is written until a record is due, so the pipeline learns of the failure from the
            # records of the next connection; that one was accepted before, so it may be served, its
            # records waiting in memory for the disk.
            first = pool.submit(request, port, "/during/first", timeout=30)
            assert _wait_for(lambda: _ready(gateway) == 503), "audit failure never reached /ready"
            held = pool.submit(request, port, "/during/held", timeout=30)
            time.sleep(1.5)  # long enough for an accepting listener to have answered it
            assert not held.done(), "a new connection was served while audit could not write"
            assert _ready(gateway) == 503
            written = len(_trail(log))
        # the flag is gone: the pipeline's retry succeeds, the listener serves the held connection
        answered["/during/first"] = first.result()
        answered["/during/held"] = held.result()
        assert _wait_for(lambda: _ready(gateway) == 200)
        for index in range(3):
            answered[f"/after/{index}"] = request(port, f"/after/{index}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        gateway.signal(signal.SIGTERM)
        code = gateway.proc.wait(30)
    assert code == 0, gateway.output()
    assert set(answered.values()) == {200}, answered
    assert gateway.wait_for_output("file sink write failed (Operation not permitted)")
    records = _trail(log)
    assert len(records) > written  # the held records reached the disk after it recovered
    served = [record["path"] for record in records if record["event"] == "http.request"]
    assert served == list(answered), "every answered request is in the trail, in order"
    assert not [record for record in records if record["event"] == "audit.gap"]
    report = verify_trail([log], key=audit_keys.key, public_key=audit_keys.public_key)
    assert report.ok, report.summary()


def test_continue_keeps_serving_while_the_log_is_unwritable(
    immutable_supported: None, tmp_path: Path, audit_keys: AuditKeys
) -> None:
    """The default: the gateway serves on and the records wait for the disk (up to ``queue_size``)."""
    port = free_port()
    gateway = start(gateway_config(tmp_path, audit_keys, port, admin=True))
    log = tmp_path / "log"
    try:
        assert request(port, "/before") == 200
        assert _wait_for(lambda: any(r["event"] == "conn.close" for r in _trail(log)))
        with unwritable(log):
            assert request(port, "/during/0", timeout=10) == 200
            assert gateway.wait_for_output("file sink write failed (Operation not permitted)")
            statuses = [request(port, f"/during/{index}", timeout=10) for index in (1, 2)]
            assert statuses == [200, 200] and _ready(gateway) == 200
    finally:
        gateway.signal(signal.SIGTERM)
        code = gateway.proc.wait(30)
    assert code == 0, gateway.output()
    served = [record["path"] for record in _trail(log) if record["event"] == "http.request"]
    assert served == ["/before", "/during/0", "/during/1", "/during/2"]
    assert verify_trail([log], key=audit_keys.key).ok

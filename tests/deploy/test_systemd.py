"""deploy/systemd/smgate.service: systemd accepts the unit, and its commands do what they say when run
as systemd runs them: ExecReload checks the config and then reloads the running gateway with SIGHUP
(a config that does not check never reaches it); KillSignal drains and stops it within TimeoutStopSec."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.deploy.conftest import DEPLOY
from tests.examples.conftest import localized, place
from tests.gateway.process import serve
from tests.ports import free_ports

UNIT = DEPLOY / "systemd" / "smgate.service"
INSTALLED = "/opt/smgate/bin/smgate"
HERE = str(Path(sys.executable).parent / "smgate")


def service_section() -> list[tuple[str, str]]:
    """(key, value) of [Service] in order, repeated keys kept (ExecReload= twice)."""
    entries: list[tuple[str, str]] = []
    section = None
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            entries.append((key, value))
    return entries


def values(key: str) -> list[str]:
    return [value for name, value in service_section() if name == key]


def test_systemd_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: .ci/install-peers installs systemd"
    unit = tmp_path / "smgate.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, HERE))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # systemd only warns about keys it ignores


def test_stop_waits_for_drain_and_audit_flush():
    (timeout,) = values("TimeoutStopSec")
    # The defaults the unit is written for: drain_timeout 20 s, audit.shutdown_timeout 10 s.
    assert int(timeout) >= 20 + 10
    assert values("KillSignal") == ["SIGTERM"]
    assert values("KillMode") == ["mixed"]  # SIGTERM to smgate alone; it stops its workers itself


def admin_generation(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        generation: int = json.load(response)["generation"]
    return generation


def run_unit_command(line: str, main_pid: int) -> int:
    """One Exec*= line as systemd runs it: $MAINPID expanded, the installed smgate mapped to ours."""
    argv = [HERE if arg == INSTALLED else arg for arg in shlex.split(line.replace("$MAINPID", str(main_pid)))]
    return subprocess.run(argv, capture_output=True, timeout=60).returncode


def test_reload_and_stop_commands_drive_a_running_gateway(example_pki, tmp_path):
    (start,) = values("ExecStart")
    assert start.split() == [INSTALLED, "serve", "/etc/smgate/gateway.yaml"]
    config = place("edge-ingress.yaml", tmp_path, example_pki)
    listener_port, web_port, admin_port = free_ports(3)
    local = localized(config, {"edge": listener_port}, {"web": [web_port]}, admin_port)
    reloads = [line.replace("/etc/smgate/gateway.yaml", str(local)) for line in values("ExecReload")]
    gateway = serve(local)
    try:
        pid = gateway.proc.pid
        assert admin_generation(admin_port) == 1
        for line in reloads:  # systemd runs them in order and stops at the first failure
            assert run_unit_command(line, pid) == 0, line
        deadline = time.monotonic() + 20
        while admin_generation(admin_port) != 2:
            assert time.monotonic() < deadline, gateway.output()
            time.sleep(0.1)
        broken = yaml.safe_load(local.read_text())
        broken["listeners"][0]["tls"]["certificates"][0]["sign_key"] = "pki/edge_enc.key"
        local.write_text(yaml.safe_dump(broken))
        assert run_unit_command(reloads[0], pid) == 1  # the check refuses: no SIGHUP is sent
        assert admin_generation(admin_port) == 2
        (signal_name,) = values("KillSignal")
        subprocess.run(["kill", f"-{signal_name.removeprefix('SIG')}", str(pid)], check=True)
        (timeout,) = values("TimeoutStopSec")
        assert gateway.proc.wait(int(timeout)) == 0  # before systemd would resort to SIGKILL
    finally:
        gateway.kill()

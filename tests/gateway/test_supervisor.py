"""`smgate serve --workers 2` as real processes: respawn after kill -9, reload fan-out, totals across
workers on the one admin endpoint, drain on SIGTERM, crash-loop limit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import pytest
import yaml

from tests.gateway.conftest import write_config
from tests.gateway.helpers import HttpClient
from tests.gateway.process import GatewayProcess
from tests.ports import free_ports

pytestmark = pytest.mark.xdist_group("supervisor")


def _doc(port: int, admin_port: int, **extra) -> dict:
    return {
        "listeners": [
            {
                "name": "main",
                "port": port,
                "filter_chains": [{"filters": [{"name": "http_connection_manager", "route_config": "main"}]}],
            }
        ],
        "route_configs": [
            {
                "name": "main",
                "virtual_hosts": [
                    {
                        "name": "any",
                        "routes": [{"name": "ok", "direct_response": {"status": 200, "body": "ok"}}],
                    }
                ],
            }
        ],
        "admin": {"port": admin_port},
        "drain_timeout": 5,
        "logging": {"format": "json"},
        "supervisor": {"restart_backoff": 0.1, "max_restarts": 3, "restart_window": 60},
        **extra,
    }


def _admin(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _events(gw: GatewayProcess, event: str) -> list[dict]:
    out = []
    for line in gw.lines:
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def _wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _start(tmp_path, doc: dict) -> GatewayProcess:
    config = write_config(tmp_path / "gw.yaml", doc)
    return GatewayProcess(["serve", str(config), "--workers", "2"], ready_pattern="smgate supervisor ready")


async def _requests(port: int, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        client = await HttpClient.open(port)  # a new connection each: SO_REUSEPORT spreads them
        statuses.append((await client.request("GET", "/"))[0])
        await client.close()
    return statuses


def _worker_pids(admin_port: int) -> dict[int, int]:
    status, body = _admin(admin_port, "/stats")
    assert status == 200
    return {w["worker"]: w["pid"] for w in json.loads(body)["workers"]}


def _metric(admin_port: int, name: str) -> float:
    status, body = _admin(admin_port, "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


async def test_totals_respawn_and_drain(tmp_path):
    port, admin_port = free_ports(2)
    gw = await asyncio.to_thread(_start, tmp_path, _doc(port, admin_port))
    try:
        assert _admin(admin_port, "/ready")[0] == 200
        pids = _worker_pids(admin_port)
        assert len(set(pids.values())) == 2
        assert await _requests(port, 6) == [200] * 6
        connections = 'smgate_downstream_connections_total{listener="main"}'
        requests = 'smgate_requests_total{route="ok",status="200"}'
        # A worker counts a request after its response is written: wait for the last increments.
        assert await asyncio.to_thread(_wait, lambda: _metric(admin_port, requests) == 6)
        assert _metric(admin_port, connections) == 6
        stats = json.loads(_admin(admin_port, "/stats")[1])
        assert stats["metrics"]["smgate_requests_total{route=ok,status=200}"] == 6

        os.kill(pids[1], signal.SIGKILL)
        assert await asyncio.to_thread(_wait, lambda: bool(_events(gw, "worker respawned"))), gw.output()
        [exited] = _events(gw, "worker exited")
        assert exited["pid"] == pids[1] and exited["exit"] == "signal SIGKILL" and exited["respawn"] is True
        new_pids = _worker_pids(admin_port)
        assert new_pids[0] == pids[0] and new_pids[1] not in pids.values()
        assert await asyncio.to_thread(_wait, lambda: _admin(admin_port, "/ready")[0] == 200)
        # The dead worker's counts stay in the totals; the new worker adds its own.
        assert await _requests(port, 4) == [200] * 4
        assert await asyncio.to_thread(_wait, lambda: _metric(admin_port, requests) >= 10)
        assert _metric(admin_port, requests) == 10
        assert _metric(admin_port, connections) == 10
        assert _metric(admin_port, "smgate_workers_live") == 2
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output()
    assert len([e for e in _events(gw, "worker exited") if "respawn" not in e]) == 2
    assert _events(gw, "drain finished")


async def test_reload_fans_out_to_every_worker(tmp_path):
    port, admin_port = free_ports(2)
    doc = _doc(port, admin_port)
    gw = await asyncio.to_thread(_start, tmp_path, doc)
    try:
        status, body = _admin(admin_port, "/reload", "POST")
        report = json.loads(body)
        assert status == 200 and report["reloaded"] is True
        assert sorted(w["worker"] for w in report["workers"]) == [0, 1]
        assert all(w["reloaded"] for w in report["workers"])
        stats = json.loads(_admin(admin_port, "/stats")[1])
        assert [w["generation"] for w in stats["workers"]] == [2, 2]

        doc["route_configs"][0]["virtual_hosts"][0]["routes"][0]["direct_response"]["status"] = 202
        write_config(tmp_path / "gw.yaml", doc)
        gw.signal(signal.SIGHUP)
        assert await asyncio.to_thread(_wait, lambda: len(_events(gw, "config reload accepted")) >= 6)
        stats = json.loads(_admin(admin_port, "/stats")[1])
        assert [w["generation"] for w in stats["workers"]] == [3, 3]
        assert await _requests(port, 4) == [202] * 4
        sighup = [e for e in _events(gw, "config reload accepted") if e.get("process") == "supervisor"]
        assert sighup[-1]["source"] == "sighup" and len(sighup[-1]["workers"]) == 2

        (tmp_path / "gw.yaml").write_text(yaml.safe_dump({**doc, "clusters": [{"name": "x"}]}))
        status, body = _admin(admin_port, "/reload", "POST")
        report = json.loads(body)
        assert status == 400 and report["reloaded"] is False and report["workers"] == []
        assert any("endpoints" in e for e in report["errors"]), report
        # the log line is read from the supervisor's output asynchronously: wait for it
        assert await asyncio.to_thread(_wait, lambda: bool(_events(gw, "config reload rejected")))
        rejected = _events(gw, "config reload rejected")
        assert rejected[-1]["source"] == "admin_api"
        assert await _requests(port, 2) == [202] * 2  # the last good generation keeps serving
    finally:
        assert await asyncio.to_thread(gw.stop) == 0


async def test_crash_loop_stops_the_gateway(tmp_path):
    port, admin_port = free_ports(2)

    def _replaced(pid: int) -> bool:
        try:
            return _worker_pids(admin_port).get(0, pid) != pid
        except OSError:
            return False  # the supervisor is closing its admin endpoint

    gw = await asyncio.to_thread(_start, tmp_path, _doc(port, admin_port))
    try:
        for _ in range(4):
            pid = _worker_pids(admin_port)[0]
            os.kill(pid, signal.SIGKILL)
            assert await asyncio.to_thread(
                _wait, lambda pid=pid: gw.proc.poll() is not None or _replaced(pid)
            )
            if gw.proc.poll() is not None:
                break
        assert await asyncio.to_thread(gw.proc.wait, 30) == 1
    finally:
        gw.kill()
    [loop] = _events(gw, "worker crash loop; stopping the gateway")
    assert loop["worker"] == 0 and loop["restarts"] == 4

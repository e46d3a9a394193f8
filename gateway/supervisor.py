"""``smgate serve --workers N``: a supervisor process that makes N workers act as one gateway.

Workers are ``smgate serve`` processes sharing the listener ports with ``SO_REUSEPORT``; the kernel
spreads connections over them. The supervisor owns what must be one per gateway:

- **one admin endpoint** (``admin.address:port``). Each worker serves its own admin API on a Unix
  socket in the supervisor's private runtime directory (mode 0700); the supervisor answers /ready
  (every worker ready), /metrics and /stats (totals across workers), /reload (fanned out, with each
  worker's result), and forwards /config, /certs and /clusters to the first live worker.
- **metrics**: prometheus-client's multiprocess mode. Workers get ``PROMETHEUS_MULTIPROC_DIR`` (a
  directory in the runtime directory), so each metric value lives in a per-process file that the
  supervisor sums with ``MultiProcessCollector``. Counters of a worker that died stay in the sum (a
  ``kill -9`` loses no count); its live gauges are dropped (``mark_process_dead``).
- **respawn**: a worker that exits while the gateway is not stopping is started again after a
  backoff that doubles while it keeps dying young; more than ``supervisor.max_restarts`` restarts
  in ``restart_window`` seconds is a crash loop: the gateway drains and exits 1.
- **signals**: SIGHUP validates the config once, then reloads every worker (each result logged);
  SIGTERM/SIGINT drain every worker (they stop accepting, finish in-flight requests within
  ``drain_timeout``) and wait for them; SIGUSR1 is forwarded (access log reopen).

A reload is first validated here (as ``config check`` does), so a bad file is refused without any
worker being asked and the workers cannot end up on different generations because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway.admin import AdminServer
from gateway.auditing import NullAudit
from gateway.cluster import ClusterManager
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.fleet_config import SupervisorConfig
from gateway.logs.setup import announce, get_logger
from gateway.runtime import build_generation
from gateway.stats import GatewayStats, samples_json

log = get_logger("supervisor")

#: Seconds the supervisor waits beyond ``drain_timeout`` before it kills a worker that did not exit.
STOP_GRACE = 10.0
#: Seconds a new worker has to answer /ready on its control socket.
START_TIMEOUT = 60.0
_CONTROL_TIMEOUT = 30.0


@dataclass
class WorkerSlot:
    """One worker position (index 0..N-1) and the process currently filling it."""

    index: int
    control_path: Path
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: bool = False
    young_deaths: int = 0
    restarts: deque[float] = field(default_factory=deque)
    total_restarts: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


async def control_request(
    path: Path, method: str, target: str, timeout: float = _CONTROL_TIMEOUT
) -> tuple[int, bytes]:
    """One HTTP/1.1 request to a worker's admin API on its Unix socket."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method=method, target=target, headers=[("host", "worker"), ("content-length", "0")]
            )
            writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
            status, body = 0, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, bytes(body)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def validate_config(path: Path) -> GatewayConfig:
    """Load and build (not start) a generation, as ``config check`` does; raises :class:`ConfigError`."""
    config = load_config(path)
    stats, audit = GatewayStats(), NullAudit()
    clusters, _ = ClusterManager(stats, audit).build(config.clusters)
    build_generation(0, config, clusters, stats, audit)
    return config


class Supervisor:
    """Spawns, watches and respawns the workers; the gateway's one admin endpoint and signal target."""

    def __init__(
        self, config_path: Path, config: GatewayConfig, workers: int, worker_options: list[str]
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.policy: SupervisorConfig = config.supervisor
        self.worker_options = worker_options
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="smgate-"))
        self.metrics_dir = self.runtime_dir / "metrics"
        self.metrics_dir.mkdir()
        #: The host session store's key when the config names none (handed to workers over a pipe).
        self.session_key = secrets.token_bytes(16)
        self.slots = [WorkerSlot(i, self.runtime_dir / f"worker-{i}.sock") for i in range(workers)]
        self.admin: AdminServer | None = None
        self.exit_code = 0
        self._stopping = False
        self._stopped = asyncio.Event()
        self._watchers: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()

    # -- running -----------------------------------------------------------------------------------

    async def run(self) -> int:
        try:
            for slot in self.slots:
                await self._spawn(slot)
            await asyncio.gather(*(self._wait_ready(slot) for slot in self.slots))
            if self.config.admin is not None:
                self.admin = SupervisorAdminServer(self, self.config.admin.address, self.config.admin.port)
                await self.admin.start()
            self._install_signal_handlers()
            admin = f" admin={self.admin.address}:{self.admin.port}" if self.admin else ""
            log.info(
                "supervisor ready", workers=[s.pid for s in self.slots], runtime_dir=str(self.runtime_dir)
            )
            announce(f"smgate supervisor ready pid={os.getpid()} workers={len(self.slots)}{admin}")
            await self._stopped.wait()
        finally:
            await self._shutdown()
        return self.exit_code

    async def _spawn(self, slot: WorkerSlot) -> None:
        key_read, key_write = os.pipe()
        os.write(key_write, self.session_key)
        os.close(key_write)
        command = [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            str(self.config_path),
            "--workers",
            str(len(self.slots)),
            "--worker-index",
            str(slot.index),
            "--runtime-dir",
            str(self.runtime_dir),
            "--session-key-fd",
            str(key_read),
            *self.worker_options,
        ]
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir))
        with contextlib.suppress(FileNotFoundError):
            slot.control_path.unlink()
        try:
            slot.process = await asyncio.create_subprocess_exec(*command, env=env, pass_fds=(key_read,))
        finally:
            os.close(key_read)
        slot.started_at = time.monotonic()
        slot.ready = False
        task = asyncio.create_task(self._watch(slot, slot.process))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _wait_ready(self, slot: WorkerSlot) -> None:
        """Until the worker answers 200 on /ready (or exits, which its watcher handles)."""
        deadline = time.monotonic() + START_TIMEOUT
        process = slot.process
        while time.monotonic() < deadline and process is slot.process and slot.alive:
            with contextlib.suppress(OSError, TimeoutError, h11.ProtocolError):
                status, _ = await control_request(slot.control_path, "GET", "/ready", timeout=2.0)
                if status == 200:
                    slot.ready = True
                    return
            await asyncio.sleep(0.05)

    async def _watch(self, slot: WorkerSlot, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        mark_process_dead(process.pid, str(self.metrics_dir))
        slot.ready = False
        if self._stopping:
            log.info("worker exited", worker=slot.index, pid=process.pid, exit=_describe_exit(code))
            return
        log.error(
            "worker exited", worker=slot.index, pid=process.pid, exit=_describe_exit(code), respawn=True
        )
        await self._respawn(slot)

    async def _respawn(self, slot: WorkerSlot) -> None:
        now = time.monotonic()
        slot.young_deaths = slot.young_deaths + 1 if now - slot.started_at < self.policy.stable_after else 1
        slot.restarts.append(now)
        while slot.restarts and now - slot.restarts[0] > self.policy.restart_window:
            slot.restarts.popleft()
        if len(slot.restarts) > self.policy.max_restarts:
            log.critical(
                "worker crash loop; stopping the gateway",
                worker=slot.index,
                restarts=len(slot.restarts),
                window=self.policy.restart_window,
            )
            self.exit_code = 1
            await self.stop("crash_loop")
            return
        delay = min(
            self.policy.restart_backoff * 2 ** (slot.young_deaths - 1), self.policy.max_restart_backoff
        )
        await asyncio.sleep(delay)
        if self._stopping:
            return
        await self._spawn(slot)
        slot.total_restarts += 1
        await self._wait_ready(slot)
        log.info(
            "worker respawned", worker=slot.index, pid=slot.pid, backoff=round(delay, 3), ready=slot.ready
        )

    # -- signals, reload, stop -------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self._sighup()))
        loop.add_signal_handler(signal.SIGTERM, lambda: self._background(self.stop("SIGTERM")))
        loop.add_signal_handler(signal.SIGINT, lambda: self._background(self.stop("SIGINT")))
        loop.add_signal_handler(signal.SIGUSR1, lambda: self._forward(signal.SIGUSR1))

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _forward(self, signum: int) -> None:
        for slot in self.slots:
            if slot.alive and slot.process is not None:
                slot.process.send_signal(signum)

    async def _sighup(self) -> None:
        await self.reload_all("sighup")

    async def reload_all(self, source: str) -> dict[str, Any]:
        """Validate the config file once, then reload every live worker; each result is reported."""
        async with self._reload_lock:
            try:
                self.config = await asyncio.to_thread(validate_config, self.config_path)
            except ConfigError as exc:
                log.error("config reload rejected", source=source, errors=exc.errors, workers_asked=0)
                return {"reloaded": False, "errors": exc.errors, "workers": []}
            self.policy = self.config.supervisor
            live = [slot for slot in self.slots if slot.alive]
            results = await asyncio.gather(*(self._reload_worker(slot) for slot in live))
            errors = [f"worker {r['worker']} (pid {r['pid']}): {e}" for r in results for e in r["errors"]]
            accepted = bool(results) and not errors
            (log.info if accepted else log.error)(
                "config reload " + ("accepted" if accepted else "rejected"),
                source=source,
                workers=[{k: r[k] for k in ("worker", "pid", "reloaded")} for r in results],
                errors=errors or None,
            )
            return {"reloaded": accepted, "errors": errors, "workers": results}

    async def _reload_worker(self, slot: WorkerSlot) -> dict[str, Any]:
        result: dict[str, Any] = {"worker": slot.index, "pid": slot.pid}
        try:
            status, body = await control_request(slot.control_path, "POST", "/reload")
            answer = json.loads(body)
            result.update(
                reloaded=status == 200 and bool(answer.get("reloaded")), errors=answer.get("errors", [])
            )
        except (OSError, TimeoutError, ValueError, h11.ProtocolError) as exc:
            result.update(reloaded=False, errors=[f"no answer from the worker: {exc or type(exc).__name__}"])
        return result

    async def stop(self, reason: str) -> None:
        """Drain every worker (SIGTERM), wait for them, kill what is left after the grace period."""
        if self._stopping:
            return
        self._stopping = True
        timeout = self.config.drain_timeout + STOP_GRACE
        log.info(
            "drain started", reason=reason, workers=[s.pid for s in self.slots if s.alive], timeout=timeout
        )
        self._forward(signal.SIGTERM)
        live = [s.process for s in self.slots if s.alive and s.process is not None]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(p.wait() for p in live))
        except TimeoutError:
            for process in live:
                if process.returncode is None:
                    log.error("worker did not drain in time; killed", pid=process.pid)
                    process.kill()
        log.info("drain finished", reason=reason)
        self._stopped.set()

    async def _shutdown(self) -> None:
        if not self._stopping:
            await self.stop("supervisor_exit")
        if self.admin is not None:
            await self.admin.close()
        for task in list(self._watchers):
            if task is not asyncio.current_task():
                task.cancel()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    # -- AdminBackend (one endpoint for the whole gateway) -----------------------------------------

    def ready(self) -> bool:
        return not self._stopping and all(slot.alive and slot.ready for slot in self.slots)

    def metrics_registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))
        registry.register(_SupervisorCollector(self))
        return registry

    def metrics_text(self) -> bytes:
        return bytes(generate_latest(self.metrics_registry()))

    async def worker_json(self, target: str) -> list[tuple[WorkerSlot, Any]]:
        """``target`` from every live worker's admin API, as parsed JSON (workers that fail are left out)."""

        async def one(slot: WorkerSlot) -> tuple[WorkerSlot, Any] | None:
            with contextlib.suppress(OSError, TimeoutError, ValueError, h11.ProtocolError):
                status, body = await control_request(slot.control_path, "GET", target, timeout=5.0)
                if status == 200:
                    return slot, json.loads(body)
            return None

        answers = await asyncio.gather(*(one(s) for s in self.slots if s.alive))
        return [a for a in answers if a is not None]

    async def stats(self) -> dict[str, Any]:
        answers = await self.worker_json("/stats")
        return {
            "workers": [
                {
                    "worker": slot.index,
                    "pid": slot.pid,
                    "ready": slot.ready,
                    "restarts": slot.total_restarts,
                    "generation": data.get("generation"),
                    "connections_active": data.get("connections_active"),
                    "audit_queue_depth": data.get("audit_queue_depth"),
                }
                for slot, data in answers
            ],
            "connections_active": sum(int(d.get("connections_active", 0)) for _, d in answers),
            "audit_queue_depth": sum(int(d.get("audit_queue_depth", 0)) for _, d in answers),
            "metrics": samples_json(self.metrics_registry()),
        }


class _SupervisorCollector:
    """The supervisor's own figures beside the workers' sums."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> list[GaugeMetricFamily]:
        live = GaugeMetricFamily("smgate_workers_live", "Workers running now")
        live.add_metric([], sum(slot.alive for slot in self.supervisor.slots))
        restarts = GaugeMetricFamily(
            "smgate_worker_restarts", "Times each worker slot was respawned", labels=["worker"]
        )
        for slot in self.supervisor.slots:
            restarts.add_metric([str(slot.index)], slot.total_restarts)
        return [live, restarts]


class SupervisorAdminServer(AdminServer):
    """The admin API on ``admin.address:port``, answered for all workers together."""

    def __init__(self, supervisor: Supervisor, address: str, port: int) -> None:
        super().__init__(_NoBackend(), address, port)
        self.supervisor = supervisor

    async def _route(self, request: h11.Request) -> tuple[int, str, bytes]:
        path = request.target.decode("latin-1").split("?", 1)[0]
        method = request.method.decode("ascii")
        sup = self.supervisor
        if path == "/reload" and method == "POST":
            report = await sup.reload_all("admin_api")
            return _json(report, 200 if report["reloaded"] else 400)
        if method not in ("GET", "HEAD") or path == "/reload":
            return await super()._route(request)
        if path == "/ready":
            return (200, "text/plain", b"ready\n") if sup.ready() else (503, "text/plain", b"not ready\n")
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", sup.metrics_text()
        if path == "/stats":
            return _json(await sup.stats())
        if path in ("/config", "/certs", "/clusters"):
            answers = await sup.worker_json(path)
            if not answers:
                return 503, "text/plain", b"no worker answered\n"
            slot, data = answers[0]
            return _json(data if path != "/clusters" else {"worker": slot.index, "clusters": data})
        return await super()._route(request)


class _NoBackend:
    """The base class's routes are used only for errors (405/404); nothing reaches these."""

    def ready(self) -> bool:
        return False

    def stats_json(self) -> dict[str, Any]:
        return {}

    def metrics_text(self) -> bytes:
        return b""

    def config_json(self) -> dict[str, Any]:
        return {}

    def certs_json(self) -> dict[str, Any]:
        return {}

    def clusters_json(self) -> list[dict[str, object]]:
        return []

    async def admin_reload(self) -> list[str]:
        return ["reload goes through the supervisor"]


def _json(value: object, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(value, indent=2, sort_keys=True, default=str).encode()


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def run_supervisor(config_path: Path, config: GatewayConfig, workers: int, worker_options: list[str]) -> int:
    """Run the supervisor until it is stopped; the exit status (1 after a crash loop)."""
    return asyncio.run(Supervisor(config_path, config, workers, worker_options).run())


async def serve_worker_control(backend: Any, runtime_dir: Path, index: int) -> AdminServer:
    """A worker's admin API on ``<runtime_dir>/worker-<index>.sock`` (for its supervisor only)."""
    import socket

    path = runtime_dir / f"worker-{index}.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    server = AdminServer(backend, str(path), 0)
    await server.start(sock=sock)
    return server

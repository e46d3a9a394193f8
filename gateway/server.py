"""The running gateway: config generations, listeners, health checkers, admin, reload and drain.

``reload()`` validates and builds a complete new generation before touching anything; on any error the
old generation keeps serving and the reasons are returned (and audited). Listeners whose address is
unchanged keep their socket and switch to the new generation for *new* connections only.
``drain()`` stops accepting, lets in-flight exchanges finish (idle keep-alive connections close at
once) and aborts what is left after ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway import audit_events as events
from gateway import loop_errors
from gateway.admin import AdminServer
from gateway.audit_setup import LoadedCertificates
from gateway.auditing import AuditHandle, NullAudit
from gateway.certinfo import fingerprint_files, inventory, watched_files
from gateway.cluster import Cluster, ClusterManager
from gateway.config import ConfigError, GatewayConfig, load_config, parse_config, redacted
from gateway.connection import Connection
from gateway.health import HealthChecker
from gateway.listener import Listener
from gateway.logs.access_log import configure_access_logs, reopen_access_logs
from gateway.logs.setup import get_logger
from gateway.runtime import Generation, build_generation
from gateway.stats import GatewayStats

log = get_logger("gateway")

#: How often a worker under the supervisor writes its metrics for the supervisor's /metrics.
METRICS_PUBLISH_INTERVAL = 0.5


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        config_path: Path | None = None,
        audit: AuditHandle | None = None,
        reuse_port: bool = False,
        admin_enabled: bool = True,
    ) -> None:
        self.config_path = config_path
        self.stats = GatewayStats()
        self.audit: AuditHandle = audit or NullAudit()
        self.stats.set_audit_depth_source(self.audit.queue_depth)
        self.cluster_manager = ClusterManager(self.stats, self.audit)
        self.reuse_port = reuse_port
        self.admin_enabled = admin_enabled
        self.listeners: dict[str, Listener] = {}
        self.health: dict[str, HealthChecker] = {}
        self.admin: AdminServer | None = None
        self.generation: Generation | None = None
        self._pending_config = config
        #: The YAML document behind the current generation (diffs of reloads that fail validation).
        self._document: object = _read_document(config_path)
        self._started = False
        self._draining = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._publish_task: asyncio.Task[None] | None = None
        self._file_state: dict[Path, tuple[int, int]] = {}
        self._loaded_certificates = LoadedCertificates()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        config = self._pending_config
        loop_errors.install(asyncio.get_running_loop())
        configure_access_logs(config.logging.access_logs)
        clusters, _ = self.cluster_manager.build(config.clusters)
        generation = build_generation(1, config, clusters, self.stats, self.audit)
        await self.audit.start()
        for listener_cfg in config.listeners:
            listener = Listener(listener_cfg, generation, reuse_port=self.reuse_port)
            listener.bind()
            self.listeners[listener_cfg.name] = listener
        self._activate(generation, clusters)
        for listener in self.listeners.values():
            listener.start()
        if config.admin is not None and self.admin_enabled:
            self.admin = AdminServer(self, config.admin.address, config.admin.port)
            await self.admin.start()
        self._file_state = fingerprint_files(watched_files(config))
        interval = config.admin.cert_watch_interval if config.admin is not None else 5.0
        self._watch_task = asyncio.create_task(self._watch_certificates(interval))
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:
            self._publish_task = asyncio.create_task(self._publish_metrics(metrics_dir))
        self._report_certificates(config, generation.number)
        self._started = True
        for name, listener in self.listeners.items():
            events.listener_start(self.audit, name, f"{listener.config.address}:{listener.port}")
        log.info(
            "gateway started",
            generation=generation.number,
            listeners=[_listener_summary(x) for x in self.listeners.values()],
            admin=f"{self.admin.address}:{self.admin.port}" if self.admin is not None else None,
        )

    def _activate(self, generation: Generation, clusters: dict[str, Cluster]) -> None:
        old = self.cluster_manager.clusters
        self.cluster_manager.clusters = clusters
        self.generation = generation
        for name, cluster in clusters.items():
            if old.get(name) is not cluster or name not in self.health:
                checker = self.health.pop(name, None)
                if checker is not None:
                    self._background(checker.stop())
                if cluster.config.health_checks is not None:
                    self.health[name] = HealthChecker(cluster, cluster.config.health_checks)
                    self.health[name].start()
        for name in list(self.health):
            if name not in clusters:
                self._background(self.health.pop(name).stop())

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def listener_port(self, name: str) -> int:
        return self.listeners[name].port

    @property
    def connections(self) -> list[Connection]:
        return [c for listener in self.listeners.values() for c in listener.connections]

    # -- reload --------------------------------------------------------------------------------

    def _read_config(self) -> GatewayConfig:
        assert self.generation is not None
        if self.config_path is not None:
            return load_config(self.config_path)
        current = self.generation.config
        return parse_config(current.model_dump(mode="python"), Path.cwd())

    async def reload(
        self,
        config: GatewayConfig | None = None,
        source: str = "api",
        changed_files: frozenset[Path] = frozenset(),
    ) -> list[str]:
        """Apply a new config: new connections use it, and HTTP connections of the previous generation
        drain (:meth:`_retire_connections`); returns the errors (empty on success)."""
        async with self._reload_lock:
            assert self.generation is not None
            if self._draining:
                return ["the gateway is draining; reload refused"]
            new_config: GatewayConfig | None = config
            new_document = _read_document(self.config_path) if config is None else None
            try:
                if new_config is None:
                    new_config = self._read_config()
                clusters, retired = self.cluster_manager.build(new_config.clusters, changed_files)
                generation = build_generation(
                    self.generation.number + 1, new_config, clusters, self.stats, self.audit
                )
                new_listeners = self._rebind(new_config, generation)
            except ConfigError as exc:
                self.stats.reloads.inc(("rejected",))
                if new_config is not None:
                    diff = _diff(self.generation.config, new_config, changed_files)
                else:
                    diff = _document_diff(self._document, new_document)
                events.config_reload(
                    self.audit,
                    accepted=False,
                    source=source,
                    diff=diff,
                    errors=exc.errors,
                    generation=self.generation.number,
                )
                log.error(
                    "config reload rejected",
                    source=source,
                    generation=self.generation.number,
                    errors=exc.errors,
                    files=sorted(str(p) for p in changed_files) or None,
                )
                return exc.errors
            diff = _diff(self.generation.config, new_config, changed_files)
            self._document = new_document  # None when the config did not come from the file
            old_listeners = self.listeners
            for name, listener in new_listeners.items():
                if old_listeners.get(name) is listener:
                    listener.config = generation.listener(name)
                    listener.generation = generation
                else:
                    listener.start()
            for name, listener in old_listeners.items():
                if new_listeners.get(name) is not listener:
                    await listener.stop_accepting()
                    events.listener_stop(self.audit, name, "reload")
            self.listeners = new_listeners
            self._activate(generation, clusters)
            self._retire_connections(
                [
                    c
                    for listener in {*old_listeners.values(), *new_listeners.values()}
                    for c in listener.connections
                ],
                generation.number,
            )
            for cluster in retired:
                self._background(cluster.close())
            self._file_state = fingerprint_files(watched_files(new_config))
            self.stats.reloads.inc(("success",))
            events.config_reload(
                self.audit, accepted=True, source=source, diff=diff, generation=generation.number
            )
            configure_access_logs(new_config.logging.access_logs)
            log.info("config reload accepted", source=source, generation=generation.number, changes=diff)
            if changed_files:
                log.info(
                    "certificate reloaded",
                    files=sorted(str(p) for p in changed_files),
                    generation=generation.number,
                )
            for name, listener in new_listeners.items():
                if old_listeners.get(name) is not listener:
                    events.listener_start(self.audit, name, f"{listener.config.address}:{listener.port}")
            self._report_certificates(new_config, generation.number)
            return []

    def _rebind(self, config: GatewayConfig, generation: Generation) -> dict[str, Listener]:
        """Listeners for ``config``: existing ones kept when their address is unchanged, new ones bound."""
        out: dict[str, Listener] = {}
        fresh: list[Listener] = []
        for i, cfg in enumerate(config.listeners):
            old = self.listeners.get(cfg.name)
            if old is not None and (old.config.address, old.config.port) == (cfg.address, cfg.port):
                out[cfg.name] = old
                continue
            listener = Listener(cfg, generation, reuse_port=self.reuse_port)
            try:
                if old is not None and cfg.port == 0:
                    raise OSError("port 0 cannot be rebound")
                listener.bind()
            except OSError as exc:
                for bound in fresh:
                    if bound.sock is not None:
                        bound.sock.close()
                raise ConfigError([f"listeners[{i}]: cannot bind {cfg.address}:{cfg.port}: {exc}"]) from None
            fresh.append(listener)
            out[cfg.name] = listener
        return out

    async def _watch_certificates(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            assert self.generation is not None
            state = fingerprint_files(watched_files(self.generation.config))
            if state != self._file_state:
                changed = frozenset(
                    p
                    for p in state.keys() | self._file_state.keys()
                    if state.get(p) != self._file_state.get(p)
                )
                self._file_state = state
                await self.reload(source="cert_watch", changed_files=changed)

    async def _publish_metrics(self, directory: str) -> None:
        """A worker's metrics, written where the supervisor sums them: on a timer, off the request
        path, and at once (on the next loop turn) when a new label combination appears."""
        loop = asyncio.get_running_loop()
        soon: list[asyncio.Handle] = []

        def publish_now() -> None:
            soon.clear()
            self.stats.publish(directory)

        def new_series() -> None:
            if not soon:
                soon.append(loop.call_soon(publish_now))

        self.stats.new_series.callback = new_series
        while True:
            self.stats.publish(directory)
            await asyncio.sleep(METRICS_PUBLISH_INTERVAL)

    def _report_certificates(self, config: GatewayConfig, generation: int) -> None:
        """``cert.loaded`` for every certificate the generation uses that the previous one did not, then
        the expiry report
        (``cert.expiring`` inside ``cert_expiry_warning_days``, ``cert.expired`` past ``not_after``)."""
        warn_days = config.admin.cert_expiry_warning_days if config.admin else 30
        now = dt.datetime.now(dt.UTC)
        warned: set[tuple[str, str]] = set()
        certificates = inventory(config)
        changed = self._loaded_certificates.changed(certificates)
        for info in certificates:
            if info in changed:
                events.cert_loaded(self.audit, info.audit_fields(), info.role, info.file, generation)
            days = info.days_left(now)
            self.stats.cert_expiry_days.set((f"{info.role}:{info.subject}",), days)
            if days < warn_days:
                events.cert_expiring(self.audit, info.audit_fields(), info.role, days, info.file)
                if (info.subject, info.serial) not in warned:
                    warned.add((info.subject, info.serial))
                    log.warning(
                        "certificate expiring" if days > 0 else "certificate expired",
                        subject=info.subject,
                        file=info.file,
                        role=info.role,
                        days_left=round(days, 1),
                    )

    def _retire_connections(self, connections: list[Connection], current: int) -> None:
        """HTTP connections of older generations drain as on a stop, without a deadline: HTTP/1.1 closes
        now if idle, else after the response in flight; HTTP/2 sends GOAWAY and closes when its streams
        end. So routes, access rules and clusters a reload changed reach every client's next request
        (nginx's old workers and Envoy's listener drain do the same). TCP tunnels keep their
        connections (``NetworkFilter.retire_on_reload``)."""
        retired = [
            conn
            for conn in connections
            if conn.generation.number < current and any(f.retire_on_reload for f in conn.filters)
        ]
        for conn in retired:
            conn.drain()
            if conn.idle:
                conn.close()
        if retired:
            log.info("connections retired by reload", connections=len(retired), generation=current)

    # -- drain and stop ------------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        if self._draining:
            return
        self._draining = True
        assert self.generation is not None
        timeout = self.generation.config.drain_timeout if timeout is None else timeout
        log.info("drain started", connections=len(self.connections), timeout=timeout)
        for name, listener in self.listeners.items():
            events.listener_stop(self.audit, name, "drain")
            await listener.stop_accepting()
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + timeout
        closed_at: dict[int, float] = {}
        while self.connections and loop.time() < deadline:
            for conn in self.connections:
                conn.drain()
                if conn.idle and conn.id not in closed_at:
                    closed_at[conn.id] = loop.time()
                    conn.close()
                elif conn.id in closed_at and loop.time() - closed_at[conn.id] > 1.0:
                    conn.stream.abort()  # the peer never answered our close (TLS close_notify)
            await asyncio.sleep(0.05)
        aborted = len(self.connections)
        for conn in self.connections:
            conn.close_reason = "drain_timeout"
            conn.stream.abort()
        log.info("drain finished", seconds=round(loop.time() - began, 3), aborted=aborted)

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        await self.drain()
        for listener in self.listeners.values():
            await listener.close_all()
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self._publish_task is not None:
            self._publish_task.cancel()
            self.stats.publish(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        for checker in self.health.values():
            await checker.stop()
        if self.admin is not None:
            await self.admin.close()
        for cluster in self.cluster_manager.clusters.values():
            await cluster.close()
        await self.audit.aclose()
        self._stopped.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self._sighup()))
        loop.add_signal_handler(signal.SIGTERM, lambda: self._background(self._signal_stop("SIGTERM")))
        loop.add_signal_handler(signal.SIGINT, lambda: self._background(self._signal_stop("SIGINT")))
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)

    def _reopen_logs(self) -> None:
        reopen_access_logs()
        log.info("access logs reopened", signal="SIGUSR1")

    async def admin_reload(self) -> list[str]:
        errors = await self.reload(source="admin_api")
        events.admin_action(self.audit, "reload", "admin_api", "accepted" if not errors else "rejected")
        return errors

    async def _signal_stop(self, name: str) -> None:
        if not self._stopping:
            events.admin_action(self.audit, "stop", f"signal:{name}", "accepted")
            log.info("stopping", signal=name)
        await self.stop()

    async def _sighup(self) -> None:
        errors = await self.reload(source="sighup")
        events.admin_action(self.audit, "reload", "signal:SIGHUP", "accepted" if not errors else "rejected")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # -- AdminBackend --------------------------------------------------------------------------

    def ready(self) -> bool:
        return self._started and not self._draining and self.audit.accepting_allowed()

    def stats_json(self) -> dict[str, Any]:
        assert self.generation is not None
        return {
            "generation": self.generation.number,
            "connections_active": len(self.connections),
            "audit_queue_depth": self.audit.queue_depth(),
            "metrics": self.stats.as_json(),
        }

    def metrics_text(self) -> bytes:
        return self.stats.prometheus_text()

    def config_json(self) -> dict[str, Any]:
        assert self.generation is not None
        return redacted(self.generation.config)

    def certs_json(self) -> dict[str, Any]:
        assert self.generation is not None
        config = self.generation.config
        warn_days = config.admin.cert_expiry_warning_days if config.admin else 30
        now = dt.datetime.now(dt.UTC)
        certs = [
            {
                "role": i.role,
                "file": i.file,
                "subject": i.subject,
                "issuer": i.issuer,
                "serial": i.serial,
                "not_after": i.not_after.isoformat(),
                "days_left": round(i.days_left(now), 2),
                "expiring": i.days_left(now) < warn_days,
            }
            for i in inventory(config)
        ]
        return {
            "warning_days": warn_days,
            "certificates": certs,
            "expiring": [c for c in certs if c["expiring"]],
        }

    def clusters_json(self) -> list[dict[str, object]]:
        return [c.describe() for c in self.cluster_manager.clusters.values()]


_SECTIONS = ("listeners", "clusters", "route_configs")
_SETTINGS = ("admin", "audit", "drain_timeout")


def _section_diff(before: Mapping[str, object], after: Mapping[str, object]) -> dict[str, list[str]] | None:
    changes = {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),
    }
    return changes if any(changes.values()) else None


def _listener_summary(listener: Listener) -> dict[str, object]:
    cfg = listener.config
    return {
        "name": cfg.name,
        "address": f"{cfg.address}:{listener.port}",
        "protocols": [p.value for p in cfg.tls.protocols],
        "proxy_protocol": cfg.proxy_protocol is not None,
    }


def _read_document(path: Path | None) -> object:
    """The parsed YAML at ``path`` (``None`` when there is no file or it does not parse)."""
    if path is None:
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _document_diff(old: object, new: object) -> dict[str, object]:
    """The same summary as :func:`_diff`, read from raw documents (for a file that failed validation)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return {}
    out: dict[str, object] = {}
    for section in _SECTIONS:
        before, after = (
            {str(x.get("name")): x for x in (doc.get(section) or []) if isinstance(x, dict)}
            for doc in (old, new)
        )
        changes = _section_diff(before, after)
        if changes:
            out[section] = changes
    settings = sorted(k for k in _SETTINGS if old.get(k) != new.get(k))
    if settings:
        out["settings"] = settings
    return out


def _diff(
    old: GatewayConfig, new: GatewayConfig, changed_files: frozenset[Path] = frozenset()
) -> dict[str, object]:
    """Names added, removed and changed per section, other changed top-level settings and the
    certificate/key files whose content changed (for the ``config.reload`` audit record)."""
    out: dict[str, object] = {}
    for section in _SECTIONS:
        before = {item.name: item for item in getattr(old, section)}
        after = {item.name: item for item in getattr(new, section)}
        changes = _section_diff(before, after)
        if changes:
            out[section] = changes
    settings = sorted(k for k in _SETTINGS if getattr(old, k) != getattr(new, k))
    if settings:
        out["settings"] = settings
    if changed_files:
        out["files"] = sorted(str(p) for p in changed_files)
    return out

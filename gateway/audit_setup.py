"""Builds the gateway's audit handle from the ``audit:`` section of its config, and decides which
certificates a generation reports as loaded.

With ``--workers N`` each worker writes its own chain (the file sink allows one writer per directory):
worker ``i`` uses ``<directory>/worker-<i>`` and instance id ``<instance>-w<i>``; ``smgate audit verify
<directory>`` verifies them all.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from audit.config import AuditConfig, FileSinkConfig
from audit.keys import AuditKeyError
from audit.log import AuditLog
from gateway.auditing import AuditHandle, NullAudit
from gateway.certinfo import CertificateInfo
from gateway.config import ConfigError, GatewayConfig


def per_worker(config: AuditConfig, worker_index: int) -> AuditConfig:
    sinks = tuple(
        sink.model_copy(update={"directory": sink.directory / f"worker-{worker_index}"})
        if isinstance(sink, FileSinkConfig)
        else sink
        for sink in config.sinks
    )
    instance = f"{config.instance_id or socket.gethostname() or 'smgate'}-w{worker_index}"
    return config.model_copy(update={"sinks": sinks, "instance_id": instance})


def build_audit(config: GatewayConfig, worker_index: int | None = None) -> AuditHandle:
    """The audit log named by ``config.audit`` (a :class:`NullAudit` when absent)."""
    if config.audit is None:
        return NullAudit()
    audit_config = config.audit if worker_index is None else per_worker(config.audit, worker_index)
    try:
        return AuditLog.from_config(audit_config)
    except AuditKeyError as exc:
        raise ConfigError([f"audit: {exc}"]) from None


class LoadedCertificates:
    """The certificates the trail last recorded as loaded, so a reload records ``cert.loaded`` only for
    the ones that changed: a certificate (by role, file and DER content) the previous generation did
    not use. The first generation reports them all."""

    def __init__(self) -> None:
        self._current: frozenset[tuple[str, str, bytes]] = frozenset()

    def changed(self, certificates: Sequence[CertificateInfo]) -> list[CertificateInfo]:
        """Those of ``certificates`` that are new since the last call (which they then replace)."""
        previous = self._current
        self._current = frozenset((info.role, info.file, info.der) for info in certificates)
        return [info for info in certificates if (info.role, info.file, info.der) not in previous]

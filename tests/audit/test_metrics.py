from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from audit.log import AuditLog
from audit.metrics import AuditCollector
from tests.audit.conftest import ConfigFactory


async def test_collector_exposes_log_and_sink_metrics(make_config: ConfigFactory, log_dir: Path) -> None:
    log = AuditLog.from_config(make_config(sinks=[{"type": "stdout", "name": "out"}]))
    registry = CollectorRegistry()
    registry.register(AuditCollector(log.metrics))
    assert b"smgate_audit_pipeline_up 0.0" in generate_latest(registry)
    await log.start()
    for index in range(3):
        log.emit("conn.open", conn_id=f"c{index}", listener="l", client_addr="192.0.2.1:1")
    assert await log.flush()
    text = generate_latest(registry).decode()
    assert "smgate_audit_pipeline_up 1.0" in text
    assert "smgate_audit_head_seq 3.0" in text
    assert "smgate_audit_writable 1.0" in text and "smgate_audit_accepting 1.0" in text
    assert "smgate_audit_events_emitted_total 3.0" in text
    assert 'smgate_audit_sink_connected{kind="stdout",sink="out"}' in text
    await log.aclose()
    assert "smgate_audit_pipeline_up 0.0" in generate_latest(registry).decode()

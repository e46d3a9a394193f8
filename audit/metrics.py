"""Prometheus view of an ``AuditLog``: register :class:`AuditCollector` in the gateway's registry.

Values are read from :meth:`AuditLog.metrics` at scrape time, so the data path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from audit.log import AuditMetrics


class AuditCollector(Collector):
    """``registry.register(AuditCollector(audit_log.metrics))``."""

    def __init__(self, snapshot: Callable[[], AuditMetrics]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        metrics = self._snapshot()
        yield GaugeMetricFamily(
            "smgate_audit_queue_depth", "Events emitted but not yet written", value=metrics.queue_depth
        )
        yield GaugeMetricFamily(
            "smgate_audit_head_seq", "Sequence number of the last written record", value=metrics.head_seq
        )
        yield GaugeMetricFamily(
            "smgate_audit_pipeline_up",
            "1 while the audit pipeline (thread or process) runs",
            value=int(metrics.pipeline_alive),
        )
        yield GaugeMetricFamily(
            "smgate_audit_writable",
            "0 while the file sink's writes fail (the pipeline retries)",
            value=int(metrics.writable),
        )
        yield GaugeMetricFamily(
            "smgate_audit_accepting",
            "0 while on_failure: stop_accepting keeps listeners from accepting connections",
            value=int(metrics.accepting),
        )
        for name, help_text, value in (
            ("smgate_audit_events_emitted", "Events taken from the queue", metrics.emitted),
            (
                "smgate_audit_records_written",
                "Records written to the file sink (incl. checkpoints, gaps)",
                metrics.written,
            ),
            (
                "smgate_audit_events_dropped",
                "Events lost to a full queue (declared in audit.gap)",
                metrics.dropped,
            ),
            ("smgate_audit_events_after_close", "Events emitted after aclose()", metrics.dropped_after_close),
            ("smgate_audit_checkpoints", "Signed checkpoints written", metrics.checkpoints),
            ("smgate_audit_gaps", "audit.gap records written", metrics.gaps),
            ("smgate_audit_write_errors", "File sink write failures (retried)", metrics.write_errors),
            ("smgate_audit_file_bytes", "Bytes written to the file sink", metrics.file_bytes),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        lag = GaugeMetricFamily(
            "smgate_audit_sink_lag",
            "Written records the sink has not had acknowledged",
            labels=["sink", "kind"],
        )
        connected = GaugeMetricFamily(
            "smgate_audit_sink_connected", "1 if the sink's transport is up", labels=["sink", "kind"]
        )
        sent = CounterMetricFamily(
            "smgate_audit_sink_sent", "Records sent by the sink", labels=["sink", "kind"]
        )
        replayed = CounterMetricFamily(
            "smgate_audit_sink_replayed",
            "Records the sink re-read from the file sink",
            labels=["sink", "kind"],
        )
        errors = CounterMetricFamily(
            "smgate_audit_sink_errors", "Sink transport errors", labels=["sink", "kind"]
        )
        for sink in metrics.sinks:
            labels = [sink.name, sink.kind]
            lag.add_metric(labels, max(0, sink.head_seq - sink.acked_seq))
            connected.add_metric(labels, int(sink.connected))
            sent.add_metric(labels, sink.sent)
            replayed.add_metric(labels, sink.replayed_from_file)
            errors.add_metric(labels, sink.errors)
        yield from (lag, connected, sent, replayed, errors)

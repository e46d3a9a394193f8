"""Gateway metrics: one prometheus-client registry per gateway process, rendered by /metrics and /stats.

Under ``--workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` for its workers, so every value
lives in a per-process file there and the supervisor's /metrics sums them (prometheus-client's
multiprocess mode); each gauge says how (``livesum``: live workers added up, ``livemin``: the lowest).
The audit queue depth is a callback gauge, which multiprocess mode cannot read: the supervisor's
/stats adds up the workers' own figures instead.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayStats:
    """Named metrics (Envoy-like names under the ``smgate_`` prefix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections_total = Counter(
            "smgate_downstream_connections", "Accepted downstream connections", ["listener"], registry=r
        )
        self.connections_active = Gauge(
            "smgate_downstream_connections_active",
            "Open downstream connections",
            ["listener"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.handshakes = Counter(
            "smgate_handshakes",
            "Downstream handshakes by protocol, cipher suite and result",
            ["listener", "protocol", "cipher_suite", "result"],
            registry=r,
        )
        self.handshake_failures = Counter(
            "smgate_handshake_failures",
            "Failed or refused handshakes by reason",
            ["listener", "reason"],
            registry=r,
        )
        self.handshake_seconds = Histogram(
            "smgate_handshake_seconds",
            "Downstream handshake latency",
            ["protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes = Counter("smgate_bytes", "Bytes proxied", ["listener", "direction"], registry=r)
        self.requests = Counter(
            "smgate_requests", "Requests by route and response status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "smgate_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "smgate_upstream_requests",
            "Upstream attempts by cluster and result",
            ["cluster", "result"],
            registry=r,
        )
        self.upstream_retries = Counter(
            "smgate_upstream_retries", "Retries by cluster", ["cluster"], registry=r
        )
        self.upstream_connections = Counter(
            "smgate_upstream_connections", "Upstream connections opened", ["cluster", "result"], registry=r
        )
        self.upstream_healthy = Gauge(
            "smgate_upstream_endpoint_healthy",
            "1 if the endpoint is healthy and not ejected",
            ["cluster", "endpoint"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.circuit_open = Counter(
            "smgate_upstream_overflow", "Requests refused by circuit breakers", ["cluster"], registry=r
        )
        self.access_denied = Counter(
            "smgate_access_denied", "Requests refused by RBAC", ["route"], registry=r
        )
        self.reloads = Counter("smgate_config_reloads", "Config reload attempts", ["result"], registry=r)
        self.cert_expiry_days = Gauge(
            "smgate_certificate_expiry_days",
            "Days until a loaded certificate expires",
            ["certificate"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.audit_queue_depth = Gauge(
            "smgate_audit_queue_depth", "Audit events waiting", registry=r, multiprocess_mode="livesum"
        )

    def set_audit_depth_source(self, source: Callable[[], int]) -> None:
        self.audit_queue_depth.set_function(lambda: float(source()))

    def prometheus_text(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def as_json(self) -> dict[str, float]:
        """Flat ``name{label=value,...}: value`` view of every sample (for /stats)."""
        return samples_json(self.registry)


def samples_json(registry: CollectorRegistry) -> dict[str, float]:
    """Flat ``name{label=value,...}: value`` view of every sample of ``registry``."""
    out: dict[str, float] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out

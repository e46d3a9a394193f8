"""Gateway metrics: plain per-process numbers on the data path, rendered by /metrics and /stats.

The request path only adds to dictionaries keyed by label tuples (``stats.requests.inc((route,
"200"))``): no lock, no metric object per sample, nothing shared between workers. A prometheus-client
collector turns the dictionaries into metric families when /metrics or /stats asks, so the names and
labels are Prometheus' (counters gain ``_total``, histograms ``_bucket``/``_sum``/``_count``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[str, ...]


class CountSource(Protocol):
    """Something that keeps its own running counts (a connection's bytes) until it ends."""

    def counts(self) -> Iterable[tuple[Labels, float]]: ...


class Counter:
    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[Labels, float] = {}
        #: Live sources, added in at collection time, folded into ``values`` when they end.
        self.sources: set[CountSource] = set()

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def value(self, labels: Labels) -> float:
        return self.current().get(labels, 0.0)

    def track(self, source: CountSource) -> None:
        self.sources.add(source)

    def untrack(self, source: CountSource) -> None:
        self.sources.discard(source)
        for labels, amount in source.counts():
            self.inc(labels, amount)

    def current(self) -> dict[Labels, float]:
        values = dict(self.values)
        for source in self.sources:
            for labels, amount in source.counts():
                values[labels] = values.get(labels, 0.0) + amount
        return values

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self.current().items():
            family.add_metric(labels, value)
        return family


class Gauge:
    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[Labels, float] = {}
        self.source: Callable[[], float] | None = None

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def dec(self, labels: Labels, amount: float = 1.0) -> None:
        self.inc(labels, -amount)

    def family(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if self.source is not None:
            family.add_metric((), self.source())
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        return family


class Histogram:
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        buckets: tuple[float, ...] = _LATENCY_BUCKETS,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.buckets = buckets
        #: per label tuple: per-bucket counts (the last one is +Inf), then the sum
        self.values: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect.bisect_left(self.buckets, value)] += 1
        entry[1][0] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, (counts, total) in self.values.items():
            cumulative, running = [], 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                running += count
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", float(running)))
            family.add_metric(labels, cumulative, total[0])
        return family


class RouteStats:
    """One route's requests by status and their latency, updated in one call per request."""

    __slots__ = ("buckets", "by_status", "seconds", "total")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.total = 0
        self.seconds = 0.0

    def record(self, status: int, seconds: float) -> None:
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        self.buckets[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.total += 1
        self.seconds += seconds


class _RouteRequests:
    """``smgate_requests`` and ``smgate_request_seconds`` from every route's :class:`RouteStats`."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "smgate_requests", "Requests by route and response status", labels=("route", "status")
        )
        seconds = HistogramMetricFamily(
            "smgate_request_seconds", "Request latency by route", labels=("route",)
        )
        for name, route in self.routes.items():
            for status, count in route.by_status.items():
                requests.add_metric((name, str(status)), float(count))
            cumulative, running = [], 0
            for bound, count in zip((*_LATENCY_BUCKETS, float("inf")), route.buckets, strict=True):
                running += count
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", float(running)))
            seconds.add_metric((name,), cumulative, route.seconds)
        yield requests
        yield seconds


class GatewayStats:
    """Named metrics (Envoy-like names under the ``smgate_`` prefix)."""

    def __init__(self) -> None:
        self.connections_total = Counter(
            "smgate_downstream_connections", "Accepted downstream connections", ("listener",)
        )
        self.connections_active = Gauge(
            "smgate_downstream_connections_active", "Open downstream connections", ("listener",)
        )
        self.handshakes = Counter(
            "smgate_handshakes",
            "Downstream handshakes by protocol, cipher suite and result",
            ("listener", "protocol", "cipher_suite", "result"),
        )
        self.handshake_failures = Counter(
            "smgate_handshake_failures", "Failed or refused handshakes by reason", ("listener", "reason")
        )
        self.handshake_seconds = Histogram(
            "smgate_handshake_seconds", "Downstream handshake latency", ("protocol",)
        )
        self.bytes = Counter("smgate_bytes", "Bytes proxied", ("listener", "direction"))
        self._routes = _RouteRequests()
        self.upstream_requests = Counter(
            "smgate_upstream_requests", "Upstream attempts by cluster and result", ("cluster", "result")
        )
        self.upstream_retries = Counter("smgate_upstream_retries", "Retries by cluster", ("cluster",))
        self.upstream_connections = Counter(
            "smgate_upstream_connections", "Upstream connections opened", ("cluster", "result")
        )
        self.upstream_healthy = Gauge(
            "smgate_upstream_endpoint_healthy",
            "1 if the endpoint is healthy and not ejected",
            ("cluster", "endpoint"),
        )
        self.circuit_open = Counter(
            "smgate_upstream_overflow", "Requests refused by circuit breakers", ("cluster",)
        )
        self.access_denied = Counter("smgate_access_denied", "Requests refused by RBAC", ("route",))
        self.reloads = Counter("smgate_config_reloads", "Config reload attempts", ("result",))
        self.cert_expiry_days = Gauge(
            "smgate_certificate_expiry_days", "Days until a loaded certificate expires", ("certificate",)
        )
        self.audit_queue_depth = Gauge("smgate_audit_queue_depth", "Audit events waiting")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def route(self, name: str) -> RouteStats:
        """The request counters of route ``name`` (``-`` for requests no route took), kept across reloads."""
        stats = self._routes.routes.get(name)
        if stats is None:
            stats = self._routes.routes[name] = RouteStats()
        return stats

    def collect(self) -> Iterator[Metric]:
        for metric in vars(self).values():
            if isinstance(metric, Counter | Gauge | Histogram):
                yield metric.family()
        yield from self._routes.families()

    def set_audit_depth_source(self, source: Callable[[], int]) -> None:
        self.audit_queue_depth.source = lambda: float(source())

    def prometheus_text(self) -> bytes:
        return bytes(generate_latest(self.registry))

    def as_json(self) -> dict[str, float]:
        """Flat ``name{label=value,...}: value`` view of every sample (for /stats)."""
        out: dict[str, float] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

"""Gateway metrics: plain per-process numbers on the data path, rendered by /metrics and /stats.

The request path only adds to dictionaries keyed by label tuples (``stats.bytes.inc((listener,
"downstream_rx"), n)``) or calls one route's :meth:`RouteStats.record`: no lock, no metric object per
sample, nothing shared between workers. A prometheus-client collector turns the numbers into metric
families when /metrics or /stats asks, so names and labels are Prometheus' (counters gain ``_total``,
histograms ``_bucket``/``_sum``/``_count``).

Under ``--workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` and sums the workers' files with
prometheus-client's ``MultiProcessCollector``. A worker writes its figures there with
:meth:`GatewayStats.publish`, from a timer off the request path (and at exit), in the files and format
that collector reads; each gauge says how workers combine (``livesum``: added up, ``livemin``: the
lowest).
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[str, ...]


class CountSource(Protocol):
    """Something that keeps its own running counts (a connection's bytes) until it ends."""

    def counts(self) -> Iterable[tuple[Labels, float]]: ...


class NewSeries:
    """Called when a label combination first appears (a multiprocess publisher writes it out at once)."""

    __slots__ = ("callback",)

    def __init__(self) -> None:
        self.callback: Callable[[], None] | None = None

    def __call__(self) -> None:
        if self.callback is not None:
            self.callback()


class Counter:
    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...], new_series: NewSeries | None = None
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.values: dict[Labels, float] = {}
        #: Live sources, added in at collection time, folded into ``values`` when they end.
        self.sources: set[CountSource] = set()
        self.new_series = new_series or NewSeries()

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        try:
            self.values[labels] += amount
        except KeyError:
            self.values[labels] = amount
            self.new_series()

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
    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...] = (), mode: str = "livesum"
    ) -> None:
        self.name = name
        #: How the supervisor combines the workers' values (prometheus-client's multiprocess mode).
        self.mode = mode
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

    __slots__ = ("buckets", "by_status", "new_series", "seconds", "total")

    def __init__(self, new_series: NewSeries) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.total = 0
        self.seconds = 0.0
        self.new_series = new_series

    def record(self, status: int, seconds: float) -> None:
        try:
            self.by_status[status] += 1
        except KeyError:
            self.by_status[status] = 1
            self.new_series()
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
        #: Fired when any counter gains a label combination.
        self.new_series = NewSeries()
        self.connections_total = Counter(
            "smgate_downstream_connections", "Accepted downstream connections", ("listener",)
        )
        self.connections_active = Gauge(
            "smgate_downstream_connections_active", "Open downstream connections", ("listener",), "livesum"
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
        self.upstream_tlcp_dialects = Counter(
            "smgate_upstream_tlcp_dialect",
            "TLCP upstream connections by the dialect spoken and how it was chosen (profile auto)",
            ("cluster", "dialect", "source"),
        )
        self.upstream_healthy = Gauge(
            "smgate_upstream_endpoint_healthy",
            "1 if the endpoint is healthy and not ejected",
            ("cluster", "endpoint"),
            "livemin",
        )
        self.circuit_open = Counter(
            "smgate_upstream_overflow", "Requests refused by circuit breakers", ("cluster",)
        )
        self.http2_connection_errors = Counter(
            "smgate_http2_connection_errors",
            "Downstream HTTP/2 connections ended by GOAWAY for a protocol error or flood, by reason",
            ("listener", "reason"),
        )
        self.request_trailers_dropped = Counter(
            "smgate_request_trailers_dropped",
            "Requests whose trailers could not be forwarded (an HTTP/1.1 upstream request framed by "
            "Content-Length has no trailer section)",
            ("cluster",),
        )
        self.access_denied = Counter("smgate_access_denied", "Requests refused by RBAC", ("route",))
        self.reloads = Counter("smgate_config_reloads", "Config reload attempts", ("result",))
        self.cert_expiry_days = Gauge(
            "smgate_certificate_expiry_days",
            "Days until a loaded certificate expires",
            ("certificate",),
            "livemin",
        )
        self.audit_queue_depth = Gauge("smgate_audit_queue_depth", "Audit events waiting")
        for metric in vars(self).values():
            if isinstance(metric, Counter):
                metric.new_series = self.new_series
        self._published: dict[str, MmapedDict] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def route(self, name: str) -> RouteStats:
        """The request counters of route ``name`` (``-`` for requests no route took), kept across reloads."""
        stats = self._routes.routes.get(name)
        if stats is None:
            stats = self._routes.routes[name] = RouteStats(self.new_series)
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
        return samples_json(self.registry)

    def publish(self, directory: str) -> None:
        """Write every current value into this process's multiprocess files under ``directory``."""
        if self._published is None:
            self._published = {}
        modes = {m.name: m.mode for m in vars(self).values() if isinstance(m, Gauge)}
        now = time.time()
        for family in self.collect():
            prefix = family.type if family.type != "gauge" else f"gauge_{modes.get(family.name, 'livesum')}"
            mmap = self._published.get(prefix)
            if mmap is None:
                mmap = self._published[prefix] = MmapedDict(
                    os.path.join(directory, f"{prefix}_{os.getpid()}.db")
                )
            for name, labels, value in _multiprocess_samples(family):
                key = mmap_key(family.name, name, list(labels), list(labels.values()), family.documentation)
                mmap.write_value(key, value, now)


def _multiprocess_samples(family: Metric) -> Iterator[tuple[str, dict[str, str], float]]:
    """A family's samples as multiprocess files hold them: histogram buckets not cumulative, no count."""
    if family.type != "histogram":
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value
        return
    previous: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        if sample.name.endswith("_bucket"):
            series = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            yield sample.name, sample.labels, sample.value - previous.get(series, 0.0)
            previous[series] = sample.value
        elif sample.name.endswith("_sum"):
            yield sample.name, sample.labels, sample.value


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

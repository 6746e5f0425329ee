"""Prometheus metrics of one node, in a registry of its own.

Not the process-wide default registry: tests run several nodes in one process,
and each must answer `/metrics` with its own figures. The node's log is read at
scrape time (a custom collector over `Log.info()` and `Log.stats`), so the
storage engine neither imports prometheus_client nor pays for gauges it never
shows. Everything else is counted where it happens: RPCs by the gRPC
interceptor, records by the service (through the `ServiceObserver` methods
below), ACL denials and TLS failures by the security layer.

Label values are bounded: method names come from the registered services (with
a cap), status codes and ACL actions from fixed sets. Offsets, subjects and
peers never become labels; they go to logs and traces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pyproglog.log import Log, LogError
from pyproglog.observability.cluster_metrics import ClusterCollector, ClusterFigures

METRICS_PATH = "/metrics"

# Seconds. A unary produce on this kind of machine takes well under a millisecond,
# so the buckets start at 100 µs; streams can stay open for hours (+Inf).
RPC_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# An fsync past a few seconds is an outage, not a latency: same buckets, capped.
FSYNC_BUCKETS = tuple(b for b in RPC_BUCKETS if b <= 2.5)
# Records per log append: 1 for a lone unary produce, up to the group-commit cap.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 50_000)

ACL_ACTIONS = ("produce", "consume")
# Beyond this many distinct method names the rest share one label value, so a
# misbehaving interceptor further in cannot grow the series without bound.
MAX_METHODS = 64
OTHER_METHOD = "other"
UNKNOWN_METHOD = "unknown"


class NodeMetrics:
    """The metric objects of one node; also the service's `ServiceObserver`."""

    def __init__(self) -> None:
        # No `_created` series: in the text format they are one more series per
        # counter that Prometheus ignores. (A process-wide switch, hence idempotent.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpc_requests = Counter(
            "proglog_rpc_requests",
            "gRPC calls finished, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.rpc_duration = Histogram(
            "proglog_rpc_duration_seconds",
            "gRPC call duration by method (for streams: how long the stream was open)",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=r,
        )
        self.rpc_active_streams = Gauge(
            "proglog_rpc_active_streams",
            "Streaming gRPC calls in progress, by method",
            ["method"],
            registry=r,
        )
        self.produced_records = Counter(
            "proglog_produced_records", "Records appended for producers (gRPC and HTTP)", registry=r
        )
        self.produced_bytes = Counter(
            "proglog_produced_bytes", "Record value bytes appended for producers", registry=r
        )
        self.consumed_records = Counter(
            "proglog_consumed_records", "Records served to consumers (gRPC and HTTP)", registry=r
        )
        self.consumed_bytes = Counter(
            "proglog_consumed_bytes", "Record value bytes served to consumers", registry=r
        )
        self.append_batch_records = Histogram(
            "proglog_log_append_batch_records",
            "Records per log append (one group commit of concurrent produces)",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.tls_handshake_failures = Counter(
            "proglog_tls_handshake_failures",
            "TLS handshakes that failed (bad or missing client certificate, protocol errors)",
            registry=r,
        )
        self.acl_denials = Counter(
            "proglog_acl_denials", "Requests refused by the ACL, by action", ["action"], registry=r
        )
        for action in ACL_ACTIONS:
            # Present from the start at 0, so rate() sees the first denial.
            self.acl_denials.labels(action)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._methods: set[str] = set()

    # -- ServiceObserver (called by LogService on the serving loop) -------------------

    def on_produced(self, records: int, nbytes: int) -> None:
        self.produced_records.inc(records)
        self.produced_bytes.inc(nbytes)

    def on_consumed(self, records: int, nbytes: int) -> None:
        self.consumed_records.inc(records)
        self.consumed_bytes.inc(nbytes)

    def on_append_batch(self, records: int) -> None:
        self.append_batch_records.observe(records)

    # -- security hooks -----------------------------------------------------------------

    def acl_denied(self, action: str) -> None:
        self.acl_denials.labels(action if action in ACL_ACTIONS else "other").inc()

    def tls_handshake_failed(self) -> None:
        # Nothing calls this yet (grpc's C core gives Python no hook for failed
        # handshakes); it stays so the series exists, as docs/operations.md says.
        self.tls_handshake_failures.inc()

    # -- the log ----------------------------------------------------------------------

    def watch_log(self, log: Log) -> None:
        """Export the log's offsets, size and fsyncs, read at each scrape."""
        self.registry.register(LogCollector(log))

    def watch_cluster(self, figures: Callable[[], ClusterFigures]) -> None:
        """Export the node's Raft role, term, commit and per-peer lag, read at each scrape."""
        self.registry.register(ClusterCollector(figures))

    # -- helpers ------------------------------------------------------------------------

    def method_label(self, method: str) -> str:
        """The label value for a method name, bounded in number."""
        if method in self._methods:
            return method
        if len(self._methods) >= MAX_METHODS:
            return OTHER_METHOD
        self._methods.add(method)
        return method

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (text or OpenMetrics, as `accept` asks) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def add_route(self, app: Starlette) -> None:
        """Serve `GET /metrics` on `app` (the HTTP gateway)."""

        async def metrics(request: Request) -> Response:
            body, content_type = self.render(request.headers.get("accept", ""))
            return Response(body, headers={"Content-Type": content_type})

        # First, so that no route of the gateway (a catch-all, say) can shadow it.
        app.router.routes.insert(
            0, Route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
        )


class LogCollector(Collector):
    """Reads `Log.info()` and `Log.stats` when scraped."""

    def __init__(self, log: Log) -> None:
        self._log = log
        # Fed from the durations the log queues up; not registered, collected here.
        self._fsync = Histogram(
            "proglog_log_fsync_duration_seconds",
            "Duration of the log's group fsyncs",
            buckets=FSYNC_BUCKETS,
            registry=None,
        )

    def describe(self) -> Iterable[Metric]:
        # Names only: describing must not drain the queued fsync durations.
        yield from self._fsync.describe()
        yield CounterMetricFamily("proglog_log_fsyncs", "")
        for name, _ in _LOG_GAUGES:
            yield GaugeMetricFamily(name, "")

    def collect(self) -> Iterator[Metric]:
        stats = self._log.stats
        for seconds in stats.drain_sync_durations():
            self._fsync.observe(seconds)
        yield from self._fsync.collect()
        yield CounterMetricFamily(
            "proglog_log_fsyncs", "Group fsyncs of the log's active segment", value=stats.syncs
        )
        try:
            info = self._log.info()
        except LogError:  # closed while shutting down: offsets are no longer meaningful
            return
        values = {
            "proglog_log_lowest_offset": info.lowest_offset,
            "proglog_log_highest_offset": info.highest_offset,
            "proglog_log_next_offset": info.next_offset,
            "proglog_log_segments": info.segment_count,
            "proglog_log_size_bytes": info.size_bytes,
        }
        for name, doc in _LOG_GAUGES:
            yield GaugeMetricFamily(name, doc, value=values[name])


_LOG_GAUGES = (
    ("proglog_log_lowest_offset", "Lowest offset still in the log (retention moves it up)"),
    # A gauge cannot be null: empty is lowest - 1 (-1 for a new log), never a
    # record's offset; next_offset is the one always-defined figure.
    (
        "proglog_log_highest_offset",
        "Offset of the last record; lowest offset - 1 (-1 for a new log) when empty",
    ),
    ("proglog_log_next_offset", "Offset the next appended record gets"),
    ("proglog_log_segments", "Segments on disk"),
    ("proglog_log_size_bytes", "Bytes of the log's segments: store files plus used index entries"),
)

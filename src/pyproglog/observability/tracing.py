"""OpenTelemetry tracing of one node: a span per RPC, child spans for log appends and fsyncs.

Off by default. The standard variable `OTEL_TRACES_EXPORTER` turns it on: a
comma-separated list of exporter names (`console`, `otlp`, or any exporter
package's entry point name); unset, empty or `none` means off. `OTEL_SDK_DISABLED=true`
wins over everything. The rest is the SDK's own: `OTEL_SERVICE_NAME` (default
`proglog`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
`OTEL_EXPORTER_OTLP_*`, `OTEL_PROPAGATORS` (W3C trace context by default).
The spec's default exporter would be `otlp`; ours is none, because a log
service should not try to reach a collector nobody configured.

Off costs nothing on the hot path: no interceptor span code, no sync hook, no
append scope; the agent simply does not install them.

A node gets its own TracerProvider rather than the global one, so that tests
can run nodes side by side, each with an in-memory exporter. Context still
flows through the global OpenTelemetry context (contextvars), which is what
makes the log append a child of the RPC and the fsync a child of the append,
even across `asyncio.to_thread`.

Setting tracing up never stops the node: the OpenTelemetry error-handling
principle is that telemetry must not break the application, so an exporter
that cannot be loaded is logged as an error and tracing stays off.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from importlib.metadata import entry_points

import grpc
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from pyproglog.log import Log

_log = logging.getLogger("pyproglog.tracing")

TRACER_NAME = "pyproglog"
DEFAULT_SERVICE_NAME = "proglog"
APPEND_SPAN = "log.append"
FSYNC_SPAN = "log.fsync"
EXPORTER_GROUP = "opentelemetry_traces_exporter"
OTLP_HINT = "the otlp exporter needs `pip install opentelemetry-exporter-otlp`"
# One group commit can serve thousands of produce calls; link only the first few.
MAX_APPEND_LINKS = 32

# Server-side codes that mark a span as failed (OpenTelemetry RPC semantic
# conventions); the others are the client's problem, not the server's.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class TracingConfigError(Exception):
    """OTEL_* variables that name an exporter we cannot load."""


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters the environment asks for; empty means tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [n for n in names if n and n != "none"]


def _load_exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "otlp":
        protocol = environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        )
        # The same choice the SDK's auto-configuration makes for "otlp".
        name = "otlp_proto_http" if protocol.strip() == "http/protobuf" else "otlp_proto_grpc"
    found = list(entry_points(group=EXPORTER_GROUP, name=name))
    if not found:
        hint = f": {OTLP_HINT}" if name.startswith("otlp") else ""
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: no exporter named {name!r}{hint}")
    exporter = found[0].load()()
    if not isinstance(exporter, SpanExporter):
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER: {name!r} is not a span exporter")
    return exporter


def _resource(node: str) -> Resource:
    # Resource.create reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; only
    # when neither names the service do we call it "proglog".
    base = Resource.create({SERVICE_INSTANCE_ID: node})
    name = str(base.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        base = base.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return base


@contextlib.contextmanager
def _span_scope(tracer: trace.Tracer, name: str) -> Iterator[None]:
    with tracer.start_as_current_span(name):
        yield


class Tracing:
    """One node's tracing: a TracerProvider, or nothing when tracing is off."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer: trace.Tracer | None = (
            provider.get_tracer(TRACER_NAME) if provider is not None else None
        )

    @classmethod
    def from_env(cls, node: str, environ: Mapping[str, str] | None = None) -> Tracing:
        env = os.environ if environ is None else environ
        names = exporter_names(env)
        if not names:
            return cls()
        try:
            exporters = [_load_exporter(name, env) for name in names]
        except Exception as exc:  # any failure of a third-party exporter's set-up
            _log.error("tracing stays off: %s", exc)
            return cls()
        provider = TracerProvider(resource=_resource(node))
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        _log.info("tracing on: exporters %s", ", ".join(names))
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def instrument_log(self, log: Log) -> None:
        """Wrap each of the log's fsyncs in a span (a child of the append that waits on it)."""
        if self.tracer is not None:
            log.stats.sync_hook = self._fsync_scope

    def _fsync_scope(self) -> AbstractContextManager[None]:
        # The background interval syncer runs outside any trace: no orphan spans.
        if self.tracer is None or not trace.get_current_span().get_span_context().is_valid:
            return contextlib.nullcontext()
        return _span_scope(self.tracer, FSYNC_SPAN)

    # -- AppendTracer (called by LogService) -------------------------------------------

    def capture(self) -> object:
        """The producer's current span, taken in the producer's own context."""
        return trace.get_current_span()

    def append_scope(
        self, records: int, origins: Sequence[object]
    ) -> AbstractContextManager[object]:
        """A span around one log append that commits the produce calls `origins`.

        The first traced caller is the parent (so its trace shows the append and
        the fsync under the RPC); the other callers sharing the group commit are
        links.
        """
        traced = [o for o in origins if isinstance(o, trace.Span) and o.get_span_context().is_valid]
        if self.tracer is None or not traced:
            return contextlib.nullcontext()
        links = [trace.Link(s.get_span_context()) for s in traced[1 : 1 + MAX_APPEND_LINKS]]
        return self.tracer.start_as_current_span(
            APPEND_SPAN,
            context=trace.set_span_in_context(traced[0]),
            links=links,
            attributes={"proglog.records": records, "proglog.produce_calls": len(origins)},
        )

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        if self.provider is not None:
            self.provider.shutdown()


def start_rpc_span(
    tracer: trace.Tracer,
    service: str,
    method: str,
    metadata: Sequence[tuple[str, str | bytes]] | None,
) -> trace.Span:
    """A SERVER span for one call, a child of the caller's span when it sent one."""
    parent = propagate.extract(dict(metadata)) if metadata else None
    return tracer.start_span(
        f"{service}/{method}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
    )


def end_rpc_span(span: trace.Span, code: grpc.StatusCode, error: BaseException | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERROR_CODES:
        span.set_status(trace.StatusCode.ERROR, code.name)
        if error is not None and code is grpc.StatusCode.UNKNOWN:
            span.record_exception(error)
    span.end()


def trace_ids() -> tuple[str, str] | None:
    """The current trace and span id in the usual hex form, or None outside a trace."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def span_ids(span: trace.Span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")

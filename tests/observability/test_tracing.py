"""Traces: the RPC span, its log.append and log.fsync children, propagation, configuration."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.log.stats import LogStats
from pyproglog.observability.tracing import (
    APPEND_SPAN,
    EXPORTER_GROUP,
    FSYNC_SPAN,
    OTLP_HINT,
    Tracing,
)
from tests.observability.conftest import RequestLog, running_agent

# A caller's span, as a client with OpenTelemetry would send it (W3C trace context).
CLIENT_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CLIENT_SPAN = 0xB7AD6B7169203331
TRACEPARENT = (("traceparent", f"00-{CLIENT_TRACE:032x}-{CLIENT_SPAN:016x}-01"),)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider)


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_rpc_span_has_append_and_fsync_children(
    tmp_path: Path, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    async with (
        running_agent(tmp_path, tracing=tracing, sync_policy="always") as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        resp = await stub.Produce(
            log_pb2.ProduceRequest(record=log_pb2.Record(value=b"traced")), metadata=TRACEPARENT
        )
        assert resp.offset == 0
        # Unary: the span ended before the response left, so it is exported by now.
        spans = exporter.get_finished_spans()

    [rpc] = by_name(spans, "log.v1.Log/Produce")
    [append] = by_name(spans, APPEND_SPAN)
    [fsync] = by_name(spans, FSYNC_SPAN)

    assert rpc.kind is SpanKind.SERVER
    assert rpc.context is not None and append.context is not None and fsync.context is not None
    # Propagated from the caller: same trace, the caller's span as parent.
    assert rpc.context.trace_id == CLIENT_TRACE
    assert parent_id(rpc) == CLIENT_SPAN
    assert rpc.parent is not None and rpc.parent.is_remote
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.system"] == "grpc"
    assert rpc.attributes["rpc.service"] == "log.v1.Log"
    assert rpc.attributes["rpc.method"] == "Produce"
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]

    assert append.context.trace_id == CLIENT_TRACE
    assert parent_id(append) == rpc.context.span_id
    assert append.attributes is not None and append.attributes["proglog.records"] == 1

    # The fsync ran on a worker thread (sync policy always) and still nests.
    assert fsync.context.trace_id == CLIENT_TRACE
    assert parent_id(fsync) == append.context.span_id


async def test_a_call_without_trace_context_starts_a_trace(
    tmp_path: Path, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    async with (
        running_agent(tmp_path, tracing=tracing) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        records = [log_pb2.Record(value=b"a"), log_pb2.Record(value=b"b")]
        await stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=records))
        spans = exporter.get_finished_spans()
    [rpc] = by_name(spans, "log.v1.Log/ProduceBatch")
    [append] = by_name(spans, APPEND_SPAN)
    assert rpc.parent is None
    assert append.context is not None and rpc.context is not None
    assert parent_id(append) == rpc.context.span_id
    assert append.attributes is not None and append.attributes["proglog.records"] == 2
    # Default sync policy (interval): no fsync inside the call, and the background
    # syncer does not start traces of its own.
    assert by_name(spans, FSYNC_SPAN) == []


async def test_produce_stream_appends_nest_under_the_stream_span(
    tmp_path: Path, tracing: Tracing, exporter: InMemorySpanExporter, request_log: RequestLog
) -> None:
    async with (
        running_agent(tmp_path, tracing=tracing) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        call = stub.ProduceStream(metadata=TRACEPARENT)
        await call.write(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"1")))
        assert (await call.read()).offset == 0
        await call.write(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"2")))
        assert (await call.read()).offset == 1
        await call.done_writing()
        assert await call.code() is grpc.StatusCode.OK
        await request_log.wait_for("ProduceStream", "OK")
        spans = exporter.get_finished_spans()
    [rpc] = by_name(spans, "log.v1.Log/ProduceStream")
    appends = by_name(spans, APPEND_SPAN)
    assert rpc.context is not None and rpc.context.trace_id == CLIENT_TRACE
    assert len(appends) == 2
    assert all(parent_id(a) == rpc.context.span_id for a in appends)


async def test_failed_call_span_carries_the_status_code(
    tmp_path: Path, tracing: Tracing, exporter: InMemorySpanExporter, request_log: RequestLog
) -> None:
    async with (
        running_agent(tmp_path, tracing=tracing) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Consume(log_pb2.ConsumeRequest(offset=7), metadata=TRACEPARENT)
        line = await request_log.wait_for("Consume", "OUT_OF_RANGE")
        spans = exporter.get_finished_spans()
    [rpc] = by_name(spans, "log.v1.Log/Consume")
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OUT_OF_RANGE.value[0]
    # A client's mistake, not a server failure (OpenTelemetry RPC conventions).
    assert rpc.status.status_code is StatusCode.UNSET
    # The request log line names the trace, so logs and traces can be joined.
    assert getattr(line, "trace_id", None) == f"{CLIENT_TRACE:032x}"
    assert getattr(line, "offset", None) == 7


async def test_tracing_is_off_by_default_and_installs_nothing(tmp_path: Path) -> None:
    assert not Tracing.from_env("n", {}).enabled
    async with running_agent(tmp_path, tracing=Tracing.from_env("n", {})) as node:
        assert not node.tracing.enabled
        assert node.log is not None
        assert node.log.stats.sync_hook is LogStats().sync_hook
        assert node.service is not None and node.service._tracer is None


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": ""},
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"},
    ],
)
def test_environment_that_turns_tracing_off(environ: dict[str, str]) -> None:
    assert not Tracing.from_env("n", environ).enabled


def test_console_exporter_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    tracing = Tracing.from_env("node-7", {"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert tracing.enabled and tracing.provider is not None
        attrs = tracing.provider.resource.attributes
        assert attrs["service.name"] == "proglog"
        assert attrs["service.instance.id"] == "node-7"
    finally:
        tracing.shutdown()


def test_service_name_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "log-east")
    tracing = Tracing.from_env("n", {"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert tracing.provider is not None
        assert tracing.provider.resource.attributes["service.name"] == "log-east"
    finally:
        tracing.shutdown()


def test_missing_otlp_exporter_leaves_tracing_off_with_a_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if list(entry_points(group=EXPORTER_GROUP, name="otlp_proto_grpc")):
        pytest.skip("opentelemetry-exporter-otlp is installed")
    with caplog.at_level(logging.ERROR, logger="pyproglog.tracing"):
        tracing = Tracing.from_env("n", {"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.enabled
    assert OTLP_HINT in caplog.text

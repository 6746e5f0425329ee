"""Prometheus metrics of a real node, scraped over HTTP and parsed with prometheus_client."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.observability.metrics import MAX_METHODS, OTHER_METHOD, NodeMetrics
from tests.observability.conftest import RequestLog, delta, running_agent, scrape, value


def rec(value_: bytes) -> log_pb2.Record:
    return log_pb2.Record(value=value_)


async def test_produce_and_consume_move_counters_by_the_right_amounts(tmp_path: Path) -> None:
    # sync policy always: every append fsyncs once, so the fsync figures are exact.
    async with (
        running_agent(tmp_path, sync_policy="always") as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        before = await scrape(node.http_url)

        await stub.Produce(log_pb2.ProduceRequest(record=rec(b"x" * 10)))
        await stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=[rec(b"y" * 100)] * 5))
        consumed = await stub.Consume(log_pb2.ConsumeRequest(offset=0))
        fetched = await stub.Fetch(log_pb2.FetchRequest(offset=0, max_records=100))
        assert consumed.record.value == b"x" * 10
        assert len(fetched.records) == 6

        after = await scrape(node.http_url)

    d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
    assert d("proglog_produced_records_total") == 6
    assert d("proglog_produced_bytes_total") == 10 + 5 * 100
    assert d("proglog_consumed_records_total") == 1 + 6
    assert d("proglog_consumed_bytes_total") == 10 + (10 + 5 * 100)

    for method in ("Produce", "ProduceBatch", "Consume", "Fetch"):
        assert d("proglog_rpc_requests_total", method=method, code="OK") == 1, method
        assert d("proglog_rpc_duration_seconds_count", method=method) == 1, method
        assert d("proglog_rpc_duration_seconds_sum", method=method) > 0, method
        assert d("proglog_rpc_duration_seconds_bucket", method=method, le="+Inf") == 1

    # Two appends, of 1 and 5 records (sequential calls: no group commit to merge them).
    assert d("proglog_log_append_batch_records_count") == 2
    assert d("proglog_log_append_batch_records_sum") == 6
    assert d("proglog_log_append_batch_records_bucket", le="1.0") == 1
    assert d("proglog_log_append_batch_records_bucket", le="2.0") == 1
    assert d("proglog_log_append_batch_records_bucket", le="5.0") == 2

    assert d("proglog_log_fsyncs_total") == 2
    assert d("proglog_log_fsync_duration_seconds_count") == 2
    assert d("proglog_log_fsync_duration_seconds_bucket", le="+Inf") == 2

    assert value(after, "proglog_log_lowest_offset") == 0
    assert value(after, "proglog_log_highest_offset") == 5
    assert value(after, "proglog_log_next_offset") == 6
    assert value(after, "proglog_log_segments") == 1
    assert value(after, "proglog_log_size_bytes") > 6 * 10

    # Every series of ours: proglog_ prefix, _total counters, base units (_seconds, _bytes).
    def hist(name: str) -> set[str]:
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}

    assert {name for name, _ in after if name.startswith("proglog_")} == {
        "proglog_rpc_requests_total",
        *hist("proglog_rpc_duration_seconds"),
        "proglog_produced_records_total",
        "proglog_produced_bytes_total",
        "proglog_consumed_records_total",
        "proglog_consumed_bytes_total",
        *hist("proglog_log_append_batch_records"),
        "proglog_log_fsyncs_total",
        *hist("proglog_log_fsync_duration_seconds"),
        "proglog_log_lowest_offset",
        "proglog_log_highest_offset",
        "proglog_log_next_offset",
        "proglog_log_segments",
        "proglog_log_size_bytes",
        "proglog_tls_handshake_failures_total",
        "proglog_acl_denials_total",
    }
    assert {labels for name, labels in after if name == "proglog_acl_denials_total"} == {
        (("action", "consume"),),
        (("action", "produce"),),
    }


async def test_log_gauges_match_log_info(tmp_path: Path) -> None:
    async with (
        running_agent(tmp_path, segment_max_store_bytes=4096, max_record_bytes=1024) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        for _ in range(5):  # 5 x 1 KiB batches roll segments
            await stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=[rec(b"z" * 100)] * 10))
        samples = await scrape(node.http_url)
        assert node.log is not None
        info = node.log.info()
    assert info.segment_count > 1
    assert value(samples, "proglog_log_segments") == info.segment_count
    assert value(samples, "proglog_log_size_bytes") == info.size_bytes
    assert value(samples, "proglog_log_highest_offset") == info.highest_offset == 49
    assert value(samples, "proglog_log_next_offset") == info.next_offset


async def test_failed_and_unknown_calls_are_counted_by_status(
    tmp_path: Path, request_log: RequestLog
) -> None:
    async with (
        running_agent(tmp_path) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        before = await scrape(node.http_url)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Consume(log_pb2.ConsumeRequest(offset=99))
        assert err.value.code() is grpc.StatusCode.OUT_OF_RANGE
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/log.v1.Log/NoSuchMethod")(b"")
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
        # abort() sends the status before the handler unwinds: wait for the accounting.
        await request_log.wait_for("Consume", "OUT_OF_RANGE")
        after = await scrape(node.http_url)

    assert delta(before, after, "proglog_rpc_requests_total", method="Consume", code="OK") == 0
    assert (
        delta(before, after, "proglog_rpc_requests_total", method="Consume", code="OUT_OF_RANGE")
        == 1
    )
    assert (
        delta(before, after, "proglog_rpc_requests_total", method="unknown", code="UNIMPLEMENTED")
        == 1
    )
    assert delta(before, after, "proglog_consumed_records_total") == 0


async def test_active_streams_gauge_follows_open_streams(
    tmp_path: Path, request_log: RequestLog
) -> None:
    async with (
        running_agent(tmp_path) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        await stub.Produce(log_pb2.ProduceRequest(record=rec(b"first")))
        call = stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0))
        first = await call.read()
        assert first.record.value == b"first"
        during = await scrape(node.http_url)
        call.cancel()
        await request_log.wait_for("ConsumeStream", "CANCELLED")
        after = await scrape(node.http_url)

    assert value(during, "proglog_rpc_active_streams", method="ConsumeStream") == 1
    assert value(after, "proglog_rpc_active_streams", method="ConsumeStream") == 0
    assert value(after, "proglog_rpc_requests_total", method="ConsumeStream", code="CANCELLED") == 1
    assert value(after, "proglog_rpc_duration_seconds_count", method="ConsumeStream") == 1
    assert value(after, "proglog_consumed_records_total") == 1


async def test_reader_writer_style_stream_handlers_still_work(
    tmp_path: Path, request_log: RequestLog
) -> None:
    # Health.Watch writes through the context instead of yielding: the interceptor
    # must keep a coroutine a coroutine.
    async with (
        running_agent(tmp_path) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        call = health.Watch(health_pb2.HealthCheckRequest(service="log.v1.Log"))
        first = await call.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        during = await scrape(node.http_url)
        call.cancel()
        await request_log.wait_for("Watch", "CANCELLED")
    assert value(during, "proglog_rpc_active_streams", method="Watch") == 1


async def test_produce_stream_is_one_stream_and_counts_each_record(
    tmp_path: Path, request_log: RequestLog
) -> None:
    async with (
        running_agent(tmp_path) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        before = await scrape(node.http_url)
        call = stub.ProduceStream()
        for i in range(3):
            await call.write(log_pb2.ProduceRequest(record=rec(b"s%d" % i)))
        await call.done_writing()
        offsets = [resp.offset async for resp in call]
        assert offsets == [0, 1, 2]
        await request_log.wait_for("ProduceStream", "OK")
        after = await scrape(node.http_url)
    assert delta(before, after, "proglog_produced_records_total") == 3
    assert delta(before, after, "proglog_produced_bytes_total") == 6
    assert (
        delta(before, after, "proglog_rpc_requests_total", method="ProduceStream", code="OK") == 1
    )
    assert value(after, "proglog_rpc_active_streams", method="ProduceStream") == 0


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    async with running_agent(tmp_path, metrics=False) as node:
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"{node.http_url}/metrics")
        assert resp.status_code == 404
        assert node.metrics is None
        # Metrics, tracing and the request log off: no interceptor of ours at all.
        assert node._observability_interceptors() == []


def test_each_node_has_its_own_registry() -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.on_produced(3, 30)
    assert a.registry.get_sample_value("proglog_produced_records_total") == 3
    assert b.registry.get_sample_value("proglog_produced_records_total") == 0


def test_label_values_stay_bounded() -> None:
    m = NodeMetrics()
    labels = {m.method_label(f"M{i}") for i in range(MAX_METHODS * 2)}
    assert len(labels) == MAX_METHODS + 1
    assert OTHER_METHOD in labels
    m.acl_denied("produce")
    m.acl_denied("some-subject-chosen-action")
    assert m.registry.get_sample_value("proglog_acl_denials_total", {"action": "produce"}) == 1
    assert m.registry.get_sample_value("proglog_acl_denials_total", {"action": "consume"}) == 0
    assert m.registry.get_sample_value("proglog_acl_denials_total", {"action": "other"}) == 1
    m.tls_handshake_failed()
    assert m.registry.get_sample_value("proglog_tls_handshake_failures_total") == 1

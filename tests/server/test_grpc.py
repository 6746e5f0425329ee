"""The `log.v1.Log` service over real gRPC channels to a real node.

Most tests use the in-process `agent` fixture (a full node in the test's event
loop) and grpc.aio clients; the CPU and memory property checks use a `proglog
serve` subprocess so they can read that process's counters from /proc.

Where a test must know that the server is already *waiting* (long-poll Fetch,
tailing streams) it spies on `LogService.wait_for_offset` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from pyproglog.agent import Agent
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.server.core import LogService
from pyproglog.server.grpc.service import consume_responses
from pyproglog.testing import ServerProcess, started_agent

STEP = 10.0  # deadline for anything that should happen "at once"
BIG_MESSAGES = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def rec(value: bytes, timestamp_ms: int = 0) -> log_pb2.Record:
    return log_pb2.Record(value=value, timestamp_ms=timestamp_ms)


@pytest.fixture
def stub(aio_channel: grpc.aio.Channel) -> log_pb2_grpc.LogStub:
    return log_pb2_grpc.LogStub(aio_channel)


@asynccontextmanager
async def node_with(tmp_path: Path, **overrides: Any) -> AsyncIterator[Agent]:
    """An in-process node with extra settings (e.g. max_record_bytes)."""
    settings = {"data_dir": tmp_path / "node", "rpc_port": 0, "http_addr": "", **overrides}
    async with started_agent(settings) as node:
        yield node


def spy_waits(service: LogService, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """An event set once a request starts waiting for records that do not exist yet."""
    waiting = asyncio.Event()
    original: Callable[[int, float | None], Awaitable[bool]] = service.wait_for_offset

    async def wait_for_offset(offset: int, timeout: float | None) -> bool:
        waiting.set()
        return await original(offset, timeout)

    monkeypatch.setattr(service, "wait_for_offset", wait_for_offset)
    return waiting


def error_info(status: Any) -> tuple[str, dict[str, str]]:
    """The reason and metadata of the one ErrorInfo detail of a rich status."""
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    assert len(infos) == 1, status
    assert infos[0].domain == "proglog.dev"
    return infos[0].reason, dict(infos[0].metadata)


async def expect_error(call: Any, code: grpc.StatusCode) -> tuple[grpc.aio.AioRpcError, Any]:
    """Await a unary call that must fail with `code`: the error and its rich status."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value, await rpc_status.aio.from_call(call)


# -- the book's five methods ------------------------------------------------------


async def test_produce_then_consume(stub: log_pb2_grpc.LogStub) -> None:
    # The offset the client sends is ignored.
    produced = await stub.Produce(
        log_pb2.ProduceRequest(record=log_pb2.Record(value=b"hello world", offset=99))
    )
    assert produced.offset == 0
    consumed = await stub.Consume(log_pb2.ConsumeRequest(offset=produced.offset))
    assert consumed.record.value == b"hello world"
    assert consumed.record.offset == 0
    assert consumed.record.timestamp_ms > 0  # stamped with the append time

    second = await stub.Produce(log_pb2.ProduceRequest(record=rec(b"second")))
    assert second.offset == 1
    got = await stub.Consume(log_pb2.ConsumeRequest(offset=1))
    assert (got.record.value, got.record.offset) == (b"second", 1)


async def test_the_server_stamps_the_term_and_keeps_the_clients_type(
    stub: log_pb2_grpc.LogStub,
) -> None:
    # A term is the consensus' to give: one a client sends must never be stored.
    sent = log_pb2.Record(value=b"v", term=7, type=3)
    await stub.Produce(log_pb2.ProduceRequest(record=sent))
    await stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=[sent, sent]))
    one = (await stub.Consume(log_pb2.ConsumeRequest(offset=0))).record
    fetched = (await stub.Fetch(log_pb2.FetchRequest(offset=0))).records
    assert [(r.term, r.type) for r in [one, *fetched]] == [(0, 3)] * 4


@pytest.mark.parametrize("sync_policy", ["interval", "always"])
async def test_produce_stream_then_consume_stream_tails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_policy: str
) -> None:
    # "always" appends off the loop and notifies tailers from another thread.
    async with (
        node_with(tmp_path, sync_policy=sync_policy) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        assert node.service is not None
        waiting = spy_waits(node.service, monkeypatch)

        produce = stub.ProduceStream()
        offsets = []
        for value in (b"first message", b"second message"):
            await produce.write(log_pb2.ProduceRequest(record=rec(value)))
            offsets.append((await produce.read()).offset)
        await produce.done_writing()
        assert offsets == [0, 1]
        assert await produce.code() == grpc.StatusCode.OK

        stream = stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0))
        try:
            for offset, value in enumerate((b"first message", b"second message")):
                msg = await asyncio.wait_for(stream.read(), STEP)
                assert (msg.record.offset, msg.record.value) == (offset, value)
            # The server now waits for offset 2; a later produce reaches the
            # stream without the client asking again.
            await asyncio.wait_for(waiting.wait(), STEP)
            later = await stub.Produce(log_pb2.ProduceRequest(record=rec(b"later")))
            assert later.offset == 2
            msg = await asyncio.wait_for(stream.read(), STEP)
            assert (msg.record.offset, msg.record.value) == (2, b"later")
        finally:
            stream.cancel()


async def test_produce_stream_pipelined_answers_in_order(stub: log_pb2_grpc.LogStub) -> None:
    """A client that writes many requests before reading: one answer per request, in order."""
    values = [b"piped-%d" % i for i in range(500)]
    stream = stub.ProduceStream()
    for v in values:
        await stream.write(log_pb2.ProduceRequest(record=rec(v)))
    # Unary produces racing with the stream's group commits.
    others = await asyncio.gather(
        *(stub.Produce(log_pb2.ProduceRequest(record=rec(b"other-%d" % i))) for i in range(50))
    )
    await stream.done_writing()
    offsets = [resp.offset async for resp in stream]
    assert len(offsets) == len(values)
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert set(offsets) | {o.offset for o in others} == set(range(len(values) + len(others)))
    page = await stub.Fetch(log_pb2.FetchRequest(offset=0))
    stored = {r.offset: r.value for r in page.records}
    assert [stored[o] for o in offsets] == values


async def test_consume_past_end_is_out_of_range_with_details(
    stub: log_pb2_grpc.LogStub,
) -> None:
    for i in range(3):
        await stub.Produce(log_pb2.ProduceRequest(record=rec(b"r%d" % i)))
    call = stub.Consume(log_pb2.ConsumeRequest(offset=3))  # highest + 1
    err, status = await expect_error(call, grpc.StatusCode.OUT_OF_RANGE)
    assert "3" in (err.details() or "")
    assert err.details() == "offset out of range: 3"
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == code_pb2.OUT_OF_RANGE
    localized = []
    for detail in status.details:
        if detail.Is(error_details_pb2.LocalizedMessage.DESCRIPTOR):
            msg = error_details_pb2.LocalizedMessage()
            detail.Unpack(msg)
            localized.append(msg)
    assert len(localized) == 1
    assert localized[0].locale == "en-US"
    assert "3" in localized[0].message
    # What a program needs, without parsing the message.
    assert error_info(status) == (
        "OFFSET_OUT_OF_RANGE",
        {"offset": "3", "lowest": "0", "next": "3"},
    )

    # Far past the end too, and Fetch past the end (the batch read path).
    _, status = await expect_error(
        stub.Consume(log_pb2.ConsumeRequest(offset=1 << 40)), grpc.StatusCode.OUT_OF_RANGE
    )
    assert status is not None
    await expect_error(stub.Fetch(log_pb2.FetchRequest(offset=4)), grpc.StatusCode.OUT_OF_RANGE)


async def test_get_servers_lists_this_node_as_leader(
    agent: Agent, stub: log_pb2_grpc.LogStub
) -> None:
    resp = await stub.GetServers(log_pb2.GetServersRequest())
    assert len(resp.servers) == 1
    server = resp.servers[0]
    assert server.is_leader
    assert server.rpc_addr == agent.rpc_addr
    assert server.id == agent.settings.node_name
    # The advertised address is one a client can use.
    async with grpc.aio.insecure_channel(server.rpc_addr) as channel:
        info = await log_pb2_grpc.LogStub(channel).GetLogInfo(log_pb2.GetLogInfoRequest())
        assert info.empty


# -- batch extensions ---------------------------------------------------------------


async def test_produce_batch_offsets_are_contiguous(stub: log_pb2_grpc.LogStub) -> None:
    first = await stub.ProduceBatch(
        log_pb2.ProduceBatchRequest(records=[rec(b"a%d" % i) for i in range(5)])
    )
    assert (first.base_offset, first.last_offset, first.count) == (0, 4, 5)
    single = await stub.Produce(log_pb2.ProduceRequest(record=rec(b"single")))
    assert single.offset == 5
    second = await stub.ProduceBatch(
        log_pb2.ProduceBatchRequest(records=[rec(b"b%d" % i) for i in range(3)])
    )
    assert (second.base_offset, second.last_offset, second.count) == (6, 8, 3)
    fetched = await stub.Fetch(log_pb2.FetchRequest(offset=0))
    assert [r.value for r in fetched.records] == [
        *(b"a%d" % i for i in range(5)),
        b"single",
        *(b"b%d" % i for i in range(3)),
    ]
    assert [r.offset for r in fetched.records] == list(range(9))


async def test_fetch_limits(stub: log_pb2_grpc.LogStub) -> None:
    values = [bytes([i]) * 100 for i in range(10)]
    await stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=[rec(v) for v in values]))

    everything = await stub.Fetch(log_pb2.FetchRequest(offset=0))
    assert [r.value for r in everything.records] == values
    assert (everything.next_offset, everything.high_watermark) == (10, 10)

    three = await stub.Fetch(log_pb2.FetchRequest(offset=2, max_records=3))
    assert [r.offset for r in three.records] == [2, 3, 4]
    assert [r.value for r in three.records] == values[2:5]
    assert (three.next_offset, three.high_watermark) == (5, 10)

    # max_bytes bounds the answer, but at least one record always comes back.
    one = await stub.Fetch(log_pb2.FetchRequest(offset=3, max_bytes=1))
    assert [r.offset for r in one.records] == [3]
    assert one.next_offset == 4
    some = await stub.Fetch(log_pb2.FetchRequest(offset=0, max_bytes=350))
    assert 1 <= len(some.records) < 10
    assert sum(len(r.value) for r in some.records) <= 350
    assert [r.offset for r in some.records] == list(range(len(some.records)))
    assert some.next_offset == len(some.records)

    # At the end with no wait: empty, pointing at the same offset.
    end = await stub.Fetch(log_pb2.FetchRequest(offset=10))
    assert list(end.records) == []
    assert (end.next_offset, end.high_watermark) == (10, 10)


async def test_fetch_long_poll_returns_a_record_produced_while_waiting(
    agent: Agent, stub: log_pb2_grpc.LogStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert agent.service is not None
    waiting = spy_waits(agent.service, monkeypatch)
    await stub.Produce(log_pb2.ProduceRequest(record=rec(b"zero")))
    fetch = stub.Fetch(log_pb2.FetchRequest(offset=1, max_wait_ms=30_000))
    await asyncio.wait_for(waiting.wait(), STEP)
    assert not fetch.done()
    await stub.Produce(log_pb2.ProduceRequest(record=rec(b"one")))
    resp = await asyncio.wait_for(fetch, STEP)
    assert [(r.offset, r.value) for r in resp.records] == [(1, b"one")]
    assert (resp.next_offset, resp.high_watermark) == (2, 2)


async def test_fetch_long_poll_returns_empty_after_max_wait(stub: log_pb2_grpc.LogStub) -> None:
    await stub.Produce(log_pb2.ProduceRequest(record=rec(b"zero")))
    started = time.monotonic()
    resp = await asyncio.wait_for(stub.Fetch(log_pb2.FetchRequest(offset=1, max_wait_ms=300)), STEP)
    waited = time.monotonic() - started
    assert list(resp.records) == []
    assert (resp.next_offset, resp.high_watermark) == (1, 1)
    assert waited >= 0.25  # it did wait (timer slack aside) rather than answer at once


async def test_consume_batch_stream_tails(
    agent: Agent, stub: log_pb2_grpc.LogStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert agent.service is not None
    waiting = spy_waits(agent.service, monkeypatch)
    await stub.ProduceBatch(
        log_pb2.ProduceBatchRequest(records=[rec(b"v%d" % i) for i in range(5)])
    )
    stream = stub.ConsumeBatchStream(log_pb2.ConsumeBatchStreamRequest(offset=1, max_records=2))
    try:
        seen: list[log_pb2.Record] = []
        while len(seen) < 4:
            msg = await asyncio.wait_for(stream.read(), STEP)
            assert 1 <= len(msg.records) <= 2
            assert msg.next_offset == msg.records[-1].offset + 1
            assert msg.high_watermark == 5
            seen.extend(msg.records)
        assert [(r.offset, r.value) for r in seen] == [(i, b"v%d" % i) for i in range(1, 5)]

        await asyncio.wait_for(waiting.wait(), STEP)
        await stub.ProduceBatch(
            log_pb2.ProduceBatchRequest(records=[rec(b"w%d" % i) for i in range(3)])
        )
        later: list[log_pb2.Record] = []
        while len(later) < 3:
            msg = await asyncio.wait_for(stream.read(), STEP)
            assert 1 <= len(msg.records) <= 2
            later.extend(msg.records)
        assert [(r.offset, r.value) for r in later] == [(5 + i, b"w%d" % i) for i in range(3)]
    finally:
        stream.cancel()


async def test_get_log_info(stub: log_pb2_grpc.LogStub) -> None:
    empty = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
    assert empty.empty
    assert (empty.lowest_offset, empty.next_offset) == (0, 0)
    assert empty.segment_count >= 1

    await stub.ProduceBatch(
        log_pb2.ProduceBatchRequest(records=[rec(b"x" * 100) for _ in range(3)])
    )
    info = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
    assert not info.empty
    assert (info.lowest_offset, info.highest_offset, info.next_offset) == (0, 2, 3)
    assert info.commit_offset == 2  # a single node commits what it appends
    assert info.segment_count >= 1
    assert info.size_bytes >= 300


async def test_get_offset_for_timestamp(stub: log_pb2_grpc.LogStub) -> None:
    none_yet = await stub.GetOffsetForTimestamp(
        log_pb2.GetOffsetForTimestampRequest(timestamp_ms=0)
    )
    assert (none_yet.found, none_yet.offset) == (False, 0)

    stamps = [1_000, 2_000, 2_000, 3_000]
    await stub.ProduceBatch(
        log_pb2.ProduceBatchRequest(records=[rec(b"t%d" % t, t) for t in stamps])
    )
    got = await stub.Consume(log_pb2.ConsumeRequest(offset=3))
    assert got.record.timestamp_ms == 3_000  # explicit timestamps are kept

    expected = {0: 0, 999: 0, 1_000: 0, 1_001: 1, 2_000: 1, 2_500: 3, 3_000: 3}
    for ts, offset in expected.items():
        resp = await stub.GetOffsetForTimestamp(
            log_pb2.GetOffsetForTimestampRequest(timestamp_ms=ts)
        )
        assert (resp.found, resp.offset) == (True, offset), ts
    after = await stub.GetOffsetForTimestamp(
        log_pb2.GetOffsetForTimestampRequest(timestamp_ms=3_001)
    )
    assert (after.found, after.offset) == (False, 4)  # where the next record goes


# -- invalid input ---------------------------------------------------------------------


async def test_oversized_record_is_invalid_argument_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    async with (
        node_with(tmp_path, max_record_bytes=1024) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        err, status = await expect_error(
            stub.Produce(log_pb2.ProduceRequest(record=rec(b"x" * 1025))),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "1025" in (err.details() or "") and "1024" in (err.details() or "")
        assert status is not None and status.code == code_pb2.INVALID_ARGUMENT
        assert error_info(status) == ("RECORD_TOO_LARGE", {"size": "1025", "limit": "1024"})

        # One bad record spoils the whole batch.
        err, status = await expect_error(
            stub.ProduceBatch(
                log_pb2.ProduceBatchRequest(records=[rec(b"ok"), rec(b"y" * 2000), rec(b"ok")])
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "record 1" in (err.details() or "")
        meta = {"size": "2000", "limit": "1024", "index": "1"}
        assert error_info(status) == ("RECORD_TOO_LARGE", meta)

        stream = stub.ProduceStream()
        await stream.write(log_pb2.ProduceRequest(record=rec(b"z" * 4096)))
        await stream.done_writing()
        assert await stream.code() == grpc.StatusCode.INVALID_ARGUMENT

        info = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
        assert info.empty and info.next_offset == 0

        # The limit itself is allowed, and gets the first offset.
        ok = await stub.Produce(log_pb2.ProduceRequest(record=rec(b"x" * 1024)))
        assert ok.offset == 0


async def test_record_within_a_large_configured_limit_is_accepted(tmp_path: Path) -> None:
    limit = 40_000_000
    async with (
        node_with(tmp_path, max_record_bytes=limit) as node,
        grpc.aio.insecure_channel(node.rpc_addr, options=BIG_MESSAGES) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        value = b"x" * 34_000_000  # under the configured limit
        resp = await stub.Produce(log_pb2.ProduceRequest(record=rec(value)))
        assert resp.offset == 0
        got = await stub.Consume(log_pb2.ConsumeRequest(offset=0))
        assert got.record.value == value


async def test_empty_produce_batch_is_invalid_argument(stub: log_pb2_grpc.LogStub) -> None:
    err, status = await expect_error(
        stub.ProduceBatch(log_pb2.ProduceBatchRequest()), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert err.details()
    assert error_info(status) == ("INVALID_ARGUMENT", {})
    info = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
    assert info.empty


async def test_negative_timestamp_is_invalid_argument(stub: log_pb2_grpc.LogStub) -> None:
    bad = log_pb2.Record(value=b"x", timestamp_ms=-5)
    err, _ = await expect_error(
        stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=b"ok"), bad])),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert err.details() == "record 1 has a negative timestamp_ms (-5)"
    info = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
    assert info.empty


GARBAGE = b"\xff\xff\xff\xff not a protobuf message"


@pytest.mark.parametrize(
    ("method", "streaming"),
    [
        ("Produce", False),
        ("ProduceBatch", False),
        ("Consume", False),
        ("ConsumeStream", True),
        ("ProduceStream", True),
    ],
)
async def test_garbage_request_bytes_are_invalid_argument(
    aio_channel: grpc.aio.Channel,
    stub: log_pb2_grpc.LogStub,
    caplog: pytest.LogCaptureFixture,
    method: str,
    streaming: bool,
) -> None:
    path = f"/log.v1.Log/{method}"
    call: Any
    if method == "ProduceStream":
        call = aio_channel.stream_stream(path, request_serializer=None)()
        await call.write(GARBAGE)
        await call.done_writing()
    elif streaming:
        call = aio_channel.unary_stream(path, request_serializer=None)(GARBAGE)
    else:
        call = aio_channel.unary_unary(path, request_serializer=None)(GARBAGE, timeout=STEP)
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await call.details()).startswith("malformed request: not a valid log.v1.")
    # The client's garbage is not the server's error: no error line, no traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    info = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
    assert info.empty


# -- group commit --------------------------------------------------------------------------


@pytest.mark.parametrize("sync_policy", ["interval", "always"])
async def test_concurrent_producers_get_distinct_contiguous_offsets(
    tmp_path: Path, sync_policy: str
) -> None:
    async with (
        node_with(tmp_path, sync_policy=sync_policy) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        singles = [b"single-%d" % i for i in range(200)]
        batches = [[b"batch-%d-%d" % (i, j) for j in range(4)] for i in range(25)]
        results = await asyncio.wait_for(
            asyncio.gather(
                *(stub.Produce(log_pb2.ProduceRequest(record=rec(v))) for v in singles),
                *(
                    stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=[rec(v) for v in b]))
                    for b in batches
                ),
            ),
            60,
        )
        expected: dict[int, bytes] = {}
        for value, resp in zip(singles, results[: len(singles)], strict=True):
            assert isinstance(resp, log_pb2.ProduceResponse)
            assert resp.offset not in expected
            expected[resp.offset] = value
        for batch, resp in zip(batches, results[len(singles) :], strict=True):
            assert isinstance(resp, log_pb2.ProduceBatchResponse)
            assert resp.count == len(batch)
            assert resp.last_offset == resp.base_offset + len(batch) - 1
            for i, value in enumerate(batch):
                assert resp.base_offset + i not in expected
                expected[resp.base_offset + i] = value
        total = len(singles) + sum(len(b) for b in batches)
        assert sorted(expected) == list(range(total))

        stored: dict[int, bytes] = {}
        offset = 0
        while offset < total:
            page = await stub.Fetch(log_pb2.FetchRequest(offset=offset, max_records=97))
            stored.update((r.offset, r.value) for r in page.records)
            offset = page.next_offset
        assert stored == expected
        for off in (0, total // 2, total - 1):
            one = await stub.Consume(log_pb2.ConsumeRequest(offset=off))
            assert one.record.value == expected[off]


# -- health and reflection -------------------------------------------------------------------


async def test_health_check_serving(aio_channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(aio_channel)
    for service in ("", "log.v1.Log"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_and_describes_the_log_service(
    aio_channel: grpc.aio.Channel,
) -> None:
    reflect = reflection_pb2_grpc.ServerReflectionStub(aio_channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="log.v1.Log"),
    ]
    responses = [r async for r in reflect.ServerReflectionInfo(iter(requests))]
    assert len(responses) == 2

    names = {s.name for s in responses[0].list_services_response.service}
    assert {"log.v1.Log", "grpc.health.v1.Health"} <= names

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[1].file_descriptor_response.file_descriptor_proto
    ]
    services = {
        f"{f.package}.{s.name}": [m.name for m in s.method] for f in files for s in f.service
    }
    assert "log.v1.Log" in services
    assert {"Produce", "Consume", "ConsumeStream", "ProduceStream", "GetServers"} <= set(
        services["log.v1.Log"]
    )


# -- resource properties (server subprocess) ---------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    # /proc/<pid>/stat: fields after the ")" of the command name; utime, stime are 14, 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for {pid}")


def test_idle_tailing_streams_do_not_burn_cpu(tmp_path: Path) -> None:
    with (
        ServerProcess(tmp_path / "data", http=False) as node,
        grpc.insecure_channel(node.rpc_addr) as channel,
    ):
        assert node.proc is not None
        stub = log_pb2_grpc.LogStub(channel)
        stub.Produce(log_pb2.ProduceRequest(record=rec(b"zero")))
        single = stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0), timeout=60)
        batched = stub.ConsumeBatchStream(log_pb2.ConsumeBatchStreamRequest(offset=0), timeout=60)
        try:
            assert next(single).record.value == b"zero"
            assert [r.value for r in next(batched).records] == [b"zero"]
            # Both streams now wait at the end of the log. Measure the server's
            # CPU over an idle window: a polling loop would show up here.
            cpu0, wall0 = _cpu_seconds(node.proc.pid), time.monotonic()
            time.sleep(2.0)  # the measurement window, not synchronisation
            used = _cpu_seconds(node.proc.pid) - cpu0
            wall = time.monotonic() - wall0
            assert used < 0.2 * wall, f"idle server used {used:.2f}s CPU in {wall:.2f}s"

            # Still tailing after the idle period.
            stub.Produce(log_pb2.ProduceRequest(record=rec(b"one")))
            assert next(single).record.value == b"one"
            assert [r.value for r in next(batched).records] == [b"one"]
        finally:
            single.cancel()
            batched.cancel()


def test_slow_consumer_keeps_server_memory_bounded(tmp_path: Path) -> None:
    """A ConsumeStream that stops reading while ~200 MiB is produced.

    The server must not read ahead for it: its peak RSS may grow by less than
    half of what was produced (buffering everything would grow it by all of it).
    Then the stream drains every record in order.
    """
    record_size, per_batch, batches = 64 * 1024, 64, 50  # 200 MiB in 4 MiB calls
    filler = os.urandom(record_size - 4)
    with (
        ServerProcess(tmp_path / "data", http=False) as node,
        grpc.insecure_channel(node.rpc_addr, options=BIG_MESSAGES) as channel,
    ):
        assert node.proc is not None
        stub = log_pb2_grpc.LogStub(channel)
        stub.Produce(log_pb2.ProduceRequest(record=rec(b"start")))
        stream = stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0), timeout=120)
        try:
            assert next(stream).record.value == b"start"
            baseline = _memory(node.proc.pid, "VmRSS")
            produced = 0
            for b in range(batches):
                value = b.to_bytes(4, "big") + filler
                resp = stub.ProduceBatch(
                    log_pb2.ProduceBatchRequest(records=[rec(value)] * per_batch)
                )
                assert resp.base_offset == 1 + b * per_batch
                produced += per_batch * record_size
            peak_growth = _memory(node.proc.pid, "VmHWM") - baseline
            assert peak_growth < produced // 2, (
                f"server RSS grew by {peak_growth >> 20} MiB while {produced >> 20} MiB "
                "waited for a consumer that does not read"
            )

            expected = 1
            while expected <= batches * per_batch:
                msg = next(stream)
                assert msg.record.offset == expected
                batch_index = (expected - 1) // per_batch
                assert msg.record.value[:4] == batch_index.to_bytes(4, "big")
                assert len(msg.record.value) == record_size
                expected += 1
        finally:
            stream.cancel()


def test_cancelled_streams_log_no_errors(tmp_path: Path) -> None:
    """Clients that leave a stream while the server is sending to them.

    A client leaving is normal: grpc's own error line with a traceback for it
    becomes a debug line ("the client went away"); nothing at error level.
    """
    with ServerProcess(
        tmp_path / "data", ["--log-level", "debug", "--log-format", "json"], http=False
    ) as node:
        with grpc.insecure_channel(node.rpc_addr, options=BIG_MESSAGES) as channel:
            stub = log_pb2_grpc.LogStub(channel)
            value = os.urandom(64 * 1024)
            for _ in range(4):  # 16 MiB waiting: far more than a flow-control window
                stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=[rec(value)] * 64))
            streams = [stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0)) for _ in range(4)]
            batches = [
                stub.ConsumeBatchStream(log_pb2.ConsumeBatchStreamRequest(offset=0))
                for _ in range(4)
            ]
            for s in streams:
                assert next(s).record.offset == 0
            for b in batches:
                assert next(b).records[0].offset == 0
            # Lets the server fill the windows and block in its sends, which is
            # where a cancellation turns into grpc's ExecuteBatchError.
            time.sleep(1.0)
            for call in [*streams, *batches]:
                call.cancel()
            # The node still serves after its streams went away.
            assert stub.Produce(log_pb2.ProduceRequest(record=rec(b"after"))).offset == 256
        assert node.stop() == 0
    entries = [json.loads(line) for line in node.output if line.startswith("{")]
    errors = [e for e in entries if e.get("level") in ("error", "critical")]
    assert not errors, errors
    assert not [e for e in entries if "exception" in e]
    gone = [e for e in entries if "client went away" in e.get("event", "")]
    assert gone, "no stream was cancelled during a send: the test did not test anything"


def test_consume_responses_retag_each_encoded_record() -> None:
    # Lengths whose varints take one, two and three bytes.
    records = [
        log_pb2.Record(value=b"v" * n, offset=i, term=1, type=2, timestamp_ms=3)
        for i, n in enumerate([0, 5, 300, 70_000])
    ]
    data = log_pb2.FetchResponse(records=records).SerializeToString()
    responses = [log_pb2.ConsumeResponse.FromString(m) for m in consume_responses(data)]
    assert [r.record for r in responses] == records

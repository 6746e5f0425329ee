"""The Producer against a real node (`proglog serve` subprocess).

How many ProduceBatch calls a producer made is read from the server itself:
its `proglog_rpc_requests_total{method="ProduceBatch"}` on /metrics.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproglog.client import (
    AsyncClient,
    BufferFull,
    ClientClosed,
    ClientError,
    InvalidArgument,
    Producer,
    Unreachable,
)
from pyproglog.testing import ServerProcess, free_port
from pyproglog.testing.cluster import CHANNEL_OPTIONS
from tests.client.helpers import requests_ok

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("producer") / "data") as proc:
        yield proc


def produce_batch_calls(node: ServerProcess) -> float:
    """The node's count of ProduceBatch calls that appended (answered OK).

    A pipelined batch that overtook the one before it is refused
    (FAILED_PRECONDITION) and sent again: that is not counted."""
    return requests_ok(node.http_url, "ProduceBatch")


async def read_values(client: AsyncClient, first: int, count: int) -> list[bytes]:
    values: list[bytes] = []
    offset = first
    while len(values) < count:
        res = await client.fetch(offset, max_records=1000)
        values += [r.value for r in res.records]
        offset = res.next_offset
    return values[:count]


async def test_records_are_batched_and_acknowledged_in_order(node: ServerProcess) -> None:
    before = produce_batch_calls(node)
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        async with Producer(client, max_batch_records=100, max_in_flight=4) as producer:
            assert producer.producer_id > 0
            values = [f"rec-{i}".encode() for i in range(2000)]
            futures = [producer.send_nowait(v) for v in values]
            await producer.flush()
            assert all(f.done() for f in futures)
            offsets = [f.result() for f in futures]
            assert producer.buffered_bytes == 0
        assert offsets == list(range(offsets[0], offsets[0] + 2000))
        assert await read_values(client, offsets[0], 2000) == values
    # 2000 records in batches of 100: one append each.
    assert produce_batch_calls(node) - before == 20


async def test_concurrent_sends_share_batches(node: ServerProcess) -> None:
    before = produce_batch_calls(node)
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        async with Producer(client, linger_ms=20) as producer:
            values = [f"con-{i}".encode() for i in range(500)]
            # Every send waits for its own ack, yet they travel together.
            offsets = await asyncio.gather(*(producer.send(v) for v in values))
        assert sorted(offsets) == list(range(min(offsets), min(offsets) + 500))
        # gather starts them in order, so the offsets follow the sends.
        assert offsets == sorted(offsets)
        assert await read_values(client, offsets[0], 500) == values
    calls = produce_batch_calls(node) - before
    assert 1 <= calls <= 10, calls


async def test_a_record_above_the_batch_size_goes_alone(node: ServerProcess) -> None:
    before = produce_batch_calls(node)
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        async with Producer(client, max_batch_bytes=1000) as producer:
            futures = [producer.send_nowait(v) for v in (b"a" * 10, b"b" * 5000, b"c" * 10)]
        offsets = [f.result() for f in futures]
        assert offsets == list(range(offsets[0], offsets[0] + 3))
    assert produce_batch_calls(node) - before == 3


async def test_timestamps_and_str_values(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        async with Producer(client) as producer:
            stamped = await producer.send("stamped", timestamp_ms=1_234_567)
            plain = await producer.send(b"plain")
        got = await client.consume(stamped)
        assert (got.value, got.timestamp_ms) == (b"stamped", 1_234_567)
        assert (await client.consume(plain)).timestamp_ms > 1_234_567


async def test_plain_writes_when_not_idempotent(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        async with Producer(client, idempotent=False, max_in_flight=16) as producer:
            assert producer.producer_id == 0
            futures = [producer.send_nowait(f"plain-{i}") for i in range(300)]
            await producer.flush()
        offsets = [f.result() for f in futures]
        assert offsets == list(range(offsets[0], offsets[0] + 300))


async def test_close_delivers_what_is_buffered_then_refuses(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        producer = Producer(client, linger_ms=10_000)  # only close() sends it
        futures = [producer.send_nowait(b"closing") for _ in range(10)]
        await producer.close()
        assert all(f.done() and not f.exception() for f in futures)
        with pytest.raises(ClientClosed):
            producer.send_nowait(b"late")
        with pytest.raises(ClientClosed):
            await producer.send(b"late")
        await producer.close()  # twice is fine


async def test_limits_are_checked_at_once(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        with pytest.raises(ValueError, match="max_in_flight"):
            Producer(client, max_in_flight=9)
        async with Producer(client, buffer_bytes=100) as producer:
            with pytest.raises(InvalidArgument, match="larger than the producer's buffer"):
                producer.send_nowait(b"x" * 101)
            with pytest.raises(InvalidArgument):
                await producer.send(b"x" * 101)
            assert producer.buffered_bytes == 0


async def test_a_stalled_server_holds_the_producer_to_its_buffer(node: ServerProcess) -> None:
    limit = 64 * 1024
    async with AsyncClient(node.rpc_addr, timeout=60) as client:
        producer = Producer(
            client, buffer_bytes=limit, max_batch_bytes=8 * 1024, linger_ms=1, delivery_timeout=60
        )
        await producer.send(b"warm-up")  # connected before the stall
        accepted: list[asyncio.Future[int]] = []
        values: list[bytes] = []
        os.kill(node.pid, signal.SIGSTOP)
        try:
            with pytest.raises(BufferFull, match="buffer is full"):
                for i in range(2 * limit // 100):
                    value = f"{i:08d}".encode() * 12 + b"bp-x"  # 100 bytes
                    accepted.append(producer.send_nowait(value))
                    values.append(value)
                    assert producer.buffered_bytes <= limit
            assert len(accepted) == limit // 100
            # Let the batches go out to the silent server: the room stays taken.
            await asyncio.sleep(0.2)
            assert producer.buffered_bytes == 100 * len(accepted)
            with pytest.raises(BufferFull):
                producer.send_nowait(b"y" * 100)
            # `submit` waits instead, for as long as the server is stalled.
            late_value = b"late" * 25
            late = asyncio.create_task(producer.submit(late_value))
            await asyncio.sleep(0.2)
            assert not late.done()
        finally:
            os.kill(node.pid, signal.SIGCONT)
        late_future = await asyncio.wait_for(late, TIMEOUT)
        await asyncio.wait_for(producer.close(), 2 * TIMEOUT)
        offsets = [f.result() for f in [*accepted, late_future]]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        assert await read_values(client, offsets[0], len(offsets)) == [*values, late_value]


async def test_a_backlog_goes_out_as_one_batch_not_a_queue_of_small_ones(
    node: ServerProcess,
) -> None:
    async with AsyncClient(node.rpc_addr, timeout=60) as client:
        producer = Producer(client, linger_ms=0, max_in_flight=4)
        await producer.send(b"warm-up")  # connected, and all 4 slots open
        before = produce_batch_calls(node)
        futures: list[asyncio.Future[int]] = []
        values = [f"backlog-{i}".encode() for i in range(1000)]
        os.kill(node.pid, signal.SIGSTOP)
        try:
            for value in values:
                futures.append(producer.send_nowait(value))
                # Long enough for the linger timer (0 ms, due earlier) to fire between
                # records: each record alone would be a batch if linger sealed it.
                await asyncio.sleep(0.001)
            assert not any(f.done() for f in futures)
        finally:
            os.kill(node.pid, signal.SIGCONT)
        await asyncio.wait_for(producer.close(), 2 * TIMEOUT)
        offsets = [f.result() for f in futures]
        assert offsets == list(range(offsets[0], offsets[0] + len(values)))
        assert await read_values(client, offsets[0], len(values)) == values
    # The first 4 records went alone into the 4 free slots; the other 996 waited in
    # one open batch, sent whole by the first answer. A queue of one-record batches
    # sealed by the linger would have taken about 1000 calls.
    calls = produce_batch_calls(node) - before
    assert 2 <= calls <= 8, calls


async def test_an_answer_sends_the_open_batch_without_waiting_for_its_linger(
    node: ServerProcess,
) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        producer = Producer(client, linger_ms=600_000)
        first = producer.send_nowait(b"first")
        flushing = asyncio.create_task(producer.flush())
        await asyncio.sleep(0)  # the flush has sealed "first"; its call has not started
        assert not first.done()
        second = producer.send_nowait(b"second")  # opens a batch that lingers 10 minutes
        # Only the answer to "first" can send it: well before its linger (a hang guard).
        assert await asyncio.wait_for(second, TIMEOUT) == await first + 1
        await flushing
        await producer.close()


async def test_an_unreachable_server_fails_the_sends_clearly() -> None:
    addr = f"127.0.0.1:{free_port()}"
    async with (
        AsyncClient(addr, timeout=0.5) as client,
        Producer(client, delivery_timeout=1.5) as producer,
    ):
        futures = [producer.send_nowait(b"lost") for _ in range(5)]
        # No timing bound asserted: pytest-timeout catches a hang.
        with pytest.raises(Unreachable) as caught:
            await producer.send(b"nowhere")
        assert addr in str(caught.value)
        assert "cannot reach" in str(caught.value)
        for f in futures:
            assert isinstance(f.exception(), Unreachable)
        assert producer.buffered_bytes == 0


async def test_a_leader_that_forgot_the_producer_gets_the_batches_renumbered(
    tmp_path: Path,
) -> None:
    # A node wiped and started afresh at the same address knows no producer: the
    # same answer (OUT_OF_ORDER_SEQUENCE, expecting batch 0) as after idle expiry.
    port = free_port()
    args = ["--rpc-port", str(port)]
    first = ServerProcess(tmp_path / "before", args).start()
    try:
        async with AsyncClient(first.rpc_addr, timeout=TIMEOUT, options=CHANNEL_OPTIONS) as client:
            producer = Producer(client, max_in_flight=1)
            for i in range(3):
                await producer.send(f"before-{i}")
            old_id = producer.producer_id
            first.stop()
            with ServerProcess(tmp_path / "after", args) as second:
                assert second.rpc_addr == first.rpc_addr
                offset = await asyncio.wait_for(producer.send(b"after-0"), 2 * TIMEOUT)
                assert producer.producer_id not in (0, old_id)
                assert await producer.send(b"after-1") == offset + 1
                await producer.close()
                assert offset == 0  # the new node's first record
                assert await read_values(client, 0, 2) == [b"after-0", b"after-1"]
    finally:
        first.kill()


async def test_a_refused_batch_fails_the_ones_after_it_then_a_new_id_goes_on(
    tmp_path: Path,
) -> None:
    args = ["--max-record-bytes", "1024"]
    with ServerProcess(tmp_path / "data", args) as small:
        async with AsyncClient(small.rpc_addr, timeout=TIMEOUT) as client:
            producer = Producer(client, max_batch_bytes=1000, linger_ms=50)
            await producer.send(b"warm-up")
            first_id = producer.producer_id
            refused = producer.send_nowait(b"x" * 2000)  # over the node's limit, alone
            after = [producer.send_nowait(f"after-{i}") for i in range(3)]
            await producer.flush()
            assert isinstance(refused.exception(), InvalidArgument)
            for f in after:
                exc = f.exception()
                assert isinstance(exc, ClientError), exc
                assert "an earlier batch" in str(exc) and "order" in str(exc)
            # Sends after the failure go on, numbered afresh.
            offset = await producer.send(b"fresh")
            assert producer.producer_id not in (0, first_id)
            await producer.close()
            values = await read_values(client, 0, offset + 1)
            assert values == [b"warm-up", b"fresh"]

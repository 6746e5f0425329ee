"""The Consumer against a real node (`proglog serve` subprocess).

Failover and a killed follower are in test_client_cluster.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproglog.client import AsyncClient, Consumer, DataLoss, Record, Unreachable
from pyproglog.testing import ServerProcess, free_port
from pyproglog.testing.cluster import CHANNEL_OPTIONS

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("consumer") / "data") as proc:
        yield proc


async def take(consumer: Consumer, n: int) -> list[Record]:
    got: list[Record] = []
    async for record in consumer:
        got.append(record)
        if len(got) == n:
            break
    return got


async def test_reads_from_an_offset_in_order_and_tracks_its_position(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        values = [f"c-{i}".encode() for i in range(2500)]
        base = await client.produce_batch(values)
        # Small messages, so that many of them make up the read.
        async with Consumer(client, offset=base + 10, max_records=64) as consumer:
            assert consumer.position == base + 10
            got = await asyncio.wait_for(take(consumer, 2490), TIMEOUT)
            assert consumer.position == base + 2500
        assert [r.offset for r in got] == list(range(base + 10, base + 2500))
        assert [r.value for r in got] == values[10:]


async def test_starts_at_the_lowest_offset_by_default(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        await client.produce(b"at least one")
        lowest = (await client.info()).lowest_offset
        async with Consumer(client) as consumer:
            assert consumer.position is None  # looked up on the first iteration
            first = await asyncio.wait_for(anext(consumer), TIMEOUT)
        assert first.offset == lowest


async def test_starts_at_a_timestamp(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        base = await client.produce_batch(
            [Record(f"t{i}".encode(), timestamp_ms=5_000_000_000_000 + i) for i in range(10)]
        )
        async with Consumer(client, timestamp_ms=5_000_000_000_004) as consumer:
            got = await asyncio.wait_for(take(consumer, 3), TIMEOUT)
        assert [(r.offset, r.value) for r in got] == [
            (base + 4 + i, f"t{4 + i}".encode()) for i in range(3)
        ]


async def test_tails_records_produced_after_it_started(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        end = (await client.info()).next_offset
        async with Consumer(client, offset=end) as consumer:
            reader = asyncio.create_task(take(consumer, 3))
            await asyncio.sleep(0.1)
            assert not reader.done()  # nothing to read yet: it waits, it does not end
            await client.produce_batch([b"later-1", b"later-2", b"later-3"])
            got = await asyncio.wait_for(reader, TIMEOUT)
        assert [r.value for r in got] == [b"later-1", b"later-2", b"later-3"]
        assert [r.offset for r in got] == [end, end + 1, end + 2]


async def test_close_ends_the_iteration(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        await client.produce(b"one")
        consumer = Consumer(client, offset=0)
        await anext(consumer)
        await consumer.close()
        assert [r async for r in consumer] == []


async def test_an_unreachable_node_is_raised_after_the_reconnect_budget() -> None:
    addr = f"127.0.0.1:{free_port()}"
    async with AsyncClient(addr, timeout=0.5) as client:
        consumer = Consumer(client, offset=0, reconnect_timeout=1.0)
        with pytest.raises(Unreachable) as caught:
            await anext(consumer)
        assert addr in str(caught.value)
        await consumer.close()


async def test_records_removed_before_a_resume_are_a_clear_data_loss(tmp_path: Path) -> None:
    port = free_port()
    args = [
        "--rpc-port",
        str(port),
        "--max-record-bytes",
        "1024",
        "--segment-max-store-bytes",
        "4096",
        "--retention-bytes",
        "16384",
    ]
    node = ServerProcess(tmp_path / "data", args).start()
    try:
        async with AsyncClient(node.rpc_addr, timeout=TIMEOUT, options=CHANNEL_OPTIONS) as client:
            await client.produce_batch([b"x" * 100 for _ in range(50)])
            consumer = Consumer(client, offset=0, max_records=1)
            assert (await anext(consumer)).offset == 0
            # The stream breaks; while the consumer is away, retention removes what
            # it has not read yet.
            node.kill()
            node = ServerProcess(tmp_path / "data", args).start()
            for _ in range(10):
                await client.produce_batch([b"y" * 100 for _ in range(100)])
            lowest = (await client.info()).lowest_offset
            assert lowest > 50
            with pytest.raises(DataLoss, match="retention") as caught:
                async for record in consumer:
                    assert record.offset < 50  # what the stream delivered before the kill
            position = consumer.position
            assert position is not None and position < lowest
            assert f"records {position}..{lowest - 1} are gone" in str(caught.value)
            await consumer.close()
    finally:
        node.kill()

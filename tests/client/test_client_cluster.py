"""Producer and Consumer across faults of a real 3-node cluster (`proglog serve` processes).

One cluster for the module, with a proxy in front of every node (clients and
peers reach a node only through it), so a test can lose the answers of the
leader alone. Each test leaves the cluster whole again (every node running,
one leader, the same committed log) for the next.

The blocking Cluster calls run in a thread (`asyncio.to_thread`): the
producer and the consumers keep running on the test's loop meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator

import pytest

from pyproglog.client import AsyncClient, Consumer, Producer, Record
from pyproglog.testing.cluster import Cluster, Node
from pyproglog.testing.history import History, ProduceOp, check
from tests.client.helpers import addrs, http_url, requests_ok

pytestmark = pytest.mark.cluster

TIMEOUT = 10.0  # per client call: covers an election (0.5-1 s at the test Raft timing)
STEP = 30.0  # bounds a wait for something that should happen in a few seconds


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("client-cluster"), size=3, proxies=True) as c:
        yield c


def whole_again(cluster: Cluster) -> None:
    """Restart whatever was killed and wait until all three hold the same log."""
    for node in cluster.nodes.values():
        if not node.alive:
            cluster.restart(node.name)
    cluster.wait_formed()
    cluster.wait_converged()


def by_addr(cluster: Cluster, addr: str | None) -> Node:
    return next(n for n in cluster.nodes.values() if n.addr == addr)


def produce_batch_ok(node: Node) -> float:
    """ProduceBatch calls the node answered OK (read around the proxy)."""
    return requests_ok(http_url(node), "ProduceBatch")


async def wait_for(what: str, probe: object, timeout: float = STEP) -> None:
    assert callable(probe)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not probe():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def settle(op: ProduceOp, fut: asyncio.Future[int]) -> None:
    """Record how a producer's record ended in the history."""
    exc = fut.exception()
    if exc is None:
        op.ok(fut.result())
    else:
        op.unknown(repr(exc))


def values_with(log: list[tuple[int, bytes]], prefix: bytes) -> list[tuple[int, bytes]]:
    return [(o, v) for o, v in log if v.startswith(prefix)]


async def test_leader_kill_during_a_produce_loop_loses_nothing_and_duplicates_nothing(
    cluster: Cluster,
) -> None:
    old = cluster.leader()
    history = History()
    total = 4000
    sent_at_kill = 0
    async with AsyncClient(addrs(cluster), timeout=TIMEOUT) as client:
        producer = Producer(client, linger_ms=2, max_batch_records=40)

        async def produce_loop() -> None:
            for i in range(total):
                value = f"kill-{i:06d}".encode()
                op = history.produce(value)
                fut = await producer.submit(value)
                fut.add_done_callback(functools.partial(settle, op))
                if i % 20 == 19:
                    await asyncio.sleep(0.005)  # paced: the kill lands mid-loop

        loop_task = asyncio.create_task(produce_loop())
        await wait_for("500 acknowledged records", lambda: history.acknowledged >= 500)
        sent_at_kill = len(history.produces)
        await asyncio.to_thread(cluster.kill, old.name)
        await asyncio.wait_for(loop_task, STEP)
        await asyncio.wait_for(producer.close(), 2 * STEP)
        new = await asyncio.to_thread(cluster.new_leader, old.name)
        assert client.leader_addr == new.addr
    assert sent_at_kill < total, "the kill came after the loop: nothing was tested"

    produced, _ = history.snapshot()
    failed = [op for op in produced if op.offset is None]
    assert not failed, f"{len(failed)} records not delivered, first: {failed[0]}"

    await asyncio.to_thread(whole_again, cluster)
    logs = {
        n.name: values_with(await asyncio.to_thread(cluster.read_log, n.name), b"kill-")
        for n in cluster.live()
    }
    # Acknowledged records at their offsets on every node, no gap, nothing foreign.
    report = check([history], logs, start_offset=None)
    assert not report.duplicate_values, report.summary()
    for name, log in logs.items():
        values = [v for _, v in log]
        # Exactly once each, in send order.
        assert values == [f"kill-{i:06d}".encode() for i in range(total)], name


@pytest.mark.parametrize("then", ["heal", "kill"])
async def test_a_batch_whose_answer_was_lost_is_in_the_log_once(
    cluster: Cluster, then: str
) -> None:
    """The batch commits, its answer is lost; the producer's retry reaches the same
    leader once the connection is back ("heal"), or the leader elected after it
    dies ("kill"), which knows the batch from the replicated producer state."""
    leader = cluster.leader()
    assert leader.proxy is not None
    follower = cluster.followers(leader)[0]
    prefix = f"lost-{then}-".encode()
    async with AsyncClient(addrs(cluster), timeout=TIMEOUT) as client:
        async with Producer(client, linger_ms=0) as producer:
            await producer.send(prefix + b"warm-up")  # the leader known, connected
            answered_before = produce_batch_ok(leader)
            # The leader's answers vanish; what it sends its peers does not go
            # through its own proxy, so the batch still commits.
            leader.proxy.blackhole("down")
            try:
                fut = producer.send_nowait(prefix + b"batch")

                def committed() -> bool:
                    log = cluster.read_log(follower.name)
                    return any(v == prefix + b"batch" for _, v in log)

                deadline = asyncio.get_running_loop().time() + STEP
                while not await asyncio.to_thread(committed):
                    assert asyncio.get_running_loop().time() < deadline, "never committed"
                    await asyncio.sleep(0.05)
                assert not fut.done()  # the answer is lost: the producer is still waiting
                if then == "kill":
                    await asyncio.to_thread(cluster.kill, leader.name)
            finally:
                # Connections that lost bytes are reset, as after a real partition:
                # the call in flight fails, and the producer sends the batch again.
                leader.proxy.heal()
                leader.proxy.drop_connections()
            offset = await asyncio.wait_for(fut, 2 * STEP)
            after = await producer.send(prefix + b"after")
        if then == "heal":
            # The leader answered the batch twice: the lost answer and the retry.
            assert produce_batch_ok(leader) - answered_before >= 2
        else:
            assert client.leader_addr != leader.addr
    # The log holds it once, where the retry's answer said.
    await asyncio.to_thread(whole_again, cluster)
    for node in cluster.live():
        log = values_with(await asyncio.to_thread(cluster.read_log, node.name), prefix)
        assert log == [
            (log[0][0], prefix + b"warm-up"),
            (offset, prefix + b"batch"),
            (after, prefix + b"after"),
        ], node.name
        assert after == offset + 1


async def read_into(consumer: Consumer, got: list[Record]) -> None:
    async for record in consumer:
        got.append(record)


async def test_consumers_ride_over_a_killed_follower_and_a_leader_failover(
    cluster: Cluster,
) -> None:
    start = await asyncio.to_thread(cluster.wait_converged)
    total = 3000
    by_followers: list[Record] = []
    by_leader: list[Record] = []
    async with (
        AsyncClient(addrs(cluster), timeout=TIMEOUT) as client,
        AsyncClient(addrs(cluster), timeout=TIMEOUT, read_from="leader") as leader_client,
        Producer(client, linger_ms=2, max_batch_records=20) as producer,
        Consumer(client, offset=start, max_records=50) as on_followers,
        Consumer(leader_client, offset=start, max_records=50) as on_leader,
    ):
        readers = [
            asyncio.create_task(read_into(on_followers, by_followers)),
            asyncio.create_task(read_into(on_leader, by_leader)),
        ]
        futures: list[asyncio.Future[int]] = []

        async def produce(first: int, count: int) -> None:
            for i in range(first, first + count):
                futures.append(await producer.submit(f"consumed-{i:06d}".encode()))
                if i % 10 == 9:
                    await asyncio.sleep(0.005)

        def read_past(got: list[Record], n: int) -> bool:
            return len(got) >= n

        try:
            # 1. Kill the follower the first consumer reads from.
            await produce(0, 1000)
            await wait_for(
                "both consumers to read", lambda: min(len(by_followers), len(by_leader)) >= 500
            )
            leader = await asyncio.to_thread(cluster.leader)
            reading = by_addr(cluster, on_followers.node)
            assert reading.name != leader.name, "a follower reader on the leader"
            assert by_addr(cluster, on_leader.node).name == leader.name
            await asyncio.to_thread(cluster.kill, reading.name)
            await produce(1000, 1000)
            await wait_for("reads past the follower kill", lambda: read_past(by_followers, 1500))
            assert on_followers.node != reading.addr
            await asyncio.to_thread(whole_again, cluster)

            # 2. Kill the leader the second consumer reads from.
            leader = await asyncio.to_thread(cluster.leader)
            assert by_addr(cluster, on_leader.node).name == leader.name
            await asyncio.to_thread(cluster.kill, leader.name)
            await produce(2000, total - 2000)
            await producer.flush()
            end = max(f.result() for f in futures) + 1
            await wait_for(
                "both consumers to reach the end",
                lambda: on_followers.position == end and on_leader.position == end,
                timeout=2 * STEP,
            )
            assert on_leader.node != leader.addr
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    await asyncio.to_thread(whole_again, cluster)
    log = await asyncio.to_thread(cluster.read_log, cluster.leader().name)
    expected = [(o, v) for o, v in log if start <= o < end]
    assert len(expected) == end - start
    for name, got in (("followers", by_followers), ("leader", by_leader)):
        assert [(r.offset, r.value) for r in got] == expected, name
    values = [v for _, v in values_with(expected, b"consumed-")]
    assert values == [f"consumed-{i:06d}".encode() for i in range(total)]

"""`AsyncClient` against real `proglog serve` processes: one node, then a 3-node cluster.

Where calls went is read from the servers' own request metrics (tests/client/helpers.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import aclosing

import grpc
import pytest
from google.rpc import error_details_pb2

from pyproglog.agent import Agent
from pyproglog.client import (
    AsyncClient,
    BatchAck,
    ClientClosed,
    OffsetOutOfRange,
    OutOfOrderSequence,
    Record,
    Unavailable,
    Unreachable,
)
from pyproglog.client._errors import from_rpc_error
from pyproglog.client._routing import retriable
from pyproglog.testing import ServerProcess, TcpProxy, free_port
from pyproglog.testing.cluster import Cluster
from tests.client.helpers import addrs, counts
from tests.client.test_client import FakeRpcError

TIMEOUT = 10.0  # per call: covers an election (0.5-1 s at the test Raft timing)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("aio-node")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("aio-cluster"), size=3) as c:
        yield c


# -- the retry rules (pure) ------------------------------------------------------------

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def service_error(code: grpc.StatusCode, reason: str, **meta: str) -> FakeRpcError:
    info = error_details_pb2.ErrorInfo(reason=reason, metadata=meta)
    return FakeRpcError(code, reason.lower(), [info])


@pytest.mark.parametrize(
    ("exc", "read", "write", "sequenced"),
    [
        (service_error(UNAVAILABLE, "NOT_LEADER", leader_addr="h:2"), True, True, True),
        (service_error(UNAVAILABLE, "SHUTTING_DOWN"), True, True, True),
        (FakeRpcError(UNAVAILABLE, "failed to connect to all addresses"), True, True, True),
        # Outcome unknown: only a sequenced write may be sent again.
        (service_error(UNAVAILABLE, "NO_QUORUM"), True, False, True),
        (service_error(UNAVAILABLE, "DUPLICATE_IN_FLIGHT"), True, False, True),
        (service_error(UNAVAILABLE, "WRITE_FAILED"), True, False, True),
        (FakeRpcError(UNAVAILABLE, "Socket closed"), True, False, True),
        (FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), False, False, True),
        (
            service_error(
                grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_ORDER_SEQUENCE", expected_sequence="0"
            ),
            False,
            False,
            False,
        ),
        (service_error(grpc.StatusCode.INVALID_ARGUMENT, "RECORD_TOO_LARGE"), False, False, False),
    ],
    ids=lambda v: v.details() if isinstance(v, FakeRpcError) else None,
)
def test_what_each_kind_of_call_retries(
    exc: FakeRpcError, read: bool, write: bool, sequenced: bool
) -> None:
    err = from_rpc_error(exc, addr="h:1", connected=True)
    got = [retriable(err, exc, kind) for kind in ("read", "write", "write_idempotent")]
    assert got == [read, write, sequenced]


def test_out_of_order_sequence_carries_the_expected_batch() -> None:
    exc = service_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        "OUT_OF_ORDER_SEQUENCE",
        producer_id=str(2**62),
        sequence="5",
        expected_sequence="3",
    )
    err = from_rpc_error(exc, addr="h:1", connected=True)
    assert isinstance(err, OutOfOrderSequence)
    assert (err.producer_id, err.sequence, err.expected_sequence) == (2**62, 5, 3)


# -- one node --------------------------------------------------------------------------


def test_made_outside_a_running_loop(node: ServerProcess) -> None:
    # No loop runs here: the channels are made on first use, in the loop that uses them.
    client = AsyncClient(node.rpc_addr, timeout=TIMEOUT)

    async def use() -> bytes:
        async with client:
            return (await client.consume(await client.produce(b"before the loop"))).value

    assert asyncio.run(use()) == b"before the loop"


async def test_calls_on_one_node(node: ServerProcess) -> None:
    # Stamped later than every record before them (the node stamps those with its clock).
    t = int(time.time() * 1000) + 10**9
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        assert not client.routing
        first = await client.produce(b"one", timestamp_ms=t)
        base = await client.produce_batch(
            [Record(value=b"two", timestamp_ms=t + 1), Record(value=b"three", timestamp_ms=t + 2)]
        )
        assert base == first + 1
        assert (await client.consume(first)).value == b"one"
        got = await client.fetch(first, max_records=10)
        assert [r.value for r in got.records] == [b"one", b"two", b"three"]
        assert got.next_offset == got.high_watermark == first + 3
        info = await client.info()
        assert (info.role, info.next_offset) == ("standalone", first + 3)
        assert [s.rpc_addr for s in await client.servers()] == [node.rpc_addr]
        assert (await client.offset_for_timestamp(t + 2)).offset == first + 2
        assert await client.read_node() == node.rpc_addr

        seen: list[bytes] = []
        async with aclosing(client.tail_batches(first, max_records=2)) as stream:
            async for batch in stream:
                seen += [r.value for r in batch.records]
                if len(seen) >= 3:
                    break
        assert seen == [b"one", b"two", b"three"]

        with pytest.raises(OffsetOutOfRange) as caught:
            await client.consume(first + 100)
        assert caught.value.next_offset == first + 3


async def test_sequenced_batches_on_one_node(node: ServerProcess) -> None:
    async with AsyncClient(node.rpc_addr, timeout=TIMEOUT) as client:
        ack = await client.produce_sequenced([b"s0", b"s1"], producer_id=77, sequence=0)
        assert ack.count == 2 and not ack.duplicate
        again = await client.produce_sequenced([b"s0", b"s1"], producer_id=77, sequence=0)
        assert again == BatchAck(ack.base_offset, 2, duplicate=True)
        with pytest.raises(ValueError):
            await client.produce_sequenced([b"x"], producer_id=0, sequence=0)


async def test_a_sequenced_write_whose_answer_was_lost_is_not_written_twice(
    node: ServerProcess,
) -> None:
    # The server takes the batch, but its answer never comes back (a proxy swallows
    # it, then the connection is reset): an outcome unknown to the client, which
    # sends the batch again and gets the first offsets back.
    with TcpProxy(node.rpc_addr) as proxy:
        async with (
            AsyncClient(node.rpc_addr, timeout=TIMEOUT) as watcher,
            AsyncClient(proxy.addr, timeout=TIMEOUT) as client,
        ):
            first = await client.produce_sequenced([b"l0"], producer_id=31337, sequence=0)
            proxy.blackhole("down")
            sending = asyncio.create_task(
                client.produce_sequenced([b"l1"], producer_id=31337, sequence=1)
            )
            async with asyncio.timeout(TIMEOUT):
                while (await watcher.info()).next_offset <= first.base_offset + 1:
                    await asyncio.sleep(0.01)
            proxy.heal()
            proxy.drop_connections()
            assert await sending == BatchAck(first.base_offset + 1, 1, duplicate=True)
            got = await watcher.fetch(first.base_offset, max_records=10)
            assert [r.value for r in got.records] == [b"l0", b"l1"]


async def test_unreachable_address_is_an_error_within_the_timeout() -> None:
    # Nothing listens there: every call fails with Unreachable, routed or not, and a
    # sequenced write (retried on everything) still stops at its deadline.
    addr = f"127.0.0.1:{free_port()}"
    async with AsyncClient(addr, timeout=1.0) as direct:
        with pytest.raises(Unreachable):
            await direct.info()
        with pytest.raises(Unreachable):
            await direct.produce_sequenced([b"x"], producer_id=1, sequence=0)
        with pytest.raises(Unreachable):
            async for _ in direct.tail_batches(0):
                pass
    other = f"127.0.0.1:{free_port()}"
    async with AsyncClient([addr, other], timeout=1.0) as routed:
        with pytest.raises(Unreachable) as caught:
            await routed.produce(b"x")
        assert addr in caught.value.addr and other in caught.value.addr
        with pytest.raises(Unreachable):
            await routed.produce_sequenced([b"x"], producer_id=1, sequence=0)


async def test_a_closed_client_says_so(agent: Agent) -> None:
    # A node in this loop, so that the test sees its calls wait (no sleeps).
    service = agent.service
    assert service is not None
    waits = service.wait_for_offset
    in_server = 0  # calls that began to wait for a record in the server

    async def counted(offset: int, timeout: float | None) -> bool:
        nonlocal in_server
        in_server += 1
        return await waits(offset, timeout)

    service.wait_for_offset = counted  # type: ignore[method-assign]
    client = AsyncClient([agent.rpc_addr], timeout=TIMEOUT)
    end = await client.produce(b"before close") + 1

    async def tail() -> None:
        async for _ in client.tail_batches(end):
            pass

    # Calls waiting at the end of the log: a cancelled one stays cancelled; those
    # the close cuts short say ClientClosed (grpc.aio would cancel them).
    waiting = [
        asyncio.create_task(client.fetch(end, max_wait_ms=int(TIMEOUT * 1000))) for _ in range(3)
    ]
    tailing = asyncio.create_task(tail())
    async with asyncio.timeout(TIMEOUT):  # the calls reach the server and wait there
        while in_server < len(waiting) + 1:
            await asyncio.sleep(0.01)
    assert not any(t.done() for t in [*waiting, tailing])
    waiting[0].cancel()
    await client.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting[0]
    for t in [*waiting[1:], tailing]:
        with pytest.raises(ClientClosed):
            await t
    with pytest.raises(ClientClosed):
        await client.produce(b"after close")
    with pytest.raises(ClientClosed):
        await client.read_node()
    with pytest.raises(ClientClosed):
        async for _ in client.tail_batches(0):
            pass


# -- a cluster -------------------------------------------------------------------------


async def test_sequenced_batches_go_to_the_leader_once(cluster: Cluster) -> None:
    leader = cluster.leader()
    before = counts(cluster, "ProduceBatch")
    async with AsyncClient([cluster.followers(leader)[0].addr], timeout=TIMEOUT) as client:
        ack = await client.produce_sequenced([b"a", b"b", b"c"], producer_id=2**62, sequence=0)
        assert client.leader_addr == leader.addr
        assert ack.count == 3 and not ack.duplicate
        # The same batch again (a retry whose first answer was lost): the first offsets.
        again = await client.produce_sequenced([b"a", b"b", b"c"], producer_id=2**62, sequence=0)
        assert again == BatchAck(ack.base_offset, 3, duplicate=True)
        nxt = await client.produce_sequenced([b"d"], producer_id=2**62, sequence=1)
        assert nxt == BatchAck(ack.base_offset + 3, 1, duplicate=False)

        # A gap: nothing written, the leader names the batch it expects.
        with pytest.raises(OutOfOrderSequence) as caught:
            await client.produce_sequenced([b"z"], producer_id=12345, sequence=5)
        err = caught.value
        assert (err.producer_id, err.sequence, err.expected_sequence) == (12345, 5, 0)

        got = await client.fetch(ack.base_offset, max_records=10, linearizable=True)
        assert [r.value for r in got.records] == [b"a", b"b", b"c", b"d"]
    after = counts(cluster, "ProduceBatch")
    assert {k: v - before[k] for k, v in after.items() if k != leader.name} == {
        f.name: 0 for f in cluster.followers(leader)
    }
    assert after[leader.name] - before[leader.name] == 3


async def test_read_node_round_robins_the_followers(cluster: Cluster) -> None:
    leader = cluster.leader()
    followers = sorted(f.addr for f in cluster.followers(leader))
    async with AsyncClient(addrs(cluster), timeout=TIMEOUT) as client:
        picks = [await client.read_node() for _ in range(4)]
        assert sorted(picks[:2]) == followers and picks[2:] == picks[:2]
        # Avoiding one follower leaves the other.
        assert {await client.read_node(avoid={followers[0]}) for _ in range(3)} == {followers[1]}
    async with AsyncClient(addrs(cluster), timeout=TIMEOUT, read_from="leader") as client:
        assert await client.read_node() == leader.addr


async def test_tail_batches_from_a_follower(cluster: Cluster) -> None:
    async with AsyncClient(addrs(cluster), timeout=TIMEOUT) as client:
        values = [f"t{i}".encode() for i in range(50)]
        base = await client.produce_batch(values)
        follower = await client.read_node()
        assert follower != client.leader_addr
        seen: list[bytes] = []
        stream = client.tail_batches(base, node=follower, max_records=7)
        async with aclosing(stream), asyncio.timeout(TIMEOUT):
            async for batch in stream:
                assert len(batch.records) <= 7
                assert [r.offset for r in batch.records] == list(
                    range(base + len(seen), base + len(seen) + len(batch.records))
                )
                seen += [r.value for r in batch.records]
                if len(seen) >= len(values):
                    break
        assert seen == values


async def test_sequenced_write_to_a_frozen_leader_is_retried_on_the_next(cluster: Cluster) -> None:
    # The attempt on the silent leader gets no answer; its deadline (a share of the
    # call's) passes, and the retry reaches the leader the others elect. Its
    # outcome was unknown, which only a sequenced write may retry.
    old = cluster.leader()
    async with AsyncClient(addrs(cluster), timeout=TIMEOUT) as client:
        ack = await client.produce_sequenced([b"f0"], producer_id=424242, sequence=0)
        cluster.freeze(old.name)
        try:
            nxt = await client.produce_sequenced([b"f1"], producer_id=424242, sequence=1)
            new = cluster.new_leader(old.name)
        finally:
            cluster.thaw(old.name)
        assert client.leader_addr == new.addr != old.addr
        assert nxt == BatchAck(ack.base_offset + 1, 1, duplicate=False)


async def test_sequenced_write_after_the_leader_is_killed(cluster: Cluster) -> None:
    # Last in this module: it leaves the cluster with two nodes.
    old = cluster.leader()
    async with AsyncClient(addrs(cluster), timeout=TIMEOUT) as client:
        first = await client.produce_sequenced([b"k0"], producer_id=99, sequence=0)
        stream = client.tail_batches(first.base_offset, node=old.addr)
        async with aclosing(stream), asyncio.timeout(TIMEOUT):
            assert [r.value for r in (await anext(stream)).records] == [b"k0"]
            cluster.kill(old.name)
            # A tail ends with an error when its node goes; it does not move.
            with pytest.raises(Unavailable):
                await anext(stream)
        second = await client.produce_sequenced([b"k1"], producer_id=99, sequence=1)
        assert client.leader_addr not in (None, old.addr)
        assert second == BatchAck(first.base_offset + 1, 1, duplicate=False)
        # The dedupe state travelled with the entries: the new leader knows batch 0.
        again = await client.produce_sequenced([b"k0"], producer_id=99, sequence=0)
        assert again == BatchAck(first.base_offset, 1, duplicate=True)

"""The routed client against a real 3-node cluster (`proglog serve` processes).

Where calls went is read from the servers themselves: each node's
`proglog_rpc_requests_total{method=...}` on its /metrics. A write a follower
forwards is counted on that follower (the client called it there), so a
follower's Produce count staying put shows the client went to the leader.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproglog.client import Client, ClientError, Unavailable, Unreachable
from pyproglog.testing.cluster import Cluster
from tests.client.helpers import addrs, counts

TIMEOUT = 10.0  # per call: covers an election (0.5-1 s at the test Raft timing)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("routing"), size=3) as c:
        yield c


def test_writes_go_to_the_leader_and_reads_to_the_followers(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower_names = sorted(n.name for n in cluster.followers(leader))
    produce_before = counts(cluster, "Produce")
    batch_before = counts(cluster, "ProduceBatch")
    consume_before = counts(cluster, "Consume")

    # One follower's address is enough: the client learns the rest.
    seed = cluster[follower_names[0]].addr
    with Client([seed], timeout=TIMEOUT) as client:
        offsets = [client.produce(f"r{i}") for i in range(20)]
        base = client.produce_batch([b"b0", b"b1", b"b2"])
        assert client.leader_addr == leader.addr
        assert sorted(s.id for s in client.servers) == sorted(cluster.nodes)
        # Reads of records acknowledged just now: linearizable, so that a
        # follower waits until it has them.
        got = [client.consume(o, linearizable=True).value for o in offsets]
        assert got == [f"r{i}".encode() for i in range(20)]

    assert offsets == list(range(offsets[0], offsets[0] + 20))
    assert base == offsets[-1] + 1
    produced = {k: v - produce_before[k] for k, v in counts(cluster, "Produce").items()}
    batched = {k: v - batch_before[k] for k, v in counts(cluster, "ProduceBatch").items()}
    consumed = {k: v - consume_before[k] for k, v in counts(cluster, "Consume").items()}
    assert produced == {leader.name: 20, **{f: 0 for f in follower_names}}
    assert batched == {leader.name: 1, **{f: 0 for f in follower_names}}
    # Round-robin over the two followers; none on the leader.
    assert consumed == {leader.name: 0, **{f: 10 for f in follower_names}}


def test_read_from_leader_reads_on_the_leader(cluster: Cluster) -> None:
    leader = cluster.leader()
    before = counts(cluster, "Consume")
    with Client(addrs(cluster), timeout=TIMEOUT, read_from="leader") as client:
        offset = client.produce(b"read your writes")
        for _ in range(4):
            assert client.consume(offset).value == b"read your writes"
        info = client.info()
    after = counts(cluster, "Consume")
    assert {k: v - before[k] for k, v in after.items()} == {
        n: (4 if n == leader.name else 0) for n in after
    }
    assert info.role == "leader"


def test_a_single_address_without_routing_stays_on_that_node(cluster: Cluster) -> None:
    # What `proglog servers` relies on: Client(addr).info() describes that node.
    follower = cluster.followers()[0]
    with Client(follower.addr, timeout=TIMEOUT) as client:
        assert not client.routing
        assert client.info().role == "follower"
    with Client(follower.addr, timeout=TIMEOUT, routing=True) as client:
        assert client.routing
        client.produce(b"through a routed single address")
        assert client.leader_addr == cluster.leader().addr


def test_leader_kill_during_a_produce_loop_loses_no_acknowledged_record(tmp_path: Path) -> None:
    with Cluster(tmp_path, size=3) as cluster:
        old = cluster.leader()
        acked: dict[int, bytes] = {}
        unknown: list[tuple[bytes, ClientError]] = []
        # How many writes had been acknowledged after the kill when each failure came.
        failed_after: list[int] = []
        after_kill: list[int] = []
        killed = threading.Event()
        done = threading.Event()

        def produce_loop(client: Client) -> None:
            i = 0
            while not done.is_set():
                value = f"v{i}".encode()
                i += 1
                try:
                    offset = client.produce(value)
                except ClientError as exc:
                    # A write whose outcome is unknown (connection lost mid-call,
                    # NO_QUORUM) is raised, not retried.
                    unknown.append((value, exc))
                    failed_after.append(len(after_kill))
                    continue
                acked[offset] = value
                if killed.is_set():
                    after_kill.append(offset)

        with Client(addrs(cluster), timeout=TIMEOUT) as client:
            t = threading.Thread(target=produce_loop, args=(client,), daemon=True)
            t.start()
            try:
                deadline = time.monotonic() + 30
                while len(acked) < 50 and time.monotonic() < deadline:
                    time.sleep(0.01)
                cluster.kill(old.name)
                killed.set()
                while len(after_kill) < 50 and time.monotonic() < deadline and t.is_alive():
                    time.sleep(0.01)
            finally:
                done.set()
                t.join(TIMEOUT + 5)
            assert len(after_kill) >= 50, f"produces after the kill: {len(after_kill)}"
            # Only calls at the kill may fail: the one in flight, and one sent on the
            # dying connection before grpc saw it close. Their outcome is unknown
            # (the request may have been taken), so the client raises them rather
            # than risk a duplicate. Once a write succeeds on the new leader, every
            # later one does: the rest were retried within their deadline.
            assert all(isinstance(e, Unreachable) for _, e in unknown), unknown
            assert not any(failed_after), (failed_after, unknown)
            new = cluster.new_leader(old.name)
            assert client.leader_addr == new.addr

            # Every acknowledged record is in the log at its offset, read back
            # through the client (followers, linearizable).
            end = max(acked) + 1
            log: dict[int, bytes] = {}
            offset = 0
            while offset < end:
                res = client.fetch(offset, max_records=500, linearizable=True)
                log.update((r.offset, r.value) for r in res.records)
                offset = res.next_offset
        missing = {o: v for o, v in acked.items() if log.get(o) != v}
        assert not missing, f"acknowledged records lost or changed: {sorted(missing)[:10]}"


def test_unreachable_cluster_is_a_clear_error_within_the_deadline(tmp_path: Path) -> None:
    with Cluster(tmp_path, size=3) as cluster, Client(addrs(cluster), timeout=2.0) as client:
        client.produce(b"before")
        for name in cluster.nodes:
            cluster.kill(name)
        for call in (lambda: client.produce(b"after"), lambda: client.consume(0)):
            # Raises (the call's deadline bounds its retries) instead of hanging; no
            # timing threshold here: pytest-timeout catches a hang.
            with pytest.raises(Unreachable) as caught:
                call()
            for node in cluster.nodes.values():
                assert node.addr in caught.value.addr
            assert "cannot reach" in str(caught.value)


def test_unreachable_bootstrap_addresses() -> None:
    from pyproglog.testing import free_port

    seeds = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with Client(seeds, timeout=1.0) as client:
        with pytest.raises(Unavailable) as caught:
            client.produce(b"x")
        assert isinstance(caught.value, Unreachable)
        assert all(s in caught.value.addr for s in seeds)

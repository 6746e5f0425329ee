"""Replication: every node holds what the leader took, at the same offsets, exactly once.

behaviour.md, Cluster: records produced on the leader appear on every node at
the same offsets; no replication loop; a produce sent to a follower is
forwarded and answered with its offset; consumers never see an uncommitted
record.
"""

from __future__ import annotations

import time

import grpc
import pytest

from pyproglog.api.v1 import log_pb2
from pyproglog.testing import Cluster
from tests.cluster.process.conftest import produce, produce_batch, rpc_code


@pytest.mark.timeout(90)
def test_records_produced_on_the_leader_are_on_every_node_at_the_same_offsets(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    stub = leader.stub()
    expected = [(produce(stub, f"one-{i}".encode()), f"one-{i}".encode()) for i in range(20)]
    values = [f"batch-{i}".encode() for i in range(200)]
    base, last = produce_batch(stub, values)
    assert last == base + len(values) - 1
    expected += [(base + i, v) for i, v in enumerate(values)]
    assert [o for o, _ in expected] == list(range(len(expected)))

    end = cluster.wait_converged()
    assert end == len(expected)
    for node in cluster.live():
        assert cluster.read_log(node.name) == expected, node.name
        # Every node serves every committed record itself.
        got = node.stub().Consume(log_pb2.ConsumeRequest(offset=5), timeout=5)
        assert got.record.value == b"one-5"


@pytest.mark.timeout(90)
def test_no_replication_loop_a_record_produced_once_is_stored_once(cluster: Cluster) -> None:
    leader = cluster.leader()
    for i in range(30):
        produce(leader.stub(), f"once-{i}".encode())
    end = cluster.wait_converged()
    assert end == 30
    # Many heartbeat rounds later nothing has grown by itself, anywhere.
    time.sleep(1.5)
    for node in cluster.live():
        info = cluster.info(node.name)
        assert (info.next_offset, cluster.committed_end(node.name)) == (30, 30), node.name
        values = [v for _, v in cluster.read_log(node.name)]
        assert values == [f"once-{i}".encode() for i in range(30)], node.name


@pytest.mark.timeout(90)
def test_a_produce_sent_to_a_follower_is_forwarded_and_answered_with_its_offset(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    got = []
    for follower in cluster.followers(leader):
        offset = produce(follower.stub(), f"via-{follower.name}".encode())
        got.append((offset, f"via-{follower.name}".encode()))
        base, last = produce_batch(follower.stub(), [b"b1", b"b2", b"b3"])
        assert last == base + 2
        got += [(base, b"b1"), (base + 1, b"b2"), (last, b"b3")]
    cluster.wait_converged()
    on_leader = dict(cluster.read_log(leader.name))
    for offset, value in got:
        assert on_leader[offset] == value


@pytest.mark.timeout(120)
def test_consumers_never_see_an_uncommitted_record(cluster: Cluster) -> None:
    leader = cluster.leader()
    committed = produce(leader.stub(), b"committed")
    cluster.wait_converged()
    for follower in cluster.followers(leader):
        cluster.kill(follower.name)

    # The leader alone cannot commit: the write is not acknowledged...
    req = log_pb2.ProduceRequest(record=log_pb2.Record(value=b"uncommitted"))
    code = rpc_code(lambda: leader.stub().Produce(req, timeout=2))
    assert code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    # ... and no read on it serves the record, whether it was appended or not.
    assert cluster.committed_end(leader.name) == committed + 1
    fetched = leader.stub().Fetch(log_pb2.FetchRequest(offset=committed + 1), timeout=5)
    assert list(fetched.records) == []
    assert fetched.high_watermark == committed + 1
    code = rpc_code(
        lambda: leader.stub().Consume(log_pb2.ConsumeRequest(offset=committed + 1), timeout=5)
    )
    assert code == grpc.StatusCode.OUT_OF_RANGE

    # Once a majority is back, the cluster goes on from the committed prefix.
    for name in cluster.nodes:
        if not cluster[name].alive:
            cluster.restart(name)
    leader = cluster.leader()
    after = produce(leader.stub(), b"after")
    cluster.wait_converged()
    logs = {n.name: cluster.read_log(n.name) for n in cluster.live()}
    first = next(iter(logs.values()))
    assert all(log == first for log in logs.values())
    assert first[committed] == (committed, b"committed")
    assert first[-1] == (after, b"after")
    # The unacknowledged record may have been kept (appended, then committed by the next
    # term) or dropped; either way it is there at most once and before `after`.
    assert [v for _, v in first].count(b"uncommitted") <= 1

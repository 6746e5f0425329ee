"""Idempotent producers on a 3-node cluster: the dedupe state is replicated, so a retry
answered by a follower (forwarded) or by a new leader after a kill -9 is still a duplicate."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import Cluster
from tests.cluster.process.conftest import CALL

PID = 0xC1_0057_E2


def batch(stub: log_pb2_grpc.LogStub, values: list[bytes], seq: int) -> Any:
    req = log_pb2.ProduceBatchRequest(
        records=[log_pb2.Record(value=v) for v in values], producer_id=PID, sequence=seq
    )
    return stub.ProduceBatch(req, timeout=CALL)


@pytest.mark.timeout(120)
def test_retries_are_deduplicated_through_followers_and_after_failover(cluster: Cluster) -> None:
    leader = cluster.leader()
    a = batch(leader.stub(), [b"a0", b"a1"], 0)
    assert (a.base_offset, a.duplicate) == (0, False)
    follower = cluster.followers(leader)[0]
    # A follower forwards the retry; the leader answers it from its table.
    again = batch(follower.stub(), [b"a0", b"a1"], 0)
    assert (again.base_offset, again.duplicate) == (0, True)
    b = batch(follower.stub(), [b"b0"], 1)  # forwarded, new
    assert (b.base_offset, b.duplicate) == (2, False)
    with pytest.raises(grpc.RpcError) as caught:
        batch(follower.stub(), [b"z"], 7)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    cluster.wait_converged()
    cluster.kill(leader.name)  # SIGKILL
    new = cluster.new_leader(leader.name)
    # The new leader learned producer PID from the replicated entries.
    retry = batch(new.stub(), [b"b0"], 1)
    assert (retry.base_offset, retry.duplicate) == (2, True)
    assert batch(new.stub(), [b"c0"], 2).base_offset == 3

    # The old leader comes back and rebuilds the same table from its own disk.
    cluster.restart(leader.name)
    cluster.wait_converged()
    for node in cluster.live():
        assert [v for _, v in cluster.read_log(node.name)] == [b"a0", b"a1", b"b0", b"c0"]
    cluster.kill(new.name)
    third = cluster.new_leader(new.name)
    assert batch(third.stub(), [b"c0"], 2).duplicate

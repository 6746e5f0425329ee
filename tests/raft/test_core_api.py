"""The core's surface: configuration, errors, restarts, Ready bookkeeping, pipelining."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pyproglog.raft import (
    Config,
    HardState,
    MsgType,
    NotLeader,
    ProgressState,
    Raft,
    RaftError,
)
from tests.raft.helpers import cluster, make_core, storage_with


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"id": 0}, "node id must be > 0"),
        ({"id": 1, "election_tick": 1, "heartbeat_tick": 1}, "greater than heartbeat_tick"),
        ({"id": 1, "max_inflight_msgs": 0}, "in-flight limits"),
    ],
)
def test_config_is_validated(kwargs: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Config(**kwargs)


def test_follower_refuses_proposals_naming_the_leader() -> None:
    net = cluster(3)
    net.elect(2)
    with pytest.raises(NotLeader) as info:
        net.cores[1].propose("x", 1)
    assert info.value.leader == 2
    assert str(info.value) == "this node is not the leader (the leader is node 2)"
    with pytest.raises(NotLeader, match="no leader is known"):
        make_core(1).propose("x", 1)


def test_a_commit_beyond_the_stored_log_is_refused_in_one_line() -> None:
    st = storage_with([1, 1], hs=HardState(term=1, commit=5))
    with pytest.raises(RaftError, match="beyond the last stored index 2") as info:
        Raft(Config(id=1), st, random.Random(0))
    assert "\n" not in str(info.value)


def test_restart_with_applied_skips_what_the_runtime_already_applied() -> None:
    net = cluster(3)
    leader = net.elect(1)
    for k in range(4):
        leader.propose(k, 1)
    net.stabilize()
    core = Raft(net.cores[2].cfg, net.storages[2], random.Random(0), applied=3)
    assert [e.index for e in core.ready().committed_entries] == [4, 5]


def test_committed_entries_are_handed_out_within_the_apply_budget() -> None:
    net = cluster(3, max_apply_bytes=250)
    leader = net.elect(1)
    leader.propose_batch([(k, 100) for k in range(10)])
    net.stabilize()
    sizes = []
    core = Raft(net.cores[3].cfg, net.storages[3], random.Random(0))
    while core.has_ready():
        rd = core.ready()
        if rd.committed_entries:
            sizes.append(sum(e.size for e in rd.committed_entries))
        core.advance(rd)
    assert sum(sizes) == 1000
    assert max(sizes) <= 250 + 100 and len(sizes) >= 4


def test_appends_are_pipelined_before_any_acknowledgement() -> None:
    net = cluster(3, max_size_per_msg=100, max_inflight_msgs=4)
    leader = net.elect(1)
    for k in range(10):
        leader.propose(k, 100)
    rd = leader.ready()
    to2 = [m for m in rd.messages if m.type is MsgType.APPEND and m.to == 2]
    assert len(to2) == 4  # four in flight at once, one entry (100 bytes) each
    assert [m.entries[0].payload for m in to2] == [0, 1, 2, 3]


def test_report_unreachable_and_snapshot_move_progress_back_to_probe() -> None:
    net = cluster(3)
    leader = net.elect(1)
    states = [leader.prs[2].state]
    leader.report_unreachable(2)
    states.append(leader.prs[2].state)
    assert states == [ProgressState.REPLICATE, ProgressState.PROBE]
    leader.prs[3].become_snapshot(5, 0)
    leader.report_snapshot(3, ok=False)
    assert leader.prs[3].state is ProgressState.PROBE

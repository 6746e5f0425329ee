"""Leadership transfer (TimeoutNow)."""

from __future__ import annotations

import pytest

from pyproglog.raft import (
    ConfChange,
    ConfChangeKind,
    MemoryStorage,
    MsgType,
    NotLeader,
    ProposalDropped,
    Role,
    TransferRefused,
)
from tests.raft.helpers import cluster, make_core


def test_transfer_to_a_caught_up_follower_is_immediate() -> None:
    net = cluster(3)
    leader = net.elect(1)
    term = leader.term
    net.sent.clear()
    leader.transfer_leadership(2)
    net.stabilize()
    assert net.leaders() == [2]
    assert net.cores[2].term == term + 1
    assert [m.to for m in net.sent if m.type is MsgType.TIMEOUT_NOW] == [2]


def test_transfer_waits_until_the_target_is_caught_up() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.down.add(3)
    for k in range(5):
        leader.propose(k, 10)
    net.stabilize()
    net.sent.clear()
    net.down.clear()
    leader.transfer_leadership(3)
    with pytest.raises(ProposalDropped, match="being transferred to node 3"):
        leader.propose("no", 1)
    net.stabilize()
    net.tick_all(2)
    timeouts = [m for m in net.sent if m.type is MsgType.TIMEOUT_NOW]
    assert len(timeouts) == 1
    assert net.leaders() == [3]
    # The new leader has everything the old one had.
    assert net.cores[3].log.last_index() >= 7


def test_transfer_is_aborted_after_an_election_timeout() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.isolate(3)
    net.cut -= {(1, 2), (2, 1)}
    leader.transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        leader.propose("no", 1)
    net.tick(1, leader.cfg.election_tick)
    assert leader.role is Role.LEADER
    assert leader.lead_transferee == 0
    leader.propose("yes", 1)


def test_transfer_to_a_learner_or_stranger_is_refused() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.add(make_core(4, storage=MemoryStorage()))
    leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    net.stabilize()
    with pytest.raises(TransferRefused, match="learner"):
        leader.transfer_leadership(4)
    with pytest.raises(TransferRefused, match="not a member"):
        leader.transfer_leadership(9)
    with pytest.raises(NotLeader, match="leader is node 1"):
        net.cores[2].transfer_leadership(3)


def test_transfer_target_wins_despite_the_lease() -> None:
    # Voters heard from the leader a tick ago: a plain candidate would be ignored, the
    # transfer's forced campaign is not.
    net = cluster(5)
    net.elect(1)
    net.tick_all(1)
    net.cores[1].transfer_leadership(4)
    net.stabilize()
    assert net.leaders() == [4]


def test_transfer_during_a_membership_change_keeps_the_change() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.add(make_core(4, storage=MemoryStorage()))
    net.cut |= {(2, 1), (3, 1)}  # the change reaches the followers, their answers do not
    idx = leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    net.stabilize()
    assert leader.log.committed < idx
    net.heal()
    leader.transfer_leadership(2)
    net.stabilize()
    net.tick_all(2)
    assert net.leaders() == [2]
    new = net.cores[2]
    assert new.conf.learners == {4}
    assert new.log.committed >= idx
    assert net.cores[4].log.last_index() == new.log.last_index()

"""Single-server membership changes, learners, promotion, removal."""

from __future__ import annotations

import pytest

from pyproglog.raft import (
    ConfChange,
    ConfChangeKind,
    ConfChangeRejected,
    ConfState,
    Entry,
    EntryKind,
    MemoryStorage,
    Message,
    MsgType,
    Role,
)
from tests.raft.helpers import Net, cluster, make_core

ADD, PROMOTE, REMOVE = ConfChangeKind.ADD_LEARNER, ConfChangeKind.PROMOTE, ConfChangeKind.REMOVE


def add_learner(net: Net, node: int) -> None:
    net.add(make_core(node, storage=MemoryStorage()))
    leader = net.cores[net.leaders()[0]]
    leader.propose_conf_change(ConfChange(ADD, node))
    net.stabilize()


def test_learner_receives_entries_but_neither_votes_nor_counts() -> None:
    net = cluster(3)
    leader = net.elect(1)
    add_learner(net, 4)
    assert leader.conf == ConfState(frozenset({1, 2, 3}), frozenset({4}))
    leader.propose("x", 1)
    net.stabilize()
    assert net.applied[4][-1].payload == "x"
    assert net.cores[4].conf.learners == {4}
    # With two voters down, the learner's acknowledgement does not make a majority.
    net.down |= {2, 3}
    idx = leader.propose("y", 1)
    net.stabilize()
    assert net.cores[4].log.last_index() == idx
    assert leader.log.committed < idx
    # And it never campaigns.
    net.tick(4, 50)
    assert net.cores[4].role is Role.FOLLOWER


def test_promoted_learner_votes_and_counts() -> None:
    net = cluster(3)
    leader = net.elect(1)
    add_learner(net, 4)
    leader.propose_conf_change(ConfChange(PROMOTE, 4))
    net.stabilize()
    assert leader.conf.voters == {1, 2, 3, 4}
    assert net.cores[4].promotable()
    # Four voters: a majority is three.
    net.down |= {2, 3}
    idx = leader.propose("y", 1)
    net.stabilize()
    assert leader.log.committed < idx
    net.down.discard(2)
    net.tick_all(2)
    assert leader.log.committed >= idx


def test_removal_shrinks_the_quorum_and_the_removed_node_stays_quiet() -> None:
    net = cluster(3)
    leader = net.elect(1)
    leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.stabilize()
    assert leader.conf.voters == {1, 2}
    assert 3 not in leader.prs
    removed = net.cores[3]
    assert not removed.promotable()
    net.tick(3, 60)
    assert removed.role is Role.FOLLOWER and removed.term == leader.term


def test_a_removed_node_that_never_learned_it_cannot_disrupt() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.isolate(3)
    leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.stabilize()
    assert leader.conf.voters == {1, 2}
    term = leader.term
    for _ in range(60):  # node 3 times out again and again; it may reach the others
        net.cut.discard((3, 1))
        net.cut.discard((3, 2))
        net.tick_all()
    assert net.leaders() == [1] and leader.term == term


def test_one_change_at_a_time_and_only_after_an_entry_of_the_term_committed() -> None:
    net = cluster(3)
    leader = net.cores[1]
    leader.campaign()
    # Won (pre-vote and vote answered) but the NOOP of its term is not committed yet.
    for _ in range(4):
        net.handle_ready(1)
        inbox, net.inbox = net.inbox, []
        for m in inbox:
            net.cores[m.to].step(m)
        for i in (2, 3):
            net.handle_ready(i)
        inbox, net.inbox = net.inbox, []
        for m in inbox:
            if m.type is not MsgType.APPEND_RESP:
                net.cores[m.to].step(m)
    assert leader.role is Role.LEADER
    assert leader.log.term(leader.log.committed) != leader.term
    with pytest.raises(ConfChangeRejected, match="entry of its own term"):
        leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.tick_all(2)
    net.add(make_core(4, storage=MemoryStorage()))
    net.cut |= {(2, 1), (3, 1)}
    leader.propose_conf_change(ConfChange(ADD, 4))
    net.stabilize()
    with pytest.raises(ConfChangeRejected, match="already in progress"):
        leader.propose_conf_change(ConfChange(REMOVE, 2))
    net.heal()
    net.tick_all(2)
    leader.propose_conf_change(ConfChange(REMOVE, 2))


@pytest.mark.parametrize(
    ("cc", "why"),
    [
        (ConfChange(ADD, 2), "already a member"),
        (ConfChange(PROMOTE, 2), "not a learner"),
        (ConfChange(REMOVE, 9), "not a member"),
        (ConfChange(REMOVE, 1), "cannot remove itself"),
    ],
)
def test_invalid_changes_are_refused(cc: ConfChange, why: str) -> None:
    net = cluster(3)
    leader = net.elect(1)
    with pytest.raises(ConfChangeRejected, match=why):
        leader.propose_conf_change(cc)


def test_membership_takes_effect_on_append_and_reverts_on_truncation() -> None:
    f = make_core(2)
    new = ConfState(frozenset({1, 2}))
    f.step(
        Message(
            MsgType.APPEND,
            2,
            1,
            1,
            index=0,
            log_term=0,
            entries=(Entry(1, 1, EntryKind.CONFIG, 0, new),),
        )
    )
    assert f.conf == new  # appended, not yet committed: already in force
    f.step(
        Message(
            MsgType.APPEND,
            2,
            3,
            2,
            index=0,
            log_term=0,
            entries=(Entry(1, 2, EntryKind.NOOP, 0, None),),
        )
    )
    assert f.conf.voters == {1, 2, 3}  # the entry was truncated: the old membership is back


def test_membership_survives_a_restart() -> None:
    net = cluster(3)
    leader = net.elect(1)
    add_learner(net, 4)
    restarted = make_core(2, storage=net.storages[2])
    assert restarted.conf == leader.conf
    net.storages[2].compact(net.storages[2].last_index())
    again = make_core(2, storage=net.storages[2])
    assert again.conf == leader.conf


def test_a_node_removed_then_added_back_keeps_receiving_entries() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.isolate(3)  # it never hears of its removal
    leader.propose_conf_change(ConfChange(REMOVE, 3))
    net.stabilize()
    leader.propose_conf_change(ConfChange(ADD, 3))
    net.stabilize()
    assert leader.conf.learners == {3}
    net.heal()
    net.tick_all(3)
    leader.propose("later", 1)
    net.stabilize()
    assert 3 in leader.prs
    assert net.cores[3].log.last_index() == leader.log.last_index()

"""PreVote, CheckQuorum and the leader lease: partitioned nodes cannot disrupt."""

from __future__ import annotations

from pyproglog.raft import Message, MsgType, Role
from tests.raft.helpers import cluster, make_core


def test_partitioned_node_with_prevote_does_not_raise_its_term() -> None:
    net = cluster(3)
    leader = net.elect(1)
    term = leader.term
    net.isolate(3)
    net.tick(3, 100)
    assert net.cores[3].term == term
    net.heal()
    net.tick_all(3)
    assert net.leaders() == [1] and leader.term == term


def test_without_prevote_a_rejoining_node_disrupts() -> None:
    # The control for the test above: the same schedule without PreVote deposes the leader.
    net = cluster(3, pre_vote=False, check_quorum=False)
    leader = net.elect(1)
    term = leader.term
    net.isolate(3)
    net.tick(3, 100)
    assert net.cores[3].term > term
    net.heal()
    net.tick_all(3)
    assert leader.term > term


def test_follower_in_lease_ignores_a_higher_term_vote_request() -> None:
    net = cluster(3)
    net.elect(1)
    f = net.cores[2]
    f.step(Message(MsgType.VOTE, 2, 3, 10, index=100, log_term=10))
    assert f.term != 10
    assert not f.ready().messages
    # After an election timeout without the leader, it listens again.
    for _ in range(30):
        f.tick()
    f.step(Message(MsgType.VOTE, 2, 3, 10, index=100, log_term=10))
    assert f.term == 10


def test_partial_partition_does_not_depose_a_healthy_leader() -> None:
    # Node 3 cannot reach the leader but reaches node 2 (the etcd 2020 outage shape).
    net = cluster(3)
    leader = net.elect(1)
    term = leader.term
    net.cut |= {(1, 3), (3, 1)}
    for _ in range(100):
        net.tick_all()
    assert leader.role is Role.LEADER and leader.term == term


def test_leader_without_a_quorum_steps_down() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.isolate(1)
    net.tick(1, 25)
    assert leader.role is Role.FOLLOWER


def test_leader_with_a_quorum_stays() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.down.add(3)
    net.tick_all(50)
    assert leader.role is Role.LEADER


def test_prevote_does_not_change_the_voters_term() -> None:
    f = make_core(2)
    f.step(Message(MsgType.PRE_VOTE, 2, 1, 5, index=0, log_term=0))
    rd = f.ready()
    assert f.term == 0 and rd.hard_state is None
    assert [(m.type, m.reject, m.term) for m in rd.messages] == [(MsgType.PRE_VOTE_RESP, False, 5)]

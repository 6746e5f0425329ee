"""ReadIndex: linearizable read points without writing to the log."""

from __future__ import annotations

from pyproglog.raft import MsgType, ReadState, Role
from tests.raft.helpers import cluster


def test_leader_read_index_is_its_commit_after_a_heartbeat_round() -> None:
    net = cluster(3)
    leader = net.elect(1)
    leader.propose("x", 1)
    net.stabilize()
    net.sent.clear()
    assert leader.read_index(b"r1")
    net.stabilize()
    assert net.reads[1] == [ReadState(leader.log.committed, b"r1")]
    beats = [m for m in net.sent if m.type is MsgType.HEARTBEAT and m.context == b"r1"]
    assert sorted(m.to for m in beats) == [2, 3]


def test_no_answer_without_a_quorum_confirming_leadership() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.isolate(1)
    leader.read_index(b"r1")
    net.stabilize()
    net.tick(1, 3)
    assert net.reads[1] == []


def test_new_leader_waits_for_an_entry_of_its_term_before_answering() -> None:
    net = cluster(3)
    leader = net.cores[1]
    net.drop = lambda m: m.type is MsgType.APPEND  # votes pass, the NOOP does not
    leader.campaign()
    net.stabilize()
    assert leader.role is Role.LEADER
    noop = leader.log.last_index()
    assert leader.log.committed < noop
    leader.read_index(b"early")
    net.stabilize()
    net.tick(1)
    assert net.reads[1] == []
    net.drop = None
    net.tick_all(2)
    assert net.reads[1] == [ReadState(noop, b"early")]


def test_follower_forwards_to_the_leader_and_gets_the_read_index() -> None:
    net = cluster(3)
    leader = net.elect(1)
    leader.propose("x", 1)
    net.stabilize()
    assert net.cores[2].read_index(b"f1")
    net.stabilize()
    assert net.reads[2] == [ReadState(leader.log.committed, b"f1")]
    assert net.reads[1] == []


def test_follower_without_a_leader_drops_the_read() -> None:
    net = cluster(3)
    assert not net.cores[2].read_index(b"x")


def test_single_voter_answers_at_once() -> None:
    net = cluster(1)
    leader = net.elect(1)
    net.stabilize()
    leader.read_index(b"solo")
    net.stabilize()
    assert net.reads[1] == [ReadState(leader.log.committed, b"solo")]

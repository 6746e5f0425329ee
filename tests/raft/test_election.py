"""Leader election (Raft §5.2, §5.4.1), after etcd's raft_paper_test.go."""

from __future__ import annotations

import random

import pytest

from pyproglog.raft import (
    NONE,
    EntryKind,
    HardState,
    Message,
    MsgType,
    Raft,
    RaftError,
    Role,
)
from tests.raft.helpers import Net, cluster, make_core, storage_with


def vote_req(frm: int, to: int, term: int, index: int = 0, log_term: int = 0) -> Message:
    return Message(MsgType.VOTE, to, frm, term, index=index, log_term=log_term)


def responses(core: Raft) -> list[Message]:
    return list(core.ready().messages)


def test_election_timeout_is_randomized_within_t_to_2t() -> None:
    seen = set()
    for seed in range(60):
        core = make_core(1, seed=seed, pre_vote=False)
        ticks = 0
        while core.role is Role.FOLLOWER:
            core.tick()
            ticks += 1
            assert ticks < 20
        seen.add(ticks)
    assert min(seen) >= 10 and max(seen) <= 19
    assert len(seen) > 3  # actually random, not a constant


def test_follower_campaigns_after_timeout_and_wins_with_a_majority() -> None:
    net = cluster(3, pre_vote=False)
    net.tick(1, 20)
    assert net.leaders() == [1]
    leader = net.cores[1]
    assert leader.term == 1
    assert [c.lead for c in net.cores.values()] == [1, 1, 1]
    # A new leader appends a NOOP of its term at once and commits it.
    noop = net.applied[1][0]
    assert noop.kind is EntryKind.NOOP and noop.term == 1
    assert all(net.applied[i][0] == noop for i in (2, 3))


def test_candidate_votes_for_itself_and_increments_its_term() -> None:
    core = make_core(1, pre_vote=False)
    core.campaign()
    assert core.role is Role.CANDIDATE and core.term == 1 and core.vote == 1
    rd = core.ready()
    assert rd.hard_state == HardState(term=1, vote=1, commit=0)
    assert sorted(m.to for m in rd.messages if m.type is MsgType.VOTE) == [2, 3]


def test_candidate_rejected_by_a_majority_returns_to_follower() -> None:
    core = make_core(1, voters=(1, 2, 3), pre_vote=False)
    core.campaign()
    core.ready()
    core.step(Message(MsgType.VOTE_RESP, 1, 2, 1, reject=True))
    roles = [core.role]
    core.step(Message(MsgType.VOTE_RESP, 1, 3, 1, reject=True))
    roles.append(core.role)
    assert roles == [Role.CANDIDATE, Role.FOLLOWER] and core.term == 1


def test_single_voter_elects_itself() -> None:
    core = make_core(1, voters=(1,))
    core.campaign()
    assert core.role is Role.LEADER


def test_one_vote_per_term() -> None:
    core = make_core(3, pre_vote=False, check_quorum=False)
    core.step(vote_req(1, 3, 1))
    assert [(m.type, m.reject) for m in responses(core)] == [(MsgType.VOTE_RESP, False)]
    assert core.vote == 1
    core.step(vote_req(2, 3, 1))
    assert [(m.type, m.reject) for m in responses(core)] == [(MsgType.VOTE_RESP, True)]
    # Asking again is answered the same way (a retransmission).
    core.step(vote_req(1, 3, 1))
    assert [m.reject for m in responses(core)] == [False]


def test_vote_is_persisted_in_the_same_ready_as_its_grant() -> None:
    core = make_core(3)
    core.step(vote_req(1, 3, 5))
    rd = core.ready()
    assert rd.hard_state == HardState(term=5, vote=1, commit=0)
    assert [m.reject for m in rd.messages] == [False]


@pytest.mark.parametrize(
    ("cand_index", "cand_term", "granted"),
    [
        (3, 2, True),  # same last term, same length
        (4, 2, True),  # same last term, longer
        (2, 2, False),  # same last term, shorter
        (1, 3, True),  # higher last term wins even if shorter
        (5, 1, False),  # lower last term loses even if longer
    ],
)
def test_vote_needs_an_up_to_date_log(cand_index: int, cand_term: int, granted: bool) -> None:
    core = make_core(3, storage=storage_with([1, 1, 2]), check_quorum=False)
    core.step(vote_req(1, 3, 4, index=cand_index, log_term=cand_term))
    assert [m.reject for m in responses(core)] == [not granted]


def test_higher_term_makes_a_leader_step_down() -> None:
    net = cluster(3)
    leader = net.elect(1)
    leader.step(Message(MsgType.APPEND_RESP, 1, 2, leader.term + 3))
    assert leader.role is Role.FOLLOWER
    assert leader.term == 4 and leader.vote == NONE and leader.lead == NONE


def test_a_stale_leader_is_told_the_newer_term() -> None:
    core = make_core(2, storage=storage_with([1, 2]), check_quorum=False)
    core.step(Message(MsgType.HEARTBEAT, 2, 1, 5))
    core.ready()
    core.step(Message(MsgType.APPEND, 2, 3, 3, index=2, log_term=2))
    out = responses(core)
    assert [(m.type, m.term, m.to) for m in out] == [(MsgType.APPEND_RESP, 5, 3)]
    assert core.log.last_index() == 2


def test_learner_does_not_campaign() -> None:
    core = make_core(4)  # not among the voters
    for _ in range(40):
        core.tick()
    assert core.role is Role.FOLLOWER
    with pytest.raises(RaftError, match="not a voter"):
        core.campaign()


def test_leader_of_five_survives_two_failures() -> None:
    net = cluster(5)
    net.elect(1)
    net.down |= {1, 2}
    for _ in range(30):
        net.tick_all()
        if len(net.leaders()) == 1 and net.leaders()[0] != 1:
            break
    new = net.leaders()
    assert len(new) == 1 and new[0] in (3, 4, 5)


def test_elections_survive_a_restart_from_storage() -> None:
    net = cluster(3)
    net.elect(2)
    st = net.storages[2]
    restarted = Raft(net.cores[2].cfg, st, random.Random(1))
    assert restarted.term == net.cores[2].term
    assert restarted.vote == 2
    assert restarted.role is Role.FOLLOWER
    assert restarted.log.last_index() == net.cores[2].log.last_index()


def test_campaign_is_noop_on_a_leader() -> None:
    net: Net = cluster(3)
    leader = net.elect(1)
    term = leader.term
    leader.campaign()
    assert leader.role is Role.LEADER and leader.term == term

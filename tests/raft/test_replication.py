"""Log replication and commitment (Raft §5.3, §5.4.2), pipelining and backtracking."""

from __future__ import annotations

from pyproglog.raft import (
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    MsgType,
    ProgressState,
    Raft,
    Role,
)
from tests.raft.helpers import Net, cluster, make_core, storage_with


def data(net: Net, node: int) -> list[object]:
    return [e.payload for e in net.applied[node] if e.kind is EntryKind.DATA]


def test_leader_replicates_and_everyone_commits_in_order() -> None:
    net = cluster(3)
    leader = net.elect(1)
    for k in range(5):
        leader.propose(f"p{k}", 100)
    net.stabilize()
    for i in (1, 2, 3):
        assert data(net, i) == [f"p{k}" for k in range(5)]
    assert net.cores[2].log.committed == leader.log.committed == 6


def test_proposals_between_readies_travel_in_one_append_per_follower() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.sent.clear()
    leader.propose_batch([(k, 10) for k in range(50)])
    for k in range(50, 100):
        leader.propose(k, 10)
    net.handle_ready(1)
    appends = [m for m in net.sent if m.type is MsgType.APPEND]
    assert sorted(m.to for m in appends) == [2, 3]
    assert all(len(m.entries) == 100 for m in appends)


def test_leader_counts_itself_only_once_its_entries_are_persisted() -> None:
    net = cluster(3)
    leader = net.elect(1)
    idx = leader.propose("x", 1)
    rd = leader.ready()  # taken, not yet persisted or advanced
    assert [e.index for e in rd.entries] == [idx]
    # One follower acknowledges: with the leader's own write pending, no majority.
    leader.step(Message(MsgType.APPEND_RESP, 1, 2, leader.term, index=idx))
    assert leader.log.committed == idx - 1
    net.storages[1].append(rd.entries)
    leader.advance(rd)
    assert leader.log.committed == idx


def test_figure8_old_term_entries_are_not_committed_by_counting() -> None:
    # Node 1 led term 2 and has entry (2, term 2) that no one else has; node 1 now
    # leads term 4. Replicating (2, 2) to a majority must NOT commit it: only once an
    # entry of term 4 (the NOOP at 3) is on a majority does everything up to it commit.
    st1 = storage_with([1, 2], hs=HardState(term=3))
    leader = make_core(1, storage=st1, max_size_per_msg=1)
    net = Net([leader, make_core(2, storage=storage_with([1])), make_core(3)])
    net.cut |= {(1, 3), (3, 1)}
    seen_old_replicated = []

    def check(core: Raft) -> None:
        if core is leader and leader.role is Role.LEADER and leader.prs[2].match == 2:
            seen_old_replicated.append(True)
            assert leader.log.committed < 2, "committed an old-term entry by counting"

    net.after_step = check
    leader.campaign()
    net.stabilize()
    assert leader.role is Role.LEADER and leader.term == 4
    assert seen_old_replicated  # the dangerous moment did happen
    assert leader.prs[2].match == 3
    assert leader.log.committed == 3


def test_follower_truncates_only_at_a_real_conflict() -> None:
    f = make_core(2, storage=storage_with([1, 1, 2, 2]))
    # A stale, reordered append that matches what we have must not truncate 3..4.
    f.step(
        Message(
            MsgType.APPEND,
            2,
            1,
            2,
            index=1,
            log_term=1,
            entries=(Entry(2, 1, EntryKind.DATA, 10, "e2t1"),),
            commit=1,
        )
    )
    rd = f.ready()
    assert rd.entries == ()
    assert f.log.last_index() == 4
    assert [m.index for m in rd.messages] == [2]
    # A real conflict at 3 replaces 3..4.
    f.step(
        Message(
            MsgType.APPEND,
            2,
            1,
            3,
            index=2,
            log_term=1,
            entries=(Entry(3, 3, EntryKind.DATA, 10, "new"),),
            commit=1,
        )
    )
    assert f.log.last_index() == 3 and f.log.term(3) == 3


def test_append_below_commit_is_answered_with_the_commit_index() -> None:
    st = storage_with([1, 1, 1], hs=HardState(term=1, commit=3))
    f = make_core(2, storage=st)
    f.step(Message(MsgType.APPEND, 2, 1, 1, index=1, log_term=1, entries=(), commit=3))
    msgs = f.ready().messages
    assert [(m.type, m.index, m.reject) for m in msgs] == [(MsgType.APPEND_RESP, 3, False)]


def test_conflict_hints_skip_whole_terms() -> None:
    # The follower has 100 entries of a dead leader's term 2 after index 1; the
    # leader's log has term 3 entries there. Backtracking must not take 100 round trips.
    leader_st = storage_with([1] + [3] * 100, hs=HardState(term=4))
    follower_st = storage_with([1] + [2] * 100, hs=HardState(term=4))
    net = Net([make_core(1, storage=leader_st), make_core(2, storage=follower_st), make_core(3)])
    net.cut |= {(1, 3), (3, 1)}
    net.cores[1].campaign()
    net.stabilize()
    assert net.cores[1].role is Role.LEADER
    rejects = [m for m in net.sent if m.type is MsgType.APPEND_RESP and m.reject]
    assert len(rejects) <= 3
    assert net.cores[2].log.term(50) == 3


def test_inflight_window_is_bounded_by_count_and_bytes() -> None:
    net = cluster(3, max_size_per_msg=100, max_inflight_msgs=3, max_inflight_bytes=10_000)
    leader = net.elect(1)
    net.cut |= {(2, 1), (3, 1)}  # acknowledgements lost: the window never drains
    net.sent.clear()
    for k in range(20):
        leader.propose(k, 100)
        net.stabilize()
    appends = [m for m in net.sent if m.type is MsgType.APPEND and m.to == 2 and m.entries]
    assert len(appends) == 3
    assert leader.prs[2].inflights.full()

    net2 = cluster(3, max_size_per_msg=100, max_inflight_msgs=100, max_inflight_bytes=250)
    leader2 = net2.elect(1)
    net2.cut |= {(2, 1), (3, 1)}
    net2.sent.clear()
    for k in range(20):
        leader2.propose(k, 100)
        net2.stabilize()
    appends2 = [m for m in net2.sent if m.type is MsgType.APPEND and m.to == 2 and m.entries]
    assert sum(e.size for m in appends2 for e in m.entries) == 300  # stops once >= 250


def test_lost_appends_are_recovered_through_heartbeats() -> None:
    net = cluster(3, max_inflight_msgs=2)
    leader = net.elect(1)
    net.cut.add((1, 2))
    for k in range(6):
        leader.propose(k, 10)
        net.stabilize()
    net.heal()
    net.tick_all(12)
    assert net.cores[2].log.last_index() == leader.log.last_index()
    assert leader.prs[2].state is ProgressState.REPLICATE


def test_follower_behind_retention_gets_a_snapshot_then_entries() -> None:
    net = cluster(3)
    leader = net.elect(1)
    net.down.add(3)
    for k in range(10):
        leader.propose(k, 10)
    net.stabilize()
    net.storages[1].compact(8, lowest_offset=700)
    net.down.clear()
    net.sent.clear()
    leader.propose("after", 10)
    net.tick_all(3)
    snaps = [m for m in net.sent if m.type is MsgType.SNAPSHOT]
    assert len(snaps) == 1 and snaps[0].snapshot is not None
    assert snaps[0].snapshot.index == 8 and snaps[0].snapshot.lowest_offset == 700
    assert net.storages[3].snapshot().index == 8
    assert net.cores[3].log.last_index() == leader.log.last_index()
    assert net.cores[3].log.committed == leader.log.committed
    assert net.applied[3][-1].payload == "after"


def test_a_late_snapshot_is_ignored() -> None:
    st = storage_with([1, 1, 1, 1], hs=HardState(term=1, commit=4))
    f = make_core(2, storage=st)
    snap = MemoryStorage(st.snapshot().conf)
    snap.append([Entry(i, 1, EntryKind.DATA, 1, None) for i in (1, 2, 3)])
    snap.compact(3)
    f.step(Message(MsgType.SNAPSHOT, 2, 1, 1, snapshot=snap.snapshot()))
    rd = f.ready()
    assert rd.snapshot is None
    assert f.log.last_index() == 4
    assert [(m.type, m.index) for m in rd.messages] == [(MsgType.APPEND_RESP, 4)]


def test_restart_keeps_commit_and_reapplies_from_the_snapshot() -> None:
    net = cluster(3)
    leader = net.elect(1)
    for k in range(3):
        leader.propose(k, 1)
    net.stabilize()
    restarted = make_core(2, storage=net.storages[2])
    assert restarted.log.committed == 4
    rd = restarted.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2, 3, 4]


def test_a_follower_that_lost_its_log_says_so_and_is_sent_it_again() -> None:
    # A wiped disk (or entries unsynced under a lax policy): the leader believes the
    # follower has everything it acknowledged, so only the follower can tell.
    net = cluster(3)
    leader = net.elect(1)
    for k in range(5):
        leader.propose(f"p{k}", 100)
    net.stabilize()
    assert leader.prs[3].match == leader.log.last_index()
    wiped = make_core(3, storage=MemoryStorage(), seed=7)  # empty: no entries, no membership
    net.add(wiped)
    net.tick(1)  # a heartbeat round
    assert leader.prs[3].match == leader.log.last_index()
    assert wiped.log.last_index() == leader.log.last_index()
    assert data(net, 3) == [f"p{k}" for k in range(5)]


def test_a_stale_heartbeat_answer_does_not_lower_a_follower_s_match() -> None:
    net = cluster(3)
    leader = net.elect(1)
    leader.propose("x", 10)
    net.stabilize()
    match = leader.prs[2].match
    # An answer that reports less than the follower acknowledged, without saying it
    # lost anything (reordered): the leader keeps what it knows.
    leader.step(Message(MsgType.HEARTBEAT_RESP, 1, 2, leader.term, index=match - 1))
    assert leader.prs[2].match == match

"""Three cluster nodes in one event loop: real logs on disk, real gRPC peer streams on
loopback, real gossip. The process-level tests (tests/cluster/process) do the same
with `proglog serve` subprocesses and kill -9; these check the runtime's wiring fast."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from pyproglog.cluster import ClusterNode, ClusterOptions, RaftTiming, node_id
from pyproglog.cluster.replicated import ReplicatedLog
from pyproglog.log import Log, LogConfig, OffsetOutOfRange, Record, Write
from pyproglog.observability import NodeMetrics
from pyproglog.raft import ConfChange, ConfChangeKind, Message, MsgType, Role
from pyproglog.server.commitlog import Written
from pyproglog.server.errors import NoQuorum, NotLeader
from pyproglog.testing import free_port

TIMING = RaftTiming(tick_seconds=0.02, election_ticks=10, heartbeat_ticks=1)


@dataclass
class Member:
    name: str
    data: Path
    gossip: str
    log: Log
    server: grpc.aio.Server
    cluster: ClusterNode

    async def close(self) -> None:
        await self.cluster.part()
        await self.server.stop(0)
        await self.cluster.close()
        self.log.close()


async def _start(
    tmp: Path,
    name: str,
    *,
    join: list[str],
    bootstrap: bool,
    gossip: str | None = None,
    rpc_port: int = 0,
) -> Member:
    data = tmp / name
    data.mkdir(exist_ok=True)
    log = Log(data, LogConfig())
    server = grpc.aio.server()
    port = server.add_insecure_port(f"127.0.0.1:{rpc_port}")
    # A restarted member keeps its addresses (as a StatefulSet's pod does; kinship
    # also refuses a known name from a new gossip address for ~30 s).
    gossip = gossip or f"127.0.0.1:{free_port()}"
    options = ClusterOptions(
        name=name,
        rpc_addr=f"127.0.0.1:{port}",
        bind_addr=gossip,
        join_addrs=tuple(join),
        bootstrap=bootstrap,
        gossip_fast=True,
        timing=TIMING,
        write_timeout=5.0,
    )
    cluster = ClusterNode(log, data, options, sync_always=False)
    await cluster.open()
    cluster.add_to_server(server)
    await server.start()
    await cluster.join()
    return Member(name, data, gossip, log, server, cluster)


async def _until(predicate: object, timeout: float = 15.0, what: str = "condition") -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _leader(members: list[Member]) -> Member | None:
    leaders = [m for m in members if m.cluster.node and m.cluster.node.role is Role.LEADER]
    return leaders[0] if len(leaders) == 1 else None


def _voters(m: Member) -> int:
    assert m.cluster.node is not None
    return len(m.cluster.node.conf().voters)


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[list[Member]]:
    first = await _start(tmp_path, "n1", join=[], bootstrap=True)
    members = [first]
    try:
        members.append(await _start(tmp_path, "n2", join=[first.gossip], bootstrap=False))
        members.append(await _start(tmp_path, "n3", join=[first.gossip], bootstrap=False))
        await _until(lambda: all(_voters(m) == 3 for m in members), what="three voters")
        yield members
    finally:
        for m in members:
            await m.close()


async def _append(commit_log: ReplicatedLog, records: list[Record]) -> int:
    """One plain write through the seam; its first offset."""
    (outcome,) = await commit_log.append_writes([Write(records)])
    assert isinstance(outcome, Written)
    return outcome.offset


def _values(m: Member) -> list[bytes]:
    end = m.cluster.node.committed_end if m.cluster.node else 0
    return [m.log.read(o).value for o in range(m.log.lowest_offset, end)]


async def test_writes_replicate_to_every_node_at_the_same_offsets(three: list[Member]) -> None:
    await _until(lambda: _leader(three) is not None, what="a leader")
    leader = _leader(three)
    assert leader is not None and leader.cluster.commit_log is not None
    follower = next(m for m in three if m is not leader)
    assert follower.cluster.commit_log is not None

    first = await _append(leader.cluster.commit_log, [Record(b"a"), Record(b"b")])
    forwarded = await _append(follower.cluster.commit_log, [Record(b"c")])
    assert forwarded == first + 2  # answered with the leader's offset

    await _until(
        lambda: all(_values(m)[-3:] == [b"a", b"b", b"c"] for m in three), what="replication"
    )
    logs = [_values(m) for m in three]
    assert logs[0] == logs[1] == logs[2]
    # Every replica stored the leader's term and one consensus index per entry.
    recs = [m.log.read(first) for m in three]
    assert len({(r.term, r.timestamp_ms) for r in recs}) == 1
    assert recs[0].term >= 1


async def test_reads_are_bounded_by_the_commit(three: list[Member]) -> None:
    await _until(lambda: _leader(three) is not None, what="a leader")
    m = three[0]
    assert m.cluster.commit_log is not None
    end = m.cluster.commit_log.committed_end
    with pytest.raises(OffsetOutOfRange):
        m.cluster.commit_log.read(end)


async def test_a_new_leader_takes_over_when_the_leader_stops(three: list[Member]) -> None:
    await _until(lambda: _leader(three) is not None, what="a leader")
    old = _leader(three)
    assert old is not None and old.cluster.commit_log is not None
    await _append(old.cluster.commit_log, [Record(b"before")])
    await old.close()
    rest = [m for m in three if m is not old]
    three.remove(old)
    await _until(lambda: _leader(rest) is not None, what="a new leader")
    new = _leader(rest)
    assert new is not None and new.cluster.commit_log is not None
    await _append(new.cluster.commit_log, [Record(b"after")])
    await _until(lambda: all(_values(m)[-2:] == [b"before", b"after"] for m in rest))


async def test_leadership_transfer_hands_over(three: list[Member]) -> None:
    await _until(lambda: _leader(three) is not None, what="a leader")
    old = _leader(three)
    assert old is not None and old.cluster.node is not None
    assert await old.cluster.node.transfer_leadership(2.0)
    await _until(lambda: _leader(three) not in (None, old), what="another leader")


async def test_a_follower_without_a_leader_refuses_writes(tmp_path: Path) -> None:
    lone = await _start(tmp_path, "lonely", join=[], bootstrap=False)
    try:
        assert lone.cluster.commit_log is not None
        with pytest.raises(NotLeader):
            await _append(lone.cluster.commit_log, [Record(b"x")])
    finally:
        await lone.close()


async def test_a_wiped_bootstrap_node_rejoins_instead_of_founding_a_cluster(
    three: list[Member], tmp_path: Path
) -> None:
    await _until(lambda: _leader(three) is not None, what="a leader")
    leader = _leader(three)
    assert leader is not None and leader.cluster.commit_log is not None
    await _append(leader.cluster.commit_log, [Record(b"kept")])
    first = next(m for m in three if m.name == "n1")
    await first.close()
    three.remove(first)
    for f in sorted(first.data.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    # Pod 0 of a StatefulSet: --bootstrap, and the others as join addresses.
    port = int(first.cluster.options.rpc_addr.rpartition(":")[2])
    joins = [m.gossip for m in three]
    again = await _start(
        tmp_path, "n1", join=joins, bootstrap=True, gossip=first.gossip, rpc_port=port
    )
    three.append(again)
    await _until(lambda: b"kept" in _values(again), what="the wiped node to catch up")
    assert again.cluster.node is not None
    assert len(again.cluster.node.conf().voters) == 3


async def test_metrics_show_role_term_commit_and_peer_lag(three: list[Member]) -> None:
    await _until(lambda: _leader(three) is not None, what="a leader")
    leader = _leader(three)
    assert leader is not None and leader.cluster.commit_log is not None
    await _append(leader.cluster.commit_log, [Record(b"m")])
    metrics = NodeMetrics()
    metrics.watch_cluster(leader.cluster.figures)
    text = metrics.render()[0].decode()
    assert 'proglog_raft_role{role="leader"} 1.0' in text
    assert 'proglog_raft_role{role="follower"} 0.0' in text
    committed = re.search(r"^proglog_raft_proposals_committed_total (\S+)$", text, re.M)
    assert committed is not None and float(committed.group(1)) >= 1
    for name in ("n1", "n2", "n3"):
        if name != leader.name:
            assert f'proglog_raft_peer_lag_entries{{peer="{name}"}}' in text


async def test_a_linearizable_read_on_a_follower_sees_the_last_acknowledged_write(
    three: list[Member],
) -> None:
    await _until(lambda: _leader(three) is not None, what="a leader")
    leader = _leader(three)
    assert leader is not None and leader.cluster.commit_log is not None
    for follower in (m for m in three if m is not leader):
        assert follower.cluster.commit_log is not None
        offset = await _append(leader.cluster.commit_log, [Record(follower.name.encode())])
        await follower.cluster.commit_log.read_barrier()
        # No waiting: the barrier returned only once the follower applied the write.
        assert follower.cluster.commit_log.read(offset).value == follower.name.encode()


async def test_a_read_barrier_without_a_leader_fails(tmp_path: Path) -> None:
    lone = await _start(tmp_path, "alone", join=[], bootstrap=False)
    try:
        assert lone.cluster.commit_log is not None
        with pytest.raises(NotLeader):
            await lone.cluster.commit_log.read_barrier()
    finally:
        await lone.close()


async def test_pods_started_together_form_one_cluster(tmp_path: Path) -> None:
    # A StatefulSet started in parallel: pod 0 bootstraps (and knows the others'
    # addresses, as the chart gives it), the others join; all at once.
    gossip = {name: f"127.0.0.1:{free_port()}" for name in ("p0", "p1", "p2")}
    starts = [
        _start(
            tmp_path, "p0", join=[gossip["p1"], gossip["p2"]], bootstrap=True, gossip=gossip["p0"]
        ),
        _start(tmp_path, "p1", join=[gossip["p0"]], bootstrap=False, gossip=gossip["p1"]),
        _start(tmp_path, "p2", join=[gossip["p0"]], bootstrap=False, gossip=gossip["p2"]),
    ]
    members = list(await asyncio.gather(*starts))
    try:
        await _until(lambda: all(_voters(m) == 3 for m in members), what="one cluster of three")
        assert _leader(members) is not None
    finally:
        for m in members:
            await m.close()


async def test_a_membership_change_that_cannot_commit_is_no_quorum(tmp_path: Path) -> None:
    # The leader loses its quorum to a configuration change (its new voter never
    # answers): the caller (`proglog servers remove`) gets NO_QUORUM, not a bug.
    solo = await _start(tmp_path, "solo", join=[], bootstrap=True)
    try:
        node = solo.cluster.node
        assert node is not None
        await _until(lambda: node.is_leader, what="the bootstrapped node to lead")
        ghost = node_id("ghost")
        await node.change_conf(ConfChange(ConfChangeKind.ADD_LEARNER, ghost), 2.0)
        with pytest.raises(NoQuorum):
            await node.change_conf(ConfChange(ConfChangeKind.PROMOTE, ghost), 0.3)
    finally:
        await solo.close()


async def test_a_message_of_an_old_term_teaches_no_addresses(tmp_path: Path) -> None:
    # A deposed leader's late CONFIG entry carries the addresses it knew: the runtime
    # must not take them over the current ones (the core drops the message itself).
    solo = await _start(tmp_path, "solo", join=[], bootstrap=True)
    try:
        node = solo.cluster.node
        assert node is not None
        await _until(lambda: node.is_leader, what="the bootstrapped node to lead")
        old, fresh = node_id("old"), node_id("fresh")
        stale = Message(MsgType.APPEND, to=node.id, frm=old, term=node.term - 1)
        node.deliver(stale, {old: ("old", "127.0.0.1:1")})
        current = Message(MsgType.APPEND_RESP, to=node.id, frm=fresh, term=node.term)
        node.deliver(current, {fresh: ("fresh", "127.0.0.1:2")})
        await _until(lambda: fresh in node.addresses, what="the current message's addresses")
        assert old not in node.addresses
    finally:
        await solo.close()

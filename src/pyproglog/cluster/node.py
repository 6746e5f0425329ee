"""The Raft runtime: one asyncio task drives one pure core (`pyproglog.raft.Raft`).

The driver loop takes its inputs (ticks from a ticker task, messages from the
peer transport, proposals, membership changes, transfers), feeds them to the
core, and handles every `Ready` in etcd's order:

1. persist: entries into the segmented log / side file, hard state, snapshot
   (`LogStorage`; off the loop when it fsyncs, so a slow disk delays the next
   Ready, never a heartbeat already queued by the ticker);
2. THEN send the Ready's messages (a vote or an append acknowledgement is a
   promise about the disk: sending first could grant two votes in one term);
3. apply the committed entries: move the committed end (the high-water mark
   consumers are bounded by) and answer the producers waiting on them;
4. `advance`.

Durability of an acknowledged write comes from step 1 on a majority: under
`--sync-policy always` each node fdatasyncs an entry before it acknowledges it
(and the leader before it counts itself); under `interval` an acknowledged
entry is in the page cache of a majority and on disk within the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyproglog.cluster.payload import DataBatch, StoredBatch, now_ms
from pyproglog.cluster.storage import LogStorage, batch_bytes
from pyproglog.cluster.transport import PeerTransport
from pyproglog.log import AppendPlan, Log, Write
from pyproglog.raft import (
    NONE,
    ConfChange,
    ConfChangeRejected,
    Config,
    ConfState,
    Entry,
    EntryKind,
    Message,
    NotLeader,
    ProgressState,
    ProposalDropped,
    Raft,
    RaftError,
    Ready,
    Role,
    TransferRefused,
)
from pyproglog.server.commitlog import WriteOutcome, resolve_plan
from pyproglog.server.errors import NoQuorum
from pyproglog.server.errors import NotLeader as NotLeaderError

__all__ = ["NodeStatus", "PeerStatus", "RaftNode", "RaftTiming"]

_log = logging.getLogger("pyproglog.cluster")

# Replication bytes in flight to one follower (the core's window).
INFLIGHT_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class RaftTiming:
    tick_seconds: float = 0.05
    election_ticks: int = 10
    heartbeat_ticks: int = 1

    @property
    def election_timeout(self) -> float:
        """The longest a follower waits before campaigning (2 x election ticks)."""
        return 2 * self.election_ticks * self.tick_seconds


@dataclass(frozen=True, slots=True)
class PeerStatus:
    id: int
    name: str
    rpc_addr: str
    voter: bool
    match: int  # the leader's view; 0 when unknown
    lag: int  # entries behind the leader's last index


@dataclass(frozen=True, slots=True)
class NodeStatus:
    id: int
    name: str
    role: Role
    term: int
    leader: int
    commit_index: int
    applied_index: int
    committed_end: int
    last_index: int
    peers: tuple[PeerStatus, ...]


@dataclass(slots=True)
class _Proposal:
    term: int
    future: asyncio.Future[int]
    deadline: float


@dataclass(slots=True)
class _Writes:
    """Client writes waiting to be proposed as one entry (one group-commit batch)."""

    writes: Sequence[Write]
    stamp_ms: int
    future: asyncio.Future[list[WriteOutcome]]


class RaftNode:
    """A node of the cluster: the core, its storage, its transport, and who is where."""

    def __init__(
        self,
        *,
        node_id: int,
        name: str,
        rpc_addr: str,
        log: Log,
        storage: LogStorage,
        transport: PeerTransport,
        timing: RaftTiming,
        sync_always: bool,
        seed: int | None = None,
    ) -> None:
        self.id = node_id
        self.name = name
        self.rpc_addr = rpc_addr
        self.log = log
        self.storage = storage
        self.transport = transport
        self.timing = timing
        self._sync_always = sync_always
        self._rng = random.Random(seed if seed is not None else node_id ^ time.time_ns())
        self.core: Raft | None = None
        # id -> (name, client RPC address): from gossip tags, CONFIG messages and joins.
        self.addresses: dict[int, tuple[str, str]] = {node_id: (name, rpc_addr)}
        self.committed_end = 0
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.term = 0
        self._inbox: deque[tuple[Message, dict[int, tuple[str, str]]]] = deque()
        self._proposals: deque[_Writes] = deque()
        self._calls: deque[Callable[[Raft], None]] = deque()
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._read_seq = 0
        self._pending: dict[int, _Proposal] = {}
        self._ticks = 0
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()  # set (and replaced) on every role/leader/commit change
        self._commit_listeners: list[Callable[[int], None]] = []
        self._role_listeners: list[Callable[[], None]] = []
        self._driver: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stopped = False
        self.failure: BaseException | None = None
        # Counted for the metrics.
        self.elections = 0
        self.leader_changes = 0
        self.proposals_committed = 0
        self.snapshot_installs = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, *, bootstrap: bool) -> None:
        """Open the core over what storage holds; a node with state never bootstraps."""
        storage = self.storage
        if not storage.has_state():
            if bootstrap:
                _log.info("bootstrapping a new cluster with %s as its first voter", self.name)
                await asyncio.to_thread(storage.bootstrap, ConfState(frozenset({self.id})))
            else:
                _log.info("no cluster state yet: waiting for the leader to add %s", self.name)
        # Who was where at the last membership change; gossip then keeps it current.
        self.learn_addresses(storage.addresses())
        hs = storage.hard_state()
        cfg = Config(
            id=self.id,
            election_tick=self.timing.election_ticks,
            heartbeat_tick=self.timing.heartbeat_ticks,
            # Well under the transport's per-peer queue (64 MiB): the core's window,
            # not a full queue dropping messages, is what paces a follower catching up.
            max_inflight_bytes=INFLIGHT_BYTES,
        )
        self.core = core = Raft(cfg, storage, self._rng, applied=hs.commit)
        self.term = core.term
        self.committed_end = storage.committed_end_after(core.log.applied)
        if core.conf.voters == frozenset({self.id}):
            core.campaign()  # alone: no one to wait for
        self._driver = asyncio.create_task(self._drive(), name=f"raft-{self.name}")
        self._ticker = asyncio.create_task(self._tick_forever(), name=f"raft-tick-{self.name}")

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._ticker, self._driver):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        error = NoQuorum("the node is shutting down; the write's outcome is unknown")
        for p in self._pending.values():
            if not p.future.done():
                p.future.set_exception(error)
        self._pending.clear()
        for w in self._proposals:
            if not w.future.done():
                w.future.set_exception(error)
        self._proposals.clear()
        await self.transport.close()
        await asyncio.to_thread(self.storage.close)

    # -- what others read ------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def leader_addr(self) -> str | None:
        known = self.addresses.get(self.leader) if self.leader != NONE else None
        return known[1] if known else None

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        self._commit_listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        with contextlib.suppress(ValueError):
            self._commit_listeners.remove(listener)

    def add_role_listener(self, listener: Callable[[], None]) -> None:
        """Called on the loop whenever this node's role or known leader changes."""
        self._role_listeners.append(listener)

    async def wait_changed(self, timeout: float) -> None:
        """Wait for the next role, leader or commit change (or the timeout)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def wait_for_leader(self, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.leader == NONE or (self.leader_addr is None and not self.is_leader):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or self._stopped:
                return False
            await self.wait_changed(left)
        return True

    def conf(self) -> ConfState:
        """The membership in force (empty until the driver starts)."""
        if self.core is None:
            return ConfState(frozenset())
        return self.core.conf

    def status(self) -> NodeStatus:
        core = self.core
        if core is None:  # the driver has not started (gossip is joining)
            return NodeStatus(self.id, self.name, self.role, 0, NONE, 0, 0, 0, 0, ())
        last = core.log.last_index()
        peers = []
        conf = core.conf
        for pid in sorted(conf.voters | conf.learners):
            name, addr = self.addresses.get(pid, (str(pid), ""))
            pr = core.prs.get(pid) if self.is_leader else None
            match = pr.match if pr is not None else 0
            lag = last - match if pr is not None else 0
            peers.append(PeerStatus(pid, name, addr, pid in conf.voters, match, lag))
        return NodeStatus(
            id=self.id,
            name=self.name,
            role=self.role,
            term=self.term,
            leader=self.leader,
            commit_index=core.log.committed,
            applied_index=core.log.applied,
            committed_end=self.committed_end,
            last_index=last,
            peers=tuple(peers),
        )

    # -- addresses -------------------------------------------------------------------------

    def learn_addresses(self, addresses: Mapping[int, tuple[str, str]]) -> None:
        for pid, (name, addr) in addresses.items():
            if pid == self.id or not addr:
                continue
            if self.addresses.get(pid) != (name, addr):
                self.addresses[pid] = (name, addr)
                self.transport.set_address(pid, addr)

    def address_book(self) -> Mapping[int, tuple[str, str]]:
        return self.addresses

    # -- inputs ------------------------------------------------------------------------------

    def deliver(self, message: Message, addresses: dict[int, tuple[str, str]]) -> None:
        """A message from a peer (the transport calls this on the loop). Before the
        driver starts (gossip is joining) messages are dropped, as a lossy network
        would: the leader sends again."""
        if self.core is None:
            return
        self._inbox.append((message, addresses))
        self._wake.set()

    async def propose_writes(self, writes: Sequence[Write], timeout: float) -> list[WriteOutcome]:
        """Replicate client writes as one entry; per write its outcome once committed.

        An idempotent producer's batch is decided against this leader's whole log
        when the entry is proposed (log.producers.plan_writes): one the log holds
        is answered with its offsets, one out of order is refused.
        Raises the service's NotLeader when this node does not lead, and
        NoQuorum when the entry is not committed within `timeout` (then its
        outcome is unknown: it may still commit).
        """
        if not self.is_leader:
            raise NotLeaderError(self.leader_addr)
        fut: asyncio.Future[list[WriteOutcome]] = asyncio.get_running_loop().create_future()
        # The caller may have stopped waiting (timeout) before the outcome is known.
        fut.add_done_callback(_retrieved)
        # Stamped once here: every replica stores the same time for each record.
        self._proposals.append(_Writes(writes, now_ms(), fut))
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise NoQuorum(
                f"the write was not committed within {timeout:.1f}s (no quorum reachable?); "
                "its outcome is unknown"
            ) from None

    async def change_conf(self, change: ConfChange, timeout: float) -> None:
        """Propose one membership change and wait until it is committed.

        Raises ConfChangeRejected (another change is pending), the service's
        NotLeader when this node does not lead (or leadership is moving), and
        NoQuorum when the change is not committed within `timeout`.
        """
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieved)

        def call(core: Raft) -> None:
            if core.role is not Role.LEADER:
                fut.set_exception(NotLeaderError(self.leader_addr))
                return
            try:
                idx = core.propose_conf_change(change)
            except ConfChangeRejected as exc:
                fut.set_exception(exc)
                return
            except (NotLeader, ProposalDropped):
                fut.set_exception(NotLeaderError(self.leader_addr))
                return
            deadline = asyncio.get_running_loop().time() + timeout
            self._pending[idx] = _Proposal(core.term, fut, deadline)

        self._calls.append(call)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise NoQuorum(
                f"the membership change was not committed within {timeout:.1f}s; "
                "its outcome is unknown"
            ) from None

    async def transfer_leadership(self, timeout: float) -> bool:
        """Hand leadership to the most caught-up voter; True once another node leads."""
        core = self.core
        if core is None or not self.is_leader:
            return False
        others = [v for v in core.conf.voters if v != self.id]
        if not others:
            return False
        target = max(others, key=lambda v: core.prs[v].match if v in core.prs else 0)

        def call(c: Raft) -> None:
            with contextlib.suppress(NotLeader, TransferRefused):
                c.transfer_leadership(target)

        self._calls.append(call)
        self._wake.set()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.is_leader:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await self.wait_changed(left)
        _log.info("leadership handed to %s", self.addresses.get(target, (target,))[0])
        return True

    async def read_barrier(self, timeout: float) -> None:
        """Return once this node has applied everything the leader had committed when
        asked (ReadIndex): a read after it sees every write acknowledged before."""
        if self.core is None:
            raise NotLeaderError(None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big") + self.id.to_bytes(8, "big")
        fut: asyncio.Future[int] = loop.create_future()
        self._reads[ctx] = fut

        def call(core: Raft) -> None:
            if not core.read_index(ctx) and not fut.done():
                fut.set_exception(NotLeaderError(self.leader_addr))

        self._calls.append(call)
        self._wake.set()
        try:
            index = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise NoQuorum(
                f"the leader did not confirm a read point within {timeout:.1f}s"
            ) from None
        finally:
            self._reads.pop(ctx, None)
        core = self.core
        while core.log.applied < index:
            left = deadline - loop.time()
            if left <= 0:
                raise NoQuorum(f"this node did not catch up to entry {index} in time")
            await self.wait_changed(left)

    # -- the driver -----------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        period = self.timing.tick_seconds
        loop = asyncio.get_running_loop()
        next_at = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += period
            now = loop.time()
            if next_at < now - period:  # the loop stalled: do not replay a burst of ticks
                next_at = now + period
            self._ticks += 1
            self._wake.set()

    async def _drive(self) -> None:
        core = self.core
        assert core is not None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._feed(core)
                while core.has_ready():
                    rd = core.ready()
                    await self._persist(rd)
                    if rd.messages:
                        self.transport.send(rd.messages)
                    self._apply(rd)
                    applied = core.log.applied
                    core.advance(rd)
                    if rd.read_states:
                        self._answer_reads(rd)
                    if core.log.applied != applied:  # read barriers wait for it
                        self._notify_changed()
                    self._observe(core)
                    if self._inbox or self._calls:
                        self._feed(core)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # Persisting failed (disk full, I/O error): this node cannot go on safely.
            self.failure = exc
            _log.critical("the Raft driver stopped: %s", exc, exc_info=True)
            self.role = Role.FOLLOWER
            self.leader = NONE
            self._notify_changed()
            raise

    def _feed(self, core: Raft) -> None:
        for _ in range(self._ticks):
            core.tick()
        self._ticks = 0
        inbox = self._inbox
        while inbox:
            msg, addresses = inbox.popleft()
            if addresses and msg.term >= core.term:
                # Not from a stale leader: its membership may name addresses since moved.
                self.learn_addresses(addresses)
            try:
                core.step(msg)
            except RaftError as exc:
                _log.warning("dropped a %s from %d: %s", msg.type.value, msg.frm, exc)
        for pid in self.transport.take_unreachable():
            core.report_unreachable(pid)
        calls = self._calls
        while calls:
            calls.popleft()(core)
        self._take_proposals(core)
        self._expire_proposals()

    def _take_proposals(self, core: Raft) -> None:
        proposals = self._proposals
        if not proposals:
            return
        if core.role is not Role.LEADER:
            error = NotLeaderError(self.leader_addr)
            while proposals:
                fut = proposals.popleft().future
                if not fut.done():
                    fut.set_exception(error)
            return
        loop_time = asyncio.get_running_loop().time()
        deadline = loop_time + 4 * self.timing.election_timeout
        planned = False
        while proposals:
            w = proposals[0]
            if w.future.done():
                proposals.popleft()
                continue
            sequenced = any(x.producer_id for x in w.writes)
            if sequenced and (planned or core.log.last_index() != self.storage.last_index()):
                # Producers are decided against the log as persisted: wait until the
                # entries proposed before this one are in it (the next round).
                self._wake.set()
                return
            proposals.popleft()
            planned = planned or sequenced
            plan = self.log.plan(w.writes, self.committed_end)
            if not plan.records:  # nothing new: every write answered from the log
                w.future.set_result(resolve_plan(plan, 0))
                continue
            records = plan.records
            batch = DataBatch(records=records, stamp_ms=w.stamp_ms, producers=plan.batches)
            size = batch_bytes(records)  # what the entry will take in the log
            try:
                idx = core.propose(batch, size)
            except (NotLeader, ProposalDropped):
                w.future.set_exception(NotLeaderError(self.leader_addr))
                continue
            entry: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            entry.add_done_callback(functools.partial(_resolved, plan, w.future))
            self._pending[idx] = _Proposal(core.term, entry, deadline)

    def _expire_proposals(self) -> None:
        if not self._pending:
            return
        now = asyncio.get_running_loop().time()
        for idx in [i for i, p in self._pending.items() if p.deadline <= now]:
            p = self._pending.pop(idx)
            if not p.future.done():
                p.future.set_exception(
                    NoQuorum(f"entry {idx} was not committed in time; its outcome is unknown")
                )

    async def _persist(self, rd: Ready) -> None:
        if not (rd.entries or rd.hard_state is not None or rd.snapshot is not None):
            return
        # fsync (sync-policy always, side entries, hard state) must not block the loop;
        # page-cache appends under `interval` are quick enough to stay on it.
        fsyncs = (
            self._sync_always
            or rd.snapshot is not None
            or any(e.kind is not EntryKind.DATA for e in rd.entries)
            or (rd.hard_state is not None and self._term_or_vote_changed(rd))
        )
        if fsyncs:
            await asyncio.to_thread(self._persist_now, rd)
        else:
            self._persist_now(rd)

    def _term_or_vote_changed(self, rd: Ready) -> bool:
        hs = rd.hard_state
        assert hs is not None
        prev = self.storage.hard_state()
        return hs.term != prev.term or hs.vote != prev.vote

    def _persist_now(self, rd: Ready) -> None:
        storage = self.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            addresses = None
            if any(e.kind is EntryKind.CONFIG for e in rd.entries):
                addresses = dict(self.addresses)
            storage.append(rd.entries, addresses)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot_installs += 1
            _log.info(
                "installed the leader's snapshot: the log restarts at offset %d (entry %d)",
                rd.snapshot.lowest_offset,
                rd.snapshot.index,
            )
            self.committed_end = max(self.committed_end, rd.snapshot.lowest_offset)
        if not rd.committed_entries:
            return
        end = self.committed_end
        pending = self._pending
        for e in rd.committed_entries:
            span = self._span(e) if e.kind is EntryKind.DATA else None
            if span is not None:
                end = span[0] + span[1]
            p = pending.pop(e.index, None) if pending else None
            if p is not None and not p.future.done():
                if p.term == e.term:
                    self.proposals_committed += 1
                    p.future.set_result(span[0] if span is not None else -1)
                else:
                    p.future.set_exception(
                        NoQuorum(
                            f"entry {e.index} was replaced by a new leader before it "
                            "committed: the write was not made"
                        )
                    )
        if pending:
            # Proposals below this Ready's entries: a snapshot from the new leader
            # covered them, so whether they were kept is not known here.
            last = rd.committed_entries[-1].index
            for idx in [i for i in pending if i <= last]:
                p = pending.pop(idx)
                if not p.future.done():
                    p.future.set_exception(
                        NoQuorum(f"entry {idx} was covered by a snapshot; its outcome is unknown")
                    )
        if end != self.committed_end:
            self.committed_end = end
            for listener in self._commit_listeners:
                listener(end)
            self._notify_changed()

    def _answer_reads(self, rd: Ready) -> None:
        for rs in rd.read_states:
            fut = self._reads.get(rs.context)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)

    def _span(self, e: Entry) -> tuple[int, int] | None:
        payload = e.payload
        if isinstance(payload, StoredBatch):
            return payload.first_offset, payload.count
        return self.storage.entry_offsets(e.index)

    def _observe(self, core: Raft) -> None:
        changed = core.role is not self.role or core.lead != self.leader or core.term != self.term
        if not changed:
            return
        was_leader = self.role is Role.LEADER
        if core.lead != self.leader and core.lead != NONE:
            self.leader_changes += 1
        # One election per campaign: pre-candidate → candidate is the same one.
        campaigning = core.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)
        if campaigning and core.role is not self.role and self.role is not Role.PRE_CANDIDATE:
            self.elections += 1
        self.role, self.leader, self.term = core.role, core.lead, core.term
        if was_leader and self.role is not Role.LEADER:
            _log.info("stepped down as leader (term %d)", self.term)
        elif self.role is Role.LEADER and not was_leader:
            _log.info("elected leader for term %d", self.term)
        self._notify_changed()
        for listener in self._role_listeners:
            listener()

    def _notify_changed(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    # -- learners -------------------------------------------------------------------------------

    def caught_up_learners(self) -> list[int]:
        """Learners whose log is within a heartbeat's worth of the leader's (promote them)."""
        core = self.core
        if core is None or not self.is_leader:
            return []
        last = core.log.last_index()
        out = []
        for pid in core.conf.learners:
            pr = core.prs.get(pid)
            if pr is not None and pr.state is ProgressState.REPLICATE and last - pr.match <= 16:
                out.append(pid)
        return out


def _resolved(
    plan: AppendPlan, out: asyncio.Future[list[WriteOutcome]], entry: asyncio.Future[int]
) -> None:
    """The entry of `plan` committed (its first offset) or failed: answer its writes."""
    if out.done():
        return
    if entry.cancelled():
        out.cancel()
    elif (exc := entry.exception()) is not None:
        out.set_exception(exc)
    else:
        out.set_result(resolve_plan(plan, entry.result()))


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """Mark an outcome seen, so one nobody waits for any more is not logged as lost."""
    if not fut.cancelled():
        fut.exception()

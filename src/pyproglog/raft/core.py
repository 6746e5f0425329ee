"""The Raft state machine: no I/O, no clock, no global randomness.

The runtime feeds it `tick()`, `step(message)`, `propose(...)` and the other calls, then
takes a `Ready` (see ready.py for the order it must be handled in) and calls `advance`.

Choices, each documented in docs/cluster.md:
- PreVote and CheckQuorum (with the leader lease that comes with it) are on by default.
- A membership takes effect when its CONFIG entry is *appended* (the dissertation's rule),
  one single-server change at a time, and only once the leader has committed an entry of
  its own term (Ongaro's 2015 correction). A truncated CONFIG entry reverts the membership.
- A leader counts itself toward a commit only once the runtime reports its entries
  persisted (`advance`), so a commit is always on a majority of disks.
- A leader's appends are sent when the runtime asks for the next Ready, so proposals made
  in between travel in one batched message per follower.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyproglog.raft.errors import (
    CompactedError,
    ConfChangeRejected,
    NotLeader,
    ProposalDropped,
    RaftError,
    TransferRefused,
)
from pyproglog.raft.log import RaftLog
from pyproglog.raft.messages import (
    NONE,
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
)
from pyproglog.raft.progress import Inflights, Progress, ProgressState
from pyproglog.raft.quorum import committed_index, quorum, vote_result
from pyproglog.raft.ready import ReadState, Ready, Role
from pyproglog.raft.storage import RaftStorage

_FROM_LEADER = frozenset({MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT})
_VOTE_REQ = frozenset({MsgType.VOTE, MsgType.PRE_VOTE})


@dataclass(frozen=True, slots=True)
class Config:
    id: int
    election_tick: int = 10
    """Followers campaign after a random timeout in [election_tick, 2 * election_tick)."""
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    """Bytes of entries in one append (always at least one entry)."""
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 64 << 20
    max_apply_bytes: int = 64 << 20
    """Bytes of committed entries handed out in one Ready."""
    check_quorum: bool = True
    pre_vote: bool = True

    def __post_init__(self) -> None:
        if self.id <= NONE:
            raise ValueError(f"node id must be > 0, got {self.id}")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick (and both > 0)")
        if self.max_inflight_msgs <= 0 or self.max_inflight_bytes <= 0:
            raise ValueError("in-flight limits must be > 0")


@dataclass(slots=True)
class _ReadRequest:
    context: bytes
    index: int
    frm: int
    acks: set[int] = field(default_factory=set)


class Raft:
    """One node's consensus core."""

    def __init__(
        self, config: Config, storage: RaftStorage, rng: random.Random, applied: int = 0
    ) -> None:
        self.id = config.id
        self.cfg = config
        self._rng = rng
        self.log = RaftLog(storage)
        hs = storage.hard_state()
        snap = storage.snapshot()
        if hs.commit > storage.last_index():
            raise RaftError(
                f"hard state commit {hs.commit} is beyond the last stored index "
                f"{storage.last_index()}: the log lost entries it had acknowledged"
            )
        if applied > self.log.applied:
            self.log.applied = min(applied, self.log.committed)
        # (index, membership) for the snapshot and every CONFIG entry after it: the last
        # one is in force; truncating the log pops the ones it removes.
        self._confs: list[tuple[int, ConfState]] = [(snap.index, snap.conf)]
        for e in storage.config_entries(snap.index + 1):
            assert isinstance(e.payload, ConfState)
            self._confs.append((e.index, e.payload))
        self.term = hs.term
        self.vote = hs.vote
        self._prev_hs = hs
        self.role = Role.FOLLOWER
        self.lead = NONE
        self.prs: dict[int, Progress] = {}
        self._leaving: set[int] = set()
        """Removed by the last CONFIG entry and not yet holding it: still replicated to."""
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self._read_queue: list[_ReadRequest] = []
        self._read_by_ctx: dict[bytes, _ReadRequest] = {}
        self._reads_waiting: list[tuple[bytes, int]] = []
        self.lead_transferee = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self._now = 0
        self._send_new_entries = False
        self._send_commit = False
        self._become_follower(self.term, NONE)

    # -- membership -------------------------------------------------------------------------
    @property
    def conf(self) -> ConfState:
        return self._confs[-1][1]

    @property
    def conf_index(self) -> int:
        """Index of the CONFIG entry (or snapshot) the membership in force comes from."""
        return self._confs[-1][0]

    def promotable(self) -> bool:
        return self.id in self.conf.voters

    # -- inputs -----------------------------------------------------------------------------
    def tick(self) -> None:
        self._now += 1
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._campaign(pre=self.cfg.pre_vote)

    def campaign(self) -> None:
        """Start an election now (PreVote first when enabled)."""
        if self.role is Role.LEADER:
            return
        if not self.promotable():
            raise RaftError(f"node {self.id} is not a voter: it cannot campaign")
        self._campaign(pre=self.cfg.pre_vote)

    def propose(self, payload: object, size: int) -> int:
        """Append a DATA entry; returns its index. It is committed when it comes back in
        `committed_entries` at that index and term, and lost if another entry does."""
        self._check_proposable()
        idx = self.log.last_index() + 1
        self.log.append([Entry(idx, self.term, EntryKind.DATA, size, payload)])
        self._send_new_entries = True
        return idx

    def propose_batch(self, items: Sequence[tuple[object, int]]) -> int:
        """Append one DATA entry per (payload, size); returns the last index."""
        self._check_proposable()
        idx = self.log.last_index()
        term = self.term
        data = EntryKind.DATA
        ents = [Entry(idx + k, term, data, size, p) for k, (p, size) in enumerate(items, 1)]
        self.log.append(ents)
        self._send_new_entries = True
        return idx + len(ents)

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Append a CONFIG entry for one single-server change; returns its index."""
        self._check_proposable()
        if not self._may_change_conf():
            if self.conf_index > self.log.committed:
                raise ConfChangeRejected(
                    f"a membership change is already in progress (entry {self.conf_index} "
                    "is not committed yet): one change at a time"
                )
            raise ConfChangeRejected(
                "a new leader must commit an entry of its own term before changing membership"
            )
        conf = self.conf
        voters, learners = set(conf.voters), set(conf.learners)
        node = cc.node
        if cc.kind is ConfChangeKind.ADD_LEARNER:
            if conf.contains(node):
                raise ConfChangeRejected(f"node {node} is already a member")
            learners.add(node)
        elif cc.kind is ConfChangeKind.PROMOTE:
            if node not in learners:
                raise ConfChangeRejected(f"node {node} is not a learner: only learners promote")
            learners.discard(node)
            voters.add(node)
        else:
            if not conf.contains(node):
                raise ConfChangeRejected(f"node {node} is not a member")
            if node == self.id:
                raise ConfChangeRejected("the leader cannot remove itself: transfer first")
            voters.discard(node)
            learners.discard(node)
        new = ConfState(frozenset(voters), frozenset(learners))
        idx = self.log.last_index() + 1
        self._append_own(Entry(idx, self.term, EntryKind.CONFIG, 0, new))
        return idx

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to `to` once it is caught up (TimeoutNow); aborted after an
        election timeout. Proposals are refused meanwhile."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if to == self.id:
            self._abort_transfer()
            return
        if to not in self.conf.voters:
            kind = "a learner" if to in self.conf.learners else "not a member"
            raise TransferRefused(f"cannot transfer leadership to node {to}: it is {kind}")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.prs[to].match == self.log.last_index():
            self._send(MsgType.TIMEOUT_NOW, to)
        else:
            self._send_append(to)

    def read_index(self, context: bytes) -> bool:
        """Ask for a linearizable read point named `context` (unique per request). The
        answer comes as a ReadState; False means it was dropped (no leader known)."""
        if self.role is Role.LEADER:
            self._leader_read(context, self.id)
            return True
        if self.role is Role.FOLLOWER and self.lead != NONE:
            self._send(MsgType.READ_INDEX, self.lead, context=context)
            return True
        return False

    def report_snapshot(self, to: int, ok: bool) -> None:
        """The runtime finished (or failed) streaming a snapshot's data to `to`."""
        pr = self.prs.get(to)
        if self.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the next heartbeat round before probing

    def report_unreachable(self, to: int) -> None:
        pr = self.prs.get(to)
        if pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type in _VOTE_REQ and not m.force and self._in_lease():
                # Leader lease: we heard from a live leader within the election timeout,
                # so this candidate is partitioned or removed; neither answer nor move.
                return
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes terms
            elif m.type in _FROM_LEADER:
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT):
                # A stale leader: tell it our term so it steps down (it may be cut off from
                # us only one way, and PreVote keeps our term from reaching it otherwise).
                self._send(MsgType.APPEND_RESP, m.frm)
            elif m.type is MsgType.PRE_VOTE:
                self._send(MsgType.PRE_VOTE_RESP, m.frm, reject=True)
            return

        if m.type in _VOTE_REQ:
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # -- output -----------------------------------------------------------------------------
    def has_ready(self) -> bool:
        log = self.log
        return bool(
            self.msgs
            or log.unstable
            or log.unstable_snapshot is not None
            or self.read_states
            or self._send_new_entries
            or self._send_commit
            or log.has_next_committed()
            or self._hard_state() != self._prev_hs
        )

    def ready(self) -> Ready:
        self._flush()
        hs = self._hard_state()
        rd = Ready(
            hard_state=hs if hs != self._prev_hs else None,
            entries=tuple(self.log.unstable),
            snapshot=self.log.unstable_snapshot,
            messages=self.msgs,
            committed_entries=self.log.next_committed(self.cfg.max_apply_bytes),
            read_states=self.read_states,
            role=self.role,
            leader=self.lead,
        )
        self.msgs = []
        self.read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The runtime persisted, sent and applied `rd`."""
        log = self.log
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.index)
            log.applied = max(log.applied, rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied = max(log.applied, rd.committed_entries[-1].index)
        if self.role is Role.LEADER:
            pr = self.prs.get(self.id)
            # The leader counts itself only for entries now on its own disk.
            if pr is not None and pr.maybe_update(log.persisted_last()) and self._maybe_commit():
                self._send_commit = True

    def hard_state(self) -> HardState:
        return self._hard_state()

    # -- hooks the test-only buggy variants override (tests/raft/variants.py) ---------------
    def _may_grant_vote(self, m: Message) -> bool:
        """One vote per term: the one already cast, or none cast and no leader known."""
        return (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type is MsgType.PRE_VOTE and m.term > self.term)
        )

    def _log_ok_for_vote(self, m: Message) -> bool:
        return self.log.is_up_to_date(m.index, m.log_term)

    def _may_commit_at(self, index: int) -> bool:
        """Figure 8: only an entry of the leader's own term is committed by counting."""
        return self.log.term_or_zero(index) == self.term

    def _may_change_conf(self) -> bool:
        return self.conf_index <= self.log.committed and self._committed_in_term()

    def _may_serve_reads(self) -> bool:
        """A new leader's commit index may trail its predecessor's until an entry of its
        own term commits: a read point taken before then could be stale."""
        return self._committed_in_term()

    def _read_needs_quorum(self) -> bool:
        """A read point is only good once a majority confirms we still lead."""
        return len(self.conf.voters) > 1

    # -- roles ------------------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        lo = self.cfg.election_tick
        self.randomized_election_timeout = self._rng.randrange(lo, 2 * lo)
        self.lead_transferee = NONE
        self.votes = {}
        self.prs = {}
        self._leaving = set()
        self._read_queue = []
        self._read_by_ctx = {}
        self._reads_waiting = []
        self._send_new_entries = False
        self._send_commit = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        last = self.log.last_index()
        for n in self.conf.voters | self.conf.learners:
            self.prs[n] = self._new_progress(n, last + 1)
        me = self.prs[self.id]
        me.match = self.log.persisted_last()
        me.become_replicate()
        me.recent_active = True
        self._append_own(Entry(last + 1, self.term, EntryKind.NOOP, 0, None))

    def _new_progress(self, node: int, next_index: int) -> Progress:
        cfg = self.cfg
        pr = Progress(
            next_index,
            Inflights(cfg.max_inflight_msgs, cfg.max_inflight_bytes),
            node in self.conf.learners,
        )
        return pr

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self.role = Role.PRE_CANDIDATE
            self.votes = {}
            self.lead = NONE
            term, typ = self.term + 1, MsgType.PRE_VOTE
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            term, typ = self.term, MsgType.VOTE
        self.votes[self.id] = True
        if self._poll():
            return
        last = self.log.last_index()
        last_term = self.log.term(last)
        for v in self.conf.voters:
            if v != self.id:
                self.msgs.append(
                    Message(typ, v, self.id, term, log_term=last_term, index=last, force=transfer)
                )

    def _poll(self) -> bool:
        """Count votes; act on a decided election. True if it was decided."""
        result = vote_result(self.conf.voters, self.votes)
        if result is None:
            return False
        if not result:
            self._become_follower(self.term, NONE)
        elif self.role is Role.PRE_CANDIDATE:
            self._campaign(pre=False)
        else:
            self._become_leader()
        return True

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.lead != NONE
            and self.election_elapsed < self.cfg.election_tick
        )

    # -- votes ------------------------------------------------------------------------------
    def _handle_vote_request(self, m: Message) -> None:
        resp = MsgType.VOTE_RESP if m.type is MsgType.VOTE else MsgType.PRE_VOTE_RESP
        if self._may_grant_vote(m) and self._log_ok_for_vote(m):
            # Granting: the response goes out only after this Ready's hard state (with the
            # vote) is persisted, so a crash cannot make us vote twice in the term.
            self.msgs.append(Message(resp, m.frm, self.id, m.term))
            if m.type is MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.msgs.append(Message(resp, m.frm, self.id, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in _FROM_LEADER:
            self._become_follower(self.term, m.frm)
            self._step_follower(m)
        elif (t is MsgType.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or (
            t is MsgType.VOTE_RESP and self.role is Role.CANDIDATE
        ):
            self.votes.setdefault(m.frm, not m.reject)
            self._poll()

    # -- follower ---------------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in _FROM_LEADER:
            self.election_elapsed = 0
            self.lead = m.frm
            if t is MsgType.APPEND:
                self._handle_append(m)
            elif t is MsgType.HEARTBEAT:
                self.log.commit_to(m.commit)
                # The leader sends a commit no higher than what we acknowledged in its
                # term; having less means our disk lost entries (wiped, or unsynced
                # under a lax sync policy). Say so, or the leader, believing we have
                # them, would send us nothing but heartbeats forever.
                last = self.log.last_index()
                self._send(
                    MsgType.HEARTBEAT_RESP,
                    m.frm,
                    context=m.context,
                    reject=last < m.commit,
                    index=last,
                )
            else:
                self._handle_snapshot(m)
        elif t is MsgType.TIMEOUT_NOW:
            if self.promotable():
                # The leader asked: skip PreVote, and voters skip their lease (force).
                self._campaign(pre=False, transfer=True)
        elif t is MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(MsgType.APPEND_RESP, m.frm, index=log.committed)
            return
        if not log.match_term(m.index, m.log_term):
            hint = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
            self._send(
                MsgType.APPEND_RESP,
                m.frm,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=log.term_or_zero(hint),
            )
            return
        ents = m.entries
        last_new = m.index + len(ents)
        ci = log.find_conflict(ents)
        if ci:
            if ci <= log.committed:
                raise RaftError(f"entry {ci} conflicts with committed entry {log.committed}")
            self._append_entries(ents[ci - ents[0].index :])
        log.commit_to(min(m.commit, last_new))
        self._send(MsgType.APPEND_RESP, m.frm, index=last_new)

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        log = self.log
        if snap.index <= log.committed:
            # Late: we are already past it.
            self._send(MsgType.APPEND_RESP, m.frm, index=log.committed)
            return
        if log.match_term(snap.index, snap.term):
            log.commit_to(snap.index)
            self._send(MsgType.APPEND_RESP, m.frm, index=log.committed)
            return
        log.restore(snap)
        self._confs = [(snap.index, snap.conf)]
        self._send(MsgType.APPEND_RESP, m.frm, index=snap.index)

    def _append_entries(self, ents: Sequence[Entry]) -> None:
        """Append (truncating at ents[0] if needed) and track membership from CONFIG entries."""
        first = ents[0].index
        confs = self._confs
        while len(confs) > 1 and confs[-1][0] >= first:
            confs.pop()  # its entry is being truncated: the membership before it returns
        self.log.append(ents)
        for e in ents:
            if e.kind is EntryKind.CONFIG:
                assert isinstance(e.payload, ConfState)
                confs.append((e.index, e.payload))
        # Truncation never reaches the commit index: older memberships are not needed.
        while len(confs) > 1 and confs[1][0] <= self.log.committed:
            del confs[0]

    # -- leader -----------------------------------------------------------------------------
    def _check_proposable(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NONE:
            raise ProposalDropped(
                f"leadership is being transferred to node {self.lead_transferee}: retry there"
            )

    def _append_own(self, e: Entry) -> None:
        self._append_entries([e])
        if e.kind is EntryKind.CONFIG:
            self._on_conf_change()
        self._send_new_entries = True

    def _on_conf_change(self) -> None:
        conf = self.conf
        members = conf.voters | conf.learners
        last = self.log.last_index()
        for n in members:
            pr = self.prs.get(n)
            if pr is None:
                pr = self.prs[n] = self._new_progress(n, last)
                pr.recent_active = True
            pr.is_learner = n in conf.learners
            self._leaving.discard(n)  # removed, then added back
        for n in [n for n in self.prs if n not in members]:
            pr = self.prs[n]
            if n in self._leaving or pr.match >= self.conf_index:
                del self.prs[n]
                self._leaving.discard(n)
            else:
                # Just removed: keep replicating to it (without counting it) until it has
                # the entry that removes it, so it knows to stop campaigning.
                self._leaving.add(n)
                pr.is_learner = True
        if self.lead_transferee != NONE and self.lead_transferee not in conf.voters:
            self._abort_transfer()
        if self._maybe_commit():
            self._send_commit = True

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = sum(
                    1
                    for v in self.conf.voters
                    if v == self.id or ((pr := self.prs.get(v)) is not None and pr.recent_active)
                )
                for n, pr in self.prs.items():
                    if n != self.id:
                        pr.recent_active = False
                if active < quorum(len(self.conf.voters)):
                    # CheckQuorum: a leader cut off from a majority steps down.
                    self._become_follower(self.term, NONE)
                    return
            self._abort_transfer()
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self._read_queue[-1].context if self._read_queue else b"")

    def _abort_transfer(self) -> None:
        self.lead_transferee = NONE

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t is MsgType.READ_INDEX:
            self._leader_read(m.context, m.frm)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if t is MsgType.APPEND_RESP:
            pr.recent_active = True
            self._handle_append_resp(m, pr)
        elif t is MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if m.reject and m.index < pr.match:
                # The follower lost entries it had acknowledged: find its real end.
                # (Commits already made stand: they were on a majority when made.)
                pr.match = m.index
                pr.become_probe()
            if (
                pr.state is ProgressState.SNAPSHOT
                and self._now - pr.snapshot_sent_at >= self.cfg.election_tick
            ):
                # The snapshot (or its answer) was lost; the runtime did not report.
                pr.become_probe()
            elif pr.state is ProgressState.REPLICATE and pr.inflights.full():
                # Appends in the window may have been lost: let one more through, whose
                # answer (a reject if a gap) resynchronises the pipeline.
                pr.inflights.free_first()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._read_ack(m.context, m.frm)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        log = self.log
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint = log.find_conflict_by_term(hint, m.log_term)
            if pr.maybe_decrease_to(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if m.frm in self._leaving and pr.match >= self.conf_index:
            del self.prs[m.frm]
            self._leaving.discard(m.frm)
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match + 1 >= log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._send_commit = True
        elif was_paused or pr.state is ProgressState.REPLICATE:
            while pr.next <= log.last_index() and self._send_append(m.frm, send_if_empty=False):
                pass
        if m.frm == self.lead_transferee and pr.match == log.last_index():
            self._send(MsgType.TIMEOUT_NOW, m.frm)

    def _maybe_commit(self) -> bool:
        prs = self.prs
        mci = committed_index(self.conf.voters, {n: pr.match for n, pr in prs.items()})
        if mci > self.log.committed and self._may_commit_at(mci):
            self.log.commit_to(mci)
            if self._reads_waiting and self._may_serve_reads():
                waiting, self._reads_waiting = self._reads_waiting, []
                for ctx, frm in waiting:
                    self._leader_read(ctx, frm)
            return True
        return False

    def _committed_in_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    def _flush(self) -> None:
        """Send what proposals and commits since the last Ready call for, batched."""
        if self.role is not Role.LEADER:
            self._send_new_entries = self._send_commit = False
            return
        if self._send_new_entries or self._send_commit:
            if_empty = self._send_commit
            self._send_new_entries = self._send_commit = False
            last = self.log.last_index()
            for n, pr in self.prs.items():
                if n != self.id:
                    sent = self._send_append(n, send_if_empty=if_empty)
                    # Fill the pipeline: several appends in flight, up to the window.
                    while sent and pr.state is ProgressState.REPLICATE and pr.next <= last:
                        sent = self._send_append(n, send_if_empty=False)
        me = self.prs.get(self.id)
        if me is not None and me.maybe_update(self.log.persisted_last()) and self._maybe_commit():
            self._send_commit = True

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        last = log.last_index()
        prev = pr.next - 1
        try:
            prev_term = log.term(prev)
            ents = log.slice(pr.next, last + 1, self.cfg.max_size_per_msg)
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.msgs.append(
            Message(
                MsgType.APPEND,
                to,
                self.id,
                self.term,
                log_term=prev_term,
                index=prev,
                entries=tuple(ents),
                commit=log.committed,
            )
        )
        if pr.state is ProgressState.REPLICATE:
            if ents:
                end = ents[-1].index
                pr.next = end + 1
                pr.inflights.add(end, sum(e.size for e in ents))
        else:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        snap = self.log.storage.snapshot()
        pr.become_snapshot(snap.index, self._now)
        self.msgs.append(Message(MsgType.SNAPSHOT, to, self.id, self.term, snapshot=snap))
        return True

    def _bcast_heartbeat(self, context: bytes) -> None:
        committed = self.log.committed
        for n, pr in self.prs.items():
            if n != self.id:
                self.msgs.append(
                    Message(
                        MsgType.HEARTBEAT,
                        n,
                        self.id,
                        self.term,
                        commit=min(pr.match, committed),
                        context=context,
                    )
                )

    # -- read index -------------------------------------------------------------------------
    def _leader_read(self, context: bytes, frm: int) -> None:
        if not self._may_serve_reads():
            self._reads_waiting.append((context, frm))
            return
        if context in self._read_by_ctx:
            return
        req = _ReadRequest(context, self.log.committed, frm, {self.id})
        if not self._read_needs_quorum():
            self._release_read(req)
            return
        self._read_queue.append(req)
        self._read_by_ctx[context] = req
        self._bcast_heartbeat(context)

    def _read_ack(self, context: bytes, frm: int) -> None:
        req = self._read_by_ctx.get(context)
        if req is None:
            return
        req.acks.add(frm)
        voters = self.conf.voters
        if sum(1 for n in req.acks if n in voters) < quorum(len(voters)):
            return
        # Leadership confirmed after every request queued up to this one.
        k = self._read_queue.index(req)
        done, self._read_queue = self._read_queue[: k + 1], self._read_queue[k + 1 :]
        for r in done:
            del self._read_by_ctx[r.context]
            self._release_read(r)

    def _release_read(self, req: _ReadRequest) -> None:
        if req.frm == self.id:
            self.read_states.append(ReadState(req.index, req.context))
        else:
            self._send(MsgType.READ_INDEX_RESP, req.frm, index=req.index, context=req.context)

    # -- helpers ----------------------------------------------------------------------------
    def _hard_state(self) -> HardState:
        hs = self._prev_hs
        if hs.term == self.term and hs.vote == self.vote and hs.commit == self.log.committed:
            return hs
        return HardState(self.term, self.vote, self.log.committed)

    def _send(
        self,
        typ: MsgType,
        to: int,
        *,
        index: int = 0,
        log_term: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        context: bytes = b"",
    ) -> None:
        self.msgs.append(
            Message(
                typ,
                to,
                self.id,
                self.term,
                log_term=log_term,
                index=index,
                reject=reject,
                reject_hint=reject_hint,
                context=context,
            )
        )

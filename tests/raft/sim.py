"""Deterministic simulator for the Raft core: N cores, a seeded hostile network, crashes.

Everything is driven by one `random.Random(seed)`, so a seed replays exactly:

    .venv/bin/python -m tests.raft.sim --seed 1234 --nodes 5 --steps 3000

After every step the invariants are checked (see `Sim._check_*` and docs/cluster.md):
at most one leader per term; log matching; leader completeness; committed entries never
change and agree on every node; an acknowledged proposal is never lost; a read index is
never below the commit index known when the read was asked. At the end the faults heal
and a proposal must commit within a bounded number of ticks (liveness).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyproglog.raft import (
    ConfChange,
    ConfChangeKind,
    Config,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    Raft,
    RaftError,
    Ready,
    Role,
)

CoreFactory = Callable[[Config, MemoryStorage, random.Random], Raft]


class InvariantViolation(AssertionError):
    pass


@dataclass
class Scenario:
    """Knobs for the fault mix; the defaults are the general soak."""

    drop: float = 0.05
    dup: float = 0.03
    crash: float = 1.0
    partition: float = 1.0
    membership: float = 1.0
    transfer: float = 1.0
    read: float = 1.0
    compact: float = 1.0
    propose: float = 8.0
    crash_leader_bias: float = 0.5
    """Share of crashes aimed at a leader (leader churn finds Figure 8-like histories)."""
    isolate_leader: float = 0.3
    """Share of partitions that cut a leader off alone (it keeps taking proposals)."""
    isolate_new_leader: float = 0.0
    """Chance that a newly elected leader is cut off at once (its NOOP stays its own)."""
    crash_after_commit: float = 0.0
    """Chance that a leader crashes right after persisting a Ready that commits entries of
    an earlier term (the moment Figure 8 is about), before sending anything."""
    restart: float = 0.6
    """Chance that a crash/restart action restarts a down node rather than crashing one."""
    heal: float = 0.35
    """Share of partition actions that heal every link."""
    max_size_per_msg: int = 200
    election_tick: int = 6
    pre_vote: bool = True
    check_quorum: bool = True


SCENARIOS: dict[str, Scenario] = {
    "default": Scenario(),
    # Leader churn with small messages: partially replicated old-term entries (Figure 8).
    "churn": Scenario(
        drop=0.1,
        crash=4.0,
        partition=2.0,
        membership=0.0,
        transfer=0.0,
        read=0.0,
        compact=0.0,
        propose=10.0,
        crash_leader_bias=0.9,
        max_size_per_msg=1,
    ),
    # Figure 8: leaders cut off right after election (a lone NOOP of a newer term) and
    # crashing right after a commit, one-entry appends (old-term entries ack'd alone).
    "figure8": Scenario(
        drop=0.05,
        dup=0.0,
        crash=0.1,
        restart=0.5,
        partition=1.0,
        heal=0.7,
        membership=0.0,
        transfer=0.0,
        read=0.0,
        compact=0.0,
        propose=2.0,
        crash_leader_bias=0.9,
        isolate_leader=0.5,
        isolate_new_leader=0.7,
        crash_after_commit=0.9,
        max_size_per_msg=1,
        election_tick=4,
    ),
    # Reads against stale leaders: leaders cut off alone for long, no CheckQuorum (so a
    # cut-off leader keeps believing it leads), most reads sent to leaders.
    "reads": Scenario(
        read=6.0,
        crash=0.3,
        partition=2.0,
        isolate_leader=0.8,
        heal=0.2,
        membership=0.0,
        compact=0.0,
        check_quorum=False,
    ),
    # Back-to-back membership changes under partitions.
    "membership": Scenario(
        drop=0.05, crash=1.0, partition=2.0, membership=8.0, transfer=1.0, read=0.5
    ),
    # Elections without PreVote/CheckQuorum: the raw vote rules under contention.
    "elections": Scenario(
        drop=0.1,
        crash=3.0,
        partition=3.0,
        membership=0.0,
        transfer=2.0,
        read=0.5,
        compact=0.0,
        crash_leader_bias=0.9,
        pre_vote=False,
        check_quorum=False,
    ),
}


@dataclass
class SimNode:
    id: int
    storage: MemoryStorage
    core: Raft | None
    applied: int = 0
    removed: bool = False
    """Removed from the membership by the cluster (it may not know yet)."""


@dataclass
class SimStats:
    steps: int = 0
    delivered: int = 0
    committed: int = 0
    acked: int = 0
    elections: int = 0
    crashes: int = 0
    conf_changes: int = 0
    transfers: int = 0
    reads_served: int = 0
    snapshots: int = 0
    liveness_ticks: int = 0
    leaders: set[int] = field(default_factory=set)


class Sim:
    def __init__(
        self,
        seed: int,
        nodes: int = 3,
        scenario: Scenario | str = "default",
        factory: CoreFactory | None = None,
        variant: str = "",
    ) -> None:
        self.seed = seed
        self.n = nodes
        self.variant = variant
        self.scenario_name = scenario if isinstance(scenario, str) else "custom"
        self.sc = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
        self.rng = random.Random(seed)
        self.factory: CoreFactory = factory or (lambda c, s, r: Raft(c, s, r))
        conf = ConfState(frozenset(range(1, nodes + 1)))
        self.nodes: dict[int, SimNode] = {}
        for i in range(1, nodes + 1):
            st = MemoryStorage(conf)
            self.nodes[i] = SimNode(i, st, self._start(i, st))
        self.next_id = nodes + 1
        self.was_member: set[int] = set(self.nodes)
        self.net: list[Message] = []
        self.blocked: set[tuple[int, int]] = set()
        self.committed: dict[int, Entry] = {}
        self.max_recorded = 0
        self.entries_seen: dict[tuple[int, int], tuple[Entry, int]] = {}
        self.leaders: dict[int, int] = {}
        self.max_commit = 0
        self.next_payload = 1
        self.proposed_by: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        self.reads: dict[bytes, int] = {}
        self.next_read = 1
        self.stats = SimStats()
        self.trace: deque[str] = deque(maxlen=40)
        self.step_no = 0

    # -- plumbing -------------------------------------------------------------------------
    def _start(self, node_id: int, storage: MemoryStorage) -> Raft:
        cfg = Config(
            id=node_id,
            election_tick=self.sc.election_tick,
            heartbeat_tick=1,
            max_size_per_msg=self.sc.max_size_per_msg,
            max_inflight_msgs=4,
            max_inflight_bytes=2000,
            check_quorum=self.sc.check_quorum,
            pre_vote=self.sc.pre_vote,
        )
        return self.factory(cfg, storage, random.Random(self.rng.getrandbits(32)))

    def replay_command(self, steps: int) -> str:
        cmd = (
            f".venv/bin/python -m tests.raft.sim --seed {self.seed} --nodes {self.n} "
            f"--steps {steps} --scenario {self.scenario_name}"
        )
        if self.variant:
            cmd += f" --variant {self.variant}"
        return cmd

    def fail(self, what: str) -> None:
        raise InvariantViolation(f"step {self.step_no}: {what}")

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def leaders_now(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None and n.core.role is Role.LEADER]

    # -- the run --------------------------------------------------------------------------
    def run(self, steps: int) -> SimStats:
        try:
            for _ in range(steps):
                self.step()
            self.heal_and_check_liveness()
        except InvariantViolation as exc:
            raise InvariantViolation(
                f"{exc}\n  seed {self.seed}; replay: {self.replay_command(steps)}"
                + "\n  last events:\n    "
                + "\n    ".join(self.trace)
            ) from None
        return self.stats

    def step(self) -> None:
        self.step_no += 1
        self.stats.steps += 1
        rng = self.rng
        sc = self.sc
        live = self.live()
        weights = (
            (40.0 if self.net else 0.0),  # deliver
            25.0,  # ready
            20.0,  # tick
            sc.propose,
            sc.crash,
            sc.partition,
            sc.membership,
            sc.transfer,
            sc.read,
            sc.compact,
        )
        action = rng.choices(range(10), weights)[0]
        if action == 0:
            self.deliver_one()
        elif action == 1:
            pending = [n for n in live if n.core is not None and n.core.has_ready()]
            if pending:
                self.process_ready(rng.choice(pending))
        elif action == 2:
            if live:
                node = rng.choice(live)
                assert node.core is not None
                node.core.tick()
                self.after(node)
        elif action == 3:
            self.propose()
        elif action == 4:
            self.crash_or_restart()
        elif action == 5:
            self.partition()
        elif action == 6:
            self.change_membership()
        elif action == 7:
            self.transfer()
        elif action == 8:
            self.read()
        else:
            self.compact()

    def deliver_one(self) -> None:
        rng = self.rng
        k = rng.randrange(len(self.net))
        self.net[k], self.net[-1] = self.net[-1], self.net[k]
        m = self.net.pop()
        if rng.random() < self.sc.dup:
            self.net.append(m)
        if (m.frm, m.to) in self.blocked or rng.random() < self.sc.drop:
            return
        self.deliver(m)

    def deliver(self, m: Message) -> None:
        node = self.nodes.get(m.to)
        if node is None or node.core is None:
            return
        self.stats.delivered += 1
        node.core.step(m)
        self.after(node)

    def after(self, node: SimNode) -> None:
        """Invariants that concern one node's in-memory state, after any input to it."""
        core = node.core
        assert core is not None
        if core.log.committed > self.max_commit:
            self.max_commit = core.log.committed
        if core.role is Role.LEADER:
            holder = self.leaders.get(core.term)
            if holder is None:
                self.leaders[core.term] = node.id
                self.stats.elections += 1
                self.stats.leaders.add(node.id)
                self.trace.append(f"{self.step_no}: node {node.id} leads term {core.term}")
                self._check_leader_completeness(node)
                if self.rng.random() < self.sc.isolate_new_leader:
                    ids = list(self.nodes)
                    lead = node.id
                    self.blocked = {(a, b) for a in ids for b in ids if (a == lead) != (b == lead)}
                    self.trace.append(f"{self.step_no}: isolate new leader {lead}")
            elif holder != node.id:
                self.fail(f"two leaders in term {core.term}: nodes {holder} and {node.id}")

    def _check_leader_completeness(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        first = core.log.first_index()
        for i in range(first, self.max_recorded + 1):
            e = self.committed.get(i)
            if e is not None and core.log.term_or_zero(i) != e.term:
                self.fail(
                    f"leader completeness: node {node.id} leads term {core.term} without "
                    f"committed entry {i} (term {e.term}); it has term {core.log.term_or_zero(i)}"
                )

    def process_ready(self, node: SimNode, crash_after_persist: bool = False) -> None:
        core = node.core
        assert core is not None
        rd = core.ready()
        self.persist(node, rd)
        if crash_after_persist or self.rng.random() < 0.002 * self.sc.crash:
            # Durable but never sent: the messages and the rest of the Ready are lost.
            self.trace.append(f"{self.step_no}: node {node.id} crashes after persisting")
            self._crash(node)
            return
        if (
            rd.role is Role.LEADER
            and rd.committed_entries
            and rd.committed_entries[0].term < core.term
            and self.rng.random() < self.sc.crash_after_commit
        ):
            # The leader applies (and answers its clients), then crashes, and the network
            # loses what it sent: the moment Figure 8 is about.
            self.apply(node, rd)
            self.trace.append(f"{self.step_no}: node {node.id} crashes after committing")
            self._crash(node)
            return
        for m in rd.messages:
            self.net.append(m)
        self.apply(node, rd)
        core.advance(rd)
        self.after(node)

    def persist(self, node: SimNode, rd: Ready) -> None:
        st = node.storage
        if rd.snapshot is not None:
            s = rd.snapshot
            known = self.committed.get(s.index)
            if known is not None and known.term != s.term:
                self.fail(f"node {node.id} installs snapshot ({s.index}, {s.term}) not committed")
            st.apply_snapshot(s)
            node.applied = max(node.applied, s.index)
            self.stats.snapshots += 1
        if rd.entries:
            self._check_append(node, rd.entries)
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)

    def _check_append(self, node: SimNode, ents: Sequence[Entry]) -> None:
        st = node.storage
        first = ents[0].index
        prev_term = st.term(first - 1) if first - 1 >= st.first_index() - 1 else -1
        for e in ents:
            key = (e.index, e.term)
            seen = self.entries_seen.get(key)
            if seen is None:
                self.entries_seen[key] = (e, prev_term)
            elif seen[0] != e or (prev_term != -1 and seen[1] != -1 and seen[1] != prev_term):
                self.fail(
                    f"log matching: node {node.id} stores {e} after term {prev_term}, "
                    f"another node stores {seen[0]} after term {seen[1]}"
                )
            prev_term = e.term
        # Stored entries from `first` on are replaced: a committed one may only be
        # replaced by itself. (A stale node may hold, and keep writing, other entries at
        # committed indexes it never had: that is not a loss.)
        last_new = ents[-1].index
        for i in range(first, min(st.last_index(), self.max_recorded) + 1):
            c = self.committed.get(i)
            if c is not None and st.term(i) == c.term and (i > last_new or ents[i - first] != c):
                self.fail(f"node {node.id} truncates committed entry {c}")

    def apply(self, node: SimNode, rd: Ready) -> None:
        for e in rd.committed_entries:
            if e.index != node.applied + 1:
                self.fail(f"node {node.id} applies {e.index} after {node.applied}")
            node.applied = e.index
            c = self.committed.get(e.index)
            if c is None:
                self.committed[e.index] = e
                self.max_recorded = max(self.max_recorded, e.index)
                self.stats.committed += 1
                if isinstance(e.payload, ConfState):
                    for other in self.nodes.values():
                        if e.payload.contains(other.id):
                            self.was_member.add(other.id)
                            other.removed = False
                        elif other.id in self.was_member:
                            other.removed = True
            elif c != e:
                self.fail(f"node {node.id} commits {e} where {c} was committed")
            if isinstance(e.payload, int) and self.proposed_by.get(e.payload) == node.id:
                self.acked[e.payload] = e.index
                self.stats.acked += 1
        for rs in rd.read_states:
            asked = self.reads.pop(rs.context, None)
            if asked is None:
                continue
            if rs.index < asked:
                self.fail(
                    f"stale read on node {node.id}: read index {rs.index} < commit index "
                    f"{asked} known when the read was asked"
                )
            self.stats.reads_served += 1

    # -- actions --------------------------------------------------------------------------
    def propose(self) -> None:
        leaders = self.leaders_now()
        if not leaders:
            return
        node = self.rng.choice(leaders)
        assert node.core is not None
        payload = self.next_payload
        self.next_payload += 1
        try:
            node.core.propose(payload, self.rng.randint(1, 100))
        except RaftError:
            return
        self.proposed_by[payload] = node.id

    def _crash(self, node: SimNode) -> None:
        node.core = None
        self.stats.crashes += 1
        # Messages on their way to it are lost with its connections.
        self.net = [m for m in self.net if m.to != node.id]

    def crash_or_restart(self) -> None:
        rng = self.rng
        down = [n for n in self.nodes.values() if n.core is None and not n.removed]
        live = self.live()
        if down and (rng.random() < self.sc.restart or len(down) * 2 >= len(self.nodes)):
            node = rng.choice(down)
            self.restart(node)
            return
        if not live:
            return
        leaders = self.leaders_now()
        node = (
            rng.choice(leaders)
            if leaders and rng.random() < self.sc.crash_leader_bias
            else rng.choice(live)
        )
        self.trace.append(f"{self.step_no}: crash node {node.id}")
        self._crash(node)

    def restart(self, node: SimNode) -> None:
        self.trace.append(f"{self.step_no}: restart node {node.id}")
        node.core = self._start(node.id, node.storage)
        # The state machine restarts from the snapshot; committed entries are re-applied.
        node.applied = node.storage.snapshot().index
        self.after(node)

    def partition(self) -> None:
        rng = self.rng
        ids = sorted(self.nodes)
        leaders = self.leaders_now()
        if leaders and rng.random() < self.sc.isolate_leader:
            lead = rng.choice(leaders).id
            self.blocked = {(a, b) for a in ids for b in ids if (a == lead) != (b == lead)}
            self.trace.append(f"{self.step_no}: isolate leader {lead}")
            return
        r = rng.random()
        if r < self.sc.heal or len(ids) < 2:
            if self.blocked:
                self.trace.append(f"{self.step_no}: heal")
            self.blocked.clear()
        elif r < self.sc.heal + (1 - self.sc.heal) * 0.45:
            side = set(rng.sample(ids, rng.randint(1, len(ids) // 2)))
            self.blocked = {(a, b) for a in ids for b in ids if (a in side) != (b in side)}
            self.trace.append(f"{self.step_no}: partition {sorted(side)} | rest")
        elif r < self.sc.heal + (1 - self.sc.heal) * 0.75:
            a, b = rng.sample(ids, 2)
            self.blocked.add((a, b))
            self.trace.append(f"{self.step_no}: one-way block {a} -> {b}")
        else:
            # Partial: one node cut off from the leader only (the etcd 2020 outage shape).
            leaders = self.leaders_now()
            if leaders:
                lead = leaders[0].id
                other = rng.choice([i for i in ids if i != lead])
                self.blocked |= {(lead, other), (other, lead)}
                self.trace.append(f"{self.step_no}: cut {other} from leader {lead}")

    def change_membership(self) -> None:
        rng = self.rng
        leaders = self.leaders_now()
        if not leaders:
            return
        node = rng.choice(leaders)
        core = node.core
        assert core is not None
        conf = core.conf
        options: list[ConfChange] = []
        members = len(conf.voters) + len(conf.learners)
        if members < self.n + 2:
            options.append(ConfChange(ConfChangeKind.ADD_LEARNER, self.next_id))
            # A node removed earlier comes back under its old id, with its old log.
            options += [
                ConfChange(ConfChangeKind.ADD_LEARNER, i)
                for i in sorted(self.nodes)
                if not conf.contains(i) and i < self.next_id and i != node.id
            ]
        for learner in conf.learners:
            options.append(ConfChange(ConfChangeKind.PROMOTE, learner))
        if len(conf.voters) > 2:
            options += [ConfChange(ConfChangeKind.REMOVE, v) for v in conf.voters if v != node.id]
        for learner in conf.learners:
            options.append(ConfChange(ConfChangeKind.REMOVE, learner))
        if not options:
            return
        cc = rng.choice(options)
        try:
            core.propose_conf_change(cc)
        except RaftError:
            return
        self.stats.conf_changes += 1
        self.trace.append(f"{self.step_no}: node {node.id} proposes {cc.kind.value} {cc.node}")
        if cc.kind is ConfChangeKind.ADD_LEARNER and cc.node == self.next_id:
            # The new node starts empty, knowing no membership: it learns from the leader.
            st = MemoryStorage()
            self.nodes[cc.node] = SimNode(cc.node, st, self._start(cc.node, st))
            self.next_id += 1

    def transfer(self) -> None:
        leaders = self.leaders_now()
        if not leaders:
            return
        node = self.rng.choice(leaders)
        assert node.core is not None
        to = self.rng.choice(sorted(self.nodes))
        try:
            node.core.transfer_leadership(to)
        except RaftError:
            return
        self.stats.transfers += 1
        self.trace.append(f"{self.step_no}: node {node.id} transfers to {to}")

    def read(self) -> None:
        live = self.live()
        if not live:
            return
        leaders = self.leaders_now()
        # Most reads go to a leader (stale ones included); some to followers, who forward.
        node = self.rng.choice(leaders if leaders and self.rng.random() < 0.7 else live)
        assert node.core is not None
        ctx = self.next_read.to_bytes(8, "big")
        self.next_read += 1
        self.reads[ctx] = self.max_commit
        node.core.read_index(ctx)
        self.after(node)

    def compact(self) -> None:
        live = self.live()
        if not live:
            return
        node = self.rng.choice(live)
        st = node.storage
        # Retention: compact some of what is applied (and persisted).
        upto = min(node.applied, st.last_index())
        if upto > st.first_index():
            st.compact(self.rng.randint(st.first_index(), upto))

    # -- liveness -------------------------------------------------------------------------
    def heal_and_check_liveness(self) -> None:
        """Heal everything; a proposal must then be acknowledged within a tick budget."""
        self.blocked.clear()
        calm = {"drop": 0.0, "dup": 0.0, "crash": 0.0, "crash_after_commit": 0.0}
        self.sc = Scenario(**{**self.sc.__dict__, **calm, "isolate_new_leader": 0.0})
        for node in self.nodes.values():
            if node.core is None:
                # Removed nodes too: they must not disrupt the cluster they left.
                self.restart(node)
        self.trace.append(f"{self.step_no}: healed; liveness check")
        budget = 40 * self.sc.election_tick
        payload = 0
        for tick in range(budget):
            self.step_no += 1
            for node in self.live():
                assert node.core is not None
                node.core.tick()
                self.after(node)
            for _ in range(3):
                self.flush_network()
            if payload and payload in self.acked:
                if not self.stats.liveness_ticks:
                    self.stats.liveness_ticks = tick
                if self._members_caught_up(self.acked[payload]):
                    self.check_final_agreement()
                    return
                continue
            if not payload or self.proposed_by.get(payload) not in self._leader_ids():
                payload = self.next_payload
                self.next_payload += 1
                for node in self.leaders_now():
                    assert node.core is not None
                    try:
                        node.core.propose(payload, 10)
                        self.proposed_by[payload] = node.id
                    except RaftError:
                        pass
        if payload in self.acked:
            self.fail(f"liveness: members did not catch up within {budget} ticks after healing")
        self.fail(f"liveness: no proposal committed within {budget} ticks after healing")

    def _members_caught_up(self, index: int) -> bool:
        leaders = self.leaders_now()
        if len(leaders) != 1:
            return False
        lead = leaders[0].core
        assert lead is not None
        for node in self.live():
            core = node.core
            assert core is not None
            if lead.conf.contains(node.id) and core.log.committed < index:
                return False
        return True

    def _leader_ids(self) -> set[int]:
        return {n.id for n in self.leaders_now()}

    def flush_network(self) -> None:
        for node in self.live():
            if node.core is not None and node.core.has_ready():
                self.process_ready(node)
        net, self.net = self.net, []
        for m in net:
            self.deliver(m)
        for node in self.live():
            if node.core is not None and node.core.has_ready():
                self.process_ready(node)

    def check_final_agreement(self) -> None:
        """No acknowledged entry is lost: every live member's log holds every committed one."""
        for node in self.live():
            core = node.core
            assert core is not None
            if core.log.committed < self.max_recorded:
                continue  # not a member (or removed): it may stay behind
            first = core.log.first_index()
            last = core.log.committed
            for payload, index in self.acked.items():
                if first <= index <= last and core.log.term_or_zero(index) != (
                    self.committed[index].term
                ):
                    self.fail(f"acknowledged proposal {payload} at {index} lost on {node.id}")


def run_seed(
    seed: int,
    nodes: int,
    steps: int,
    scenario: Scenario | str = "default",
    factory: CoreFactory | None = None,
    variant: str = "",
) -> SimStats:
    return Sim(seed, nodes, scenario, factory, variant).run(steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Replay or soak the Raft simulator.")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed on")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--scenario", default="default", choices=sorted(SCENARIOS))
    p.add_argument("--variant", default="", help="a buggy core from tests/raft/variants.py")
    args = p.parse_args(argv)
    factory: CoreFactory | None = None
    if args.variant:
        from tests.raft.variants import VARIANTS

        factory = VARIANTS[args.variant]
    t0 = time.perf_counter()
    total = SimStats()
    for seed in range(args.seed, args.seed + args.seeds):
        try:
            st = run_seed(seed, args.nodes, args.steps, args.scenario, factory, args.variant)
        except InvariantViolation as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            return 1
        total.steps += st.steps
        total.committed += st.committed
        total.elections += st.elections
        total.crashes += st.crashes
        total.conf_changes += st.conf_changes
        total.reads_served += st.reads_served
        total.snapshots += st.snapshots
    dt = time.perf_counter() - t0
    print(
        f"{args.seeds} seed(s) ok: {total.steps} steps in {dt:.1f} s = "
        f"{total.steps / dt:.0f} steps/s; committed {total.committed}, elections "
        f"{total.elections}, crashes {total.crashes}, conf changes {total.conf_changes}, "
        f"reads {total.reads_served}, snapshots {total.snapshots}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

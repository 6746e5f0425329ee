"""A tiny lossless in-process network for unit tests: cores, storage, and a pump."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from pyproglog.raft import (
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    Raft,
    ReadState,
    Role,
)


def make_core(
    node_id: int,
    voters: Iterable[int] = (1, 2, 3),
    storage: MemoryStorage | None = None,
    seed: int = 0,
    **cfg: Any,
) -> Raft:
    st = storage or MemoryStorage(ConfState(frozenset(voters)))
    params: dict[str, Any] = {"election_tick": 10, "heartbeat_tick": 1, **cfg}
    return Raft(Config(id=node_id, **params), st, random.Random(seed * 1000 + node_id))


def storage_with(
    terms: list[int], voters: Iterable[int] = (1, 2, 3), hs: HardState | None = None
) -> MemoryStorage:
    """A storage whose log holds one DATA entry per given term, at indexes 1, 2, ..."""
    st = MemoryStorage(ConfState(frozenset(voters)))
    st.append([Entry(i, t, EntryKind.DATA, 10, f"e{i}t{t}") for i, t in enumerate(terms, 1)])
    st.set_hard_state(hs or HardState(term=max(terms, default=0)))
    return st


class Net:
    """Delivers every message unless its link is cut; handles Ready in etcd's order."""

    def __init__(self, cores: Iterable[Raft]) -> None:
        self.cores: dict[int, Raft] = {c.id: c for c in cores}
        self.storages: dict[int, MemoryStorage] = {}
        for c in self.cores.values():
            st = c.log.storage
            assert isinstance(st, MemoryStorage)
            self.storages[c.id] = st
        self.cut: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        self.sent: list[Message] = []
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.cores}
        self.reads: dict[int, list[ReadState]] = {i: [] for i in self.cores}
        self.inbox: list[Message] = []
        self.drop: Callable[[Message], bool] | None = None
        """Messages it returns True for are lost."""
        self.after_step: Callable[[Raft], None] | None = None
        """Called after every delivered message, to check an invariant mid-flight."""

    def add(self, core: Raft) -> None:
        st = core.log.storage
        assert isinstance(st, MemoryStorage)
        self.cores[core.id] = core
        self.storages[core.id] = st
        self.applied[core.id] = []
        self.reads[core.id] = []

    def isolate(self, node: int) -> None:
        for other in self.cores:
            if other != node:
                self.cut |= {(node, other), (other, node)}

    def heal(self) -> None:
        self.cut.clear()

    def handle_ready(self, node: int) -> None:
        core = self.cores[node]
        rd = core.ready()
        st = self.storages[node]
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        self.sent.extend(rd.messages)
        self.inbox.extend(rd.messages)
        self.applied[node].extend(rd.committed_entries)
        self.reads[node].extend(rd.read_states)
        core.advance(rd)

    def stabilize(self, rounds: int = 200) -> None:
        """Handle every Ready and deliver every message until nothing moves."""
        for _ in range(rounds):
            moved = False
            for i, core in self.cores.items():
                if i not in self.down and core.has_ready():
                    self.handle_ready(i)
                    moved = True
            inbox, self.inbox = self.inbox, []
            for m in inbox:
                if (m.frm, m.to) in self.cut or m.to in self.down or m.to not in self.cores:
                    continue
                if self.drop is not None and self.drop(m):
                    continue
                self.cores[m.to].step(m)
                if self.after_step is not None:
                    self.after_step(self.cores[m.to])
                moved = True
            if not moved:
                return

    def tick(self, node: int, n: int = 1) -> None:
        for _ in range(n):
            self.cores[node].tick()
            self.stabilize()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for i, core in self.cores.items():
                if i not in self.down:
                    core.tick()
            self.stabilize()

    def elect(self, node: int) -> Raft:
        self.cores[node].campaign()
        self.stabilize()
        assert self.cores[node].role is Role.LEADER
        return self.cores[node]

    def leaders(self) -> list[int]:
        return [i for i, c in self.cores.items() if c.role is Role.LEADER and i not in self.down]


def cluster(n: int = 3, **cfg: Any) -> Net:
    voters = range(1, n + 1)
    return Net(make_core(i, voters, **cfg) for i in voters)

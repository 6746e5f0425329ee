"""The storage the core reads its persisted log through, and an in-memory one for tests.

The core only *reads* storage; the runtime writes to it (append, hard state, snapshot)
while handling a `Ready`, before it sends that Ready's messages. So whatever the storage
returns is durable by the time the core acts on it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Protocol

from pyproglog.raft.errors import CompactedError, UnavailableError
from pyproglog.raft.messages import ConfState, Entry, EntryKind, HardState, SnapshotMeta


class RaftStorage(Protocol):
    """The persisted log. One entry is one group-commit batch, stored once by the runtime."""

    def first_index(self) -> int:
        """Index of the first retained entry (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last persisted entry (the snapshot index if there is none)."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at `index`, for first_index - 1 <= index <= last_index."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> Sequence[Entry]:
        """Entries [lo, hi) up to `max_bytes` of sizes, but always at least one."""
        ...

    def hard_state(self) -> HardState: ...

    def snapshot(self) -> SnapshotMeta:
        """The metadata of the point retention has compacted the log to."""
        ...

    def config_entries(self, lo: int) -> Sequence[Entry]:
        """Every CONFIG entry with index >= lo (the runtime keeps them in a small side file)."""
        ...


class MemoryStorage:
    """`RaftStorage` in memory, plus the write calls a runtime makes. For tests and benches."""

    def __init__(self, conf: ConfState | None = None) -> None:
        self._snap = SnapshotMeta(conf=conf or ConfState(frozenset()))
        self._hs = HardState()
        self._ents: list[Entry] = []
        # _cum[k] = total size of _ents[:k+1], so byte budgets are a bisect, not a loop.
        self._cum: list[int] = []

    # -- reads (the RaftStorage protocol) -------------------------------------------------
    def first_index(self) -> int:
        return self._snap.index + 1

    def last_index(self) -> int:
        return self._snap.index + len(self._ents)

    def term(self, index: int) -> int:
        base = self._snap.index
        if index == base:
            return self._snap.term
        if index < base:
            raise CompactedError(f"index {index} is compacted (first index {base + 1})")
        if index > base + len(self._ents):
            raise UnavailableError(f"index {index} is beyond the last index {self.last_index()}")
        return self._ents[index - base - 1].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> Sequence[Entry]:
        base = self._snap.index
        if lo <= base:
            raise CompactedError(f"index {lo} is compacted (first index {base + 1})")
        if hi > base + len(self._ents) + 1:
            raise UnavailableError(f"index {hi - 1} is beyond the last index {self.last_index()}")
        a, b = lo - base - 1, hi - base - 1
        if a >= b:
            return []
        before = self._cum[a - 1] if a else 0
        # Largest k with cum[k] - before <= max_bytes; at least one entry.
        k = bisect_right(self._cum, before + max_bytes, a, b)
        return self._ents[a : max(k, a + 1)]

    def hard_state(self) -> HardState:
        return self._hs

    def snapshot(self) -> SnapshotMeta:
        return self._snap

    def config_entries(self, lo: int) -> Sequence[Entry]:
        start = max(lo - self._snap.index - 1, 0)
        return [e for e in self._ents[start:] if e.kind is EntryKind.CONFIG]

    # -- writes (the runtime's side) ----------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self._hs = hs

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, replacing any suffix from entries[0].index on (a conflict the core found)."""
        if not entries:
            return
        first = entries[0].index
        base = self._snap.index
        if first <= base:
            entries = entries[base + 1 - first :]
            if not entries:
                return
            first = base + 1
        if first > base + len(self._ents) + 1:
            raise UnavailableError(f"append at {first} leaves a gap after {self.last_index()}")
        keep = first - base - 1
        del self._ents[keep:]
        del self._cum[keep:]
        start = self._cum[-1] if self._cum else 0
        self._ents.extend(entries)
        self._cum.extend(accumulate((e.size for e in entries), initial=start))
        del self._cum[keep]  # accumulate's `initial` is not a prefix sum of any entry

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Install a snapshot: the log restarts after it (the runtime streams the data)."""
        if meta.index <= self._snap.index:
            return
        self._snap = meta
        self._ents = []
        self._cum = []

    def compact(self, index: int, lowest_offset: int | None = None) -> None:
        """Retention: drop entries <= index (which must be applied); keep their metadata."""
        base = self._snap.index
        if index <= base:
            return
        if index > self.last_index():
            raise UnavailableError(f"cannot compact to {index}: last index {self.last_index()}")
        conf = self._snap.conf
        for e in reversed(self._ents[: index - base]):
            if e.kind is EntryKind.CONFIG:
                assert isinstance(e.payload, ConfState)
                conf = e.payload
                break
        dropped = self._cum[index - base - 1]
        self._snap = SnapshotMeta(
            index=index,
            term=self.term(index),
            conf=conf,
            lowest_offset=index if lowest_offset is None else lowest_offset,
        )
        del self._ents[: index - base]
        self._cum = [c - dropped for c in self._cum[index - base :]]

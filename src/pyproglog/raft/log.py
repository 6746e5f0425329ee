"""The core's view of its log: persisted entries (storage) plus the unstable tail.

Unstable entries and an unstable snapshot are what the core has accepted but the runtime
has not yet persisted; they go out in the next `Ready` and leave this view at `advance`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyproglog.raft.errors import CompactedError, UnavailableError
from pyproglog.raft.messages import Entry, SnapshotMeta
from pyproglog.raft.storage import RaftStorage


def limit_size(entries: Sequence[Entry], max_bytes: int) -> Sequence[Entry]:
    """The longest prefix within max_bytes, but at least one entry."""
    total = 0
    for n, e in enumerate(entries):
        total += e.size
        if total > max_bytes and n:
            return entries[:n]
    return entries


class RaftLog:
    def __init__(self, storage: RaftStorage) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.offset = storage.last_index() + 1
        """Index of unstable[0]: everything below it is persisted and still valid."""
        self.unstable_snapshot: SnapshotMeta | None = None
        snap = storage.snapshot()
        self.committed = max(storage.hard_state().commit, snap.index)
        self.applied = snap.index

    # -- indexes and terms ---------------------------------------------------------------
    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.offset + len(self.unstable) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.index
        return self.storage.last_index()

    def persisted_last(self) -> int:
        """The last index the runtime has made durable (what a leader counts itself for)."""
        if self.unstable_snapshot is not None:
            return 0
        return min(self.offset - 1, self.storage.last_index())

    def term(self, index: int) -> int:
        """Term at index; raises CompactedError / UnavailableError outside the log."""
        off = self.offset
        if index >= off:
            k = index - off
            if k < len(self.unstable):
                return self.unstable[k].term
            raise UnavailableError(f"index {index} is beyond the last index {self.last_index()}")
        snap = self.unstable_snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            raise CompactedError(f"index {index} is before the pending snapshot {snap.index}")
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        return self.term_or_zero(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as new as ours?"""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    # -- reading entries -----------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int) -> Sequence[Entry]:
        """Entries [lo, hi) within max_bytes (at least one). Raises CompactedError."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted (first index {self.first_index()})")
        off = self.offset
        if lo >= off:
            return limit_size(self.unstable[lo - off : hi - off], max_bytes)
        stored = self.storage.entries(lo, min(hi, off), max_bytes)
        if hi <= off or len(stored) < min(hi, off) - lo:
            return stored
        budget = max_bytes - sum(e.size for e in stored)
        if budget <= 0:
            return stored
        tail = limit_size(self.unstable[: hi - off], budget)
        if tail and sum(e.size for e in tail) > budget:
            return stored
        return [*stored, *tail]

    def next_committed(self, max_bytes: int) -> Sequence[Entry]:
        """Committed entries not yet handed out for applying."""
        lo = max(self.applied + 1, self.first_index())
        if self.committed < lo:
            return []
        return self.slice(lo, self.committed + 1, max_bytes)

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    # -- changing the log ----------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Append after a possible truncation at entries[0].index (conflicts already found)."""
        if not entries:
            return
        after = entries[0].index
        off = self.offset
        if after == off + len(self.unstable):
            self.unstable.extend(entries)
        elif after <= off:
            # Replace the unstable tail and shadow the persisted suffix from `after` on;
            # the runtime's append truncates it on disk.
            self.offset = after
            self.unstable = list(entries)
        else:
            del self.unstable[after - off :]
            self.unstable.extend(entries)

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first entry that is new or whose term differs; 0 if all match.

        By log matching, matching entries form a prefix, so a bisect finds the boundary.
        """
        if not entries:
            return 0
        last = self.last_index()
        first = entries[0].index
        if self.term_or_zero(entries[-1].index) == entries[-1].term:
            return 0
        lo, hi = 0, len(entries) - 1  # entries[hi] is known to conflict
        while lo < hi:
            mid = (lo + hi) // 2
            e = entries[mid]
            if e.index <= last and self.term_or_zero(e.index) == e.term:
                lo = mid + 1
            else:
                hi = mid
        return first + lo

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """Largest index <= `index` whose term is <= `term` (terms rise along the log)."""
        lo = self.first_index() - 1
        if index <= lo:
            return index
        if self.term_or_zero(index) <= term:
            return index
        if self.term_or_zero(lo) > term:
            return lo
        # invariant: term(lo) <= term < term(index)
        hi = index
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.term_or_zero(mid) <= term:
                lo = mid
            else:
                hi = mid
        return lo

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            self.committed = min(index, self.last_index())
            return True
        return False

    def restore(self, snap: SnapshotMeta) -> None:
        """Drop the whole log in favour of a snapshot; the runtime installs it next Ready."""
        self.unstable_snapshot = snap
        self.unstable = []
        self.offset = snap.index + 1
        self.committed = snap.index

    def stable_to(self, index: int, term: int) -> None:
        """The runtime persisted entries up to (index, term): they leave the unstable tail."""
        off = self.offset
        k = index - off
        if 0 <= k < len(self.unstable) and self.unstable[k].term == term:
            del self.unstable[: k + 1]
            self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.index == index:
            self.unstable_snapshot = None

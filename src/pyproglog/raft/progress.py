"""What a leader knows of each follower's log, and how fast it may send to it."""

from __future__ import annotations

from collections import deque
from enum import Enum


class ProgressState(Enum):
    PROBE = "probe"
    """Where the follower's log matches is unknown: one append per heartbeat until it is."""
    REPLICATE = "replicate"
    """Matching point known: appends are pipelined, bounded by the in-flight window."""
    SNAPSHOT = "snapshot"
    """The follower needs entries retention removed: a snapshot is on its way; no appends."""


class Inflights:
    """Appends sent but not yet acknowledged, bounded by count and by bytes."""

    __slots__ = ("_items", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._items: deque[tuple[int, int]] = deque()  # (last index of the append, its bytes)
        self.bytes = 0
        self.max_count = max_count
        self.max_bytes = max_bytes

    def add(self, last_index: int, size: int) -> None:
        self._items.append((last_index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        items = self._items
        while items and items[0][0] <= index:
            self.bytes -= items.popleft()[1]

    def free_first(self) -> None:
        if self._items:
            self.bytes -= self._items.popleft()[1]

    def full(self) -> bool:
        return len(self._items) >= self.max_count or self.bytes >= self.max_bytes

    def count(self) -> int:
        return len(self._items)

    def reset(self) -> None:
        self._items.clear()
        self.bytes = 0


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_sent_at",
        "state",
    )

    def __init__(self, next_index: int, inflights: Inflights, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_sent_at = 0
        self.recent_active = False
        self.inflights = inflights
        self.is_learner = is_learner

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # Resume after what the snapshot covered, if it got there.
            pending = self.pending_snapshot
            self._reset(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int, now: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = index
        self.snapshot_sent_at = now

    def maybe_update(self, index: int) -> bool:
        """An append up to `index` succeeded; False if the news is stale."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """An append at `rejected` was refused; move next back. False if the refusal is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value}, match={self.match}, next={self.next}, "
            f"inflight={self.inflights.count()}, learner={self.is_learner})"
        )

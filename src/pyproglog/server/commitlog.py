"""The seam the service runs on: a log that appends batches and tells what is committed.

`LogService` and both front ends see only `CommitLog` (the book's
`server.CommitLog`). A single node runs on `LocalCommitLog`, where a record is
committed once appended; a cluster node runs on the cluster's ReplicatedLog,
where it is committed once a quorum has it. Consumers only ever see committed
records: every read is bounded by `committed_end`, and the commit listener
(not the append) wakes tailing readers.

The group-commit committer stays in the service, above this seam: it hands
one `append` per group, so the cluster makes one Raft proposal (one entry)
per group-commit batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pyproglog.log import (
    AppendPlan,
    Duplicate,
    EncodedRange,
    Log,
    LogError,
    LogInfo,
    Record,
    SyncPolicy,
    Write,
)
from pyproglog.server.results import ReplicationState

__all__ = [
    "CommitListener",
    "CommitLog",
    "LocalCommitLog",
    "WriteOutcome",
    "Written",
    "resolve_plan",
]

# Called with the new committed end (the offset past the committed prefix),
# from whatever thread committed; it must hop onto its own loop itself.
CommitListener = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Written:
    """Where one write of an append went (for a duplicate: where it went the first time)."""

    offset: int
    duplicate: bool = False


# Per write: where it went, or the error that refused it (the others still go).
WriteOutcome = Written | LogError


def resolve_plan(plan: AppendPlan, first: int) -> list[WriteOutcome]:
    """Each write's outcome once the plan's records were appended from `first`."""
    out: list[WriteOutcome] = []
    for o in plan.outcomes:
        if isinstance(o, int):
            out.append(Written(first + o))
        elif isinstance(o, Duplicate):
            out.append(Written(o.first_offset, duplicate=True))
        else:
            out.append(o)
    return out


class CommitLog(Protocol):
    """What the service needs of a log. Reads serve committed records only."""

    @property
    def max_record_bytes(self) -> int:
        """The largest record value the log stores (the one size limit)."""
        ...

    async def append_writes(self, writes: Sequence[Write]) -> list[WriteOutcome]:
        """Append several client writes as one entry (atomically, at contiguous
        offsets), once committed; per write its outcome.

        The implementation stamps the term: a term a client sent is never stored.
        An idempotent producer's write the log already holds is answered with its
        first offsets, one out of order is refused (see log.producers), and the
        node that decides (the leader) decides against its whole log.
        """
        ...

    def read(self, offset: int) -> Record:
        """The committed record at `offset`; OffsetOutOfRange when there is none."""
        ...

    def read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        """Committed records from `offset` (at least one): at most `max_records`/`max_bytes`."""
        ...

    def read_encoded(self, offset: int, max_records: int, max_bytes: int) -> EncodedRange:
        """`read_range` as the stored bytes (the `records` field of a FetchResponse),
        without building a record object."""
        ...

    @property
    def committed_end(self) -> int:
        """The offset past the committed prefix: the high-water mark."""
        ...

    @property
    def lowest_offset(self) -> int: ...

    def info(self) -> LogInfo: ...

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """First offset stamped at or after `timestamp_ms`, committed or not; None if none."""
        ...

    async def read_barrier(self) -> None:
        """Wait until a read here sees every write acknowledged before the call
        (a linearizable read); raises when that cannot be had (no leader)."""
        ...

    def add_commit_listener(self, listener: CommitListener) -> None: ...

    def remove_commit_listener(self, listener: CommitListener) -> None: ...

    def replication(self) -> ReplicationState | None:
        """The node's place in its cluster (role, term, leader, replicas' lag);
        None when the log is not replicated."""
        ...


class LocalCommitLog:
    """A single node's CommitLog over `pyproglog.log.Log`: committed == appended.

    Durability is the log's: under `--sync-policy always` `append_batch`
    fdatasyncs before it returns (so it runs off the loop here), under
    `interval` an acknowledged record is in the page cache and on disk within
    the interval.
    """

    # A single node has no elections: every record is stamped with this term.
    TERM = 0

    def __init__(self, log: Log) -> None:
        self.log = log
        # fsync must not run on the loop; plain appends are page-cache writes.
        self._append_off_loop = log.config.sync_policy is SyncPolicy.ALWAYS

    @property
    def max_record_bytes(self) -> int:
        return self.log.config.max_record_bytes

    def _append(self, plan: AppendPlan) -> int:
        # Looked up per call: tests replace the log's append_batch to inject faults.
        if plan.batches:
            return self.log.append_batch(plan.records, term=self.TERM, producers=plan.batches)
        return self.log.append_batch(plan.records, term=self.TERM)

    async def append_writes(self, writes: Sequence[Write]) -> list[WriteOutcome]:
        # Decided and appended with no other append in between: the service's
        # committer is this log's only writer, and it awaits each append.
        plan = self.log.plan(writes)
        first = 0
        if plan.records:
            if self._append_off_loop:
                # to_thread copies the context: an fsync span nests under the caller's.
                first = await asyncio.to_thread(self._append, plan)
            else:
                first = self._append(plan)
        return resolve_plan(plan, first)

    def read(self, offset: int) -> Record:
        return self.log.read(offset)

    def read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        return self.log.read_range(offset, max_records, max_bytes)

    def read_encoded(self, offset: int, max_records: int, max_bytes: int) -> EncodedRange:
        return self.log.read_encoded(offset, max_records=max_records, max_bytes=max_bytes)

    @property
    def committed_end(self) -> int:
        return self.log.next_offset

    @property
    def lowest_offset(self) -> int:
        return self.log.lowest_offset

    def info(self) -> LogInfo:
        return self.log.info()

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        return self.log.offset_for_timestamp(timestamp_ms)

    async def read_barrier(self) -> None:
        # One node: every acknowledged write is already readable here.
        return None

    def add_commit_listener(self, listener: CommitListener) -> None:
        # Appended is committed: the log's append listener is the commit listener.
        self.log.add_listener(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        self.log.remove_listener(listener)

    def replication(self) -> ReplicationState | None:
        return None  # a single node: no cluster to report on

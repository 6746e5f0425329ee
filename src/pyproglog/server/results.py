"""What the service answers: small values that each front end only translates."""

from __future__ import annotations

from dataclasses import dataclass

from pyproglog.log import Record

__all__ = [
    "STANDALONE",
    "Appended",
    "EncodedFetch",
    "Fetched",
    "LogState",
    "ReplicaState",
    "ReplicationState",
    "TimestampLookup",
]


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a produced batch went: `count` records from `first` on."""

    first: int
    count: int
    # An idempotent producer's retry: the records were appended by an earlier
    # attempt, at these offsets, and nothing was appended now.
    duplicate: bool = False

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    @property
    def offsets(self) -> range:
        return range(self.first, self.first + self.count)


@dataclass(frozen=True, slots=True)
class Fetched:
    records: list[Record]
    next_offset: int  # where the reader goes on
    high_watermark: int  # the committed end when answering


@dataclass(frozen=True, slots=True)
class EncodedFetch:
    """A fetch as stored bytes: `data` is the encoded `records` of a FetchResponse."""

    data: bytes
    count: int
    next_offset: int
    high_watermark: int


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """A member of the cluster as its leader sees it."""

    id: str  # the node name
    rpc_addr: str  # its client-facing gRPC address; "" when not known yet
    voter: bool  # False: a learner, still catching up
    match_index: int  # the highest Raft index known to be on it; 0 when unknown
    lag_entries: int  # Raft entries (group-commit batches, not records) behind the leader


@dataclass(frozen=True, slots=True)
class ReplicationState:
    """Where a node stands in its cluster.

    `role` is one of "leader", "follower", "candidate", "pre-candidate",
    "learner" (a follower that does not vote) or "standalone" (a single node).
    `replicas` is filled on the leader only: every member, itself included.
    """

    role: str
    term: int
    leader_id: str | None  # the leader's node name; None when no leader is known
    leader_addr: str | None
    replicas: tuple[ReplicaState, ...] = ()


# What a node that is not part of a cluster reports.
STANDALONE = ReplicationState(role="standalone", term=0, leader_id=None, leader_addr=None)


@dataclass(frozen=True, slots=True)
class LogState:
    lowest_offset: int
    highest_offset: int | None  # None: the log is empty
    next_offset: int  # the offset the next record will get
    segment_count: int
    size_bytes: int
    commit_offset: int | None  # the last committed offset; None: nothing committed
    # None: a single node (LocalCommitLog), not part of a cluster.
    replication: ReplicationState | None = None

    @property
    def empty(self) -> bool:
        return self.highest_offset is None


@dataclass(frozen=True, slots=True)
class TimestampLookup:
    """The first offset stamped at or after a time; when not `found`, the committed end."""

    offset: int
    found: bool

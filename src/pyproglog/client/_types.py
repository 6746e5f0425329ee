"""The client's value types: plain frozen dataclasses, not protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass

from pyproglog.api.v1 import log_pb2


@dataclass(frozen=True, slots=True)
class Record:
    """A record as read from the log; also accepted by `produce_batch`.

    On produce the offset is ignored (the server assigns it) and a zero
    timestamp means "stamp with the append time".
    """

    value: bytes
    offset: int = 0
    timestamp_ms: int = 0
    term: int = 0
    type: int = 0

    @classmethod
    def from_pb(cls, pb: log_pb2.Record) -> Record:
        return cls(
            value=pb.value,
            offset=pb.offset,
            timestamp_ms=pb.timestamp_ms,
            term=pb.term,
            type=pb.type,
        )


@dataclass(frozen=True, slots=True)
class Server:
    id: str
    rpc_addr: str
    is_leader: bool
    # False for a learner (a new member still catching up). A server older than
    # this field says False for everyone.
    voter: bool = True


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """A cluster member as the leader sees it (`LogInfo.replicas`)."""

    id: str  # the node name
    rpc_addr: str
    voter: bool
    # The highest Raft index known to be on the member; 0 when not known yet.
    match_index: int
    # Raft entries behind the leader: one entry per group-commit batch, not per record.
    lag_entries: int


@dataclass(frozen=True, slots=True)
class LogInfo:
    lowest_offset: int
    # None when the log holds no records (the wire value is meaningless then).
    highest_offset: int | None
    next_offset: int
    empty: bool
    segment_count: int
    size_bytes: int
    commit_offset: int | None
    # The answering node's place in its cluster: "leader", "follower",
    # "candidate", "pre-candidate", "learner", or "standalone" (a single node).
    role: str = "standalone"
    term: int = 0
    # The leader's node name and RPC address; None when no leader is known.
    leader_id: str | None = None
    leader_addr: str | None = None
    # Filled by the leader only: every member, itself included.
    replicas: tuple[ReplicaState, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchResult:
    records: tuple[Record, ...]
    # Where the next fetch should start.
    next_offset: int
    # The log's next offset when the server answered; caught up when equal to next_offset.
    high_watermark: int


@dataclass(frozen=True, slots=True)
class TimestampOffset:
    """The first offset at or after a time.

    When `found` is false no such record exists yet and `offset` is where the
    next record will go, so tailing from it still starts at the right place.
    """

    offset: int
    found: bool

"""The client's value types: plain frozen dataclasses, not protobuf messages."""

from __future__ import annotations

from collections.abc import Iterable
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


def records_from_pb(pbs: Iterable[log_pb2.Record]) -> tuple[Record, ...]:
    """`Record.from_pb` of each, for the read paths: a consumer spends most of its
    time per record here. A frozen dataclass's __init__ goes through
    object.__setattr__ for each field; filling the slots directly builds the
    same value in about 60 % of the time."""
    new = object.__new__
    out: list[Record] = []
    append = out.append
    for pb in pbs:
        rec = new(Record)
        _set_value(rec, pb.value)
        _set_offset(rec, pb.offset)
        _set_timestamp(rec, pb.timestamp_ms)
        _set_term(rec, pb.term)
        _set_type(rec, pb.type)
        append(rec)
    return tuple(out)


_set_value = Record.__dict__["value"].__set__
_set_offset = Record.__dict__["offset"].__set__
_set_timestamp = Record.__dict__["timestamp_ms"].__set__
_set_term = Record.__dict__["term"].__set__
_set_type = Record.__dict__["type"].__set__


@dataclass(frozen=True, slots=True)
class Server:
    id: str
    rpc_addr: str
    is_leader: bool
    # False for a learner (a new member still catching up). A server older than
    # this field says False for everyone.
    voter: bool = True

    @classmethod
    def from_pb(cls, pb: log_pb2.Server) -> Server:
        return cls(pb.id, pb.rpc_addr, pb.is_leader, pb.voter)


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

    @classmethod
    def from_pb(cls, r: log_pb2.GetLogInfoResponse) -> LogInfo:
        return cls(
            lowest_offset=r.lowest_offset,
            highest_offset=None if r.empty else r.highest_offset,
            next_offset=r.next_offset,
            empty=r.empty,
            segment_count=r.segment_count,
            size_bytes=r.size_bytes,
            commit_offset=None if r.empty else r.commit_offset,
            # A server older than these fields sends no role: it is a single node.
            role=r.role or "standalone",
            term=r.term,
            leader_id=r.leader_id or None,
            leader_addr=r.leader_addr or None,
            replicas=tuple(
                ReplicaState(p.id, p.rpc_addr, p.voter, p.match_index, p.lag_entries)
                for p in r.replicas
            ),
        )


@dataclass(frozen=True, slots=True)
class FetchResult:
    records: tuple[Record, ...]
    # Where the next fetch should start.
    next_offset: int
    # The log's next offset when the server answered; caught up when equal to next_offset.
    high_watermark: int

    @classmethod
    def from_pb(cls, resp: log_pb2.FetchResponse) -> FetchResult:
        return cls(
            records=records_from_pb(resp.records),
            next_offset=resp.next_offset,
            high_watermark=resp.high_watermark,
        )


@dataclass(frozen=True, slots=True)
class BatchAck:
    """A sequenced batch's answer: records `base_offset` .. `base_offset + count - 1`.

    `duplicate` is true when the leader already held the batch (a retry of one that
    was written): the offsets are those it got the first time, nothing was appended.
    """

    base_offset: int
    count: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class TimestampOffset:
    """The first offset at or after a time.

    When `found` is false no such record exists yet and `offset` is where the
    next record will go, so tailing from it still starts at the right place.
    """

    offset: int
    found: bool

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

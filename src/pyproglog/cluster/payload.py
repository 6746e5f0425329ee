"""What a DATA entry's opaque payload is, as the core carries it (it never looks inside).

Two shapes, one meaning ("the records of one group-commit batch"):

- `DataBatch`: records in memory: a leader's fresh proposal, or an entry that
  arrived from the leader and is not persisted yet. `encoded` is the records'
  `log.v1` encoding as repeated field 1 (`0x0a len Record` back to back: the
  body of a FetchResponse and what `Log.read_encoded` returns), made at most
  once and shared by every follower's message.
- `StoredBatch`: an entry already in the segmented log, named by its offsets;
  it is read (as stored bytes) only when a message needs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyproglog.api.v1 import log_pb2
from pyproglog.log import Record, RecordLike

__all__ = ["DataBatch", "StoredBatch", "encode_records", "stamp_records"]


def encode_records(records: Sequence[RecordLike]) -> bytes:
    """The records as repeated `log.v1.Record` field 1 (term and offset left out)."""
    resp = log_pb2.FetchResponse()
    add = resp.records.add
    for r in records:
        add(value=r.value, type=r.type, timestamp_ms=r.timestamp_ms)
    return resp.SerializeToString()


def stamp_records(records: Sequence[RecordLike]) -> Sequence[RecordLike]:
    """Records with their timestamps set. The node that takes the write stamps
    "now" once, so every replica stores the same time (a 0 would be stamped
    again by each node's own clock when it appends)."""
    if all(r.timestamp_ms for r in records):
        return records
    now = time.time_ns() // 1_000_000
    return [
        r if r.timestamp_ms else Record(r.value, type=r.type, timestamp_ms=now) for r in records
    ]


class DataBatch:
    """Records in memory. Build from `records` (leader) or from `encoded` (wire)."""

    __slots__ = ("_encoded", "_records", "count")

    def __init__(
        self,
        records: Sequence[RecordLike] | None = None,
        encoded: bytes | None = None,
        count: int | None = None,
    ) -> None:
        if records is None and encoded is None:
            raise ValueError("a DataBatch needs records or their encoding")
        self._records = records
        self._encoded = encoded
        if count is None:
            count = len(records) if records is not None else len(self.records)
        self.count = count

    @property
    def records(self) -> Sequence[RecordLike]:
        if self._records is None:
            assert self._encoded is not None
            self._records = log_pb2.FetchResponse.FromString(self._encoded).records
        return self._records

    @property
    def encoded(self) -> bytes:
        if self._encoded is None:
            assert self._records is not None
            self._encoded = encode_records(self._records)
        return self._encoded

    def __repr__(self) -> str:
        return f"DataBatch(count={self.count})"


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """An entry's records in the segmented log: offsets [first_offset, first_offset + count)."""

    first_offset: int
    count: int

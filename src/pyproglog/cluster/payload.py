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
from pyproglog.log import ProducerBatch, RecordLike

__all__ = ["DataBatch", "StoredBatch", "encode_records", "now_ms"]


def encode_records(records: Sequence[RecordLike], stamp_ms: int = 0) -> bytes:
    """The records as repeated `log.v1.Record` field 1, a record without a time of its
    own stamped with `stamp_ms` (a client's offset and term are never stored)."""
    resp = log_pb2.FetchResponse()
    pbs = [r for r in records if type(r) is log_pb2.Record]
    if len(pbs) == len(records):
        resp.records.extend(pbs)  # copied in C; then only the stamps in Python
        if stamp_ms:
            for pb in resp.records:
                if not pb.timestamp_ms:
                    pb.timestamp_ms = stamp_ms
    else:
        add = resp.records.add
        for r in records:
            add(value=r.value, type=r.type, timestamp_ms=r.timestamp_ms or stamp_ms)
    return resp.SerializeToString()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class DataBatch:
    """Records in memory. Build from `records` (leader) or from `encoded` (wire)."""

    __slots__ = ("_encoded", "_records", "count", "producers", "stamp_ms")

    def __init__(
        self,
        records: Sequence[RecordLike] | None = None,
        encoded: bytes | None = None,
        count: int | None = None,
        stamp_ms: int = 0,
        producers: Sequence[ProducerBatch] = (),
    ) -> None:
        if records is None and encoded is None:
            raise ValueError("a DataBatch needs records or their encoding")
        self._records = records
        self._encoded = encoded
        # The time records without their own are stored with, on every replica
        # (0: they all have one, as records that came over the wire do).
        self.stamp_ms = stamp_ms
        # The idempotent producers' batches among the records: every replica's log
        # remembers them (log.producers), so any of them can dedupe as leader.
        self.producers = producers
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
            self._encoded = encode_records(self._records, self.stamp_ms)
        return self._encoded

    def __repr__(self) -> str:
        return f"DataBatch(count={self.count})"


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """An entry's records in the segmented log: offsets [first_offset, first_offset + count)."""

    first_offset: int
    count: int
    # The producer batches the log still remembers for the entry (see DataBatch).
    producers: Sequence[ProducerBatch] = ()

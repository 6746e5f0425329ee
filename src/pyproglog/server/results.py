"""What the service answers: small values that each front end only translates."""

from __future__ import annotations

from dataclasses import dataclass

from pyproglog.log import Record

__all__ = ["Appended", "EncodedFetch", "Fetched", "LogState", "TimestampLookup"]


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a produced batch went: `count` records from `first` on."""

    first: int
    count: int

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
class LogState:
    lowest_offset: int
    highest_offset: int | None  # None: the log is empty
    next_offset: int  # the offset the next record will get
    segment_count: int
    size_bytes: int
    commit_offset: int | None  # the last committed offset; None: nothing committed

    @property
    def empty(self) -> bool:
        return self.highest_offset is None


@dataclass(frozen=True, slots=True)
class TimestampLookup:
    """The first offset stamped at or after a time; when not `found`, the committed end."""

    offset: int
    found: bool

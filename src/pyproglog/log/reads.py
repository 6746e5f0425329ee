"""The reading half of `Log`: reads by offset, ranges, the served bytes, and
lookups by time and by consensus index. Every read takes the log's lock for an
index lookup and a slice of a store (no I/O wait beyond a pread)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from pyproglog.log import entries, opening, ranges
from pyproglog.log.errors import CorruptSegment, LogClosed, OffsetOutOfRange
from pyproglog.log.format import Record
from pyproglog.log.ranges import EncodedRange
from pyproglog.log.segment import Segment


@dataclass(frozen=True, slots=True)
class LogInfo:
    lowest_offset: int
    highest_offset: int  # next_offset - 1; -1 when nothing was ever appended
    next_offset: int
    segment_count: int
    size_bytes: int

    @property
    def empty(self) -> bool:
        return self.next_offset == self.lowest_offset


class LogReads:
    """Mixed into `Log`, which owns the state below (and writes it under `_lock`)."""

    directory: str
    _lock: threading.RLock
    _closed: bool
    _segments: list[Segment]
    _bases: list[int]
    _orphans: list[int]

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed()

    def _gap_error(self, seg: Segment, nxt: Segment) -> CorruptSegment:
        return opening.gap_error(self.directory, self._orphans, seg, nxt)

    # -- reading ----------------------------------------------------------------

    def _segment_for(self, offset: int) -> Segment:
        i = bisect.bisect_right(self._bases, offset) - 1
        if i < 0 or offset >= self._segments[-1].next_offset:
            raise OffsetOutOfRange(offset, self._bases[0], self._segments[-1].next_offset)
        seg = self._segments[i]
        if offset >= seg.next_offset:
            if i + 1 < len(self._segments):
                # Between a sealed segment's last record and the next segment:
                # offsets that were handed out and are lost.
                raise self._gap_error(seg, self._segments[i + 1])
            raise OffsetOutOfRange(offset, self._bases[0], self._segments[-1].next_offset)
        return seg

    def read(self, offset: int) -> Record:
        with self._lock:
            if self._closed:
                raise LogClosed()
            active = self._segments[-1]
            if active.base_offset <= offset < active.next_offset:
                return active.read(offset)  # the common case, without the bisect
            return self._segment_for(offset).read(offset)

    def read_range(
        self, offset: int, max_records: int = 1000, max_bytes: int = 1 << 20
    ) -> list[Record]:
        """Records from `offset` on: at most `max_records` and, past the first, `max_bytes`.

        Raises OffsetOutOfRange when `offset` itself is not in the log, and
        CorruptSegment when the record at `offset` is damaged or lost. A damaged
        record later in the range ends it: the records before it are returned,
        and a reader that asks for the damaged offset next gets the error (and
        can go on from the offset after it).
        """
        with self._lock:
            self._check_open()
            return ranges.read_range_across(
                self._segment_for, self._segments[-1].next_offset, offset, max_records, max_bytes
            )

    def read_encoded(
        self,
        offset: int,
        *,
        max_records: int = 1000,
        max_bytes: int = 1 << 20,
        end: int | None = None,
    ) -> EncodedRange:
        """`read_range` as the stored bytes: the records' `log.v1.Record`
        encodings as fields 1 of a message (a `FetchResponse`), with no
        per-record object. Bounded by `end` (exclusive: the committed end) too.

        Same rules as `read_range`: OffsetOutOfRange for an offset not in the
        log (or at/after `end`), the intact prefix before a damaged record, and
        CorruptSegment only when the record at `offset` is damaged.
        """
        with self._lock:
            self._check_open()
            last = self._segments[-1].next_offset
            if end is not None:
                if offset >= end:
                    raise OffsetOutOfRange(offset, self._bases[0], end)
                last = min(last, end)
            return ranges.read_encoded_across(
                self._segment_for, last, offset, min(max_records, last - offset), max_bytes
            )

    @property
    def lowest_offset(self) -> int:
        with self._lock:
            self._check_open()
            return self._segments[0].base_offset

    @property
    def highest_offset(self) -> int:
        """The last offset written; lowest_offset - 1 when the log is empty."""
        return self.next_offset - 1

    @property
    def next_offset(self) -> int:
        with self._lock:
            self._check_open()
            return self._segments[-1].next_offset

    def info(self) -> LogInfo:
        with self._lock:
            self._check_open()
            lowest = self._segments[0].base_offset
            nxt = self._segments[-1].next_offset
            return LogInfo(
                lowest_offset=lowest,
                highest_offset=nxt - 1,
                next_offset=nxt,
                segment_count=len(self._segments),
                size_bytes=sum(s.size_bytes() for s in self._segments),
            )

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """First offset whose record has timestamp >= `timestamp_ms`, or None."""
        with self._lock:
            self._check_open()
            for seg in self._segments:
                if not seg.is_empty and seg.watermark_ms() >= timestamp_ms:
                    found = seg.offset_for_timestamp(timestamp_ms)
                    if found is not None:  # None: the only such record was damaged
                        return found
            return None

    def iter_records(self, start: int | None = None) -> Iterator[Record]:
        """Every record from `start` (default: lowest) to the end as of each step."""
        offset = self.lowest_offset if start is None else start
        while True:
            try:
                batch = self.read_range(offset, 1000)
            except OffsetOutOfRange:
                return
            yield from batch
            offset = batch[-1].offset + 1

    # -- consensus index ---------------------------------------------------------

    @property
    def last_consensus_index(self) -> int:
        """Consensus index of the last entry; that of `entry_before_first` when
        the log holds none."""
        return self.last_entry()[0]

    def last_entry(self) -> tuple[int, int]:
        """(consensus index, term) of the last entry in the log."""
        with self._lock:
            self._check_open()
            for seg in reversed(self._segments):
                if not seg.is_empty:
                    return seg.last_consensus_index, seg.last_term
            return self._segments[0].entry_before

    def entry_before_first(self) -> tuple[int, int]:
        """(consensus index, term) of the last entry before the first retained
        record: recorded in each segment's header when it is created, so it
        survives retention and reopening. (0, 0) for a log that never dropped any."""
        with self._lock:
            self._check_open()
            return self._segments[0].entry_before

    def first_offset_of_entry(self, consensus_index: int) -> int | None:
        """First offset whose record carries `consensus_index`, or None: per-segment
        first/last consensus index, then a bisect within the segment."""
        with self._lock:
            self._check_open()
            return entries.first_offset_of(self._segments, consensus_index)

    def entry_span(self, consensus_index: int) -> tuple[int, int, int, int] | None:
        """(first offset, end offset, term, stored bytes) of the entry
        `consensus_index`, or None: the same bisects as `first_offset_of_entry`."""
        with self._lock:
            self._check_open()
            return entries.entry_span(self._segments, consensus_index)

    def offset_after_entry(self, consensus_index: int) -> int:
        """The offset just past every record of the entries <= `consensus_index`
        (the log's next offset when none follows)."""
        with self._lock:
            self._check_open()
            return entries.first_offset_after(self._segments, consensus_index)

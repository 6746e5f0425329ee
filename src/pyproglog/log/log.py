"""The log: an ordered list of segments behind one writer lock.

Threading: one lock guards the segment list and every append and read (reads
are short: an index lookup and a slice of the store's memory map). fsync
happens outside the lock (`sync.GroupSync`): appenders that arrive while one
fsync runs share the next (group commit).

Durability, in order of events for one append call (one entry):
  1. frames are encoded and copied into the store's mmap            -> survives kill -9
     (the file is pre-allocated; the pages are the kernel's page cache)
  2. index entries are written through the index's mmap            -> a cache, rebuilt if lost
  3. with SyncPolicy.ALWAYS, fdatasync before returning            -> survives power loss
     with SyncPolicy.INTERVAL, a background thread does it every N ms.
A kill during 1. leaves a torn entry, which recovery cuts whole.
An append of idempotent producers' batches writes their lines to the producer
file (producers.py) before 1., and every sync syncs that file first: a record
on disk always has its line, and lines past the log's end are cut at open.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Sequence

from pyproglog.log import entries, opening, retention
from pyproglog.log.config import LogConfig, SyncPolicy
from pyproglog.log.errors import (
    DiskFull,
    LogClosed,
    LogWriteError,
    OffsetOutOfRange,
    RecordTooLarge,
    SegmentFull,
    write_error_from,
)
from pyproglog.log.files import sync_directory
from pyproglog.log.format import FRAME_OVERHEAD, Record, RecordLike
from pyproglog.log.producers import (
    AppendPlan,
    ProducerBatch,
    ProducerFile,
    ProducerTable,
    Write,
    plan_writes,
)
from pyproglog.log.ranges import EncodedRange
from pyproglog.log.reads import LogInfo, LogReads
from pyproglog.log.segment import Segment
from pyproglog.log.stats import LogStats
from pyproglog.log.sync import GroupSync, IntervalSyncer

_log = logging.getLogger("pyproglog.log")

AppendListener = Callable[[int], None]


_time_ns = time.time_ns
_value_of = operator.attrgetter("value")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Log(LogReads):
    def __init__(self, directory: str | os.PathLike[str], config: LogConfig | None = None) -> None:
        self.directory = os.fspath(directory)
        self.config = config or LogConfig()
        # Read on every append: kept out of the config's attribute lookups.
        self._max_record_bytes = self.config.max_record_bytes
        self._sync_always = self.config.sync_policy is SyncPolicy.ALWAYS
        os.makedirs(self.directory, exist_ok=True)
        self._lock = threading.RLock()
        self._closed = False
        self._listeners: list[AppendListener] = []
        self.stats = LogStats()
        self._group = GroupSync(self.stats)
        # Appends are numbered (under the lock); an fsync covers a prefix of them.
        self._written_seq = 0
        try:
            self._segments = opening.open_segments(self.directory, self.config, self._create)
        except DiskFull as exc:
            raise opening.disk_full(exc, self.config) from exc
        self._bases = [s.base_offset for s in self._segments]
        self._orphans = opening.orphan_bases(self.directory)
        self._producers = ProducerTable()
        self._producer_file = ProducerFile(self.directory)
        self._producer_file.load(self._producers, self._segments[-1].next_offset)
        # Retention at open too: a node restarted on a full disk frees room
        # before its first append needs it.
        if retention.configured(self.config):
            removed = self._apply_retention_locked(_now_ms())
            if removed:
                _log.info("retention removed %d segment(s) on open", removed)
        for seg, nxt in zip(self._segments, self._segments[1:], strict=False):
            if seg.next_offset < nxt.base_offset:
                _log.warning("%s", self._gap_error(seg, nxt))
        self._syncer: IntervalSyncer | None = None
        if self.config.sync_policy is SyncPolicy.INTERVAL:
            self._syncer = IntervalSyncer(self._group, self.config.sync_interval_ms, self._written)
            self._syncer.start(self._sync_upto)

    def _create(self, base: int, entry_before: tuple[int, int]) -> Segment:
        return opening.new_segment(self.directory, self.config, base, entry_before)

    def _disk_full_from(self, exc: DiskFull) -> DiskFull:
        """A fresh error to raise (never `exc` itself: raising one instance twice
        grows its traceback), with what a new segment needs."""
        full = opening.disk_full(exc, self.config)
        return DiskFull(str(full), full.errno)

    # -- appending --------------------------------------------------------------

    def add_listener(self, listener: AppendListener) -> None:
        """Call `listener(next_offset)` after every append (from the appending thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: AppendListener) -> None:
        self._listeners.remove(listener)

    def append(
        self,
        value: bytes,
        *,
        term: int = 0,
        type: int = 0,
        timestamp_ms: int = 0,
        consensus_index: int = 0,
    ) -> int:
        """Append one record as an entry of its own; its offset.

        `append_batch`'s fast path for one record, by the same rules (`term`
        stamped by the caller, all or nothing on a write error). When the
        active segment has no room, or a write fails, it goes the batch way.
        """
        if len(value) > self._max_record_bytes:
            raise RecordTooLarge(len(value), self._max_record_bytes)
        ts = timestamp_ms or _time_ns() // 1_000_000
        with self._lock:
            if self._closed or self._group.failure is not None:  # _check_writable, inlined
                self._check_writable()
            active = self._segments[-1]
            offset = active.next_offset
            try:
                if active.append_one(value, term, type, ts, consensus_index):  # now full
                    self._roll_locked()
            except SegmentFull:
                offset = -1  # nothing written; the batch path rolls first
            except LogWriteError:
                # The roll after it failed (DiskFull): the record goes again, and
                # the batch path frees space and retries, or raises.
                self._drop_suffix_locked(offset - 1)
                offset = -1
            else:
                seq = self._written_seq + 1
                self._written_seq = seq
        if offset < 0:
            record = Record(value, 0, 0, type, ts)
            return self.append_batch([record], term=term, consensus_index=consensus_index)
        if self._sync_always:
            self._sync_upto(seq)
        if self._listeners:  # cheaper than iterating an empty list, per record
            for listener in self._listeners:
                listener(offset + 1)
        return offset

    def append_batch(
        self,
        records: Sequence[RecordLike],
        *,
        term: int = 0,
        consensus_index: int = 0,
        timestamp_ms: int | None = None,
        producers: Sequence[ProducerBatch] = (),
    ) -> int:
        """Append `records` as one entry at contiguous offsets; the first offset.

        The entry is all or nothing: on a write error nothing of it stays or is
        served, and after a crash it is there whole or not at all. It never
        spans two segments. Every record is stored with `term` (the caller's,
        never a record's own) and `consensus_index`, so that a replicated log
        can find an entry and tell, after a restart, which one it applied last.
        `producers` names the idempotent producers' batches among the records
        (see `plan`); the log remembers them, durably, with the records.
        """
        if not records:
            raise ValueError("append_batch needs at least one record")
        limit = self._max_record_bytes
        value_bytes = sum(map(len, map(_value_of, records)))  # one C-speed pass
        if value_bytes > limit:  # else no record can be too large
            biggest = max(map(len, map(_value_of, records)))
            if biggest > limit:
                raise RecordTooLarge(biggest, limit)
        total = value_bytes + len(records) * FRAME_OVERHEAD
        # Records without a time of their own get this one: now, or the time the
        # leader of a cluster stamped the entry with (so replicas store the same).
        now = timestamp_ms or _now_ms()
        with self._lock:
            self._check_writable()
            first = self._segments[-1].next_offset
            lines_at = self._producer_file.size
            try:
                self._write_producers_locked(producers, first, consensus_index, now)
                self._write_locked(records, total, now, term, consensus_index)
            except LogWriteError as exc:
                self._undo_locked(first, lines_at)
                if not isinstance(exc, DiskFull):
                    raise
                if not self._free_space_locked():
                    raise self._disk_full_from(exc) from None
                try:  # once: retention gave back space
                    self._write_producers_locked(producers, first, consensus_index, now)
                    self._write_locked(records, total, now, term, consensus_index)
                except LogWriteError as again:
                    self._undo_locked(first, lines_at)
                    if isinstance(again, DiskFull):
                        raise self._disk_full_from(again) from None
                    raise
            for batch in producers:
                self._producers.add(batch, first + batch.start, consensus_index, now)
            if producers:
                self._producer_file.maybe_compact(self._producers)
            self._written_seq += 1
            seq = self._written_seq
            next_offset = self._segments[-1].next_offset
        if self._sync_always:
            self._sync_upto(seq)
        for listener in self._listeners:
            listener(next_offset)
        return first

    def _write_producers_locked(
        self, producers: Sequence[ProducerBatch], first: int, cidx: int, now: int
    ) -> None:
        if not producers:
            return
        try:
            self._producer_file.append(producers, first, cidx, now)
        except OSError as exc:
            raise write_error_from(exc, "write to the producer file") from exc

    def _undo_locked(self, first: int, lines_at: int) -> None:
        """Take back a failed append: its records and its producer lines."""
        self._drop_suffix_locked(first - 1)
        if self._producer_file.size > lines_at:
            self._producer_file.truncate(lines_at)

    def plan(self, writes: Sequence[Write], committed_end: int | None = None) -> AppendPlan:
        """Decide which writes of one append are new, duplicates or out of order (see
        producers.plan_writes); `committed_end` defaults to the log's end (a single
        node, where appended is committed)."""
        with self._lock:
            end = self._segments[-1].next_offset if committed_end is None else committed_end
            return plan_writes(self._producers, writes, end)

    def producer_batches(self, consensus_index: int, first_offset: int) -> list[ProducerBatch]:
        """The producer batches of entry `consensus_index` the log still remembers."""
        with self._lock:
            return self._producers.batches_of_entry(consensus_index, first_offset)

    def _write_locked(
        self, records: Sequence[RecordLike], total: int, now: int, term: int, cidx: int
    ) -> None:
        active = self._segments[-1]
        if not active.fits(len(records), total) and not active.is_empty:
            # An entry never spans two segments: roll first. In the new (empty)
            # segment it fits, or the segment grows to hold it.
            active = self._roll_locked()
        active.append_batch(records, now, cidx, term, total)
        if active.is_maxed:
            self._roll_locked()

    def _roll_locked(self) -> Segment:
        old = self._segments[-1]
        if self.config.sync_policy is not SyncPolicy.NEVER:
            old.sync()  # sealed segments are durable; the group syncer only syncs the active one
        old.seal()  # give back the store's pre-allocated room past its frames
        seg = self._create(old.next_offset, opening.last_entry(old))
        self._segments.append(seg)
        self._bases.append(seg.base_offset)
        self._apply_retention_locked(_now_ms())
        return seg

    def _check_writable(self) -> None:
        if self._closed:
            raise LogClosed()
        if self._group.failure is not None:
            raise self._group.refused()

    # -- durability ---------------------------------------------------------------

    def _snapshot(self) -> tuple[int, Callable[[], None]]:
        with self._lock:
            seg_sync, producers_sync = self._segments[-1].sync, self._producer_file.sync

            def sync() -> None:
                producers_sync()  # first: a record made durable has its line durable
                seg_sync()

            return self._written_seq, sync

    def _sync_upto(self, seq: int) -> None:
        self._group.sync_upto(seq, self._snapshot)

    def _written(self) -> int:
        with self._lock:
            self._check_open()
            return self._written_seq

    def sync(self) -> None:
        """Force everything appended so far to stable storage."""
        self._sync_upto(self._written())

    def truncate_after_entry(self, consensus_index: int) -> None:
        """Drop every record of the entries after `consensus_index` (a Raft
        follower replacing a conflicting suffix)."""
        with self._lock:
            self._check_open()
            self._drop_suffix_locked(
                entries.first_offset_after(self._segments, consensus_index) - 1
            )

    # -- shrinking --------------------------------------------------------------

    def compact_before(self, lowest: int) -> None:
        """Drop a prefix: remove whole segments whose records are all below `lowest`.

        The active segment is never removed; reads of removed offsets are OffsetOutOfRange.
        """
        with self._lock:
            self._check_open()
            while len(self._segments) > 1 and self._segments[0].next_offset <= lowest:
                retention.remove_oldest(self._segments, self._bases)

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete old closed segments past the retention limits; how many went."""
        with self._lock:
            self._check_open()
            return self._apply_retention_locked(_now_ms() if now_ms is None else now_ms)

    def _apply_retention_locked(self, now_ms: int) -> int:
        return retention.apply(self._segments, self._bases, self.config, now_ms)

    def _free_space_locked(self) -> bool:
        """Apply retention now (an append hit a full disk); whether a segment went."""
        return retention.free_space(self._segments, self._bases, self.config, _now_ms())

    def truncate_after(self, offset: int) -> None:
        """Drop a suffix: every record after `offset`; the next append gets `offset + 1`.

        What a Raft follower does when a new leader replaces its uncommitted
        tail. `offset` may be lowest - 1 to empty the log.
        """
        with self._lock:
            self._check_open()
            lowest = self._segments[0].base_offset
            if offset < lowest - 1:
                raise OffsetOutOfRange(offset, lowest, self._segments[-1].next_offset)
            self._drop_suffix_locked(offset)

    def _drop_suffix_locked(self, offset: int) -> None:
        if offset >= self._segments[-1].next_offset - 1:
            return
        self._producers.truncate_after(offset)
        self._producer_file.truncate_after(offset)
        while len(self._segments) > 1 and self._segments[-1].base_offset > offset:
            self._segments.pop().remove()
            self._bases.pop()
        # The kept segment stays open and writable: truncate_after cuts store,
        # index and time index in place. (Reopening it here would have to
        # re-allocate its index, which fails on a full disk -- the very case in
        # which append_batch calls this to undo a failed write.)
        self._segments[-1].truncate_after(offset)
        # A segment opened sealed has index room for its own entries only; on a
        # full disk it stays so, and appends roll to a new segment instead.
        with contextlib.suppress(LogWriteError):
            self._segments[-1].index.reserve()
        if self.config.sync_policy is not SyncPolicy.NEVER:
            sync_directory(self.directory)

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Sync the active segment (unless the policy is NEVER) and close every file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._syncer is not None:
                self._syncer.stop()
            try:
                if self.config.sync_policy is not SyncPolicy.NEVER:
                    self._producer_file.sync()
                    self._segments[-1].sync()
            finally:
                self._producer_file.close()
                for seg in self._segments:
                    seg.close()
        if self._syncer is not None:
            self._syncer.join()

    def remove(self) -> None:
        """Close the log and delete its files."""
        self.close()
        with self._lock:
            for seg in self._segments:
                seg.remove()
            self._segments = []
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._producer_file.path)

    def reset(self, entry_before: tuple[int, int] = (0, 0), at_offset: int | None = None) -> None:
        """Delete everything and start again, empty, at `at_offset` (default
        `initial_offset`): a Raft follower installing a snapshot restarts at the
        leader's lowest offset.

        `entry_before` is the (consensus index, term) the new log starts after.
        """
        start = self.config.initial_offset if at_offset is None else at_offset
        if start < 0:
            raise ValueError(f"at_offset must not be negative, got {start}")
        with self._lock:
            self._check_open()
            # Newest first: a crash part-way leaves a prefix of the log, never a suffix.
            # The producers go first: lines of batches the log no longer holds would
            # answer a retry with offsets of records that are gone.
            self._producers.clear()
            self._producer_file.reset()
            while self._segments:
                self._segments.pop().remove()
            self._segments = [self._create(start, entry_before)]
            self._bases = [start]

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["EncodedRange", "Log", "LogInfo"]

"""The log: an ordered list of segments behind one writer lock.

Threading: one lock guards the segment list and every append and read (reads
are short: an index lookup and a slice of the store's memory map). fsync
happens outside the lock, so readers and new appenders are never stuck behind
a disk flush, and appenders that arrive while one fsync runs share the next
(group commit).

Durability, in order of events for one append call:
  1. frames are encoded and copied into the store's mmap            -> survives kill -9
     (the file is pre-allocated; the pages are the kernel's page cache)
  2. index entries are written through the index's mmap            -> a cache, rebuilt if lost
  3. with SyncPolicy.ALWAYS, fdatasync before returning            -> survives power loss
     with SyncPolicy.INTERVAL, a background thread does it every N ms.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import operator
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pyproglog.log.config import LogConfig, SyncPolicy
from pyproglog.log.errors import (
    CorruptSegment,
    DiskFull,
    InvalidConfig,
    LogClosed,
    LogWriteError,
    MissingRecords,
    OffsetOutOfRange,
    RecordTooLarge,
    SegmentFull,
)
from pyproglog.log.format import (
    FRAME_OVERHEAD,
    INDEX_ENTRY_WIDTH,
    STORE_HEADER_SIZE,
    Record,
    RecordLike,
)
from pyproglog.log.segment import STORE_SUFFIX, Segment, segment_paths
from pyproglog.log.stats import LogStats
from pyproglog.log.store import Store

_log = logging.getLogger("pyproglog.log")

# The only names the log takes for its files (see segment_paths).
_SEGMENT_FILE = re.compile(r"(\d{20})\.(store|index|timeindex)")
_SEGMENT_SUFFIXES = (STORE_SUFFIX, ".index", ".timeindex")

AppendListener = Callable[[int], None]


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


_value_of = operator.attrgetter("value")
_FRAME_OVERHEAD_PLUS = FRAME_OVERHEAD.__add__


_time_ns = time.time_ns


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Log:
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
        # Set when an fsync fails: see _sync_upto.
        self._sync_failure: LogWriteError | None = None
        # Group commit bookkeeping: appends are numbered; fsyncs cover a prefix.
        self._sync_cond = threading.Condition()
        self._written_seq = 0
        self._synced_seq = 0
        self._syncing = False
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._open_segments()
        self._sync_thread: threading.Thread | None = None
        self._stop_sync = threading.Event()
        if self.config.sync_policy is SyncPolicy.INTERVAL:
            self._sync_thread = threading.Thread(
                target=self._interval_sync, name="proglog-log-sync", daemon=True
            )
            self._sync_thread.start()

    # -- opening ----------------------------------------------------------------

    def _open_segments(self) -> None:
        """Open every segment in the directory; never delete or shrink one.

        Only files named `<20 digits>.store` are segments. Anything else that
        looks like one (`x.store`, `0.store`, a `.store.bak` copy) is left as it
        is, with a warning. A store file that holds nothing (no frames, no index
        entries) is the active segment when it follows the last one, and is
        otherwise ignored the same way: it is not a segment the log wrote.
        Every segment but the last is sealed at the base of the next, so damage
        in one never changes where another begins; offsets no segment holds
        (a store file that went missing, a damaged tail) read as lost.
        """
        bases: list[int] = []
        for name in sorted(os.listdir(self.directory)):
            m = _SEGMENT_FILE.fullmatch(name)
            if m is not None:
                if m.group(2) == "store":
                    bases.append(int(m.group(1)))
            elif any(suffix in name for suffix in _SEGMENT_SUFFIXES):
                _log.warning(
                    "ignoring %s in %s: not a segment file name (<20 digits>.store); left as it is",
                    name,
                    self.directory,
                )
        holding = [b for b in bases if not self._holds_nothing(b)]
        for orphan in self._orphan_bases():
            if orphan > max(bases, default=-1):
                # Not reopened: truncate_after removes a dropped segment store
                # first, and a crash after that leaves the same files.
                _log.warning(
                    "%s has no store file: if that was the active segment's and "
                    "it was lost, its offsets will be handed out again",
                    segment_paths(self.directory, orphan)[1],
                )
        # After a roll and a clean close the active segment is empty and the one
        # before it ends exactly at its base: that one is sealed too (opened
        # without growing its index), when its clean index says so.
        empty_active = bases[-1] if bases and bases[-1] not in holding else None
        try:
            for i, base in enumerate(holding):
                if i + 1 < len(holding):
                    sealed_end: int | None = holding[i + 1]
                elif empty_active is not None and self._indexed(base) == empty_active - base:
                    sealed_end = empty_active
                else:
                    sealed_end = None
                self._segments.append(Segment(self.directory, base, self.config, sealed_end))
            for base in bases:
                if base in holding:
                    continue
                end = self._segments[-1].next_offset if self._segments else None
                if base == bases[-1] and (end is None or base == end):
                    # The empty active segment of the last roll (or of a new log).
                    self._segments.append(Segment(self.directory, base, self.config))
                else:
                    _log.warning(
                        "ignoring %s: an empty store file that does not follow the log "
                        "(next offset %s); left as it is",
                        segment_paths(self.directory, base)[0],
                        end,
                    )
            # Only the active segment keeps room allocated past its frames (a
            # crash during a roll can leave a sealed one long): cut the others.
            for seg in self._segments[:-1]:
                seg.seal()
            if not self._segments:
                self._segments.append(self._new_segment(self.config.initial_offset))
        except DiskFull as exc:
            for seg in self._segments:
                seg.close()
            raise self._disk_full(exc) from exc
        except BaseException:
            for seg in self._segments:
                seg.close()
            raise
        self._bases = [s.base_offset for s in self._segments]
        self._orphans = self._orphan_bases()
        # Retention at open too: a node restarted on a full disk frees room
        # before its first append needs it.
        if self.config.retention_bytes is not None or self.config.retention_ms is not None:
            removed = self._apply_retention_locked(_now_ms())
            if removed:
                _log.info("retention removed %d segment(s) on open", removed)
        for seg, nxt in zip(self._segments, self._segments[1:], strict=False):
            if seg.next_offset < nxt.base_offset:
                _log.warning("%s", self._gap_error(seg, nxt))

    def _indexed(self, base: int) -> int:
        """Entries in a cleanly closed index file (its size says so); -1 otherwise."""
        try:
            size = os.path.getsize(segment_paths(self.directory, base)[1])
        except FileNotFoundError:
            return -1
        if size % INDEX_ENTRY_WIDTH or size > self.config.max_index_bytes:
            return -1
        return size // INDEX_ENTRY_WIDTH

    def _holds_nothing(self, base: int) -> bool:
        store, index, _ = segment_paths(self.directory, base)
        try:
            if os.path.getsize(store) > STORE_HEADER_SIZE:
                return False
            return os.path.getsize(index) == 0
        except FileNotFoundError:
            return True

    def _gap_error(self, seg: Segment, nxt: Segment) -> MissingRecords:
        first, last = seg.next_offset, nxt.base_offset - 1
        missing = [base for base in self._orphans if seg.base_offset < base < nxt.base_offset]
        if missing:
            why = f"store file {segment_paths(self.directory, missing[0])[0]} is missing"
        else:
            why = f"segment {seg.base_offset} ({seg.store.path}) ends before them"
        return MissingRecords(seg.store.path, first, last, why)

    def _orphan_bases(self) -> list[int]:
        """Bases of index files without their store file (a store that went missing)."""
        out = []
        for name in os.listdir(self.directory):
            m = _SEGMENT_FILE.fullmatch(name)
            if m is not None and m.group(2) == "index":
                base = int(m.group(1))
                if not os.path.exists(segment_paths(self.directory, base)[0]):
                    out.append(base)
        return sorted(out)

    def _free_space_locked(self) -> bool:
        """Apply retention now (an append hit a full disk); whether a segment went."""
        cfg = self.config
        if cfg.retention_bytes is None and cfg.retention_ms is None:
            return False
        removed = self._apply_retention_locked(_now_ms())
        _log.warning(
            "disk full in %s: retention removed %d segment(s)%s",
            self.directory,
            removed,
            ", retrying the append" if removed else "",
        )
        return removed > 0

    def _disk_full_from(self, exc: DiskFull) -> DiskFull:
        """A fresh error to raise (never `exc` itself: raising one instance twice
        grows its traceback), with what a new segment needs."""
        full = self._disk_full(exc)
        return DiskFull(str(full), full.errno)

    def _disk_full(self, exc: DiskFull) -> DiskFull:
        """`exc` with what a new segment needs and which settings lower it."""
        if "max_store_bytes" in str(exc):
            return exc
        cfg = self.config
        return DiskFull(
            f"{exc}; a new segment needs {cfg.max_store_bytes + cfg.max_index_bytes} bytes "
            f"free (max_store_bytes={cfg.max_store_bytes} + max_index_bytes="
            f"{cfg.max_index_bytes}; `proglog serve --segment-max-store-bytes` / "
            f"`--segment-max-index-bytes` lower them, `--retention-bytes` / "
            f"`--retention-ms` let old segments go)",
            exc.errno,
        )

    def _new_segment(self, base: int) -> Segment:
        paths = segment_paths(self.directory, base)
        existed = [os.path.exists(path) for path in paths]
        seg: Segment | None = None
        try:
            seg = Segment(self.directory, base, self.config)
            seg.activate()  # pre-allocate its store: DiskFull here, never SIGBUS later
            if self.config.sync_policy is not SyncPolicy.NEVER:
                seg.sync()
                self._sync_directory()
        except BaseException as exc:
            # Leave nothing behind (e.g. when the disk is full): a stray store
            # file would be taken for a segment by the next open. Only what
            # this call created goes: a file that was there is not ours to delete.
            if seg is not None:
                with contextlib.suppress(Exception):
                    seg.close()
            for path, was in zip(paths, existed, strict=True):
                if not was:
                    with contextlib.suppress(OSError):
                        os.remove(path)
            if isinstance(exc, DiskFull):
                raise self._disk_full(exc) from exc
            raise
        return seg

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- appending --------------------------------------------------------------

    def add_listener(self, listener: AppendListener) -> None:
        """Call `listener(next_offset)` after every append (from the appending thread)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: AppendListener) -> None:
        self._listeners.remove(listener)

    def append(self, value: bytes, *, term: int = 0, type: int = 0, timestamp_ms: int = 0) -> int:
        """Append one record; its offset.

        The lean path of `append_batch` for one record: the same order (frame
        copied into the store's map, then the index entry) and the same
        all-or-nothing on a write error, without the batch bookkeeping. When the
        active segment has no room it goes the batch way, which rolls.
        """
        if len(value) > self._max_record_bytes:
            raise RecordTooLarge(len(value), self._max_record_bytes)
        ts = timestamp_ms or _time_ns() // 1_000_000
        with self._lock:
            if self._closed:
                raise LogClosed()
            if self._sync_failure is not None:
                raise self._refused()
            active = self._segments[-1]
            offset = active.next_offset
            try:
                if active.append_one(value, term, type, ts, 0):  # now full
                    self._roll_locked()
            except SegmentFull:
                offset = -1  # nothing written; the batch path rolls first
            except LogWriteError as exc:
                self._drop_suffix_locked(offset - 1)
                if not isinstance(exc, DiskFull):
                    raise
                if not self._free_space_locked():
                    raise self._disk_full_from(exc) from None
                offset = -1  # space freed: the batch path tries again (once)
            else:
                self._written_seq += 1
                seq = self._written_seq
        if offset < 0:
            return self.append_batch([Record(value, 0, term, type, ts)])
        if self._sync_always:
            self._sync_upto(seq)
        if self._listeners:
            for listener in self._listeners:
                listener(offset + 1)
        return offset

    def append_batch(self, records: Sequence[RecordLike], *, consensus_index: int = 0) -> int:
        """Append records at contiguous offsets; the first offset.

        One copy into the store's map per segment touched (over 1 MiB of frames:
        one per ~1 MiB).

        All or nothing: on a write error nothing of the batch stays or is served.
        `consensus_index` is stored with the batch so that a replicated log can
        tell, after a restart, which consensus entry it applied last.
        """
        if not records:
            raise ValueError("append_batch needs at least one record")
        limit = self._max_record_bytes
        value_bytes = sum(map(len, map(_value_of, records)))  # one C-speed pass
        if value_bytes > limit:  # else no record can be too large
            biggest = max(map(len, map(_value_of, records)))
            if biggest > limit:
                raise RecordTooLarge(biggest, limit)
        now = _now_ms()
        with self._lock:
            self._check_open()
            if self._sync_failure is not None:
                raise self._refused()
            first = self._segments[-1].next_offset
            try:
                self._write_locked(records, value_bytes, now, consensus_index)
            except LogWriteError as exc:
                self._drop_suffix_locked(first - 1)
                if not isinstance(exc, DiskFull):
                    raise
                if not self._free_space_locked():
                    raise self._disk_full_from(exc) from None
                try:  # once: retention gave back space
                    self._write_locked(records, value_bytes, now, consensus_index)
                except LogWriteError as again:
                    self._drop_suffix_locked(first - 1)
                    if isinstance(again, DiskFull):
                        raise self._disk_full_from(again) from None
                    raise
            self._written_seq += 1
            seq = self._written_seq
            next_offset = self._segments[-1].next_offset
        if self._sync_always:
            self._sync_upto(seq)
        for listener in self._listeners:
            listener(next_offset)
        return first

    def _write_locked(
        self,
        records: Sequence[RecordLike],
        value_bytes: int,
        now: int,
        consensus_index: int,
    ) -> None:
        active = self._segments[-1]
        n = len(records)
        total = value_bytes + n * FRAME_OVERHEAD
        if n <= active.index.free and active.size + total <= self.config.max_store_bytes:
            # The usual case: all of it fits the active segment.
            active.append_batch(records, now, consensus_index, total)
            if active.is_maxed:
                self._roll_locked()
            return
        frame_sizes = list(map(_FRAME_OVERHEAD_PLUS, map(len, map(_value_of, records))))
        fits = active.room(frame_sizes)
        if fits < n and not active.is_empty:
            # Prefer keeping a batch in one segment (one write up to 1 MiB, atomic on crash).
            active = self._roll_locked()
            fits = active.room(frame_sizes)
        done = 0
        while True:
            active.append_batch(records[done : done + fits], now, consensus_index)
            done += fits
            if done == len(records):
                break
            active = self._roll_locked()
            fits = active.room(frame_sizes[done:])
        if active.is_maxed:
            self._roll_locked()

    def _roll_locked(self) -> Segment:
        old = self._segments[-1]
        if self.config.sync_policy is not SyncPolicy.NEVER:
            old.sync()  # sealed segments are durable; the group syncer only syncs the active one
        old.seal()  # give back the store's pre-allocated room past its frames
        seg = self._new_segment(old.next_offset)
        self._segments.append(seg)
        self._bases.append(seg.base_offset)
        self._apply_retention_locked(_now_ms())
        return seg

    # -- durability ---------------------------------------------------------------

    def _sync_upto(self, seq: int) -> None:
        with self._sync_cond:
            while self._synced_seq < seq:
                if self._sync_failure is not None:
                    raise self._refused()
                if not self._syncing:
                    self._syncing = True
                    break
                self._sync_cond.wait()
            else:
                return
        synced = False
        try:
            with self._lock:
                target = self._written_seq
                active = self._segments[-1]
            started = time.perf_counter()
            try:
                with self.stats.sync_hook():
                    active.sync()
            except LogWriteError as exc:
                # After a failed fsync the kernel may have dropped the dirty
                # pages and a retry can "succeed" without the data (Linux
                # reports the error once). What was acknowledged as synced can
                # no longer be promised, so the log takes no more writes until
                # it is reopened and recovered from what is really on disk.
                self._sync_failure = LogWriteError(
                    f"{exc}; the log refuses appends until it is reopened", exc.errno
                )
                _log.error("fsync failed, appends refused until reopen: %s", exc)
                raise self._sync_failure from exc
            self.stats.record_sync(time.perf_counter() - started)
            synced = True
        finally:
            with self._sync_cond:
                self._syncing = False
                if synced:
                    self._synced_seq = max(self._synced_seq, target)
                self._sync_cond.notify_all()

    def _refused(self) -> LogWriteError:
        # A fresh exception each time: re-raising one instance would grow its traceback.
        failure = self._sync_failure
        assert failure is not None
        return LogWriteError(str(failure), failure.errno)

    def sync(self) -> None:
        """Force everything appended so far to stable storage."""
        with self._lock:
            self._check_open()
            seq = self._written_seq
        self._sync_upto(seq)

    def flush(self) -> None:
        """Nothing to do (kept for callers): every append is in the kernel's page
        cache when it returns, see `sync` for stable storage. LogClosed if closed."""
        with self._lock:
            self._check_open()

    def _interval_sync(self) -> None:
        interval = self.config.sync_interval_ms / 1000
        while not self._stop_sync.wait(interval):
            try:
                with self._lock:
                    if self._closed:
                        return
                    seq = self._written_seq
                if seq > self._synced_seq:
                    self._sync_upto(seq)
            except LogClosed:
                return
            except LogWriteError:
                return  # _sync_upto logged it; the log now refuses appends

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
            out = self._segment_for(offset).read_range(offset, max_records, max_bytes)
            size = sum(len(r.value) + FRAME_OVERHEAD for r in out)
            while len(out) < max_records and size < max_bytes:
                nxt = out[-1].offset + 1
                if nxt >= self._segments[-1].next_offset:
                    break
                try:
                    more = self._segment_for(nxt).read_range(
                        nxt, max_records - len(out), max_bytes - size
                    )
                except CorruptSegment:
                    break  # lost records: what came before them is returned
                more_size = sum(len(r.value) + FRAME_OVERHEAD for r in more)
                if size + more_size > max_bytes:
                    break
                out += more
                size += more_size
            return out

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

    @property
    def last_consensus_index(self) -> int:
        """Consensus index stored with the last appended batch (0 if none)."""
        with self._lock:
            self._check_open()
            for seg in reversed(self._segments):
                if not seg.is_empty:
                    return seg.last_consensus_index
            return 0

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

    def reader(self) -> io.RawIOBase:
        """A stream of the raw frames of every segment in order (for snapshots).

        Decode it with `pyproglog.log.decode_frames`. It covers what was in the
        log when it was created; appends after that are not included.
        """
        with self._lock:
            self._check_open()
            parts = [(seg.store, seg.store.size) for seg in self._segments]
        return _SegmentsReader(parts)

    # -- shrinking --------------------------------------------------------------

    def truncate(self, lowest: int) -> None:
        """Remove whole segments whose records are all below `lowest`.

        The active segment is never removed; reads of removed offsets are OffsetOutOfRange.
        """
        with self._lock:
            self._check_open()
            while len(self._segments) > 1 and self._segments[0].next_offset <= lowest:
                self._remove_oldest_locked()

    def truncate_after(self, offset: int) -> None:
        """Drop every record after `offset`; the next append gets `offset + 1`.

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
            self._sync_directory()

    def _remove_oldest_locked(self) -> None:
        seg = self._segments.pop(0)
        self._bases.pop(0)
        seg.remove()

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete old closed segments past the retention limits; how many went."""
        with self._lock:
            self._check_open()
            return self._apply_retention_locked(_now_ms() if now_ms is None else now_ms)

    def _apply_retention_locked(self, now_ms: int) -> int:
        removed = 0
        cfg = self.config
        if cfg.retention_bytes is not None:
            total = sum(s.size for s in self._segments)
            while len(self._segments) > 1 and total > cfg.retention_bytes:
                total -= self._segments[0].size
                self._remove_oldest_locked()
                removed += 1
        if cfg.retention_ms is not None:
            horizon = now_ms - cfg.retention_ms
            while len(self._segments) > 1 and self._segments[0].watermark_ms() < horizon:
                self._remove_oldest_locked()
                removed += 1
        return removed

    # -- lifecycle --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed()

    def close(self) -> None:
        """Sync the active segment (unless the policy is NEVER) and close every file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_sync.set()
            try:
                if self.config.sync_policy is not SyncPolicy.NEVER:
                    self._segments[-1].sync()
            finally:
                for seg in self._segments:
                    seg.close()
        if self._sync_thread is not None and self._sync_thread is not threading.current_thread():
            self._sync_thread.join()

    def remove(self) -> None:
        """Close the log and delete its files."""
        self.close()
        with self._lock:
            for seg in self._segments:
                seg.remove()
            self._segments = []

    def reset(self) -> None:
        """Delete everything and start again, empty, at `initial_offset`."""
        with self._lock:
            self._check_open()
            # Newest first: a crash part-way leaves a prefix of the log, never a suffix.
            while self._segments:
                self._segments.pop().remove()
            self._segments = [self._new_segment(self.config.initial_offset)]
            self._bases = [self.config.initial_offset]

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SegmentsReader(io.RawIOBase):
    def __init__(self, parts: list[tuple[Store, int]]) -> None:
        self._parts = parts
        self._i = 0
        self._pos = STORE_HEADER_SIZE

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        while self._i < len(self._parts):
            store, end = self._parts[self._i]
            if self._pos < end:
                data = store.read_at(self._pos, min(len(buf), end - self._pos))
                n = len(data)
                buf[:n] = data
                self._pos += n
                return n
            self._i += 1
            self._pos = STORE_HEADER_SIZE
        return 0


__all__ = ["InvalidConfig", "Log", "LogInfo"]

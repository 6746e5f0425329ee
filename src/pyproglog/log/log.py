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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pyproglog.log.config import LogConfig, SyncPolicy
from pyproglog.log.errors import (
    InvalidConfig,
    LogClosed,
    LogWriteError,
    OffsetOutOfRange,
    RecordTooLarge,
    SegmentFull,
)
from pyproglog.log.format import (
    FRAME_OVERHEAD,
    STORE_HEADER_SIZE,
    Record,
    RecordLike,
)
from pyproglog.log.segment import STORE_SUFFIX, Segment, segment_paths
from pyproglog.log.stats import LogStats
from pyproglog.log.store import Store

_log = logging.getLogger("pyproglog.log")

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
        bases = sorted(
            int(name[: -len(STORE_SUFFIX)])
            for name in os.listdir(self.directory)
            if name.endswith(STORE_SUFFIX) and name[: -len(STORE_SUFFIX)].isdigit()
        )
        try:
            for i, base in enumerate(bases):
                seg = Segment(self.directory, base, self.config)
                if seg.is_empty and i + 1 < len(bases):
                    # Only the active (last) segment is ever empty; an empty one
                    # before others is a leftover of a roll that failed or was
                    # cut short. It holds nothing: drop it, not what follows.
                    _log.warning("removing empty leftover segment %d", base)
                    seg.remove()
                    continue
                if self._segments and self._segments[-1].next_offset != base:
                    # A hole (or overlap) can only come from lost data in an older
                    # segment; keep the unbroken prefix rather than serve a gap.
                    _log.error(
                        "segment %d does not follow offset %d; dropping it and later segments",
                        base,
                        self._segments[-1].next_offset - 1,
                    )
                    seg.remove()
                    for later in bases[bases.index(base) + 1 :]:
                        Segment(self.directory, later, self.config).remove()
                    break
                self._segments.append(seg)
            # Only the active segment keeps room allocated past its frames (a
            # crash during a roll can leave a sealed one long): cut the others.
            for seg in self._segments[:-1]:
                seg.seal()
            if not self._segments:
                self._segments.append(self._new_segment(self.config.initial_offset))
        except BaseException:
            for seg in self._segments:
                seg.close()
            raise
        self._bases = [s.base_offset for s in self._segments]

    def _new_segment(self, base: int) -> Segment:
        seg: Segment | None = None
        try:
            seg = Segment(self.directory, base, self.config)
            seg.activate()  # pre-allocate its store: DiskFull here, never SIGBUS later
            if self.config.sync_policy is not SyncPolicy.NEVER:
                seg.sync()
                self._sync_directory()
        except BaseException:
            # Leave nothing behind (e.g. when the disk is full): a stray store
            # file would be taken for a segment by the next open.
            if seg is not None:
                with contextlib.suppress(Exception):
                    seg.remove()
            else:
                for path in segment_paths(self.directory, base):
                    with contextlib.suppress(OSError):
                        os.remove(path)
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
            except LogWriteError:
                self._drop_suffix_locked(offset - 1)
                raise
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
            except LogWriteError:
                self._drop_suffix_locked(first - 1)
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
        if offset >= seg.next_offset:  # only possible for an empty active segment
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

        Raises OffsetOutOfRange when `offset` itself is not in the log.
        """
        with self._lock:
            self._check_open()
            out = self._segment_for(offset).read_range(offset, max_records, max_bytes)
            size = sum(len(r.value) + FRAME_OVERHEAD for r in out)
            while len(out) < max_records and size < max_bytes:
                nxt = out[-1].offset + 1
                if nxt >= self._segments[-1].next_offset:
                    break
                more = self._segment_for(nxt).read_range(
                    nxt, max_records - len(out), max_bytes - size
                )
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
                    return seg.offset_for_timestamp(timestamp_ms)
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

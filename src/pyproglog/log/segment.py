"""A segment: one store, its index and its time index, named by base offset."""

from __future__ import annotations

import bisect
import contextlib
import logging
import operator
import os
from collections.abc import Iterator, Sequence

from crc32c import crc32c

from pyproglog.log.config import LogConfig
from pyproglog.log.errors import CorruptSegment, LogWriteError, OffsetOutOfRange, SegmentFull
from pyproglog.log.format import (
    BODY_HEADER,
    FRAME_OVERHEAD,
    FRAME_PREFIX,
    FRAME_PREFIX_SIZE,
    INDEX_ENTRY,
    INDEX_ENTRY_WIDTH,
    STORE_HEADER_SIZE,
    FrameError,
    Record,
    RecordLike,
    decode_frame,
    decode_frames,
    encode_batch,
    encode_frame_header,
)
from pyproglog.log.index import Index
from pyproglog.log.store import Store
from pyproglog.log.timeindex import TimeIndex

_log = logging.getLogger("pyproglog.log")

STORE_SUFFIX = ".store"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
_SCAN_CHUNK = 4 * 1024 * 1024
# Batches bigger than this are written in pieces of about this size (see _write_chunked).
_WRITE_CHUNK = 1024 * 1024
_READ_CHUNK = 1024 * 1024  # the same for range reads (see _read_chunked)
# From this average value size on, big batches skip encoding whole frames first.
_BIG_VALUE = 8 * 1024
_value_of = operator.attrgetter("value")
_pack_body = BODY_HEADER.pack
_pack_prefix_into = FRAME_PREFIX.pack_into
_pack_entry_into = INDEX_ENTRY.pack_into


def segment_paths(directory: str, base_offset: int) -> tuple[str, str, str]:
    stem = os.path.join(directory, f"{base_offset:020d}")
    return stem + STORE_SUFFIX, stem + INDEX_SUFFIX, stem + TIME_INDEX_SUFFIX


class Segment:
    def __init__(self, directory: str, base_offset: int, config: LogConfig) -> None:
        self.base_offset = base_offset
        self.config = config
        self._max_store_bytes = config.max_store_bytes
        self._time_interval = config.time_index_interval_bytes
        self._max_entries = config.max_index_entries
        store_path, index_path, time_path = segment_paths(directory, base_offset)
        self.store = Store(store_path, config.max_store_bytes)
        try:
            self.index = Index(index_path, config.max_index_bytes)
            try:
                self.time_index = TimeIndex(time_path)
                self.last_consensus_index = 0
                self._watermark: int | None = None  # max timestamp in the segment; lazy
                self._bytes_since_time_entry = 0
                self._recover()
            except BaseException:
                if hasattr(self, "time_index"):
                    self.time_index.close()
                self.index.close()
                raise
        except BaseException:
            self.store.close()
            raise
        self.next_offset = base_offset + self.index.entries

    # -- recovery -------------------------------------------------------------

    def _frame_at(self, rel: int, pos: int) -> tuple[int, int] | None:
        """(frame end, consensus index) if a whole valid frame for `rel` starts at `pos`."""
        size = self.store.size
        if pos + FRAME_OVERHEAD > size:
            return None
        prefix = self.store.read_at(pos, FRAME_PREFIX.size)
        length, _ = FRAME_PREFIX.unpack(prefix)
        end = pos + FRAME_PREFIX.size + length
        if length < BODY_HEADER.size or end > size:
            return None
        frame = self.store.read_at(pos, end - pos)
        _, consumed = decode_frames(frame, self.base_offset + rel)
        if not consumed:
            return None
        return end, int(BODY_HEADER.unpack_from(frame, FRAME_PREFIX.size)[3])

    def _recover(self) -> None:
        """Make index and store agree on the longest valid prefix; cut the rest.

        O(1) for a cleanly closed segment: only the last indexed frame is read.
        After a crash, the unindexed tail of the store is scanned and indexed,
        and a torn or corrupt tail is cut (never served).
        """
        index, store = self.index, self.store
        n = index.entries
        # After a power loss the index's pages may have reached the disk and the
        # store's not (the kernel writes them back in any order), or a damaged
        # file may point anywhere: walk back to an entry whose frame is real.
        end = STORE_HEADER_SIZE
        while n > 0:
            _, pos = index.read(n - 1)
            found = self._frame_at(n - 1, pos)
            if found is not None:
                end, self.last_consensus_index = found
                break
            n -= 1
        dirty = n != index.entries or not index.closed_cleanly
        if n != index.entries:
            index.truncate(n)
        # Index whatever whole frames follow (those the index had not recorded yet).
        size = store.size
        while end < size:
            chunk = store.read_at(end, min(_SCAN_CHUNK, size - end))
            records, consumed = decode_frames(chunk, self.base_offset + n)
            if not consumed:
                # The next frame may simply be longer than the chunk.
                if len(chunk) >= FRAME_PREFIX.size:
                    length, _ = FRAME_PREFIX.unpack_from(chunk)
                    if len(chunk) < FRAME_PREFIX.size + length <= size - end:
                        chunk = store.read_at(end, FRAME_PREFIX.size + length)
                        records, consumed = decode_frames(chunk, self.base_offset + n)
                if not consumed:
                    break
            positions = []
            pos = end
            for rec in records:
                positions.append(pos)
                pos += FRAME_OVERHEAD + len(rec.value)
            # More frames than the index can hold (a smaller max_index_bytes than
            # when they were written): keep what fits.
            keep = min(len(positions), index.free)
            if keep:
                index.write_many(positions[:keep])
                n += keep
                end = positions[keep - 1] + FRAME_OVERHEAD + len(records[keep - 1].value)
                dirty = True
                self.last_consensus_index = self._cidx_at(positions[keep - 1])
            if keep < len(records):
                break
        if end < size:
            # A file longer than its frames: a torn or corrupt tail, or the
            # pre-allocated zeroes of a store that was not closed cleanly. The
            # store zeroes whatever is not zero, so it can never be read again.
            if store.truncate(end):
                _log.warning(
                    "cut torn or corrupt tail of %s after byte %d (file of %d bytes)",
                    store.path,
                    end,
                    size,
                )
            dirty = True
        if dirty:
            self.time_index.truncate(n)

    def _cidx_at(self, pos: int) -> int:
        data = self.store.read_at(pos + FRAME_PREFIX.size, BODY_HEADER.size)
        return int(BODY_HEADER.unpack(data)[3])

    # -- writing --------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.store.size

    @property
    def is_maxed(self) -> bool:
        return self.store.size >= self.config.max_store_bytes or self.index.is_full

    @property
    def is_empty(self) -> bool:
        return self.next_offset == self.base_offset

    def room(self, frame_sizes: Sequence[int]) -> int:
        """How many of the next frames (by encoded size) fit in this segment."""
        free_bytes = self.config.max_store_bytes - self.store.size
        limit = min(len(frame_sizes), self.index.free)
        n = 0
        for size in frame_sizes[:limit]:
            free_bytes -= size
            if free_bytes < 0:
                break
            n += 1
        return n

    def append_batch(
        self,
        records: Sequence[RecordLike],
        now_ms: int,
        consensus_index: int,
        total_bytes: int | None = None,
    ) -> int:
        """Append `records` (the caller checked they fit); the offset of the first.

        `total_bytes`, the size of their frames, may be passed by a caller that
        has it already.

        Order is what makes a kill -9 safe: the frames reach the file before the
        index entries that point at them are written, so the index can lag the
        store (recovery re-indexes the tail) but never point at bytes not written.
        """
        n = len(records)
        if n > self.index.free:
            raise SegmentFull(self.base_offset)
        store = self.store
        start = store.size
        total = total_bytes
        if total is None:
            total = sum(map(len, map(_value_of, records))) + n * FRAME_OVERHEAD
        if start + total > self._max_store_bytes:
            raise SegmentFull(self.base_offset)
        watermark = self.watermark_ms()
        first = self.next_offset
        if total <= _WRITE_CHUNK:
            enc = encode_batch(records, first, start, now_ms, consensus_index)
            # One copy into the store's map. Only allocating room can fail
            # (DiskFull), and then before anything is written.
            store.append_encoded(enc.data)
            positions = enc.positions
            max_ts = enc.max_timestamp_ms
        else:
            positions, max_ts = self._write_chunked(records, first, now_ms, consensus_index, total)
        self.index.write_many(positions)
        self.next_offset = first + n
        self.last_consensus_index = consensus_index
        self._watermark = max(watermark, max_ts)
        self._bytes_since_time_entry += total
        if self._bytes_since_time_entry >= self._time_interval:
            self._add_time_entry()
        return first

    # Time-index entries added but not yet written out (class default: none).
    _time_entries_unflushed = 0

    def _add_time_entry(self, flush: bool = True) -> None:
        """Add a sparse time-index entry for the last record.

        The time index is a cache (a lost entry only lengthens a scan), so the
        single-record path writes it out every 16 entries rather than with each
        one: a pwrite per entry was a third of the cost of a 4 KiB append.
        """
        self.time_index.load(self.index.entries)
        self.time_index.add(self.watermark_ms(), self.next_offset - 1 - self.base_offset)
        self._bytes_since_time_entry = 0
        self._time_entries_unflushed += 1
        if flush or self._time_entries_unflushed >= 16:
            self.time_index.flush()
            self._time_entries_unflushed = 0

    def _write_chunked(
        self,
        records: Sequence[RecordLike],
        first: int,
        now_ms: int,
        consensus_index: int,
        total: int,
    ) -> tuple[list[int], int]:
        """Write a big batch in copies of about _WRITE_CHUNK bytes: (positions, max timestamp).

        One buffer of the whole batch costs more than it saves: every batch
        touches fresh pages and cold caches (64 MiB batches ran at ~0.7 GB/s,
        1 MiB writes at page-cache speed). Still all or nothing on an error: if
        anything fails part-way, the store is cut back (and the dropped bytes
        zeroed) to where the batch began before the error goes up, and no index
        entry has been written yet. A kill -9 between two copies leaves a prefix
        of the batch (a kill during one copy, a prefix of a frame, which
        recovery drops).
        """
        store = self.store
        start = store.size
        positions: list[int] = []
        max_ts = -(2**63)
        n = len(records)
        try:
            if total >= n * (FRAME_OVERHEAD + _BIG_VALUE):
                # Big values go into the store's map as they are, after their
                # frame header: one copy fewer than encoding whole frames first.
                append_split = self._append_split
                offset = first
                for rec in records:
                    ts = rec.timestamp_ms or now_ms
                    if ts > max_ts:
                        max_ts = ts
                    positions.append(
                        append_split(rec.value, offset, rec.term, ts, consensus_index, rec.type)
                    )
                    offset += 1
            else:
                i = 0
                while i < n:
                    size = len(records[i].value) + FRAME_OVERHEAD
                    j = i + 1
                    while j < n:
                        size += len(records[j].value) + FRAME_OVERHEAD
                        if size > _WRITE_CHUNK:
                            break
                        j += 1
                    enc = encode_batch(records[i:j], first + i, store.size, now_ms, consensus_index)
                    store.append_encoded(enc.data)
                    positions += enc.positions
                    max_ts = max(max_ts, enc.max_timestamp_ms)
                    i = j
        except BaseException:
            if store.size > start:
                with contextlib.suppress(LogWriteError):
                    store.truncate(start)
            raise
        return positions, max_ts

    def _append_split(
        self,
        value: bytes,
        offset: int,
        term: int,
        timestamp_ms: int,
        consensus_index: int,
        rtype: int,
    ) -> int:
        """Write one frame as its header, then `value` as it is; its position.

        For big values: one copy fewer than encoding the whole frame first. Not
        atomic: if the value cannot be written the header stays, and the caller
        cuts the store back.
        """
        store = self.store
        pos = store.append_encoded(
            encode_frame_header(value, offset, term, timestamp_ms, consensus_index, rtype)
        )
        store.append_encoded(value)
        return pos

    def append_one(
        self, value: bytes, term: int, rtype: int, timestamp_ms: int, consensus_index: int
    ) -> bool:
        """Append one record (timestamp already resolved) at `next_offset`.

        The lean path of `Log.append`, in the same order as `append_batch`:
        frame copied into the store's map (no syscall), then its index entry.
        Returns `is_maxed` afterwards (whether the caller should roll), cheaply.
        """
        store = self.store
        index = self.index
        pos = store._size
        size = FRAME_OVERHEAD + len(value)
        end = pos + size
        rel = index.entries
        max_store = self._max_store_bytes
        max_entries = self._max_entries
        if rel >= max_entries or end > max_store:
            raise SegmentFull(self.base_offset)
        watermark = self._watermark
        if watermark is None:
            watermark = self.watermark_ms()
        offset = self.next_offset
        # Store and index writes inlined (this is the hot path of Log.append),
        # by their rules: see Store.append_encoded and Index.write.
        if size < _BIG_VALUE:
            body = _pack_body(offset, term, timestamp_ms, consensus_index, rtype) + value
            if end > store._mapped:
                store.reserve(end)  # DiskFull here: nothing written
            mm = store._mm
            mm[pos + FRAME_PREFIX_SIZE : end] = body
            _pack_prefix_into(mm, pos, size - FRAME_PREFIX_SIZE, crc32c(body))
            store._size = end
            if end >= store.release_at:
                store.release()
        else:
            try:
                self._append_split(value, offset, term, timestamp_ms, consensus_index, rtype)
            except BaseException:
                if store._size > pos:
                    store.truncate(pos)  # the header alone must not stay
                raise
        _pack_entry_into(index._mm, rel * INDEX_ENTRY_WIDTH, rel, pos)
        index.entries = rel + 1
        self.next_offset = offset + 1
        self.last_consensus_index = consensus_index
        if timestamp_ms > watermark:
            self._watermark = timestamp_ms
        since = self._bytes_since_time_entry + size
        self._bytes_since_time_entry = since
        if since >= self._time_interval:
            self._add_time_entry(flush=False)
        return end >= max_store or rel + 1 >= max_entries

    def sync(self) -> None:
        """fdatasync the store: every append made so far, through the map too.

        Safe without the log's lock: it never touches the mapping, which an
        append may be writing further on at the same moment (see Store.sync).
        """
        self.store.sync()

    def activate(self) -> None:
        """Pre-allocate the store to max_store_bytes (the active segment).

        Raises DiskFull when there is no room; nothing is written then. Stores
        that are not activated allocate on their first append instead.
        """
        self.store.reserve()

    def seal(self) -> None:
        """Cut the store file to its frames (a segment that takes no more appends)."""
        self.store.seal()

    # -- reading --------------------------------------------------------------

    def _end_of(self, rel: int) -> int:
        """Store position just after the frame of `rel`."""
        if rel + 1 < self.index.entries:
            return self.index.position(rel + 1)
        return self.store.size

    def read(self, offset: int) -> Record:
        rel = offset - self.base_offset
        index = self.index
        entries = index.entries
        if not 0 <= rel < entries:
            raise OffsetOutOfRange(offset, self.base_offset, self.next_offset)
        entry_rel, pos = index.read(rel)
        store = self.store
        size = store.size
        if entry_rel != rel or not STORE_HEADER_SIZE <= pos < size:
            raise CorruptSegment(
                self.index.path, rel * INDEX_ENTRY_WIDTH, f"bad index entry for offset {offset}"
            )
        end = index.position(rel + 1) if rel + 1 < entries else size  # _end_of, inlined
        if pos < end <= size:
            try:  # one read (see Store.read_at); offset and checksum verified
                return decode_frame(store.read_at(pos, end - pos), offset)
            except FrameError:
                pass
        # The next index entry (our end) may be what is wrong: go by the frame's own length.
        prefix = store.read_at(pos, FRAME_PREFIX.size)
        if len(prefix) == FRAME_PREFIX.size:
            end = pos + FRAME_PREFIX.size + FRAME_PREFIX.unpack(prefix)[0]
            if end <= size:
                records, _ = decode_frames(store.read_at(pos, end - pos), offset)
                if records:
                    return records[0]
        raise CorruptSegment(self.store.path, pos, f"no valid frame for offset {offset}")

    def read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        """Records from `offset`: at most `max_records`, about `max_bytes` (at least one)."""
        rel = offset - self.base_offset
        if not 0 <= rel < self.index.entries:
            raise OffsetOutOfRange(offset, self.base_offset, self.next_offset)
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        count = min(max_records, self.index.entries - rel)
        positions = self.index.positions(rel, rel + count)
        positions.append(self._end_of(rel + count - 1))
        start = positions[0]
        size = self.store.size
        if not STORE_HEADER_SIZE <= start < size:
            raise CorruptSegment(
                self.index.path, rel * INDEX_ENTRY_WIDTH, f"bad index entry for offset {offset}"
            )
        # Largest k with the first k frames within max_bytes, never below one.
        lo, hi = 1, count
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if positions[mid] - start <= max_bytes:
                lo = mid
            else:
                hi = mid - 1
        k = lo
        if not start < positions[k] <= size:
            # A damaged index entry; never read a negative or absurd length.
            return [self.read(offset)]
        if positions[k] - start <= _READ_CHUNK:
            records, _ = decode_frames(self.store.read_at(start, positions[k] - start), offset)
        else:
            records = self._read_chunked(offset, positions, k)
        if len(records) > k:
            # Frames run past where the index says the range ends: entry rel + k is wrong.
            raise CorruptSegment(
                self.index.path,
                (rel + k) * INDEX_ENTRY_WIDTH,
                f"bad index entry for offset {offset + k}",
            )
        if len(records) != k:
            bad = positions[len(records)]
            raise CorruptSegment(
                self.store.path, bad, f"no valid frame for offset {offset + len(records)}"
            )
        return records

    def _read_chunked(self, offset: int, positions: list[int], k: int) -> list[Record]:
        """The k frames from positions[0], in reads of about _READ_CHUNK bytes.

        One buffer for a big range (1000 records of 64 KiB) touches fresh
        memory and ran at a sixth of the speed. Stops at the first bad frame.
        """
        records: list[Record] = []
        i = 0
        while i < k:
            lo = positions[i]
            j = max(i + 1, bisect.bisect_right(positions, lo + _READ_CHUNK, i + 1, k + 1) - 1)
            if positions[j] <= lo:
                break  # a damaged index entry; the caller reports it
            got, _ = decode_frames(self.store.read_at(lo, positions[j] - lo), offset + i)
            records += got
            if len(got) != j - i:
                break
            i = j
        return records

    def watermark_ms(self) -> int:
        """Largest timestamp in the segment (lazily computed; -2**63 when empty)."""
        if self._watermark is None:
            self.time_index.load(self.index.entries)
            last = self.time_index.last()
            wm, rel = (last[0], last[1] + 1) if last else (-(2**63), 0)
            for rec in self._scan(self.base_offset + rel):
                wm = max(wm, rec.timestamp_ms)
            self._watermark = wm
            self._bytes_since_time_entry = self.store.size - (
                self.index.position(rel) if rel < self.index.entries else self.store.size
            )
        return self._watermark

    def _scan(self, offset: int, batch: int = 1024) -> Iterator[Record]:
        while offset < self.next_offset:
            records = self.read_range(offset, batch, 1 << 20)
            yield from records
            offset += len(records)

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        self.time_index.load(self.index.entries)
        start = self.base_offset + self.time_index.scan_start(timestamp_ms)
        for rec in self._scan(start, 256):
            if rec.timestamp_ms >= timestamp_ms:
                return rec.offset
        return None

    # -- shrinking and lifecycle ---------------------------------------------

    def truncate_after(self, offset: int) -> None:
        """Drop every record after `offset` (offset = base - 1 empties the segment)."""
        keep = offset + 1 - self.base_offset
        if keep >= self.index.entries:
            return
        end = self.index.position(keep)
        self.store.truncate(end)
        self.store.sync()  # a dropped suffix must not come back after a power loss
        self.index.truncate(keep)
        self.time_index.truncate(keep)
        self.next_offset = self.base_offset + keep
        self._watermark = None
        self.last_consensus_index = self._cidx_at(self.index.position(keep - 1)) if keep else 0

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.index.close()
            self.time_index.close()

    def remove(self) -> None:
        self.close()
        for path in (self.store.path, self.index.path, self.time_index.path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def size_bytes(self) -> int:
        return self.store.size + self.index.entries * INDEX_ENTRY_WIDTH

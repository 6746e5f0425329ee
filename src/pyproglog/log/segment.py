"""A segment: one store, its index and its time index, named by base offset."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

from pyproglog.log.config import LogConfig
from pyproglog.log.errors import CorruptSegment, OffsetOutOfRange
from pyproglog.log.format import (
    BODY_HEADER,
    FRAME_OVERHEAD,
    FRAME_PREFIX,
    INDEX_ENTRY_WIDTH,
    STORE_HEADER_SIZE,
    Record,
    RecordLike,
    decode_frames,
    encode_batch,
)
from pyproglog.log.index import Index
from pyproglog.log.store import Store
from pyproglog.log.timeindex import TimeIndex

_log = logging.getLogger("pyproglog.log")

STORE_SUFFIX = ".store"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
_SCAN_CHUNK = 4 * 1024 * 1024


def segment_paths(directory: str, base_offset: int) -> tuple[str, str, str]:
    stem = os.path.join(directory, f"{base_offset:020d}")
    return stem + STORE_SUFFIX, stem + INDEX_SUFFIX, stem + TIME_INDEX_SUFFIX


class Segment:
    def __init__(self, directory: str, base_offset: int, config: LogConfig) -> None:
        self.base_offset = base_offset
        self.config = config
        store_path, index_path, time_path = segment_paths(directory, base_offset)
        self.store = Store(store_path)
        try:
            self.index = Index(index_path, config.max_index_bytes)
        except BaseException:
            self.store.close()
            raise
        self.time_index = TimeIndex(time_path)
        self.last_consensus_index = 0
        self._watermark: int | None = None  # max timestamp in the segment; lazy
        self._bytes_since_time_entry = 0
        self._recover()
        self.next_offset = base_offset + self.index.entries

    # -- recovery -------------------------------------------------------------

    def _frame_at(self, rel: int, pos: int) -> tuple[int, int] | None:
        """(frame end, consensus index) if a whole valid frame for `rel` starts at `pos`."""
        size = self.store.flushed_size
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
        # A process crash can leave index entries for frames whose buffered
        # bytes never reached the file, or zeroes; walk back to a frame that is real.
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
        size = store.flushed_size
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
            if index.free < len(positions):
                break  # more frames than the index can hold: keep what fits
            index.write_many(positions)
            n += len(records)
            end += consumed
            dirty = True
            self.last_consensus_index = self._cidx_at(positions[-1])
        if end < size:
            _log.warning(
                "cutting torn or corrupt tail of %s: %d bytes after byte %d",
                store.path,
                size - end,
                end,
            )
            store.truncate(end)
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

    def append_batch(self, records: Sequence[RecordLike], now_ms: int, consensus_index: int) -> int:
        """Append `records` (the caller checked they fit); the offset of the first.

        Order is what makes a kill -9 safe: the frames reach the file before the
        index entries that point at them are written, so the index can lag the
        store (recovery re-indexes the tail) but never point at bytes not written.
        """
        watermark = self.watermark_ms()
        first = self.next_offset
        enc = encode_batch(records, first, self.store.size, now_ms, consensus_index)
        self.store.append_encoded(enc.data)
        self.store.flush()  # raises LogWriteError with the file already cut back
        self.index.write_many(enc.positions)
        self.next_offset = first + len(records)
        self.last_consensus_index = consensus_index
        self._watermark = max(watermark, enc.max_timestamp_ms)
        self._bytes_since_time_entry += len(enc.data)
        if self._bytes_since_time_entry >= self.config.time_index_interval_bytes:
            self.time_index.load(self.index.entries)
            self.time_index.add(self._watermark, self.next_offset - 1 - self.base_offset)
            self.time_index.flush()
            self._bytes_since_time_entry = 0
        return first

    def flush(self) -> None:
        self.store.flush()

    def sync(self) -> None:
        self.store.sync()

    # -- reading --------------------------------------------------------------

    def _end_of(self, rel: int) -> int:
        """Store position just after the frame of `rel`."""
        if rel + 1 < self.index.entries:
            return self.index.position(rel + 1)
        return self.store.size

    def read(self, offset: int) -> Record:
        rel = offset - self.base_offset
        if not 0 <= rel < self.index.entries:
            raise OffsetOutOfRange(offset, self.base_offset, self.next_offset)
        pos = self.index.position(rel)
        end = self._end_of(rel)
        records, _ = decode_frames(self.store.read_at(pos, end - pos), offset)
        if len(records) != 1:
            raise CorruptSegment(self.store.path, pos, f"no valid frame for offset {offset}")
        return records[0]

    def read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        """Records from `offset`: at most `max_records`, about `max_bytes` (at least one)."""
        rel = offset - self.base_offset
        if not 0 <= rel < self.index.entries:
            raise OffsetOutOfRange(offset, self.base_offset, self.next_offset)
        count = min(max_records, self.index.entries - rel)
        positions = self.index.positions(rel, rel + count)
        positions.append(self._end_of(rel + count - 1))
        start = positions[0]
        # Largest k with the first k frames within max_bytes, never below one.
        lo, hi = 1, count
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if positions[mid] - start <= max_bytes:
                lo = mid
            else:
                hi = mid - 1
        k = lo
        records, _ = decode_frames(self.store.read_at(start, positions[k] - start), offset)
        if len(records) != k:
            bad = positions[len(records)]
            raise CorruptSegment(
                self.store.path, bad, f"no valid frame for offset {offset + len(records)}"
            )
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

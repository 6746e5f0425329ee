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
# How many damaged frames in a row recovery steps over by their length fields.
_RESYNC_HOPS = 64
# Batches bigger than this are written in pieces of about this size (see _write_chunked).
_WRITE_CHUNK = 1024 * 1024
_READ_CHUNK = 1024 * 1024  # the same for range reads (see _read_chunked)
# From this average value size on, big batches skip encoding whole frames first.
_BIG_VALUE = 8 * 1024
_value_of = operator.attrgetter("value")
_pack_body = BODY_HEADER.pack
_pack_prefix_into = FRAME_PREFIX.pack_into
_pack_entry_into = INDEX_ENTRY.pack_into


def _ranges(offsets: list[int], most: int = 8) -> str:
    """`[1, 2, 3, 7]` as "1..3, 7" (the first `most` runs), for log lines."""
    runs: list[tuple[int, int]] = []
    for o in offsets:
        if runs and runs[-1][1] == o - 1:
            runs[-1] = (runs[-1][0], o)
        else:
            runs.append((o, o))
    text = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in runs[:most])
    return text + (f" and {len(runs) - most} more runs" if len(runs) > most else "")


def segment_paths(directory: str, base_offset: int) -> tuple[str, str, str]:
    stem = os.path.join(directory, f"{base_offset:020d}")
    return stem + STORE_SUFFIX, stem + INDEX_SUFFIX, stem + TIME_INDEX_SUFFIX


class Segment:
    def __init__(
        self,
        directory: str,
        base_offset: int,
        config: LogConfig,
        sealed_end: int | None = None,
    ) -> None:
        """Open (or create) the segment at `base_offset`.

        `sealed_end` is the base of the next segment when there is one: this
        segment is sealed, holds at most the offsets below it, and recovery
        never cuts or zeroes anything in it (only the active segment can have a
        torn tail).
        """
        self.base_offset = base_offset
        self.config = config
        self._max_store_bytes = config.max_store_bytes
        self._time_interval = config.time_index_interval_bytes
        self._max_entries = config.max_index_entries
        # Set once the index has been rebuilt from the store after a read failed.
        self._rebuilt = False
        store_path, index_path, time_path = segment_paths(directory, base_offset)
        self.store = Store(store_path, config.max_store_bytes)
        try:
            self.index = Index(
                index_path,
                config.max_index_bytes,
                None if sealed_end is None else sealed_end - base_offset,
            )
            try:
                self.time_index = TimeIndex(time_path)
                self.last_consensus_index = 0
                self._watermark: int | None = None  # max timestamp in the segment; lazy
                self._bytes_since_time_entry = 0
                self._recover(sealed_end)
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

    def _recover(self, sealed_end: int | None) -> None:
        """Make index and store agree; cut a torn tail of the active segment.

        O(1) for a cleanly closed segment: only the last indexed frame is read.
        A clean close means every indexed frame was written whole, so a frame
        that fails now is damage: its offset stays taken and reads of it raise
        CorruptSegment. After a crash, the unindexed tail of the store is
        scanned and indexed (past a damaged frame when the next frame is
        whole), and what cannot be read at its end is a torn tail: cut in the
        active segment, left untouched in a sealed one.
        """
        index, store = self.index, self.store
        base = self.base_offset
        stop = None if sealed_end is None else sealed_end - base
        if stop is not None and index.entries > stop:
            _log.warning(
                "%s lists offsets up to %d, past the next segment (%d): entries ignored",
                index.path,
                base + index.entries - 1,
                sealed_end,
            )
            index.truncate(stop)
        listed = n = index.entries
        end = STORE_HEADER_SIZE
        size = store.size
        if n and index.closed_cleanly:
            _, pos = index.read(n - 1)
            found = self._frame_at(n - 1, pos)
            if found is not None:
                end, self.last_consensus_index = found
            else:
                # Damaged, not torn: keep the offsets, and append after all
                # the bytes there are (a clean close cut the file to its frames).
                end = size
                first = n - self._clamp_entries(end)
                if first and self._frame_at(first - 1, index.position(first - 1)) is None:
                    first -= 1
                _log.warning(
                    "%s: %s damaged or missing (the file ends at byte %d); reads fail "
                    "(DATA_LOSS) and the offsets are not reused",
                    store.path,
                    f"offsets {base + first}..{base + n - 1} are"
                    if first < n - 1
                    else f"the record at offset {base + n - 1} is",
                    end,
                )
        else:
            # After a power loss the index's pages may have reached the disk and
            # the store's not (the kernel writes them back in any order), or a
            # damaged file may point anywhere: walk back to an entry whose frame is real.
            while n > 0:
                _, pos = index.read(n - 1)
                found = self._frame_at(n - 1, pos)
                if found is not None:
                    end, self.last_consensus_index = found
                    break
                n -= 1
            if n != listed:
                _log.warning(
                    "%s listed offsets %d..%d whose frames %s does not hold: dropped",
                    index.path,
                    base + n,
                    base + listed - 1,
                    store.path,
                )
                index.truncate(n)
        dirty = n != listed or not index.closed_cleanly
        if end < size:
            # Index whatever whole frames follow (those the index had not recorded yet).
            positions, end, damaged = self._walk(end, n, size, stop)
            if positions:
                keep = min(len(positions), index.free)
                index.write_many(positions[:keep])
                n += keep
                dirty = True
                if keep < len(positions):
                    end = positions[keep]
                found = self._frame_at(n - 1, positions[keep - 1]) if keep else None
                if found is not None:
                    self.last_consensus_index = found[1]
            if damaged:
                _log.warning(
                    "%s: damaged records at offsets %s kept as lost; reads of them fail "
                    "(DATA_LOSS)",
                    store.path,
                    _ranges([base + rel for rel in damaged if rel < n]),
                )
        if end < size:
            if sealed_end is not None:
                # A sealed segment is never cut: zeroes left by a crash during a
                # roll are given back by seal(); anything else stays as it is,
                # and is where this segment's remaining offsets were.
                if not store.end_at_zero_tail(end) and stop is not None:
                    lost = min(stop - n, index.free)
                    if lost > 0:
                        index.write_many([end] * lost)
                        _log.warning(
                            "%s: unreadable bytes from byte %d to %d left as they are; "
                            "offsets %d..%d are damaged, reads of them fail (DATA_LOSS)",
                            store.path,
                            end,
                            size,
                            base + n,
                            base + n + lost - 1,
                        )
                        n += lost
            elif store.truncate(end):
                # A file longer than its frames: a torn or corrupt tail, or the
                # pre-allocated zeroes of a store that was not closed cleanly. The
                # store zeroes whatever is not zero, so it can never be read again.
                _log.warning(
                    "cut torn or corrupt tail of %s after byte %d (file of %d bytes)",
                    store.path,
                    end,
                    size,
                )
            dirty = True
        if dirty:
            self.time_index.truncate(n)

    def _clamp_entries(self, end: int) -> int:
        """Point entries at or past `end` at `end` (their frames are gone); how many.

        Keeps positions in order, so the frames appended after `end` are found
        by their own entries and the lost offsets read as damaged.
        """
        index = self.index
        i = index.entries
        while i > 0 and index.position(i - 1) >= end:
            index.set_position(i - 1, end)
            i -= 1
        return index.entries - i

    def _walk(
        self, pos: int, rel: int, size: int, stop: int | None
    ) -> tuple[list[int], int, list[int]]:
        """Frames from store position `pos` on, for relative offsets from `rel`.

        Returns (positions of relative offsets rel.., end of the last frame
        found, damaged relative offsets). Past a frame that fails, it goes on
        only when what follows is certainly a later record: the frame its own
        length leads to carries the next offset, or a whole frame of a later
        offset starts right there. Otherwise that is where the readable
        frames end.
        """
        store = self.store
        base = self.base_offset
        positions: list[int] = []
        damaged: list[int] = []
        while pos < size and (stop is None or rel < stop):
            chunk = store.read_at(pos, min(_SCAN_CHUNK, size - pos))
            records, consumed = decode_frames(chunk, base + rel)
            if not consumed and len(chunk) >= FRAME_PREFIX.size:
                # The next frame may simply be longer than the chunk.
                length, _ = FRAME_PREFIX.unpack_from(chunk)
                if len(chunk) < FRAME_PREFIX.size + length <= size - pos:
                    chunk = store.read_at(pos, FRAME_PREFIX.size + length)
                    records, consumed = decode_frames(chunk, base + rel)
            if not consumed:
                skip = self._resync(pos, rel, size)
                if skip is None or (stop is not None and rel + skip[0] > stop):
                    break
                lost, pos_next = skip
                positions += [pos] * lost
                damaged += range(rel, rel + lost)
                rel += lost
                pos = pos_next
                continue
            if stop is not None and rel + len(records) > stop:
                records = records[: stop - rel]
            for rec in records:
                positions.append(pos)
                pos += FRAME_OVERHEAD + len(rec.value)
            rel += len(records)
        return positions, pos, damaged

    def _resync(self, pos: int, rel: int, size: int) -> tuple[int, int] | None:
        """(offsets lost, position of the next good frame) past the bad frame at `pos`.

        Follows the bad frames' own lengths (damaged bodies, intact length
        fields) for up to _RESYNC_HOPS frames to a valid frame of the offset
        that many records later; or finds a whole frame of a later offset right
        at `pos` (where _clamp_entries put lost offsets before an append).
        """
        store = self.store
        at = pos
        for lost in range(1, _RESYNC_HOPS + 1):
            prefix = store.read_at(at, FRAME_PREFIX.size)
            if len(prefix) < FRAME_PREFIX.size:
                break
            length, _ = FRAME_PREFIX.unpack(prefix)
            if length < BODY_HEADER.size:
                break
            at += FRAME_PREFIX.size + length
            if at + FRAME_OVERHEAD > size:
                break
            if self._frame_at(rel + lost, at) is not None:
                return lost, at
        prefix = store.read_at(pos, FRAME_PREFIX.size)
        if len(prefix) == FRAME_PREFIX.size:
            end = pos + FRAME_PREFIX.size + FRAME_PREFIX.unpack(prefix)[0]
            if end <= size:
                records, consumed = decode_frames(store.read_at(pos, end - pos))
                if consumed:
                    lost = records[0].offset - self.base_offset - rel
                    if 0 < lost <= self._max_entries - rel:
                        return lost, pos
        return None

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
        if rel >= max_entries or end > max_store or rel >= index.capacity:
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
        """The record at `offset`, its checksum and offset verified.

        The hot path: one index lookup and one frame. Anything unusual (a frame
        that fails, an entry that looks wrong, an offset outside the segment)
        goes the careful way, `_read_checked`.
        """
        rel = offset - self.base_offset
        index = self.index
        entries = index.entries
        if 0 <= rel < entries:
            entry_rel, pos = index.read(rel)
            store = self.store
            size = store.size
            end = index.position(rel + 1) if rel + 1 < entries else size  # _end_of, inlined
            if entry_rel == rel and STORE_HEADER_SIZE <= pos < end <= size:
                try:  # one read (see Store.read_at); offset and checksum verified
                    return decode_frame(store.read_at(pos, end - pos), offset)
                except FrameError:
                    pass
        return self._read_checked(offset)

    def _read_checked(self, offset: int) -> Record:
        try:
            return self._read(offset)
        except CorruptSegment:
            # The index is a cache: an entry that disagrees with the store may
            # be what is wrong, not the record. Rebuild it once and look again.
            if not self._rebuild_index():
                raise
            return self._read(offset)

    def _read(self, offset: int) -> Record:
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

    def _rebuild_index(self) -> bool:
        """Rebuild the index entries from the store's frames; whether any changed.

        Once per segment while it is open: a record that is still not found is
        damaged, and reads of it fail without scanning the store again.
        """
        if self._rebuilt:
            return False
        self._rebuilt = True
        index = self.index
        positions, _, damaged = self._walk(STORE_HEADER_SIZE, 0, self.store.size, index.entries)
        # Only entries whose frame the scan found are rewritten: past damage it
        # cannot get through, the entries may still be the only way to the records.
        lost = set(damaged)
        changed = 0
        for rel, pos in enumerate(positions):
            if rel not in lost and index.read(rel) != (rel, pos):
                index.set_position(rel, pos)
                changed += 1
        if changed:
            _log.warning(
                "%s disagreed with %s at %d entries: rebuilt from the store%s",
                index.path,
                self.store.path,
                changed,
                f"; damaged records at offsets {_ranges([self.base_offset + r for r in damaged])}"
                if damaged
                else "",
            )
        return changed > 0

    def read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        """Records from `offset`: at most `max_records`, about `max_bytes` (at least one).

        Stops before a damaged record: the records before it are returned, and
        CorruptSegment is raised only when the record at `offset` is damaged.
        """
        try:
            return self._read_range(offset, max_records, max_bytes)
        except CorruptSegment:
            if not self._rebuild_index():
                raise
            return self._read_range(offset, max_records, max_bytes)

    def _read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
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
            return [self._read(offset)]
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
        if not records:
            return [self._read(offset)]  # its own error, or the record if only an entry was off
        # Fewer than k: the next record is damaged (or its entry is); the caller
        # asks for it next and gets its error.
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
        """Every readable record from `offset`; damaged ones are skipped (their
        timestamps are lost with them), so one bad record never stops an append
        (watermark) or a time lookup."""
        while offset < self.next_offset:
            try:
                records = self.read_range(offset, batch, 1 << 20)
            except CorruptSegment:
                offset += 1
                continue
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

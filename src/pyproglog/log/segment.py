"""A segment: one store, its index and its time index, named by base offset.

Writes are whole entries: one `append_batch` (or `append`) is one entry, and
an entry never spans two segments (the log rolls before one that does not
fit; one larger than a segment gets a segment of its own, which grows to hold
it). Recovery (`recovery.py`) cuts a torn trailing entry whole.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from crc32c import crc32c

from pyproglog.log import ranges, recovery
from pyproglog.log.config import LogConfig
from pyproglog.log.errors import SegmentFull
from pyproglog.log.format import (
    BIG_VALUE,
    ENGINE_HEADER,
    FRAME_OVERHEAD,
    FRAME_PREFIX,
    FRAME_PREFIX_SIZE,
    INDEX_ENTRY,
    INDEX_ENTRY_WIDTH,
    STORE_HEADER_SIZE,
    EncodedBatch,
    FrameError,
    Record,
    RecordLike,
    decode_frame,
    encode_batch,
    one_parts,
    pack_one_head,
)
from pyproglog.log.index import Index
from pyproglog.log.ranges import EncodedRange
from pyproglog.log.store import Store
from pyproglog.log.timeindex import TimeIndex

STORE_SUFFIX = ".store"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"

_pack_one_head = pack_one_head
_pack_prefix_into = FRAME_PREFIX.pack_into
_pack_entry_into = INDEX_ENTRY.pack_into


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
        entry_before: tuple[int, int] = (0, 0),
    ) -> None:
        """Open (or create) the segment at `base_offset`.

        `sealed_end` is the base of the next segment when there is one: this
        segment is sealed, holds at most the offsets below it, and recovery
        never cuts or zeroes anything in it (only the active segment can have a
        torn tail). `entry_before` goes into a new store file's header.
        """
        self.base_offset = base_offset
        self.config = config
        # append_one's parts (see _one_refresh); _one_until 0: none made yet.
        self._one_until = 0
        self._one_ts = self._one_vlen = self._one_term = self._one_type = self._one_low = 0
        self._one_pre = self._one_post = b""
        self._max_store_bytes = config.max_store_bytes
        self._time_interval = config.time_index_interval_bytes
        self._max_entries = config.max_index_entries
        # Set once the index has been rebuilt from the store after a read failed.
        self._rebuilt = False
        store_path, index_path, time_path = segment_paths(directory, base_offset)
        self.store = Store(store_path, config.max_store_bytes, entry_before)
        # Store position below which every frame passed its checksum on a served
        # read since this segment was opened: range reads do not sum those again
        # (what is read back from the page cache is what was checked). Frames
        # are checked once per process, not per read; a restart checks anew.
        self.verified_to = STORE_HEADER_SIZE
        try:
            self.index = Index(
                index_path,
                config.max_index_bytes,
                None if sealed_end is None else sealed_end - base_offset,
            )
            try:
                self.time_index = TimeIndex(time_path)
                self._watermark: int | None = None  # max timestamp in the segment; lazy
                self._bytes_since_time_entry = 0
                recovery.recover(self, sealed_end)
            except BaseException:
                if hasattr(self, "time_index"):
                    self.time_index.close()
                self.index.close()
                raise
        except BaseException:
            self.store.close()
            raise
        self.next_offset = base_offset + self.index.entries
        self._load_entry_bounds()

    def _load_entry_bounds(self) -> None:
        """First and last consensus index, and the last term, from the frames."""
        self.first_consensus_index = self.last_consensus_index = self.last_term = 0
        entries = self.index.entries
        if not entries:
            return
        first = self._header_at(0)
        if first is not None:
            self.first_consensus_index = first[3]
        # The last frame may be damaged: the one before it says as much.
        for rel in range(entries - 1, max(-1, entries - 65), -1):
            info = recovery.frame_at(self, rel, self.index.position(rel))
            if info is not None:
                self.last_consensus_index, self.last_term = info.consensus_index, info.term
                return

    def _header_at(self, rel: int) -> tuple[int, int, int, int, int, int, int] | None:
        """The engine header of `rel`'s frame, unverified (a bisect probe); None if absent:
        (offset, entry_pos, entry_more, consensus_index, timestamp_ms, term, type)."""
        pos = self.index.position(rel)
        data = self.store.read_at(pos + FRAME_PREFIX_SIZE, ENGINE_HEADER.size)
        if pos < STORE_HEADER_SIZE or len(data) < ENGINE_HEADER.size:
            return None
        return ENGINE_HEADER.unpack(data)

    @property
    def entry_before(self) -> tuple[int, int]:
        """(consensus index, term) of the last entry before this segment's first record."""
        return self.store.entry_before

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

    def fits(self, count: int, size: int) -> bool:
        """Whether an entry of `count` frames, `size` bytes in all, fits in this segment."""
        return count <= self.index.free and self.store.size + size <= self._max_store_bytes

    def append_batch(
        self,
        records: Sequence[RecordLike],
        now_ms: int,
        consensus_index: int,
        term: int = 0,
        total_bytes: int | None = None,
    ) -> int:
        """Append `records` as one entry; the offset of the first.

        The entry must fit (`fits`), unless the segment is empty: then it grows
        (store and index pre-allocated past their limits) to hold the entry.

        Order is what makes a kill -9 safe: the frames reach the file before the
        index entries that point at them are written, so the index can lag the
        store (recovery re-indexes the tail, and cuts a torn entry whole) but
        never points at bytes not written.
        """
        n = len(records)
        total = total_bytes
        if total is None:
            total = sum(len(r.value) for r in records) + n * FRAME_OVERHEAD  # when not given
        if not self.fits(n, total):
            if not self.is_empty:
                raise SegmentFull(self.base_offset)
            # DiskFull here: nothing written.
            self.store.reserve(self.store.size + total)
            self.index.reserve(n)
        watermark = self.watermark_ms()
        first = self.next_offset
        enc = EncodedBatch()
        pieces = encode_batch(records, first, self.store.size, now_ms, consensus_index, term, enc)
        # Only allocating room can fail (DiskFull), and then before anything is written.
        self.store.append_pieces(pieces, total)
        self.index.write_many(enc.positions)
        self._appended(first + n, consensus_index, term, enc.max_timestamp_ms, total, watermark)
        return first

    def append_one(
        self, value: bytes, term: int, rtype: int, timestamp_ms: int, consensus_index: int
    ) -> bool:
        """`append_batch`'s fast path for an entry of one record (timestamp resolved).

        Same order: the frame is copied into the store's map, then its index
        entry is written. Returns `is_maxed` afterwards (whether the caller
        should roll). SegmentFull when it does not fit: the caller goes the batch way.

        The hot path of `Log.append`: the frame encoding (`format.encode_body`),
        `Store.append_body` and `Index.write` are inlined here, by their rules,
        so that one record costs one Python call below the log.
        """
        index = self.index
        store = self.store
        rel = index.entries
        pos = store._size
        vlen = len(value)
        size = FRAME_OVERHEAD + vlen
        end = pos + size
        max_store = self._max_store_bytes
        if rel >= index.limit or end > max_store:
            raise SegmentFull(self.base_offset)
        offset = self.next_offset
        # The varint parts change rarely (a new millisecond, every 128 offsets,
        # another size): made only when they do. Plain int compares, no key tuple.
        # The refresh also does the bookkeeping that only changes with them (the
        # watermark, the term, the first consensus index).
        if (
            offset >= self._one_until
            or timestamp_ms != self._one_ts
            or vlen != self._one_vlen
            or term != self._one_term
            or rtype != self._one_type
        ):
            self._one_refresh(offset, vlen, term, rtype, timestamp_ms, consensus_index)
        head = _pack_one_head(
            offset, consensus_index, self._one_pre, offset - self._one_low, self._one_post
        )
        if end > store._mapped:
            store.reserve(end)  # DiskFull here: nothing written
        # Durability: once copied into the map the frame is in the page cache (a
        # shared file mapping), so it survives kill -9; the index entry is a cache.
        mm = store._mm
        if vlen < BIG_VALUE:
            body = head + value
            mm[pos + FRAME_PREFIX_SIZE : end] = body
            crc = crc32c(body)
        else:  # no copy of a big value into a frame buffer first
            mm[pos + FRAME_PREFIX_SIZE : pos + FRAME_OVERHEAD] = head
            mm[pos + FRAME_OVERHEAD : end] = value
            crc = crc32c(value, crc32c(head))
        # The prefix last: until it is written the frame is torn (its length is 0).
        _pack_prefix_into(mm, pos, size - FRAME_PREFIX_SIZE, crc)
        store._size = end
        if end >= store.release_at:
            store.release()
        _pack_entry_into(index._mm, rel * INDEX_ENTRY_WIDTH, rel, pos)
        index.entries = rel + 1
        # What _appended does, inlined (the rest is in _one_refresh).
        self.next_offset = offset + 1
        self.last_consensus_index = consensus_index
        since = self._bytes_since_time_entry + size
        self._bytes_since_time_entry = since
        if since >= self._time_interval:
            self._add_time_entry()
        return end >= max_store or rel >= self._max_entries - 1

    def _one_refresh(
        self, offset: int, vlen: int, term: int, rtype: int, ts: int, consensus_index: int
    ) -> None:
        """Make append_one's parts for the record at `offset`, and do for it what only
        changes when they do: a record with the same timestamp and term as the
        last one leaves the watermark and the last term as they are.

        The parts (`format.one_parts`) hold for offsets below _one_until with
        timestamp _one_ts, value size _one_vlen, term _one_term and type
        _one_type; an offset minus _one_low is its varint's first byte.
        _one_until is set to 0 to have them made again: a new segment, after a
        batch (which moves the watermark and the term), after a truncation.
        """
        high = offset >> 7
        self._one_pre, self._one_post = one_parts(vlen, high, term, rtype, ts)
        self._one_until = (high + 1) << 7
        self._one_low = (high << 7) - 0x80  # offset - this == offset & 0x7F | 0x80
        self._one_ts, self._one_vlen, self._one_term, self._one_type = ts, vlen, term, rtype
        if ts > self.watermark_ms():
            self._watermark = ts
        self.last_term = term
        if offset == self.base_offset:
            self.first_consensus_index = consensus_index

    def _appended(
        self, next_offset: int, cidx: int, term: int, max_ts: int, size: int, watermark: int
    ) -> None:
        self._one_until = 0  # see append_one
        if self.next_offset == self.base_offset:
            self.first_consensus_index = cidx
        self.next_offset = next_offset
        self.last_consensus_index = cidx
        self.last_term = term
        if max_ts > watermark:
            self._watermark = max_ts
        else:
            self._watermark = watermark
        self._bytes_since_time_entry += size
        if self._bytes_since_time_entry >= self._time_interval:
            self._add_time_entry()

    # Time-index entries added but not yet written out (class default: none).
    _time_entries_unflushed = 0

    def _add_time_entry(self) -> None:
        """Add a sparse time-index entry for the last record.

        The time index is a cache (a lost entry only lengthens a scan), so it
        is written out every 16 entries rather than with each one: a pwrite
        per entry was a third of the cost of a 4 KiB append.
        """
        self.time_index.load(self.index.entries)
        self.time_index.add(self.watermark_ms(), self.next_offset - 1 - self.base_offset)
        self._bytes_since_time_entry = 0
        self._time_entries_unflushed += 1
        if self._time_entries_unflushed >= 16:
            self.time_index.flush()
            self._time_entries_unflushed = 0

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

    # -- consensus index --------------------------------------------------------

    def consensus_index_at(self, rel: int) -> int:
        """The consensus index stored with `rel`'s record, its frame verified
        (CorruptSegment if damaged): the answer of a lookup is never a probe's guess."""
        self.read(self.base_offset + rel)
        header = self._header_at(rel)
        assert header is not None  # the read above found the frame
        return header[3]

    def first_rel_after(self, consensus_index: int) -> int:
        """The first relative offset whose frame carries a consensus index above
        `consensus_index` (entries if none): a bisect, consensus indexes being monotone."""
        lo, hi = 0, self.index.entries
        while lo < hi:
            mid = (lo + hi) // 2
            header = self._header_at(mid)
            if header is not None and header[3] <= consensus_index:
                lo = mid + 1
            else:
                hi = mid
        return lo

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
        return ranges.read_checked(self, offset)

    def _read(self, offset: int) -> Record:
        return ranges.read_one(self, offset)

    def _rebuild_index(self) -> bool:
        """Rebuild the index from the store (see recovery.rebuild_index); whether it changed.

        Once per segment while it is open: a record that is still not found is
        damaged, and reads of it fail without scanning the store again.
        """
        if self._rebuilt:
            return False
        self._rebuilt = True
        return recovery.rebuild_index(self)

    def read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        """Records from `offset`: at most `max_records`, about `max_bytes` (at least one).

        Stops before a damaged record: the records before it are returned, and
        CorruptSegment is raised only when the record at `offset` is damaged.
        """
        return ranges.read_range(self, offset, max_records, max_bytes)

    def read_encoded(self, offset: int, max_records: int, max_bytes: int) -> EncodedRange:
        """Records from `offset` as served (see EncodedRange), by `read_range`'s rules."""
        return ranges.read_encoded(self, offset, max_records, max_bytes)

    def watermark_ms(self) -> int:
        """Largest timestamp in the segment (lazily computed; -2**63 when empty)."""
        if self._watermark is None:
            self._watermark = ranges.scan_watermark(self)
        return self._watermark

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        return ranges.offset_for_timestamp(self, timestamp_ms)

    # -- shrinking and lifecycle ---------------------------------------------

    def truncate_after(self, offset: int) -> None:
        """Drop every record after `offset` (offset = base - 1 empties the segment)."""
        keep = offset + 1 - self.base_offset
        if keep >= self.index.entries:
            return
        if keep:
            self._end_entry_at(keep - 1)
        end = self.index.position(keep)
        self.verified_to = min(self.verified_to, end)
        self.store.truncate(end)
        self.store.sync()  # a dropped suffix must not come back after a power loss
        self.index.truncate(keep)
        self.time_index.truncate(keep)
        self.next_offset = self.base_offset + keep
        self._one_until = 0  # offsets go back: append_one's parts are made again
        self._watermark = None
        self._load_entry_bounds()

    def _end_entry_at(self, rel: int) -> None:
        """Make `rel`'s record the last of its entry (a suffix drop inside an entry),
        so that recovery does not take the entry for torn and cut it whole.

        Written before the suffix is dropped: a crash in between leaves the
        suffix as an entry of its own, never a torn one."""
        pos = self.index.position(rel)
        info = recovery.frame_at(self, rel, pos)
        if info is None or not info.entry_more:
            return
        frame = bytearray(self.store.read_at(pos, info.end - pos))
        header = list(ENGINE_HEADER.unpack_from(frame, FRAME_PREFIX_SIZE))
        header[2] = 0  # entry_more
        ENGINE_HEADER.pack_into(frame, FRAME_PREFIX_SIZE, *header)
        FRAME_PREFIX.pack_into(frame, 0, len(frame) - FRAME_PREFIX_SIZE, crc32c(frame[8:]))
        self.store.patch(pos, bytes(frame))

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

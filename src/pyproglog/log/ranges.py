"""Range reads of one segment: as records (`read_range`) or as the stored bytes (`read_encoded`).

Both take the intact prefix of a range and raise only when its first record is
damaged; a failure first rebuilds the segment's index (a cache) once.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyproglog.log.errors import CorruptSegment, OffsetOutOfRange
from pyproglog.log.format import (
    ENCODED_AT,
    FRAME_OVERHEAD,
    FRAME_PREFIX,
    INDEX_ENTRY_WIDTH,
    STORE_HEADER_SIZE,
    FrameError,
    Record,
    decode_frame,
    decode_frames,
    served_parts,
)

if TYPE_CHECKING:
    from pyproglog.log.segment import Segment

_READ_CHUNK = 1024 * 1024  # range reads go in reads of about this size (see _read_chunked)


@dataclass(frozen=True, slots=True)
class EncodedRange:
    """Records as served: `data` is their `0x0a len Record` fields back to back
    (a `FetchResponse` holding them, to which other fields can be appended)."""

    data: bytes
    first: int
    count: int
    next_offset: int


def read_range(seg: Segment, offset: int, max_records: int, max_bytes: int) -> list[Record]:
    """Records from `offset`: at most `max_records`, about `max_bytes` (at least one).

    Stops before a damaged record: the records before it are returned, and
    CorruptSegment is raised only when the record at `offset` is damaged.
    """
    try:
        return _read_range(seg, offset, max_records, max_bytes)
    except CorruptSegment:
        if not seg._rebuild_index():
            raise
        return _read_range(seg, offset, max_records, max_bytes)


def _plan(
    seg: Segment, offset: int, max_records: int, max_bytes: int, less: int = 0
) -> tuple[list[int], int]:
    """Store positions of the frames from `offset` and the end of the last, and
    how many of them (k >= 1) a range read takes: at most `max_records`,
    within `max_bytes` past the first."""
    rel = offset - seg.base_offset
    if not 0 <= rel < seg.index.entries:
        raise OffsetOutOfRange(offset, seg.base_offset, seg.next_offset)
    if max_records < 1:
        raise ValueError(f"max_records must be at least 1, got {max_records}")
    count = min(max_records, seg.index.entries - rel)
    positions = seg.index.positions(rel, rel + count)
    positions.append(seg._end_of(rel + count - 1))
    start = positions[0]
    if not STORE_HEADER_SIZE <= start < seg.store.size:
        raise CorruptSegment(
            seg.index.path, rel * INDEX_ENTRY_WIDTH, f"bad index entry for offset {offset}"
        )
    # Largest k with the first k frames within max_bytes, never below one.
    lo, hi = 1, count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if positions[mid] - start - mid * less <= max_bytes:
            lo = mid
        else:
            hi = mid - 1
    return positions, lo


def _read_range(seg: Segment, offset: int, max_records: int, max_bytes: int) -> list[Record]:
    positions, k = _plan(seg, offset, max_records, max_bytes)
    rel = offset - seg.base_offset
    start = positions[0]
    if not start < positions[k] <= seg.store.size:
        # A damaged index entry; never read a negative or absurd length.
        return [seg._read(offset)]
    if positions[k] - start <= _READ_CHUNK:
        records, _ = decode_frames(seg.store.read_at(start, positions[k] - start), offset)
    else:
        records = _read_chunked(seg, offset, positions, k)
    if len(records) > k:
        # Frames run past where the index says the range ends: entry rel + k is wrong.
        raise CorruptSegment(
            seg.index.path,
            (rel + k) * INDEX_ENTRY_WIDTH,
            f"bad index entry for offset {offset + k}",
        )
    if not records:
        return [seg._read(offset)]  # its own error, or the record if only an entry was off
    # Fewer than k: the next record is damaged (or its entry is); the caller
    # asks for it next and gets its error.
    return records


def _read_chunked(seg: Segment, offset: int, positions: list[int], k: int) -> list[Record]:
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
        got, _ = decode_frames(seg.store.read_at(lo, positions[j] - lo), offset + i)
        records += got
        if len(got) != j - i:
            break
        i = j
    return records


def read_encoded(seg: Segment, offset: int, max_records: int, max_bytes: int) -> EncodedRange:
    """Records from `offset` as served (see EncodedRange), by `read_range`'s rules:
    the intact prefix; CorruptSegment only when the record at `offset` is damaged."""
    try:
        return _read_encoded(seg, offset, max_records, max_bytes)
    except CorruptSegment:
        if not seg._rebuild_index():
            raise
        return _read_encoded(seg, offset, max_records, max_bytes)


def _read_encoded(seg: Segment, offset: int, max_records: int, max_bytes: int) -> EncodedRange:
    # max_bytes counts the served bytes: each frame's first ENCODED_AT bytes are not.
    positions, k = _plan(seg, offset, max_records, max_bytes, ENCODED_AT)
    view_at = seg.store.view_at
    parts: list[memoryview] = []
    count = i = 0
    while i < k:
        lo = positions[i]
        j = max(i + 1, bisect.bisect_right(positions, lo + _READ_CHUNK, i + 1, k + 1) - 1)
        if not lo < positions[j] <= seg.store.size:
            break  # a damaged index entry
        chunk = view_at(lo, positions[j] - lo)
        got = served_parts(chunk, positions[i : j + 1], lo, offset + i, parts, seg.verified_to)
        if got and lo <= seg.verified_to:
            # Contiguous with what was checked before: remember how far it goes.
            seg.verified_to = max(seg.verified_to, positions[i + got])
        count += got
        if got != j - i:
            break
        i = j
    if not count:
        seg._read(offset)  # raises for a damaged record
        raise CorruptSegment(
            seg.index.path,
            (offset - seg.base_offset) * INDEX_ENTRY_WIDTH,
            f"bad index entry for offset {offset}",
        )
    # The one copy: views of the stored bytes are released when this returns.
    return EncodedRange(b"".join(parts), offset, count, offset + count)


def read_checked(seg: Segment, offset: int) -> Record:
    try:
        return read_one(seg, offset)
    except CorruptSegment:
        # The index is a cache: an entry that disagrees with the store may
        # be what is wrong, not the record. Rebuild it once and look again.
        if not seg._rebuild_index():
            raise
        return read_one(seg, offset)


def read_one(seg: Segment, offset: int) -> Record:
    rel = offset - seg.base_offset
    index = seg.index
    entries = index.entries
    if not 0 <= rel < entries:
        raise OffsetOutOfRange(offset, seg.base_offset, seg.next_offset)
    entry_rel, pos = index.read(rel)
    store = seg.store
    size = store.size
    if entry_rel != rel or not STORE_HEADER_SIZE <= pos < size:
        raise CorruptSegment(
            seg.index.path, rel * INDEX_ENTRY_WIDTH, f"bad index entry for offset {offset}"
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
    raise CorruptSegment(seg.store.path, pos, f"no valid frame for offset {offset}")


def scan_watermark(seg: Segment) -> int:
    """The largest timestamp in `seg`: the time index's last entry, then a scan
    of the records after it (which also restarts the bytes-since-entry count)."""
    seg.time_index.load(seg.index.entries)
    last = seg.time_index.last()
    wm, rel = (last[0], last[1] + 1) if last else (-(2**63), 0)
    for rec in _scan(seg, seg.base_offset + rel):
        wm = max(wm, rec.timestamp_ms)
    seg._bytes_since_time_entry = seg.store.size - (
        seg.index.position(rel) if rel < seg.index.entries else seg.store.size
    )
    return wm


def _scan(seg: Segment, offset: int, batch: int = 1024) -> Iterator[Record]:
    """Every readable record from `offset`; damaged ones are skipped (their
    timestamps are lost with them), so one bad record never stops an append
    (watermark) or a time lookup."""
    while offset < seg.next_offset:
        try:
            records = seg.read_range(offset, batch, 1 << 20)
        except CorruptSegment:
            offset += 1
            continue
        yield from records
        offset += len(records)


def offset_for_timestamp(seg: Segment, timestamp_ms: int) -> int | None:
    seg.time_index.load(seg.index.entries)
    start = seg.base_offset + seg.time_index.scan_start(timestamp_ms)
    for rec in _scan(seg, start, 256):
        if rec.timestamp_ms >= timestamp_ms:
            return rec.offset
    return None


def read_range_across(
    segment_for: Callable[[int], Segment],
    next_offset: int,
    offset: int,
    max_records: int,
    max_bytes: int,
) -> list[Record]:
    """`Log.read_range`: records from `offset` (below `next_offset`) across segments.

    A lost or damaged record after the first ends the range: the records
    before it are returned.
    """
    out = segment_for(offset).read_range(offset, max_records, max_bytes)
    size = sum(len(r.value) + FRAME_OVERHEAD for r in out)
    while len(out) < max_records and size < max_bytes:
        nxt = out[-1].offset + 1
        if nxt >= next_offset:
            break
        try:
            more = segment_for(nxt).read_range(nxt, max_records - len(out), max_bytes - size)
        except CorruptSegment:
            break  # lost records: what came before them is returned
        more_size = sum(len(r.value) + FRAME_OVERHEAD for r in more)
        if size + more_size > max_bytes:
            break
        out += more
        size += more_size
    return out


def read_encoded_across(
    segment_for: Callable[[int], Segment],
    end: int,
    offset: int,
    max_records: int,
    max_bytes: int,
) -> EncodedRange:
    """`Log.read_encoded`: as `read_range_across`, the served bytes bounded by
    `max_bytes` (past the first record) and the records by `end`."""
    got = segment_for(offset).read_encoded(offset, max_records, max_bytes)
    parts, count, size = [got.data], got.count, len(got.data)
    while count < max_records and size < max_bytes:
        nxt = offset + count
        if nxt >= end:
            break
        try:
            more = segment_for(nxt).read_encoded(nxt, max_records - count, max_bytes - size)
        except CorruptSegment:
            break  # lost records: what came before them is returned
        if size + len(more.data) > max_bytes:
            break
        parts.append(more.data)
        count += more.count
        size += len(more.data)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return EncodedRange(data, offset, count, offset + count)

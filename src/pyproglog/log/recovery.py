"""Recovery of one segment on open: make index and store agree, cut a torn tail.

The rule (docs/storage.md, "Recovery on open"): damage costs only the damaged
records; only the active segment's torn tail is cut, and a torn trailing
*entry* (an `append_batch` whose frames did not all reach the file) is cut
whole, never kept as a prefix. A sealed segment is never cut or zeroed.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from pyproglog.log.format import (
    FRAME_OVERHEAD,
    FRAME_PREFIX,
    STORE_HEADER_SIZE,
    FrameInfo,
    check_frame,
    decode_frames,
)

if TYPE_CHECKING:
    from pyproglog.log.segment import Segment

_log = logging.getLogger("pyproglog.log")

_SCAN_CHUNK = 4 * 1024 * 1024
# How many damaged frames in a row recovery steps over by their length fields.
_RESYNC_HOPS = 64


def ranges(offsets: list[int], most: int = 8) -> str:
    """`[1, 2, 3, 7]` as "1..3, 7" (the first `most` runs), for log lines."""
    runs: list[tuple[int, int]] = []
    for o in offsets:
        if runs and runs[-1][1] == o - 1:
            runs[-1] = (runs[-1][0], o)
        else:
            runs.append((o, o))
    text = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in runs[:most])
    return text + (f" and {len(runs) - most} more runs" if len(runs) > most else "")


def frame_at(seg: Segment, rel: int, pos: int) -> FrameInfo | None:
    """The whole valid frame for relative offset `rel` at store position `pos`, or None."""
    store = seg.store
    size = store.size
    if pos < STORE_HEADER_SIZE or pos + FRAME_OVERHEAD > size:
        return None
    length, _ = FRAME_PREFIX.unpack(store.read_at(pos, FRAME_PREFIX.size))
    end = min(pos + FRAME_PREFIX.size + length, size)
    info = check_frame(store.read_at(pos, end - pos), 0, end - pos)
    if info is None or info.offset != seg.base_offset + rel:
        return None
    return dataclasses.replace(info, end=pos + info.end)


def recover(seg: Segment, sealed_end: int | None) -> None:
    """Make index and store agree; cut a torn tail (a torn entry whole) of the active segment.

    O(1) for a cleanly closed segment: only the last indexed frame is read.
    A clean close means every indexed frame was written whole, so a frame
    that fails now is damage: its offset stays taken and reads of it raise
    CorruptSegment. After a crash, the unindexed tail of the store is
    scanned and indexed (past a damaged frame when the next frame is
    whole), and what cannot be read at its end is a torn tail: cut in the
    active segment, left untouched in a sealed one.
    """
    index, store = seg.index, seg.store
    base = seg.base_offset
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
        found = frame_at(seg, n - 1, index.position(n - 1))
        if found is not None:
            end = found.end
        else:
            # Damaged, not torn: keep the offsets, and append after all
            # the bytes there are (a clean close cut the file to its frames).
            end = size
            first = n - _clamp_entries(seg, end)
            if first and frame_at(seg, first - 1, index.position(first - 1)) is None:
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
            found = frame_at(seg, n - 1, index.position(n - 1))
            if found is not None:
                end = found.end
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
    trusted = n if index.closed_cleanly else 0
    dirty = n != listed or not index.closed_cleanly
    if end < size:
        # Index whatever whole frames follow (those the index had not recorded yet).
        positions, end, damaged = walk(seg, end, n, size, stop)
        if positions:
            keep = min(len(positions), index.free)
            index.write_many(positions[:keep])
            n += keep
            dirty = True
            if keep < len(positions):
                end = positions[keep]
        if damaged:
            _log.warning(
                "%s: damaged records at offsets %s kept as lost; reads of them fail (DATA_LOSS)",
                store.path,
                ranges([base + rel for rel in damaged if rel < n]),
            )
    if sealed_end is None and n > trusted:
        # The active segment's last entry must be whole: a kill (or a power
        # loss) during one append_batch leaves a prefix of its frames, each
        # valid, which is still a torn entry. Cut it whole.
        last = frame_at(seg, n - 1, index.position(n - 1))
        if last is not None and last.entry_more:
            start = max(n - 1 - last.entry_pos, trusted)
            _log.warning(
                "%s: the last entry (offsets %d..%d) is missing %d record(s): cut whole",
                store.path,
                base + start,
                base + n - 1,
                last.entry_more,
            )
            end = index.position(start)
            index.truncate(start)
            n = start
            dirty = True
    if end < store.size:
        size = store.size
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
        seg.time_index.truncate(n)


def _clamp_entries(seg: Segment, end: int) -> int:
    """Point entries at or past `end` at `end` (their frames are gone); how many.

    Keeps positions in order, so the frames appended after `end` are found
    by their own entries and the lost offsets read as damaged.
    """
    index = seg.index
    i = index.entries
    while i > 0 and index.position(i - 1) >= end:
        index.set_position(i - 1, end)
        i -= 1
    return index.entries - i


def walk(
    seg: Segment, pos: int, rel: int, size: int, stop: int | None
) -> tuple[list[int], int, list[int]]:
    """Frames from store position `pos` on, for relative offsets from `rel`.

    Returns (positions of relative offsets rel.., end of the last frame
    found, damaged relative offsets). Past a frame that fails, it goes on
    only when what follows is certainly a later record: the frame its own
    length leads to carries the next offset, or a whole frame of a later
    offset starts right there. Otherwise that is where the readable
    frames end.
    """
    store = seg.store
    base = seg.base_offset
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
            skip = _resync(seg, pos, rel, size)
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


def _resync(seg: Segment, pos: int, rel: int, size: int) -> tuple[int, int] | None:
    """(offsets lost, position of the next good frame) past the bad frame at `pos`.

    Follows the bad frames' own lengths (damaged bodies, intact length
    fields) for up to _RESYNC_HOPS frames to a valid frame of the offset
    that many records later; or finds a whole frame of a later offset right
    at `pos` (where _clamp_entries put lost offsets before an append).
    """
    store = seg.store
    at = pos
    for lost in range(1, _RESYNC_HOPS + 1):
        prefix = store.read_at(at, FRAME_PREFIX.size)
        if len(prefix) < FRAME_PREFIX.size:
            break
        length, _ = FRAME_PREFIX.unpack(prefix)
        if length < FRAME_OVERHEAD - FRAME_PREFIX.size:
            break
        at += FRAME_PREFIX.size + length
        if at + FRAME_OVERHEAD > size:
            break
        if frame_at(seg, rel + lost, at) is not None:
            return lost, at
    prefix = store.read_at(pos, FRAME_PREFIX.size)
    if len(prefix) == FRAME_PREFIX.size:
        end = pos + FRAME_PREFIX.size + FRAME_PREFIX.unpack(prefix)[0]
        if end <= size:
            records, consumed = decode_frames(store.read_at(pos, end - pos))
            if consumed:
                lost = records[0].offset - seg.base_offset - rel
                if 0 < lost <= seg.index.max_entries - rel:
                    return lost, pos
    return None


def rebuild_index(seg: Segment) -> bool:
    """Rebuild the index entries from the store's frames; whether any changed.

    Only entries whose frame the scan found are rewritten: past damage it
    cannot get through, the entries may still be the only way to the records.
    """
    index = seg.index
    positions, _, damaged = walk(seg, STORE_HEADER_SIZE, 0, seg.store.size, index.entries)
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
            seg.store.path,
            changed,
            f"; damaged records at offsets {ranges([seg.base_offset + r for r in damaged])}"
            if damaged
            else "",
        )
    return changed > 0

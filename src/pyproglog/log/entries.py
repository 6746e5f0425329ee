"""Finding entries by consensus index: per-segment first/last index, then a bisect.

Consensus indexes are monotone along the log (one `append_batch` = one entry =
one index), so no lookup scans: the segments are checked by their first and
last index, and within one the index file is bisected by offset, reading each
probed frame's consensus index from its engine header.
"""

from __future__ import annotations

from pyproglog.log.segment import Segment


def first_offset_of(segments: list[Segment], consensus_index: int) -> int | None:
    """First offset whose record carries `consensus_index`, or None."""
    for seg in segments:
        if seg.is_empty or seg.last_consensus_index < consensus_index:
            continue
        if seg.first_consensus_index > consensus_index:
            return None
        rel = seg.first_rel_after(consensus_index - 1)
        if rel < seg.index.entries and seg.consensus_index_at(rel) == consensus_index:
            return seg.base_offset + rel
        return None
    return None


def first_offset_after(segments: list[Segment], consensus_index: int) -> int:
    """First offset whose record carries a consensus index above `consensus_index`
    (the log's next offset if none): where "everything after entry N" begins."""
    for seg in reversed(segments):
        if seg.is_empty:
            continue
        if seg.first_consensus_index <= consensus_index:
            return seg.base_offset + seg.first_rel_after(consensus_index)
    return segments[0].base_offset


def entry_span(segments: list[Segment], consensus_index: int) -> tuple[int, int, int, int] | None:
    """(first offset, end offset, term, stored bytes) of the entry `consensus_index`,
    or None. An entry never spans two segments, so both ends are bisects in one."""
    for seg in segments:
        if seg.is_empty or seg.last_consensus_index < consensus_index:
            continue
        if seg.first_consensus_index > consensus_index:
            return None
        rel = seg.first_rel_after(consensus_index - 1)
        entries = seg.index.entries
        if rel >= entries or seg.consensus_index_at(rel) != consensus_index:
            return None
        end = seg.first_rel_after(consensus_index)
        term = seg.read(seg.base_offset + rel).term
        stop = seg.index.position(end) if end < entries else seg.store.size
        size = stop - seg.index.position(rel)
        return seg.base_offset + rel, seg.base_offset + end, term, size
    return None

"""Segment: one store + index + time index, named by its base offset."""

from __future__ import annotations

import os

import pytest

from pyproglog.log import Log, LogConfig, OffsetOutOfRange, Record
from pyproglog.log.errors import SegmentFull
from pyproglog.log.format import FRAME_OVERHEAD, INDEX_ENTRY_WIDTH, STORE_HEADER_SIZE
from pyproglog.log.segment import Segment, segment_paths

BASE = 16
NOW = 1_700_000_000_000
VALUES = [b"hello world", b"second", b"third record"]
CONFIG = LogConfig(
    max_store_bytes=1024,
    max_index_bytes=INDEX_ENTRY_WIDTH * len(VALUES),
    max_record_bytes=512,
)


def _append(seg: Segment, value: bytes, cidx: int = 0) -> int:
    return seg.append_batch([Record(value)], NOW, cidx)


def test_appends_get_consecutive_offsets_from_the_base(tmp_path):
    seg = Segment(str(tmp_path), BASE, CONFIG)
    assert seg.is_empty
    assert seg.next_offset == BASE
    for i, value in enumerate(VALUES):
        assert _append(seg, value) == BASE + i
        rec = seg.read(BASE + i)
        assert rec.offset == BASE + i
        assert rec.value == value
        assert rec.timestamp_ms == NOW
    assert seg.next_offset == BASE + len(VALUES)
    with pytest.raises(OffsetOutOfRange):
        seg.read(BASE + len(VALUES))
    with pytest.raises(OffsetOutOfRange):
        seg.read(BASE - 1)
    seg.close()


def test_files_are_named_by_zero_padded_base_offset(tmp_path):
    seg = Segment(str(tmp_path), BASE, CONFIG)
    seg.close()
    assert sorted(os.listdir(tmp_path)) == [
        "00000000000000000016.index",
        "00000000000000000016.store",
        "00000000000000000016.timeindex",
    ]


def test_full_index_makes_the_segment_maxed_and_it_refuses_cleanly(tmp_path):
    seg = Segment(str(tmp_path), BASE, CONFIG)
    for value in VALUES:
        assert not seg.is_maxed
        _append(seg, value)
    assert seg.is_maxed
    assert not seg.fits(1, FRAME_OVERHEAD + 1)
    size = seg.size
    # The segment refuses the next append without writing anything.
    with pytest.raises(SegmentFull):
        _append(seg, b"one too many")
    assert seg.size == size
    assert seg.next_offset == BASE + len(VALUES)
    seg.close()
    store_path, _, _ = segment_paths(str(tmp_path), BASE)
    assert os.path.getsize(store_path) == size

    # Reopening a maxed segment reports maxed, with every record intact.
    seg = Segment(str(tmp_path), BASE, CONFIG)
    assert seg.is_maxed
    assert seg.next_offset == BASE + len(VALUES)
    assert [seg.read(BASE + i).value for i in range(len(VALUES))] == VALUES

    # Removing it and reopening gives an empty segment.
    seg.remove()
    assert os.listdir(tmp_path) == []
    seg = Segment(str(tmp_path), BASE, CONFIG)
    assert seg.is_empty
    assert not seg.is_maxed
    assert seg.next_offset == BASE
    with pytest.raises(OffsetOutOfRange):
        seg.read(BASE)
    seg.close()


def test_full_store_makes_the_segment_maxed(tmp_path):
    value = b"v" * 100
    frame = FRAME_OVERHEAD + len(value)
    config = LogConfig(max_store_bytes=STORE_HEADER_SIZE + 3 * frame, max_record_bytes=100)
    seg = Segment(str(tmp_path), 0, config)
    assert seg.fits(3, 3 * frame)
    assert not seg.fits(4, 4 * frame)
    for _ in range(3):
        assert not seg.is_maxed
        seg.append_batch([Record(value)], NOW, 0)
    assert seg.is_maxed
    assert not seg.fits(1, frame)
    assert not seg.fits(1, FRAME_OVERHEAD)
    seg.close()
    seg = Segment(str(tmp_path), 0, config)
    assert seg.is_maxed
    seg.close()


def test_fits_counts_bytes_and_entries(tmp_path):
    config = LogConfig(
        max_store_bytes=STORE_HEADER_SIZE + 300 + FRAME_OVERHEAD,
        max_index_bytes=INDEX_ENTRY_WIDTH * 3,
        max_record_bytes=200,
    )
    seg = Segment(str(tmp_path), 0, config)
    assert seg.fits(3, 300)
    assert not seg.fits(4, 300)  # the index holds three
    assert not seg.fits(1, 301 + FRAME_OVERHEAD)
    seg.close()


def test_log_rolls_when_the_index_is_full(tmp_path):
    log = Log(tmp_path, CONFIG)
    for i, value in enumerate(VALUES):
        assert log.append(value) == i
    # The full segment was sealed at once; the next record opens a new segment.
    assert log.info().segment_count == 2
    assert log.append(b"next") == len(VALUES)
    assert log.info().segment_count == 2
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".store")) == [
        "00000000000000000000.store",
        "00000000000000000003.store",
    ]
    assert log.read(len(VALUES)).value == b"next"
    assert [log.read(i).value for i in range(len(VALUES))] == VALUES
    log.close()


def test_consensus_index_and_truncate_after(tmp_path):
    seg = Segment(str(tmp_path), BASE, CONFIG)
    _append(seg, b"a", 5)
    _append(seg, b"b", 6)
    _append(seg, b"c", 7)
    assert seg.last_consensus_index == 7
    seg.truncate_after(BASE + 1)
    assert seg.next_offset == BASE + 2
    assert seg.last_consensus_index == 6
    with pytest.raises(OffsetOutOfRange):
        seg.read(BASE + 2)
    assert _append(seg, b"c2", 8) == BASE + 2
    assert seg.read(BASE + 2).value == b"c2"
    seg.close()
    seg = Segment(str(tmp_path), BASE, CONFIG)
    assert seg.last_consensus_index == 8
    seg.truncate_after(BASE - 1)
    assert seg.is_empty
    assert seg.last_consensus_index == 0
    seg.close()

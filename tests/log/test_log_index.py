"""Index: fixed-width entries in a pre-allocated memory map."""

from __future__ import annotations

import os
import shutil

import pytest

from pyproglog.log import OffsetOutOfRange
from pyproglog.log.format import INDEX_ENTRY_WIDTH, STORE_HEADER_SIZE
from pyproglog.log.index import Index

MAX_BYTES = INDEX_ENTRY_WIDTH * 64
POSITIONS = [STORE_HEADER_SIZE, 100, 1000, 123456789012]


def test_last_entry_of_empty_index_is_an_error(tmp_path):
    idx = Index(str(tmp_path / "i.index"), MAX_BYTES)
    assert idx.entries == 0
    with pytest.raises(OffsetOutOfRange):
        idx.read(-1)
    with pytest.raises(OffsetOutOfRange):
        idx.read(0)
    idx.close()


def test_entries_read_back_and_past_the_end_is_an_error(tmp_path):
    idx = Index(str(tmp_path / "i.index"), MAX_BYTES)
    for rel, pos in enumerate(POSITIONS):
        idx.write(pos)
        assert idx.read(rel) == (rel, pos)
        assert idx.read(-1) == (rel, pos)
    assert idx.entries == len(POSITIONS)
    with pytest.raises(OffsetOutOfRange):
        idx.read(len(POSITIONS))
    with pytest.raises(OffsetOutOfRange):
        idx.read(-len(POSITIONS) - 1)
    assert idx.positions(1, 3) == POSITIONS[1:3]
    idx.close()


def test_last_entry_survives_close_and_reopen(tmp_path):
    path = str(tmp_path / "i.index")
    idx = Index(path, MAX_BYTES)
    # Pre-allocated to its full size while open ...
    assert os.path.getsize(path) == MAX_BYTES
    idx.write_many(POSITIONS)
    last = idx.read(-1)
    idx.close()
    # ... and cut to its entries on a clean close.
    assert os.path.getsize(path) == len(POSITIONS) * INDEX_ENTRY_WIDTH

    idx = Index(path, MAX_BYTES)
    assert idx.closed_cleanly
    assert idx.entries == len(POSITIONS)
    assert idx.read(-1) == last
    for rel, pos in enumerate(POSITIONS):
        assert idx.read(rel) == (rel, pos)
    idx.close()


def _crash_copy(idx: Index, dest: str) -> str:
    """The file as a crash would leave it: copied while the index is still open."""
    shutil.copyfile(idx.path, dest)
    return dest


def test_index_left_at_full_size_is_probed_not_read_as_entries(tmp_path):
    live = Index(str(tmp_path / "live.index"), MAX_BYTES)
    empty = _crash_copy(live, str(tmp_path / "empty.index"))
    live.write_many(POSITIONS)
    crashed = _crash_copy(live, str(tmp_path / "crashed.index"))
    live.close()
    # The crash left both files at their pre-allocated size, zero-filled after the entries.
    assert os.path.getsize(crashed) == os.path.getsize(empty) == MAX_BYTES

    idx = Index(crashed, MAX_BYTES)
    assert not idx.closed_cleanly
    assert idx.entries == len(POSITIONS)
    assert idx.read(-1) == (len(POSITIONS) - 1, POSITIONS[-1])
    idx.close()

    idx = Index(empty, MAX_BYTES)
    assert not idx.closed_cleanly
    assert idx.entries == 0
    idx.close()


def test_full_index(tmp_path):
    idx = Index(str(tmp_path / "i.index"), INDEX_ENTRY_WIDTH * 3)
    assert idx.free == 3
    idx.write_many([10, 20, 30])
    assert idx.is_full
    assert idx.free == 0
    with pytest.raises(ValueError):
        idx.write(40)
    assert idx.entries == 3
    idx.close()


def test_truncate_zeroes_dropped_entries(tmp_path):
    path = str(tmp_path / "i.index")
    idx = Index(path, MAX_BYTES)
    idx.write_many([100, 200, 300, 400, 500])
    idx.truncate(2)
    assert idx.entries == 2
    with pytest.raises(OffsetOutOfRange):
        idx.read(2)
    # A crash now (no close) must not bring the dropped entries back.
    again = Index(_crash_copy(idx, str(tmp_path / "crashed.index")), MAX_BYTES)
    assert again.entries == 2
    again.close()
    idx.write(60)
    assert idx.read(2) == (2, 60)
    idx.close()

"""Damaged or foreign files never cost intact data (issue 8).

Each test damages real files of a closed log the way a disk, a crash or an
operator's slip would, reopens it and checks that every intact record is still
served, that lost ones answer CorruptSegment naming the offset, that no offset
is handed out twice, and that files the log did not write are left alone.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import pytest

from pyproglog.log import CorruptSegment, DiskFull, Log, LogConfig, OffsetOutOfRange
from pyproglog.log.format import FRAME_OVERHEAD, INDEX_ENTRY_WIDTH, STORE_HEADER_SIZE
from tests.log.test_log_corruption import flip, frames, index_path, store_path, value

# Four records per segment; twelve records make segments 0, 4, 8 and an empty active 12.
SMALL = LogConfig(
    max_index_bytes=INDEX_ENTRY_WIDTH * 4, max_store_bytes=1 << 20, max_record_bytes=4096
)


def make_log(directory: Path, n: int = 12, cfg: LogConfig = SMALL) -> None:
    with Log(directory, cfg) as log:
        for i in range(n):
            assert log.append(value(i), timestamp_ms=1000 + i) == i


def assert_readable_except(log: Log, lost: set[int], n: int) -> None:
    assert log.next_offset == n
    for off in range(n):
        if off in lost:
            with pytest.raises(CorruptSegment, match=rf"offset {off}\b|offsets \d+\.\.\d+"):
                log.read(off)
        else:
            assert log.read(off).value == value(off)


# -- item 1: a sealed segment's damage stays in that segment ----------------------------


def test_missing_middle_store_is_a_gap_not_a_cut(tmp_path: Path, caplog) -> None:
    make_log(tmp_path)
    os.remove(store_path(tmp_path, 4))
    for reopen in range(2):
        with Log(tmp_path, SMALL) as log:
            # Offsets 4..7 are lost and say so; 8.. are all still there.
            assert_readable_except(log, {4, 5, 6, 7}, 12 + reopen)
            with pytest.raises(CorruptSegment, match=r"offsets 4\.\.7 are lost: .*store.* missing"):
                log.read(5)
            assert log.append(value(12 + reopen)) == 12 + reopen  # never 4 again
    assert "offsets 4..7 are lost" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records if "4..7" in r.message)
    for base in (0, 8, 12):
        assert store_path(tmp_path, base).exists()


def test_range_reads_stop_at_the_gap_and_go_on_after_it(tmp_path: Path) -> None:
    make_log(tmp_path)
    os.remove(store_path(tmp_path, 4))
    with Log(tmp_path, SMALL) as log:
        assert [r.offset for r in log.read_range(0)] == [0, 1, 2, 3]
        with pytest.raises(CorruptSegment):
            log.read_range(4)
        assert [r.offset for r in log.read_range(8)] == [8, 9, 10, 11]
        assert log.offset_for_timestamp(1005) == 8


@pytest.mark.parametrize("record", [1, 3])
def test_damaged_record_in_a_sealed_segment_with_a_lost_index(tmp_path: Path, record) -> None:
    """No index to say where frames are: the store is scanned, past the damaged one."""
    make_log(tmp_path)
    pos, _ = frames(store_path(tmp_path, 4))[record]
    flip(store_path(tmp_path, 4), pos + FRAME_OVERHEAD)
    os.remove(index_path(tmp_path, 4))
    size = os.path.getsize(store_path(tmp_path, 4))
    with Log(tmp_path, SMALL) as log:
        assert_readable_except(log, {4 + record}, 12)
    assert os.path.getsize(store_path(tmp_path, 4)) == size  # never shrunk


# -- item 2: damage in the active segment -------------------------------------------------


ONE = LogConfig(
    max_index_bytes=INDEX_ENTRY_WIDTH * 64, max_store_bytes=1 << 20, max_record_bytes=4096
)


def test_damaged_middle_record_of_the_active_segment_keeps_it_writable(tmp_path: Path) -> None:
    make_log(tmp_path, 6, ONE)
    pos, _ = frames(store_path(tmp_path))[2]
    flip(store_path(tmp_path), pos + FRAME_OVERHEAD + 1)
    for n in (6, 7):
        with Log(tmp_path, ONE) as log:
            assert_readable_except(log, {2}, n)
            assert log.append(value(n)) == n  # the lazy watermark scan once killed appends
            assert log.offset_for_timestamp(1002) == 3


def test_bad_checksum_in_the_middle_of_an_unindexed_tail_keeps_later_frames(
    tmp_path: Path,
) -> None:
    """The index lost (power loss): a frame with a bad checksum followed by whole
    frames is damage, not a torn tail."""
    make_log(tmp_path, 6, ONE)
    pos, _ = frames(store_path(tmp_path))[2]
    flip(store_path(tmp_path), pos + FRAME_OVERHEAD + 1)
    os.remove(index_path(tmp_path))
    with Log(tmp_path, ONE) as log:
        assert_readable_except(log, {2}, 6)
        assert log.append(value(6)) == 6


# -- item 4: the index is a cache --------------------------------------------------------


def test_wrong_index_entry_is_rebuilt_and_the_record_served(tmp_path: Path) -> None:
    make_log(tmp_path)
    data = bytearray(index_path(tmp_path, 4).read_bytes())
    data[INDEX_ENTRY_WIDTH + 4] ^= 0x10  # entry for offset 5: a wrong position
    index_path(tmp_path, 4).write_bytes(bytes(data))
    with Log(tmp_path, SMALL) as log:
        assert_readable_except(log, set(), 12)
        assert [r.offset for r in log.read_range(4)] == [4, 5, 6, 7, 8, 9, 10, 11]


# -- item 5: files the log did not write ----------------------------------------------


def test_stray_files_are_left_alone_and_named(tmp_path: Path, caplog) -> None:
    make_log(tmp_path)
    segment0 = store_path(tmp_path, 0).read_bytes()
    strays = {
        "x.store": b"not a store",
        "0.store": segment0,
        "00000000000000000000.store.bak": segment0,
        "00000000000000009999.store": b"",
        "00000000000000000004.index.old": b"",
    }
    for name, data in strays.items():
        (tmp_path / name).write_bytes(data)
    before = {name: os.stat(tmp_path / name).st_mtime_ns for name in strays}
    for n in (12, 13):
        with Log(tmp_path, SMALL) as log:
            assert_readable_except(log, set(), n)
            assert log.append(value(n)) == n
    for name, data in strays.items():
        assert (tmp_path / name).read_bytes() == data, name
        assert os.stat(tmp_path / name).st_mtime_ns == before[name], name
        assert name in caplog.text
    assert all(r.levelno == logging.WARNING for r in caplog.records if "ignoring" in r.message)


# -- item 6: sealed segments are opened as they are ----------------------------------------


@pytest.mark.parametrize("records", [100, 105], ids=["empty-active", "active-with-records"])
def test_opening_leaves_sealed_segments_files_as_they_are(tmp_path: Path, records) -> None:
    # Ten 100-byte records per segment, and room for 4096 index entries.
    cfg = LogConfig(
        max_index_bytes=INDEX_ENTRY_WIDTH * 4096,
        max_store_bytes=STORE_HEADER_SIZE + 10 * (FRAME_OVERHEAD + 100),
        max_record_bytes=100,
    )
    with Log(tmp_path, cfg) as log:
        for _ in range(records):
            log.append(b"v" * 100)
        sealed = log._bases[:-1]
    assert len(sealed) == 10

    def state() -> dict[str, tuple[int, int]]:
        out = {}
        for base in sealed:
            for path in (store_path(tmp_path, base), index_path(tmp_path, base)):
                st = os.stat(path)
                out[path.name] = (st.st_size, st.st_mtime_ns)
        return out

    before = state()
    with Log(tmp_path, cfg) as log:
        assert state() == before  # not grown to max_index_bytes while open
        assert log.read(0).value == b"v" * 100
        assert log.append(b"w") == records
    assert state() == before  # and not rewritten on close


def test_a_sealed_segment_made_active_again_takes_appends(tmp_path: Path) -> None:
    """Opened sealed, its index has room for its own entries only; truncate_after
    makes it active again, and appends must find room (not run off the index)."""
    cfg = LogConfig(
        max_index_bytes=INDEX_ENTRY_WIDTH * 4096, max_store_bytes=4096, max_record_bytes=1024
    )
    with Log(tmp_path, cfg) as log:
        for i in range(120):
            log.append(value(i))
        second = log._bases[1]
    with Log(tmp_path, cfg) as log:
        log.truncate_after(second - 3)
        for i in range(second - 2, 120):
            assert log.append(value(i)) == i
    with Log(tmp_path, cfg) as log:
        assert [r.value for r in log.iter_records()] == [value(i) for i in range(120)]


# -- item 7: batch reads deliver up to the damage -----------------------------------------


def test_range_read_stops_before_a_damaged_first_record_of_the_next_segment(
    tmp_path: Path,
) -> None:
    make_log(tmp_path)
    pos, _ = frames(store_path(tmp_path, 4))[0]
    flip(store_path(tmp_path, 4), pos + FRAME_OVERHEAD)
    with Log(tmp_path, SMALL) as log:
        assert [r.offset for r in log.read_range(0)] == [0, 1, 2, 3]
        with pytest.raises(CorruptSegment, match="offset 4"):
            log.read_range(4)
        assert [r.offset for r in log.read_range(5)] == [5, 6, 7, 8, 9, 10, 11]
        assert log.offset_for_timestamp(1004) == 5
        with pytest.raises(OffsetOutOfRange):
            log.read_range(12)


# -- item 8: disk full -------------------------------------------------------------------------


def test_disk_full_applies_retention_and_retries(tmp_path: Path, monkeypatch) -> None:
    """A disk with room for two store files: the roll to a third fails with ENOSPC
    until retention removes the oldest segment."""
    frame = FRAME_OVERHEAD + 10
    cfg = LogConfig(
        max_store_bytes=STORE_HEADER_SIZE + 3 * frame,
        max_record_bytes=10,
        max_index_bytes=INDEX_ENTRY_WIDTH * 64,
        # Above one full segment plus an empty one, below two nearly full ones.
        retention_bytes=2 * STORE_HEADER_SIZE + 4 * frame,
    )
    real = os.posix_fallocate

    def two_stores(fd: int, offset: int, length: int) -> None:
        stores = [n for n in os.listdir(tmp_path) if n.endswith(".store")]
        if length == cfg.max_store_bytes and len(stores) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", two_stores)
    with Log(tmp_path, cfg) as log:
        for i in range(12):
            assert log.append(b"%010d" % i) == i
        assert log.next_offset == 12
        assert log.read(11).value == b"%010d" % 11


def test_disk_full_says_what_a_segment_needs_and_what_lowers_it(
    tmp_path: Path, monkeypatch
) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    cfg = LogConfig()
    with pytest.raises(DiskFull) as info:
        Log(tmp_path / "new", cfg)
    msg = str(info.value)
    assert str(cfg.max_store_bytes + cfg.max_index_bytes) in msg
    for name in ("max_store_bytes", "max_index_bytes", "--segment-max-store-bytes"):
        assert name in msg
    assert "\n" not in msg


def test_retention_is_applied_when_the_log_opens(tmp_path: Path) -> None:
    make_log(tmp_path)
    store = os.path.getsize(store_path(tmp_path, 0))
    cfg = LogConfig(
        max_index_bytes=SMALL.max_index_bytes,
        max_store_bytes=SMALL.max_store_bytes,
        max_record_bytes=SMALL.max_record_bytes,
        retention_bytes=store + STORE_HEADER_SIZE,
    )
    with Log(tmp_path, cfg) as log:
        assert log.lowest_offset == 12 or log.lowest_offset == 8
        assert not store_path(tmp_path, 0).exists()


def test_copied_log_with_damage_reopens_the_same_way_twice(tmp_path: Path) -> None:
    """Recovery changes nothing in sealed segments: a second open finds the same."""
    make_log(tmp_path / "a")
    pos, _ = frames(store_path(tmp_path / "a", 4))[3]
    flip(store_path(tmp_path / "a", 4), pos + FRAME_OVERHEAD)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with Log(tmp_path / "a", SMALL) as log:
        assert_readable_except(log, {7}, 12)
    assert store_path(tmp_path / "a", 4).read_bytes() == store_path(tmp_path / "b", 4).read_bytes()


def test_time_lookup_goes_past_a_damaged_record_to_the_next_segment(tmp_path: Path) -> None:
    cfg = LogConfig(
        max_index_bytes=SMALL.max_index_bytes,
        max_store_bytes=SMALL.max_store_bytes,
        max_record_bytes=SMALL.max_record_bytes,
        time_index_interval_bytes=1,  # a time-index entry for every record
    )
    make_log(tmp_path, 12, cfg)
    pos, _ = frames(store_path(tmp_path, 4))[3]
    flip(store_path(tmp_path, 4), pos + FRAME_OVERHEAD)  # offset 7, timestamp 1007
    with Log(tmp_path, cfg) as log:
        assert log.offset_for_timestamp(1006) == 6
        assert log.offset_for_timestamp(1007) == 8


def test_lost_index_of_the_segment_before_an_empty_active_one(tmp_path: Path) -> None:
    make_log(tmp_path)  # segments 0, 4, 8 full; 12 empty
    os.remove(index_path(tmp_path, 8))
    with Log(tmp_path, SMALL) as log:
        assert_readable_except(log, set(), 12)
        assert log.append(value(12)) == 12


def test_several_damaged_frames_in_a_row_without_an_index(tmp_path: Path) -> None:
    make_log(tmp_path, 8, ONE)
    for k in (2, 3, 4):
        pos, _ = frames(store_path(tmp_path))[k]
        flip(store_path(tmp_path), pos + FRAME_OVERHEAD)
    os.remove(index_path(tmp_path))
    with Log(tmp_path, ONE) as log:
        assert_readable_except(log, {2, 3, 4}, 8)

"""Torn tails, flipped bytes and crash-left indexes: detected, cut or refused, never served."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyproglog.log import CorruptSegment, Log, LogConfig, OffsetOutOfRange
from pyproglog.log.format import (
    FRAME_OVERHEAD,
    FRAME_PREFIX_SIZE,
    INDEX_ENTRY_WIDTH,
    STORE_HEADER_SIZE,
)

N = 6
# Everything in one segment unless a test asks for more.
ONE_SEGMENT = LogConfig(
    max_index_bytes=INDEX_ENTRY_WIDTH * 64, max_store_bytes=1 << 20, max_record_bytes=4096
)
# Four records per segment.
SMALL = LogConfig(
    max_index_bytes=INDEX_ENTRY_WIDTH * 4, max_store_bytes=1 << 20, max_record_bytes=4096
)


def value(i: int) -> bytes:
    return f"value-{i}-".encode() + bytes([65 + i % 26]) * (10 + 3 * i)


def store_path(directory: Path, base: int = 0) -> Path:
    return directory / f"{base:020d}.store"


def index_path(directory: Path, base: int = 0) -> Path:
    return directory / f"{base:020d}.index"


def frames(path: Path) -> list[tuple[int, int]]:
    """(position, total frame size) of every frame in a store file."""
    data = path.read_bytes()
    out = []
    pos = STORE_HEADER_SIZE
    while pos + FRAME_PREFIX_SIZE <= len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        if length == 0:  # the pre-allocated zeroes after the frames of an open store
            break
        out.append((pos, FRAME_PREFIX_SIZE + length))
        pos += FRAME_PREFIX_SIZE + length
    return out


def make_log(directory: Path, n: int = N, cfg: LogConfig = ONE_SEGMENT) -> None:
    with Log(directory, cfg) as log:
        for i in range(n):
            assert log.append(value(i)) == i


def crash_copy(log: Log, dest: Path) -> Path:
    """The directory as a kill -9 would leave it: copied while the log is open."""
    shutil.copytree(log.directory, dest)
    return dest


def flip(path: Path, at: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= mask
    path.write_bytes(bytes(data))


def assert_prefix(log: Log, n: int) -> None:
    """The log holds exactly value(0..n-1) and nothing else."""
    assert log.lowest_offset == 0
    assert log.next_offset == n
    assert [(r.offset, r.value) for r in log.iter_records()] == [(i, value(i)) for i in range(n)]
    with pytest.raises(OffsetOutOfRange):
        log.read(n)


def assert_cut_and_writable(directory: Path, n: int, cfg: LogConfig = ONE_SEGMENT) -> None:
    with Log(directory, cfg) as log:
        assert_prefix(log, n)
        assert log.append(value(n)) == n
    with Log(directory, cfg) as log:
        assert_prefix(log, n + 1)


# -- torn or corrupted tail ---------------------------------------------------------


LAST_FRAME_BYTES = [0, 1, 3, 4, 7, 8, 15, 16, 24, 32, 40, FRAME_OVERHEAD, -1]


def assert_lost_and_writable(directory: Path, lost: set[int], n: int) -> None:
    """Offsets 0..n-1 are taken: those in `lost` raise CorruptSegment naming the
    offset, the others read back; the next append gets n (never a lost offset)."""
    for reopened in (False, True):
        with Log(directory, ONE_SEGMENT) as log:
            assert log.next_offset == n + reopened
            for off in range(n):
                if off in lost:
                    with pytest.raises(CorruptSegment, match=f"offset {off}"):
                        log.read(off)
                else:
                    assert log.read(off).value == value(off)
            if not reopened:
                assert log.append(value(n)) == n
            assert log.read(n).value == value(n)


@pytest.mark.parametrize("where", LAST_FRAME_BYTES, ids=lambda w: f"byte{w}")
def test_flipped_byte_in_last_frame_of_a_closed_log_is_damage_not_a_torn_tail(tmp_path, where):
    """A clean close wrote every indexed frame whole: a bad last frame afterwards is
    damage. Its offset stays taken (answering CorruptSegment), never handed out again."""
    make_log(tmp_path)
    last_pos, last_size = frames(store_path(tmp_path))[-1]
    flip(store_path(tmp_path), last_pos + (where % last_size))
    assert_lost_and_writable(tmp_path, {N - 1}, N)


@pytest.mark.parametrize("where", LAST_FRAME_BYTES, ids=lambda w: f"byte{w}")
def test_flipped_byte_in_last_frame_after_a_crash_is_cut(tmp_path, where):
    """After a kill (index at its pre-allocated size) a bad last frame is a torn tail."""
    log = Log(tmp_path / "live", ONE_SEGMENT)
    for i in range(N):
        log.append(value(i))
    crashed = crash_copy(log, tmp_path / "crashed")
    log.close()
    last_pos, last_size = frames(store_path(tmp_path / "live"))[-1]
    flip(store_path(crashed), last_pos + (where % last_size))
    assert_cut_and_writable(crashed, N - 1)


def test_store_cut_anywhere_in_the_last_frame_loses_only_that_frame(tmp_path):
    pristine = tmp_path / "pristine"
    make_log(pristine)
    last_pos, last_size = frames(store_path(pristine))[-1]
    for cut in range(last_pos + 1, last_pos + last_size, 7):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(pristine, work)
        os.truncate(store_path(work), cut)
        assert_lost_and_writable(work, {N - 1}, N)


def test_store_cut_mid_frame_in_the_middle_reports_the_lost_offsets(tmp_path, caplog):
    make_log(tmp_path)
    pos, size = frames(store_path(tmp_path))[2]
    os.truncate(store_path(tmp_path), pos + size // 2)
    assert_lost_and_writable(tmp_path, {2, 3, 4, 5}, N)
    assert "offsets 2..5 are damaged or missing" in caplog.text


def test_active_store_cut_to_a_few_bytes_says_what_was_lost(tmp_path, caplog):
    make_log(tmp_path)
    os.truncate(store_path(tmp_path), 4)
    assert_lost_and_writable(tmp_path, set(range(N)), N)
    assert f"offsets 0..{N - 1} are damaged or missing" in caplog.text
    assert all(
        r.levelname == "WARNING" for r in caplog.records if "damaged or missing" in r.message
    )


def test_torn_tail_after_a_crash_is_cut(tmp_path):
    log = Log(tmp_path / "live", ONE_SEGMENT)
    for i in range(N):
        log.append(value(i))
    crashed = crash_copy(log, tmp_path / "crashed")
    log.close()
    # Crash-left index (full size) and a half-written last frame.
    assert os.path.getsize(index_path(crashed)) == ONE_SEGMENT.max_index_bytes
    last_pos, last_size = frames(store_path(crashed))[-1]
    os.truncate(store_path(crashed), last_pos + last_size - 3)
    assert_cut_and_writable(crashed, N - 1)


@pytest.mark.parametrize("crashed", [False, True], ids=["closed", "crashed"])
def test_damaged_last_record_of_a_sealed_segment_costs_only_that_record(tmp_path, crashed):
    make_log(tmp_path, 12, SMALL)
    first = store_path(tmp_path, 0)
    last_pos, _ = frames(first)[-1]
    flip(first, last_pos + FRAME_OVERHEAD)  # offset 3, the last of segment 0
    if crashed:  # as a kill during the roll leaves it: index at its pre-allocated size
        os.truncate(index_path(tmp_path, 0), SMALL.max_index_bytes * 4)
    for _ in range(2):
        with Log(tmp_path, SMALL) as log:
            assert log.lowest_offset == 0
            with pytest.raises(CorruptSegment, match="offset 3"):
                log.read(3)
            for off in [0, 1, 2, *range(4, log.next_offset)]:
                assert log.read(off).value == value(off)
            # Every later segment is kept, and offset 3 is never handed out again.
            assert log.next_offset >= 12
            log.append(value(log.next_offset))
    assert store_path(tmp_path, 4).exists() and store_path(tmp_path, 8).exists()


# -- crash-left indexes ----------------------------------------------------------------


def test_index_left_at_full_size_by_os_exit(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        from pyproglog.log import Log, LogConfig
        from pyproglog.log.format import INDEX_ENTRY_WIDTH
        log = Log(sys.argv[1], LogConfig(max_index_bytes=INDEX_ENTRY_WIDTH * 64))
        for i in range({N}):
            log.append(f"value-{{i}}-".encode() + bytes([65 + i % 26]) * (10 + 3 * i))
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    assert os.path.getsize(index_path(tmp_path)) == ONE_SEGMENT.max_index_bytes
    with Log(tmp_path, ONE_SEGMENT) as log:
        assert_prefix(log, N)
        assert log.append(value(N)) == N
    # The clean close cut the index to its entries.
    assert os.path.getsize(index_path(tmp_path)) == (N + 1) * INDEX_ENTRY_WIDTH


def test_crash_left_index_lagging_the_store(tmp_path):
    log = Log(tmp_path / "live", ONE_SEGMENT)
    for i in range(2):
        log.append(value(i))
    crashed = crash_copy(log, tmp_path / "crashed")
    for i in range(2, N):
        log.append(value(i))
    shutil.copyfile(store_path(tmp_path / "live"), store_path(crashed))
    log.close()
    # The index knows 2 entries, the store holds N frames: the tail is re-indexed.
    assert_cut_and_writable(crashed, N)


def test_crash_left_index_ahead_of_the_store(tmp_path):
    log = Log(tmp_path / "live", ONE_SEGMENT)
    for i in range(2):
        log.append(value(i))
    early_store = store_path(tmp_path / "live").read_bytes()
    for i in range(2, N):
        log.append(value(i))
    crashed = crash_copy(log, tmp_path / "crashed")
    log.close()
    store_path(crashed).write_bytes(early_store)
    # Index entries for frames the store never got are dropped.
    assert_cut_and_writable(crashed, 2)


@pytest.mark.parametrize("size", [0, 5, INDEX_ENTRY_WIDTH * 2, INDEX_ENTRY_WIDTH * 3 + 7, None])
def test_truncated_or_missing_index_is_rebuilt_from_the_store(tmp_path, size):
    make_log(tmp_path)
    if size is None:
        os.remove(index_path(tmp_path))
    else:
        os.truncate(index_path(tmp_path), size)
    assert_cut_and_writable(tmp_path, N)


def test_garbage_index_is_not_trusted(tmp_path):
    make_log(tmp_path)
    index_path(tmp_path).write_bytes(os.urandom(INDEX_ENTRY_WIDTH * N))
    with Log(tmp_path, ONE_SEGMENT) as log:
        # Whatever the garbage says, nothing wrong is ever served.
        for off in range(log.lowest_offset, log.next_offset):
            try:
                rec = log.read(off)
            except CorruptSegment:
                continue
            assert rec.value == value(off)


# -- corruption in the middle of a closed segment ------------------------------------


@pytest.mark.parametrize("byte", range(INDEX_ENTRY_WIDTH))
def test_flipped_index_entry_in_the_middle_is_rebuilt_from_the_store(tmp_path, byte):
    """The index is a cache: an entry that disagrees with its frame is rebuilt."""
    make_log(tmp_path)
    bad = 2
    flip(index_path(tmp_path), bad * INDEX_ENTRY_WIDTH + byte)
    with Log(tmp_path, ONE_SEGMENT) as log:
        assert log.next_offset == N
        assert log.read(bad).value == value(bad)
        # Its neighbours read fine.
        for off in range(N):
            if off != bad:
                assert log.read(off).value == value(off)
        # A range read over it gives correct records or an error, never wrong data.
        for start in range(bad + 1):
            for max_records in (1, 2, 3, 1000):
                try:
                    got = log.read_range(start, max_records)
                except CorruptSegment:
                    continue
                assert 1 <= len(got) <= max_records
                assert [(r.offset, r.value) for r in got] == [
                    (start + k, value(start + k)) for k in range(len(got))
                ]


@pytest.mark.parametrize("target", [0, 1, 4, 5])
def test_index_entry_pointing_at_another_real_frame(tmp_path, target):
    """A well-formed index entry with the position of a different, valid frame."""
    make_log(tmp_path)
    bad = 2
    positions = [pos for pos, _ in frames(store_path(tmp_path))]
    data = bytearray(index_path(tmp_path).read_bytes())
    struct.pack_into("<IQ", data, bad * INDEX_ENTRY_WIDTH, bad, positions[target])
    index_path(tmp_path).write_bytes(bytes(data))
    with Log(tmp_path, ONE_SEGMENT) as log:
        assert log.read(bad).value == value(bad)  # rebuilt from the store
        for start in range(bad + 1):
            for max_records in (1, 2, 3, 1000):
                try:
                    got = log.read_range(start, max_records)
                except CorruptSegment:
                    continue
                assert 1 <= len(got) <= max_records
                assert [(r.offset, r.value) for r in got] == [
                    (start + k, value(start + k)) for k in range(len(got))
                ]


@pytest.mark.parametrize(
    "where", [0, 3, 4, 8, 16, FRAME_OVERHEAD, FRAME_OVERHEAD + 5], ids=lambda w: f"byte{w}"
)
def test_flipped_store_byte_in_the_middle_raises_corrupt(tmp_path, where):
    make_log(tmp_path)
    bad = 2
    pos, _ = frames(store_path(tmp_path))[bad]
    flip(store_path(tmp_path), pos + where)
    for _ in range(2):  # before and after another reopen
        with Log(tmp_path, ONE_SEGMENT) as log:
            assert log.next_offset == N
            with pytest.raises(CorruptSegment) as info:
                log.read(bad)
            assert info.value.position == pos
            for off in range(N):
                if off != bad:
                    assert log.read(off).value == value(off)
            # A range read delivers up to the damage; the damaged offset itself
            # raises, and a reader goes on from the offset after it.
            assert [r.offset for r in log.read_range(0)] == list(range(bad))
            with pytest.raises(CorruptSegment, match=f"offset {bad}"):
                log.read_range(bad)
            with pytest.raises(CorruptSegment):
                list(log.iter_records())
            assert [r.offset for r in log.read_range(bad + 1)] == list(range(bad + 1, N))
            assert log.offset_for_timestamp(0) == 0
            assert log.append(value(N)) == N  # a write-dead log was the old failure
            log.truncate_after(N - 1)


def test_store_without_magic_is_refused(tmp_path):
    make_log(tmp_path)
    flip(store_path(tmp_path), 0)
    with pytest.raises(CorruptSegment, match="not a proglog store"):
        Log(tmp_path, ONE_SEGMENT)


# -- the pre-allocated store ------------------------------------------------------------


def test_active_store_is_preallocated_and_cut_on_close(tmp_path):
    log = Log(tmp_path, ONE_SEGMENT)
    assert os.path.getsize(store_path(tmp_path)) == ONE_SEGMENT.max_store_bytes
    for i in range(N):
        log.append(value(i))
    end = log._segments[-1].store.size
    assert os.path.getsize(store_path(tmp_path)) == ONE_SEGMENT.max_store_bytes
    log.close()
    assert os.path.getsize(store_path(tmp_path)) == end


def test_sealed_stores_are_cut_at_the_roll(tmp_path):
    with Log(tmp_path, SMALL) as log:
        for i in range(9):
            log.append(value(i))
        # Two sealed segments cut to their frames, the active one pre-allocated.
        sizes = [os.path.getsize(store_path(tmp_path, base)) for base in (0, 4, 8)]
        assert sizes[0] == STORE_HEADER_SIZE + sum(FRAME_OVERHEAD + len(value(i)) for i in range(4))
        assert sizes[1] == STORE_HEADER_SIZE + sum(
            FRAME_OVERHEAD + len(value(i)) for i in range(4, 8)
        )
        assert sizes[2] == SMALL.max_store_bytes


def test_torn_frame_in_a_preallocated_store_is_zeroed(tmp_path, caplog):
    """A kill -9 in the middle of copying a frame into the map: the file is at its
    pre-allocated size with a prefix of the frame after the last whole one. Recovery
    must not only ignore those bytes but zero them: a later, shorter append followed
    by another crash must never make them part of a valid-looking tail."""
    log = Log(tmp_path / "live", ONE_SEGMENT)
    for i in range(N):
        log.append(value(i))
    end = log._segments[-1].store.size
    crashed = crash_copy(log, tmp_path / "crashed")
    log.close()
    path = store_path(crashed)
    assert os.path.getsize(path) == ONE_SEGMENT.max_store_bytes
    torn = bytearray(Path(tmp_path / "live" / path.name).read_bytes()[STORE_HEADER_SIZE:end])
    data = bytearray(path.read_bytes())
    data[end : end + len(torn) - 5] = torn[:-5]  # frames 0.. again, the last one torn
    path.write_bytes(bytes(data))
    with Log(crashed, ONE_SEGMENT) as log:
        assert_prefix(log, N)
        assert "cut torn or corrupt tail" in caplog.text
        # Zeroed in the file while the log is open (not merely cut at close).
        assert path.read_bytes()[end:] == bytes(ONE_SEGMENT.max_store_bytes - end)
        assert log.append(value(N)) == N
    with Log(crashed, ONE_SEGMENT) as log:
        assert_prefix(log, N + 1)


def test_clean_preallocated_tail_is_not_reported(tmp_path, caplog):
    log = Log(tmp_path / "live", ONE_SEGMENT)
    for i in range(N):
        log.append(value(i))
    crashed = crash_copy(log, tmp_path / "crashed")
    log.close()
    with Log(crashed, ONE_SEGMENT) as log:
        assert_prefix(log, N)
    assert "cut torn" not in caplog.text


def test_truncate_after_zeroes_the_dropped_frames(tmp_path):
    """Stale frames after a truncate_after must not come back: not after a reopen,
    and not after a later append of the same length and a kill -9."""
    log = Log(tmp_path, ONE_SEGMENT)
    for i in range(N):
        log.append(value(i))
    end = log._segments[-1].store.size
    cut = frames(store_path(tmp_path))[2][0]
    log.truncate_after(1)
    path = store_path(tmp_path)
    assert path.read_bytes()[cut:end] == bytes(end - cut)
    # Same length as the old offset 2: a crash now must not revive offsets 3.. either.
    assert log.append(value(2)) == 2
    crashed = crash_copy(log, tmp_path / "crashed")
    log.close()
    with Log(crashed, ONE_SEGMENT) as log:
        assert_prefix(log, 3)

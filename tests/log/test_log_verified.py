"""Range reads check a frame's checksum the first time they serve it after the
segment opens, not on every read (segment.verified_to)."""

from __future__ import annotations

from pathlib import Path

from pyproglog.log import Log, LogConfig, Record
from pyproglog.log.format import FRAME_OVERHEAD, STORE_HEADER_SIZE


def _store(directory: Path) -> Path:
    return next(directory.glob("*.store"))


def test_a_frame_damaged_before_its_first_read_is_not_served(tmp_path: Path) -> None:
    with Log(tmp_path, LogConfig()) as log:
        log.append_batch([Record(b"a" * 10), Record(b"b" * 10), Record(b"c" * 10)])

        frame = 10 + FRAME_OVERHEAD
        with _store(tmp_path).open("r+b") as f:
            f.seek(STORE_HEADER_SIZE + 2 * frame - 1)  # last byte of the 2nd value
            f.write(b"X")
        got = log.read_encoded(0, max_records=3, max_bytes=1 << 20)
        assert got.count == 1  # the intact prefix, stopping at the damage


def test_checked_frames_are_remembered_and_forgotten_on_truncation(tmp_path: Path) -> None:
    with Log(tmp_path, LogConfig()) as log:
        log.append_batch([Record(b"a" * 10) for _ in range(5)])
        seg = log._segments[-1]
        assert seg.verified_to == STORE_HEADER_SIZE
        assert log.read_encoded(0, max_records=5, max_bytes=1 << 20).count == 5
        end = seg.store.size
        assert seg.verified_to == end
        # A read that does not start in the checked prefix leaves it as it is.
        log.append_batch([Record(b"b" * 10) for _ in range(5)])
        log.read_encoded(7, max_records=3, max_bytes=1 << 20)
        assert seg.verified_to == end
        log.truncate_after(2)
        assert seg.verified_to == STORE_HEADER_SIZE + 3 * (10 + FRAME_OVERHEAD)
        # New frames at those positions are checked again: damage one before reading.
        log.append_batch([Record(b"c" * 10), Record(b"d" * 10)])
        with _store(tmp_path).open("r+b") as f:
            f.seek(STORE_HEADER_SIZE + 4 * (10 + FRAME_OVERHEAD) - 1)
            f.write(b"X")
        assert log.read_encoded(0, max_records=5, max_bytes=1 << 20).count == 3

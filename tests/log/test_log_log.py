"""Log: offsets, reads, reopen, compaction and truncation, batches, retention, consensus index."""

from __future__ import annotations

import os
import time

import pytest

from pyproglog.log import (
    Log,
    LogClosed,
    LogConfig,
    OffsetOutOfRange,
    Record,
)
from pyproglog.log.format import FRAME_OVERHEAD, INDEX_ENTRY_WIDTH, STORE_HEADER_SIZE

# Three 20-byte records per segment (by bytes), at most four by index.
VALUE_SIZE = 20
SMALL = LogConfig(
    max_store_bytes=STORE_HEADER_SIZE + 3 * (FRAME_OVERHEAD + VALUE_SIZE),
    max_index_bytes=INDEX_ENTRY_WIDTH * 4,
    max_record_bytes=VALUE_SIZE * 4,
)


def value(i: int) -> bytes:
    return f"record-{i:013d}".encode()  # VALUE_SIZE bytes


def store_files(path: object) -> list[str]:
    return sorted(n for n in os.listdir(str(path)) if n.endswith(".store"))


def fill(log: Log, n: int) -> None:
    for _ in range(n):
        off = log.next_offset
        assert log.append(value(off)) == off


def assert_readable(log: Log, lo: int, hi: int) -> None:
    """Offsets lo..hi (inclusive) hold value(offset); the ones around them are out of range."""
    for off in range(lo, hi + 1):
        rec = log.read(off)
        assert rec.offset == off
        assert rec.value == value(off)
    for off in (lo - 1, hi + 1):
        with pytest.raises(OffsetOutOfRange):
            log.read(off)


def test_append_then_read(tmp_path):
    with Log(tmp_path) as log:
        assert log.append(b"hello world") == 0
        rec = log.read(0)
        assert rec.offset == 0
        assert rec.value == b"hello world"


def test_read_past_the_end_names_the_offset(tmp_path):
    with Log(tmp_path) as log:
        with pytest.raises(OffsetOutOfRange, match=r"offset out of range: 0$"):
            log.read(0)
        log.append(b"x")
        with pytest.raises(OffsetOutOfRange) as info:
            log.read(1)
        assert "offset out of range: 1" in str(info.value)
        assert info.value.offset == 1
        assert info.value.next_offset == 1
        with pytest.raises(OffsetOutOfRange, match="offset out of range: 12345"):
            log.read(12345)
        with pytest.raises(OffsetOutOfRange, match="offset out of range: -1"):
            log.read(-1)


def test_reopen_keeps_offsets(tmp_path):
    log = Log(tmp_path)
    assert log.info().empty
    assert (log.lowest_offset, log.highest_offset) == (0, -1)
    for i in range(3):
        assert log.append(value(i)) == i
    log.close()
    log = Log(tmp_path)
    assert log.lowest_offset == 0
    assert log.highest_offset == 2
    assert log.append(value(3)) == 3
    assert_readable(log, 0, 3)
    log.close()


def test_reopen_across_segments(tmp_path):
    log = Log(tmp_path, SMALL)
    fill(log, 10)
    segments = log.info().segment_count
    assert segments >= 4
    log.close()
    log = Log(tmp_path, SMALL)
    assert log.info().segment_count == segments
    assert (log.lowest_offset, log.highest_offset) == (0, 9)
    assert_readable(log, 0, 9)
    fill(log, 1)
    assert_readable(log, 0, 10)
    log.close()


def test_compact_before_removes_whole_older_segments(tmp_path):
    log = Log(tmp_path, SMALL)
    fill(log, 12)
    before = store_files(tmp_path)
    log.compact_before(7)
    lowest = log.lowest_offset
    # Whole segments only: the one holding 7 stays, so lowest is a segment base <= 7.
    assert 0 < lowest <= 7
    assert f"{lowest:020d}.store" in before
    assert store_files(tmp_path) == [n for n in before if int(n[:20]) >= lowest]
    for off in range(lowest):
        with pytest.raises(OffsetOutOfRange, match=f"offset out of range: {off}"):
            log.read(off)
    assert_readable(log, lowest, 11)
    # Truncating everything keeps the active segment and the next offset.
    log.compact_before(1000)
    assert log.next_offset == 12
    assert log.append(value(12)) == 12
    log.close()
    log = Log(tmp_path, SMALL)
    assert log.lowest_offset > 7
    assert log.highest_offset == 12
    log.close()


@pytest.mark.parametrize("n", [0, 1, 2, 5, 8, 11])
def test_truncate_after_keeps_the_prefix(tmp_path, n):
    log = Log(tmp_path, SMALL)
    fill(log, 12)
    log.truncate_after(n)
    assert log.highest_offset == n
    assert_readable(log, 0, n)
    assert log.append(value(n + 1)) == n + 1
    log.close()
    log = Log(tmp_path, SMALL)
    assert log.highest_offset == n + 1
    assert_readable(log, 0, n + 1)
    fill(log, 5)
    assert_readable(log, 0, n + 6)
    log.close()


def test_truncate_after_the_end_changes_nothing_and_below_the_start_is_refused(tmp_path):
    log = Log(tmp_path, SMALL)
    fill(log, 5)
    log.truncate_after(4)
    log.truncate_after(100)
    assert log.next_offset == 5
    log.compact_before(3)
    lowest = log.lowest_offset
    with pytest.raises(OffsetOutOfRange):
        log.truncate_after(lowest - 2)
    log.truncate_after(lowest - 1)  # empties the log
    assert log.info().empty
    assert log.next_offset == lowest
    assert log.append(value(lowest)) == lowest
    log.close()
    log = Log(tmp_path, SMALL)
    assert_readable(log, lowest, lowest)
    log.close()


def test_batch_append_gets_contiguous_offsets(tmp_path):
    log = Log(tmp_path, SMALL)
    fill(log, 2)
    # Bigger than a segment: it spans several, still contiguous.
    first = log.append_batch([Record(value(2 + i)) for i in range(10)])
    assert first == 2
    assert log.next_offset == 12
    assert log.append_batch([Record(value(12))]) == 12
    assert_readable(log, 0, 12)
    with pytest.raises(ValueError):
        log.append_batch([])
    log.close()
    log = Log(tmp_path, SMALL)
    assert_readable(log, 0, 12)
    log.close()


def test_batch_keeps_record_fields_and_the_term_is_the_callers(tmp_path):
    with Log(tmp_path) as log:
        # A record's own term (a client's) never reaches the disk: the caller stamps it.
        recs = [
            Record(b"a", term=3, type=1, timestamp_ms=1000),
            Record(b"b", term=4, type=2, timestamp_ms=2000),
        ]
        assert log.append_batch(recs) == 0
        assert log.append_batch(recs, term=7) == 2
        assert log.append(b"c", term=9, type=5, timestamp_ms=3000) == 4
        before = time.time_ns() // 1_000_000
        log.append(b"now")
        after = time.time_ns() // 1_000_000
        for log_now in (log, Log(tmp_path)):  # as stored, after a reopen too
            if log_now is not log:
                log.close()
            got = log_now.read_range(0)
            assert [(r.offset, r.value, r.term, r.type, r.timestamp_ms) for r in got[:5]] == [
                (0, b"a", 0, 1, 1000),
                (1, b"b", 0, 2, 2000),
                (2, b"a", 7, 1, 1000),
                (3, b"b", 7, 2, 2000),
                (4, b"c", 9, 5, 3000),
            ]
            assert before <= log_now.read(5).timestamp_ms <= after
        log_now.close()


def test_read_range_limits(tmp_path):
    frame = FRAME_OVERHEAD + VALUE_SIZE
    with Log(tmp_path, SMALL) as log:
        fill(log, 12)

        def offsets(*args: int) -> list[int]:
            got = log.read_range(*args)
            for r in got:
                assert r.value == value(r.offset)
            return [r.offset for r in got]

        assert offsets(0) == list(range(12))
        assert offsets(0, 5) == list(range(5))
        assert offsets(4, 100) == list(range(4, 12))
        assert offsets(11, 5) == [11]
        # By bytes, across segment boundaries; never less than one record.
        assert offsets(1, 100, 5 * frame) == list(range(1, 6))
        assert offsets(1, 100, 5 * frame - 1) == list(range(1, 5))
        assert offsets(1, 100, 5 * frame + frame - 1) == list(range(1, 6))
        assert offsets(2, 100, 1) == [2]
        assert offsets(2, 100, 0) == [2]
        assert offsets(2, 3, 100 * frame) == [2, 3, 4]
        with pytest.raises(OffsetOutOfRange, match="offset out of range: 12"):
            log.read_range(12)
        with pytest.raises(ValueError):
            log.read_range(0, 0)


def test_iter_records(tmp_path):
    with Log(tmp_path, SMALL) as log:
        assert list(log.iter_records()) == []
        fill(log, 9)
        assert [r.offset for r in log.iter_records()] == list(range(9))
        assert [r.offset for r in log.iter_records(4)] == list(range(4, 9))
        assert list(log.iter_records(9)) == []
        # It follows the end as of each step.
        it = log.iter_records()
        assert next(it).offset == 0
        fill(log, 1)
        rest = [r.offset for r in it]
        assert rest == list(range(1, 10))
        log.compact_before(5)
        assert next(log.iter_records()).offset == log.lowest_offset


def test_reset(tmp_path):
    cfg = LogConfig(
        max_store_bytes=SMALL.max_store_bytes,
        max_index_bytes=SMALL.max_index_bytes,
        max_record_bytes=SMALL.max_record_bytes,
        initial_offset=7,
    )
    log = Log(tmp_path, cfg)
    fill(log, 10)
    log.reset()
    assert log.info().empty
    assert log.lowest_offset == log.next_offset == 7
    assert store_files(tmp_path) == [f"{7:020d}.store"]
    with pytest.raises(OffsetOutOfRange):
        log.read(7)
    fill(log, 2)
    log.close()
    log = Log(tmp_path, cfg)
    assert_readable(log, 7, 8)
    log.close()


def test_initial_offset(tmp_path):
    cfg = LogConfig(initial_offset=100)
    log = Log(tmp_path, cfg)
    assert log.lowest_offset == log.next_offset == 100
    assert log.highest_offset == 99
    assert log.append(b"first") == 100
    with pytest.raises(OffsetOutOfRange):
        log.read(99)
    log.close()
    # The initial offset only applies to a new log.
    log = Log(tmp_path, LogConfig(initial_offset=5))
    assert log.lowest_offset == 100
    assert log.append(b"second") == 101
    assert log.read(100).value == b"first"
    log.close()


def test_retention_by_bytes(tmp_path):
    seg_bytes = SMALL.max_store_bytes
    cfg = LogConfig(
        max_store_bytes=SMALL.max_store_bytes,
        max_index_bytes=SMALL.max_index_bytes,
        max_record_bytes=SMALL.max_record_bytes,
        retention_bytes=2 * seg_bytes,
    )
    log = Log(tmp_path, cfg)
    fill(log, 30)
    # Applied at every roll: never more than the limit plus the active segment.
    info = log.info()
    assert info.lowest_offset > 0
    assert sum(os.path.getsize(tmp_path / n) for n in store_files(tmp_path)) <= 3 * seg_bytes
    assert info.segment_count == len(store_files(tmp_path))
    for off in range(info.lowest_offset):
        with pytest.raises(OffsetOutOfRange):
            log.read(off)
    assert_readable(log, info.lowest_offset, 29)
    log.close()


def test_retention_by_age(tmp_path):
    base = time.time_ns() // 1_000_000
    day = 86_400_000
    cfg = LogConfig(
        max_store_bytes=SMALL.max_store_bytes,
        max_index_bytes=SMALL.max_index_bytes,
        max_record_bytes=SMALL.max_record_bytes,
        retention_ms=10 * day,
    )
    log = Log(tmp_path, cfg)
    # Offset i has timestamp base + i seconds: nothing is older than 10 days yet.
    for i in range(12):
        log.append(value(i), timestamp_ms=base + i * 1000)
    segments = log.info().segment_count
    assert log.lowest_offset == 0
    assert log.apply_retention(now_ms=base + 10 * day) == 0
    # 10 days after offset 5: whole segments whose newest record is older go.
    removed = log.apply_retention(now_ms=base + 10 * day + 5 * 1000 + 1)
    assert removed > 0
    assert log.info().segment_count == segments - removed
    lowest = log.lowest_offset
    assert 0 < lowest <= 6
    # The segment holding offset 6 stays, and so does every later one.
    assert_readable(log, lowest, 11)
    # Far in the future, only the active segment stays.
    log.apply_retention(now_ms=base + 100 * day)
    assert log.info().segment_count == 1
    assert log.next_offset == 12
    log.close()


def test_consensus_index(tmp_path):
    log = Log(tmp_path, SMALL)
    assert log.last_consensus_index == 0
    log.append_batch([Record(value(0)), Record(value(1))], consensus_index=5)
    assert log.last_consensus_index == 5
    log.append_batch([Record(value(i)) for i in range(2, 9)], consensus_index=9)
    assert log.last_consensus_index == 9
    log.append_batch([Record(value(9))], consensus_index=11)
    assert log.last_consensus_index == 11
    log.close()
    log = Log(tmp_path, SMALL)
    assert log.last_consensus_index == 11
    log.truncate_after(8)
    assert log.last_consensus_index == 9
    log.truncate_after(3)
    assert log.last_consensus_index == 9
    log.truncate_after(1)
    assert log.last_consensus_index == 5
    log.close()
    log = Log(tmp_path, SMALL)
    assert log.last_consensus_index == 5
    log.truncate_after(-1)
    assert log.last_consensus_index == 0
    log.close()


def test_listeners_see_next_offset(tmp_path):
    seen: list[int] = []
    with Log(tmp_path) as log:
        log.add_listener(seen.append)
        log.append(b"a")
        log.append_batch([Record(b"b"), Record(b"c")])
        log.remove_listener(seen.append)
        log.append(b"d")
    assert seen == [1, 3]


def test_closed_log_refuses_everything(tmp_path):
    log = Log(tmp_path)
    log.append(b"x")
    log.close()
    log.close()
    with pytest.raises(LogClosed):
        log.append(b"y")
    with pytest.raises(LogClosed):
        log.read(0)
    with pytest.raises(LogClosed):
        log.read_range(0)
    with pytest.raises(LogClosed):
        _ = log.next_offset


def test_remove_deletes_the_files(tmp_path):
    log = Log(tmp_path / "log", SMALL)
    fill(log, 5)
    log.remove()
    assert os.listdir(tmp_path / "log") == []

"""Time lookups: first offset with timestamp >= T, across segments and reopen, no full scan."""

from __future__ import annotations

import os
import random
import shutil
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from pyproglog.log import Log, LogConfig, Record
from pyproglog.log.format import INDEX_ENTRY_WIDTH, TIME_ENTRY, TIME_ENTRY_WIDTH
from pyproglog.log.segment import Segment

T0 = 1_700_000_000_000
CFG = LogConfig(
    max_store_bytes=4096,
    max_index_bytes=INDEX_ENTRY_WIDTH * 40,
    max_record_bytes=256,
    time_index_interval_bytes=300,
)


def first_at_or_after(timestamps: list[int], t: int) -> int | None:
    for off, ts in enumerate(timestamps):
        if ts >= t:
            return off
    return None


def check_all(log: Log, timestamps: list[int]) -> None:
    probes = {t + d for t in timestamps for d in (-1, 0, 1)}
    probes |= {min(timestamps) - 1000, max(timestamps) + 1000, -(2**63), 0}
    for t in sorted(probes):
        assert log.offset_for_timestamp(t) == first_at_or_after(timestamps, t), t


def append_all(log: Log, timestamps: list[int], rng: random.Random) -> None:
    start = log.next_offset
    i = 0
    while i < len(timestamps):
        k = rng.choice([1, 1, 1, 3, 7])
        batch = [
            Record(b"v" * rng.randrange(1, 200), timestamp_ms=t) for t in timestamps[i : i + k]
        ]
        assert log.append_batch(batch) == start + i
        i += len(batch)


def test_ordered_timestamps_across_segments_and_reopen(tmp_path):
    rng = random.Random(1)
    timestamps = []
    t = T0
    for _ in range(400):
        t += rng.choice([0, 0, 1, 5, 1000])
        timestamps.append(t)
    log = Log(tmp_path, CFG)
    append_all(log, timestamps, rng)
    assert log.info().segment_count > 5
    check_all(log, timestamps)
    log.close()
    log = Log(tmp_path, CFG)
    check_all(log, timestamps)
    # Appending after a reopen keeps the answers right.
    more = [timestamps[-1] + 10 * k for k in range(1, 30)]
    append_all(log, more, rng)
    check_all(log, timestamps + more)
    log.close()


def test_out_of_order_timestamps_give_the_first_offset_at_or_after(tmp_path):
    rng = random.Random(2)
    timestamps = [T0 + rng.randrange(0, 10_000) for _ in range(300)]
    with Log(tmp_path, CFG) as log:
        append_all(log, timestamps, rng)
        check_all(log, timestamps)
    with Log(tmp_path, CFG) as log:
        check_all(log, timestamps)


def test_none_after_the_last_timestamp_and_for_an_empty_log(tmp_path):
    with Log(tmp_path, CFG) as log:
        assert log.offset_for_timestamp(0) is None
        log.append(b"x", timestamp_ms=T0)
        assert log.offset_for_timestamp(T0 + 1) is None
        assert log.offset_for_timestamp(T0) == 0


def test_lookup_does_not_scan_the_whole_log(tmp_path, monkeypatch):
    cfg = LogConfig(
        max_store_bytes=1 << 20,
        max_index_bytes=INDEX_ENTRY_WIDTH * 10_000,
        max_record_bytes=256,
        time_index_interval_bytes=512,
    )
    n = 5000
    with Log(tmp_path, cfg) as log:
        for i in range(0, n, 50):
            log.append_batch([Record(b"r" * 20, timestamp_ms=T0 + j) for j in range(i, i + 50)])
    assert os.path.getsize(tmp_path / f"{0:020d}.timeindex") > 0

    scanned = 0
    real = Segment.read_range

    def counting(self: Segment, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        nonlocal scanned
        out = real(self, offset, max_records, max_bytes)
        scanned += len(out)
        return out

    monkeypatch.setattr(Segment, "read_range", counting)
    with Log(tmp_path, cfg) as log:
        for target in (4000, 4321, 4999):
            scanned = 0
            assert log.offset_for_timestamp(T0 + target) == target
            # A scan from the start would read `target` records.
            assert scanned < 600


def test_time_index_is_only_a_cache(tmp_path):
    rng = random.Random(3)
    timestamps = [T0 + i * 3 for i in range(200)]
    with Log(tmp_path, CFG) as log:
        append_all(log, timestamps, rng)
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".timeindex"))
    os.remove(tmp_path / names[0])
    os.truncate(tmp_path / names[1], 5)
    with open(tmp_path / names[2], "r+b") as f:
        f.write(os.urandom(24))
    with Log(tmp_path, CFG) as log:
        check_all(log, timestamps)


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.lists(st.integers(0, 50), min_size=1, max_size=8)),
            st.tuples(st.just("truncate_after"), st.integers(0, 100)),
            st.tuples(st.just("reopen"), st.just(0)),
        ),
        max_size=25,
    )
)
def test_time_lookups_agree_with_a_scan(steps):
    directory = tempfile.mkdtemp(prefix="timeidx-")
    timestamps: list[int] = []
    log = Log(directory, CFG)
    try:
        for op, arg in steps:
            if op == "append":
                assert isinstance(arg, list)
                recs = [Record(b"x" * 60, timestamp_ms=T0 + d * 10) for d in arg]
                assert log.append_batch(recs) == len(timestamps)
                timestamps += [r.timestamp_ms for r in recs]
            elif op == "truncate_after" and timestamps:
                assert isinstance(arg, int)
                keep = arg % len(timestamps)
                log.truncate_after(keep)
                del timestamps[keep + 1 :]
            elif op == "reopen":
                log.close()
                log = Log(directory, CFG)
            if timestamps:
                check_all(log, timestamps)
    finally:
        log.close()
        shutil.rmtree(directory)


def time_index_entries(path: str) -> list[tuple[int, int]]:
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) % TIME_ENTRY_WIDTH == 0
    return list(TIME_ENTRY.iter_unpack(data))


def test_time_index_stays_whole_through_truncate_after(tmp_path, monkeypatch):
    """Single-record appends, a suffix drop, more appends, a reopen: the time index on
    disk is still one valid run of entries, so lookups after reopen stay short."""
    cfg = LogConfig(
        max_store_bytes=1 << 20,
        max_index_bytes=INDEX_ENTRY_WIDTH * 10_000,
        max_record_bytes=256,
        time_index_interval_bytes=200,
    )
    with Log(tmp_path, cfg) as log:
        for i in range(1000):
            log.append(b"r" * 20, timestamp_ms=T0 + i)
        # Near the end: entries not yet written out fall below the cut.
        log.truncate_after(997)
        for i in range(998, 3000):
            log.append(b"r" * 20, timestamp_ms=T0 + i)
    entries = time_index_entries(str(tmp_path / f"{0:020d}.timeindex"))
    assert len(entries) > 100
    rels = [rel for _, rel in entries]
    wms = [wm for wm, _ in entries]
    assert rels == sorted(set(rels)), "time index entries out of order (a hole or a stale run)"
    assert wms == sorted(wms)
    assert rels[-1] < 3000

    scanned = 0
    real = Segment.read_range

    def counting(self: Segment, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        nonlocal scanned
        out = real(self, offset, max_records, max_bytes)
        scanned += len(out)
        return out

    monkeypatch.setattr(Segment, "read_range", counting)
    with Log(tmp_path, cfg) as log:
        for target in (650, 990, 2500, 2999):
            scanned = 0
            assert log.offset_for_timestamp(T0 + target) == target
            assert scanned < 600

"""Idempotent producers in the storage engine: the rules, and the table surviving restarts
and kill -9 with the records it describes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyproglog.log import (
    Duplicate,
    DuplicateInFlight,
    Log,
    LogConfig,
    OutOfOrderSequence,
    Record,
    SyncPolicy,
    Write,
)
from pyproglog.log.producers import LINE_SIZE, WINDOW, ProducerBatch, ProducerTable

P, Q = 0x1234, 0x5678


def recs(*values: bytes) -> list[Record]:
    return [Record(v) for v in values]


def append(log: Log, *writes: Write) -> list[object]:
    """Plan and append like a single node's commit log: per write, its offset, a
    Duplicate or the error."""
    plan = log.plan(writes)
    first = log.append_batch(plan.records, producers=plan.batches) if plan.records else 0
    return [first + o if isinstance(o, int) else o for o in plan.outcomes]


def test_a_producer_starts_at_zero_and_goes_one_by_one(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        (gap,) = append(log, Write(recs(b"a"), P, 1))
        assert isinstance(gap, OutOfOrderSequence) and gap.expected == 0
        assert append(log, Write(recs(b"a", b"b"), P, 0)) == [0]
        assert append(log, Write(recs(b"c"), P, 1)) == [2]
        (skip,) = append(log, Write(recs(b"e"), P, 3))
        assert isinstance(skip, OutOfOrderSequence) and (skip.sequence, skip.expected) == (3, 2)
        assert log.next_offset == 3  # nothing refused was written


def test_a_retry_is_answered_with_the_first_offsets(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        assert append(log, Write(recs(b"a", b"b"), P, 0), Write(recs(b"x"))) == [0, 2]
        assert append(log, Write(recs(b"c"), P, 1)) == [3]
        assert append(log, Write(recs(b"a", b"b"), P, 0), Write(recs(b"c"), P, 1)) == [
            Duplicate(0),
            Duplicate(3),
        ]
        assert log.next_offset == 4


def test_writes_of_one_append_are_decided_in_order(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        got = append(
            log,
            Write(recs(b"a"), P, 0),
            Write(recs(b"b"), Q, 0),
            Write(recs(b"c"), P, 1),
            Write(recs(b"a"), P, 0),  # the same append's own batch, sent twice
            Write(recs(b"z"), P, 5),
        )
        assert got[:4] == [0, 1, 2, 0]
        assert isinstance(got[4], OutOfOrderSequence) and got[4].expected == 2
        assert log.next_offset == 3


def test_a_duplicate_not_yet_committed_is_in_flight(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        append(log, Write(recs(b"a"), P, 0))
        plan = log.plan([Write(recs(b"a"), P, 0)], committed_end=0)
        assert isinstance(plan.outcomes[0], DuplicateInFlight)
        assert log.plan([Write(recs(b"a"), P, 0)], committed_end=1).outcomes == [Duplicate(0)]


def test_only_the_last_window_of_batches_is_remembered(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        for seq in range(WINDOW + 1):
            append(log, Write(recs(b"%d" % seq), P, seq))
        assert append(log, Write(recs(b"1"), P, 1)) == [Duplicate(1)]
        (old,) = append(log, Write(recs(b"0"), P, 0))
        assert isinstance(old, OutOfOrderSequence) and old.expected == WINDOW + 1


def test_idle_producers_expire_by_the_entries_time() -> None:
    table = ProducerTable(expiry_ms=1000, max_producers=2)
    table.add(ProducerBatch(P, 0, 0, 1), 0, 0, stamp_ms=10_000)
    table.add(ProducerBatch(Q, 0, 0, 1), 1, 0, stamp_ms=10_500)
    assert len(table) == 2
    table.add(ProducerBatch(Q, 1, 0, 1), 2, 0, stamp_ms=11_200)  # P idle for 1.2 s: gone
    assert len(table) == 1
    with pytest.raises(OutOfOrderSequence):
        table.held(P, 1)
    table.add(ProducerBatch(P, 0, 0, 1), 3, 0, stamp_ms=11_300)
    table.add(ProducerBatch(3, 0, 0, 1), 4, 0, stamp_ms=11_300)  # over max: the oldest goes
    assert len(table) == 2
    assert table.held(P, 0) is not None and table.held(3, 0) is not None


def test_the_table_is_rebuilt_from_the_file_on_open(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        append(log, Write(recs(b"a"), P, 0), Write(recs(b"b"), Q, 0))
        append(log, Write(recs(b"c"), P, 1))
    with Log(tmp_path) as log:
        assert append(log, Write(recs(b"c"), P, 1), Write(recs(b"b"), Q, 0)) == [
            Duplicate(2),
            Duplicate(1),
        ]
        assert append(log, Write(recs(b"d"), P, 2)) == [3]


def test_lines_past_the_log_and_a_torn_line_are_cut_on_open(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        append(log, Write(recs(b"a"), P, 0))
        append(log, Write(recs(b"b"), P, 1))
    # What a kill -9 between the line and the store write leaves: a line for
    # records that are not there (here: offset 1 cut off the log), then a torn one.
    with Log(tmp_path) as log:
        log.truncate_after(0)
    path = tmp_path / "producers"
    whole = path.read_bytes()
    assert len(whole) % 48 == 0 and len(whole) == 48  # truncation cut batch 1's line too
    with Log(tmp_path) as log:
        append(log, Write(recs(b"b"), P, 1))
    path.write_bytes(path.read_bytes() + b"\x01" * 20)
    with Log(tmp_path) as log:
        assert path.stat().st_size == 96
        assert append(log, Write(recs(b"b"), P, 1)) == [Duplicate(1)]


def test_truncation_and_reset_forget_what_they_drop(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        append(log, Write(recs(b"a", b"b"), P, 0))
        append(log, Write(recs(b"c"), P, 1))
        log.truncate_after(1)
        assert append(log, Write(recs(b"c2"), P, 1)) == [2]  # batch 1 is gone: appended anew
        log.reset(at_offset=10)
        (gap,) = append(log, Write(recs(b"d"), P, 2))
        assert isinstance(gap, OutOfOrderSequence) and gap.expected == 0
    with Log(tmp_path) as log:
        assert append(log, Write(recs(b"d"), P, 0)) == [10]


def test_entry_batches_are_found_by_consensus_index(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        plan = log.plan([Write(recs(b"x")), Write(recs(b"a", b"b"), P, 0)])
        first = log.append_batch(plan.records, consensus_index=7, producers=plan.batches)
        assert log.producer_batches(7, first) == [ProducerBatch(P, 0, 1, 2)]
        assert log.producer_batches(8, first) == []


_WRITER = textwrap.dedent(
    """
    import sys
    from pyproglog.log import Log, LogConfig, Record, SyncPolicy, Write
    policy = SyncPolicy(sys.argv[2])
    config = LogConfig(sync_policy=policy, max_store_bytes=64 * 1024, max_record_bytes=1024)
    log = Log(sys.argv[1], config)
    seq = {1: 0, 2: 0, 3: 0}
    n = 0
    while True:
        writes = []
        for pid in seq:
            writes.append(Write([Record(b"%d:%d:%d" % (pid, seq[pid], i)) for i in range(3)],
                                pid, seq[pid]))
            seq[pid] += 1
        plan = log.plan(writes)
        log.append_batch(plan.records, producers=plan.batches)
        n += 1
        if n == 50:
            print("ready", flush=True)
    """
)


@pytest.mark.parametrize("policy", ["interval", "always"])
def test_kill_9_while_appending_leaves_every_record_with_its_batch(
    tmp_path: Path, policy: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), policy],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        # Killed at once: the writer is in its append loop, at no chosen point.
        assert proc.stdout.readline().strip() == b"ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Log(
        tmp_path,
        LogConfig(sync_policy=SyncPolicy(policy), max_store_bytes=64 * 1024, max_record_bytes=1024),
    ) as log:
        assert log.next_offset >= 450
        records = log.read_range(0, log.next_offset, 1 << 30)
        last: dict[int, int] = {}
        for rec in records[::3]:
            pid, seq, _ = (int(x) for x in rec.value.split(b":"))
            last[pid] = seq
        # Every batch in the log is known (a retry is a duplicate, at its offsets),
        # and the next one of each producer follows it: nothing beyond the log is.
        for pid, seq in last.items():
            (dup,) = log.plan([Write(recs(b"r"), pid, seq)]).outcomes
            assert isinstance(dup, Duplicate)
            assert log.read(dup.first_offset).value == b"%d:%d:0" % (pid, seq)
            assert log.plan([Write(recs(b"n"), pid, seq + 1)]).outcomes == [0]


def test_the_file_is_rewritten_with_the_live_batches_once_it_has_grown(tmp_path: Path) -> None:
    path = tmp_path / "producers"
    batches = (1 << 20) // LINE_SIZE + 10  # past the 1 MiB the file may grow to
    with Log(tmp_path) as log:
        for seq in range(batches):
            append(log, Write(recs(b"%d" % seq), P, seq))
            if seq == 0:
                append(log, Write(recs(b"q"), Q, 0))
        # Rewritten (at least once) down to the live lines: 8 of P, 1 of Q, and
        # the appends since.
        assert path.stat().st_size < (1 << 20) // 2
        assert path.stat().st_size % LINE_SIZE == 0
    with Log(tmp_path) as log:
        last = batches - 1
        assert append(log, Write(recs(b"x"), P, last)) == [Duplicate(last + 1)]
        assert append(log, Write(recs(b"q"), Q, 0)) == [Duplicate(1)]
        (old,) = append(log, Write(recs(b"x"), P, last - WINDOW))
        assert isinstance(old, OutOfOrderSequence) and old.expected == batches

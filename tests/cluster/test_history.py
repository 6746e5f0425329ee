"""The history checker has teeth: hand-made good histories pass, each kind of bad one fails."""

from __future__ import annotations

import pytest

from pyproglog.testing.history import History, HistoryError, NodeLog, check


def log(*values: bytes, start: int = 0) -> NodeLog:
    return [(start + i, v) for i, v in enumerate(values)]


def acked(h: History, value: bytes, offset: int, key: bytes | None = None) -> None:
    h.produce(value, key).ok(offset)


def good() -> tuple[History, dict[str, NodeLog]]:
    h = History()
    acked(h, b"a", 0)
    acked(h, b"b", 1)
    h.produce(b"c").unknown("DEADLINE_EXCEEDED")  # written after all
    h.produce(b"d").unknown("UNAVAILABLE")  # lost
    h.produce(b"e").failed("INVALID_ARGUMENT")
    h.read("n2", 1, b"b")
    same = log(b"a", b"b", b"c")
    return h, {"n1": same, "n2": list(same), "n3": list(same)}


def failure(h: History, logs: dict[str, NodeLog], start_offset: int | None = 0) -> str:
    with pytest.raises(HistoryError) as err:
        check([h], logs, start_offset=start_offset)
    return str(err.value)


def test_a_good_history_passes_and_is_counted() -> None:
    h, logs = good()
    report = check([h], logs)
    assert (report.acknowledged, report.unknown_present, report.unknown_absent) == (2, 1, 1)
    assert report.reads == 1
    assert not report.duplicate_values and not report.duplicate_keys


def test_acknowledged_record_missing_on_one_node() -> None:
    h, logs = good()
    logs["n3"] = log(b"a")
    msg = failure(h, logs)
    assert "n3: acknowledged b'b' at 1, found at []" in msg


def test_acknowledged_record_at_another_offset() -> None:
    h, _ = good()
    moved = log(b"a", b"c", b"b")
    msg = failure(h, {"n1": moved, "n2": moved, "n3": moved})
    assert "acknowledged b'b' at 1, found at [2]" in msg


def test_acknowledged_record_stored_twice() -> None:
    h, _ = good()
    twice = log(b"a", b"b", b"c", b"b")
    msg = failure(h, {"n1": twice, "n2": twice, "n3": twice})
    assert "found at [1, 3]" in msg


def test_a_gap_in_offsets() -> None:
    h, _ = good()
    gap = [(0, b"a"), (1, b"b"), (3, b"c")]
    msg = failure(h, {"n1": gap})
    assert "not gap-free" in msg


def test_a_log_that_does_not_start_at_zero() -> None:
    h = History()
    acked(h, b"b", 1)
    msg = failure(h, {"n1": log(b"b", start=1)})
    assert "starts at 1, not 0" in msg
    # ... which is fine once retention may have removed the start.
    check([h], {"n1": log(b"b", start=1)}, start_offset=None)


def test_a_record_never_produced() -> None:
    h, _ = good()
    ghost = log(b"a", b"b", b"c", b"ghost")
    msg = failure(h, {"n1": ghost, "n2": ghost, "n3": ghost})
    assert "b'ghost', which was never produced" in msg


def test_nodes_that_disagree() -> None:
    h = History()
    h.produce(b"x").unknown("timeout")
    h.produce(b"y").unknown("timeout")
    msg = failure(h, {"n1": log(b"x"), "n2": log(b"y")})
    assert "n1 and n2 differ at 1 offset(s), first 0" in msg


def test_a_node_that_is_behind() -> None:
    h2 = History()
    h2.produce(b"a").unknown("timeout")
    h2.produce(b"b").unknown("timeout")
    msg = failure(h2, {"n1": log(b"a", b"b"), "n2": log(b"a")})
    assert "end at different offsets" in msg


def test_a_failed_write_that_was_written() -> None:
    h, _ = good()
    with_e = log(b"a", b"b", b"c", b"e")
    msg = failure(h, {"n1": with_e, "n2": with_e, "n3": with_e})
    assert "b'e' failed (INVALID_ARGUMENT) but is at [3]" in msg


def test_a_read_record_that_later_changed_or_vanished() -> None:
    h, logs = good()
    h.read("n1", 2, b"d")  # served d at 2; the log holds c there now
    msg = failure(h, logs)
    assert "offset 2 holds b'c', but n1 served b'd'" in msg
    h2, logs2 = good()
    h2.read("n1", 5, b"a")
    assert "offset 5 holds None" in failure(h2, logs2)


def test_unacknowledged_duplicates_are_reported_not_failed() -> None:
    h = History()
    acked(h, b"w0-0-a0", 0, key=b"w0-0")
    h.produce(b"w0-1-a0", key=b"w0-1").unknown("DEADLINE_EXCEEDED")
    acked(h, b"w0-1-a1", 2, key=b"w0-1")  # the retry
    h.produce(b"w0-2-a0", key=b"w0-2").unknown("UNAVAILABLE")
    same = log(b"w0-0-a0", b"w0-1-a0", b"w0-1-a1", b"w0-2-a0", b"w0-2-a0")
    report = check([h], {"n1": same, "n2": list(same)})
    assert report.duplicate_keys == {b"w0-1": [b"w0-1-a0", b"w0-1-a1"]}
    assert report.duplicate_values == {b"w0-2-a0": [3, 4]}


def test_histories_of_several_workers_are_merged() -> None:
    h1, h2 = History(), History()
    acked(h1, b"a", 0)
    acked(h2, b"b", 1)
    check([h1, h2], {"n1": log(b"a", b"b")})
    # b was acknowledged by the second worker only: missing it must fail the merge.
    with pytest.raises(HistoryError, match="acknowledged b'b' at 1"):
        check([h1, h2], {"n1": log(b"a")})


def test_retention_bounds_what_a_node_is_checked_for() -> None:
    h = History()
    for i, v in enumerate([b"a", b"b", b"c", b"d"]):
        acked(h, v, i)
    h.read("n1", 0, b"a")
    # n2 lost 0-1 to retention; both still agree on what they retain.
    report = check(
        [h], {"n1": log(b"a", b"b", b"c", b"d"), "n2": log(b"c", b"d", start=2)}, start_offset=None
    )
    assert report.acknowledged == 4
    # A retained offset that is wrong is still caught.
    msg = failure(
        h, {"n1": log(b"a", b"b", b"c", b"d"), "n2": log(b"c", b"x", start=2)}, start_offset=None
    )
    assert "never produced" in msg

"""Model-based: random append / read / reopen / truncate / roll sequences agree with a list."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pyproglog.log import Log, LogConfig, OffsetOutOfRange, Record
from pyproglog.log.format import FRAME_OVERHEAD, INDEX_ENTRY_WIDTH

MAX_VALUE = 120
# Tiny segments: a handful of records each, so rolls happen all the time.
CFG = LogConfig(
    max_store_bytes=400,
    max_index_bytes=INDEX_ENTRY_WIDTH * 5,
    max_record_bytes=MAX_VALUE,
    time_index_interval_bytes=100,
)

values = st.binary(max_size=MAX_VALUE)


class LogModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="logmodel-")
        self.log = Log(self.directory, CFG)
        self.lowest = 0
        # records[i] is offset lowest + i: (value, consensus index of its batch)
        self.records: list[tuple[bytes, int]] = []
        # Consensus index of the record just before `lowest` (0: none ever dropped).
        self.before = 0

    @property
    def next(self) -> int:
        return self.lowest + len(self.records)

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.directory)

    def expected(self, offset: int) -> bytes:
        return self.records[offset - self.lowest][0]

    # -- writes ------------------------------------------------------------------------

    @rule(value=values)
    def append(self, value: bytes) -> None:
        assert self.log.append(value) == self.next
        self.records.append((value, 0))

    @rule(batch=st.lists(values, min_size=1, max_size=12), cidx=st.integers(0, 2**64 - 1))
    def append_batch(self, batch: list[bytes], cidx: int) -> None:
        first = self.log.append_batch([Record(v) for v in batch], consensus_index=cidx)
        assert first == self.next
        self.records += [(v, cidx) for v in batch]

    @rule(cidx=st.integers(0, 1000))
    def append_until_roll(self, cidx: int) -> None:
        segments = self.log.info().segment_count
        for _ in range(20):
            value = b"r" * 50
            assert self.log.append_batch([Record(value)], consensus_index=cidx) == self.next
            self.records.append((value, cidx))
            cidx += 1
            if self.log.info().segment_count != segments:
                return
        pytest.fail("no roll after 20 appends")

    @rule()
    def reopen(self) -> None:
        self.log.close()
        self.log = Log(self.directory, CFG)

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        lowest = data.draw(st.integers(self.lowest - 2, self.next + 2))
        self.log.compact_before(lowest)
        new_lowest = self.log.lowest_offset
        # Whole segments only: never past `lowest` unless everything is below it.
        assert self.lowest <= new_lowest <= max(self.lowest, min(lowest, self.next))
        if new_lowest > self.lowest:
            self.before = self.records[new_lowest - self.lowest - 1][1]
        del self.records[: new_lowest - self.lowest]
        self.lowest = new_lowest

    @rule(data=st.data())
    def truncate_after(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.lowest - 3, self.next + 1))
        if offset < self.lowest - 1:
            with pytest.raises(OffsetOutOfRange):
                self.log.truncate_after(offset)
            return
        self.log.truncate_after(offset)
        del self.records[offset + 1 - self.lowest :]

    # -- reads -------------------------------------------------------------------------

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.lowest - 2, self.next + 2))
        if self.lowest <= offset < self.next:
            rec = self.log.read(offset)
            assert (rec.offset, rec.value) == (offset, self.expected(offset))
        else:
            with pytest.raises(OffsetOutOfRange, match=f"offset out of range: {offset}"):
                self.log.read(offset)

    @precondition(lambda self: self.records)
    @rule(data=st.data(), max_records=st.integers(1, 15), max_bytes=st.integers(0, 800))
    def read_range(self, data: st.DataObject, max_records: int, max_bytes: int) -> None:
        offset = data.draw(st.integers(self.lowest, self.next - 1))
        got = self.log.read_range(offset, max_records, max_bytes)
        # The longest run within both limits, and never less than one record.
        want: list[int] = []
        size = 0
        for off in range(offset, min(self.next, offset + max_records)):
            size += FRAME_OVERHEAD + len(self.expected(off))
            if want and size > max_bytes:
                break
            want.append(off)
        assert [(r.offset, r.value) for r in got] == [(o, self.expected(o)) for o in want]

    @rule(data=st.data())
    def read_range_out_of_range(self, data: st.DataObject) -> None:
        offset = data.draw(
            st.one_of(st.integers(-3, self.lowest - 1), st.integers(self.next, self.next + 3))
        )
        with pytest.raises(OffsetOutOfRange):
            self.log.read_range(offset)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        log = self.log
        info = log.info()
        assert (info.lowest_offset, info.next_offset) == (self.lowest, self.next)
        assert log.highest_offset == self.next - 1
        # An empty log still knows the entry before its first record (retention/compaction).
        assert log.last_consensus_index == (self.records[-1][1] if self.records else self.before)
        assert log.entry_before_first() == (self.before, 0)
        stores = [n for n in os.listdir(self.directory) if n.endswith(".store")]
        assert len(stores) == info.segment_count
        got = [(r.offset, r.value) for r in log.iter_records()]
        assert got == [(self.lowest + i, v) for i, (v, _) in enumerate(self.records)]


LogModel.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestLogModel = LogModel.TestCase

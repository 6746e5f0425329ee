"""The service on the CommitLog seam: consumers see committed records only.

A single node commits what it appends, so these rules only show on a log whose
commit trails its appends, as a cluster's does until a quorum has the entry.
`HeldCommitLog` is that log: a real `Log` on disk whose commit point the test
moves by hand (the replicated log moves it when a quorum acknowledges).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pyproglog.api.v1 import log_pb2
from pyproglog.log import (
    EncodedRange,
    Log,
    OffsetOutOfRange,
    Record,
)
from pyproglog.server.commitlog import CommitListener, CommitLog, LocalCommitLog
from pyproglog.server.core import LogService


class HeldCommitLog(LocalCommitLog):
    """A CommitLog whose appends are committed only when `commit()` says so.

    Appending, limits and lookups are LocalCommitLog's; what a commit point
    changes (reads, the committed end, the listeners) is overridden.
    """

    TERM = 1

    def __init__(self, log: Log) -> None:
        super().__init__(log)
        self.committed = log.next_offset
        self._listeners: list[CommitListener] = []

    def append_uncommitted(self, *values: bytes, timestamp_ms: int = 0) -> None:
        self.log.append_batch([Record(v, timestamp_ms=timestamp_ms) for v in values], term=1)

    def commit(self, end: int) -> None:
        self.committed = end
        for listener in self._listeners:
            listener(end)

    def read(self, offset: int) -> Record:
        if offset >= self.committed:
            raise OffsetOutOfRange(offset, self.log.lowest_offset, self.committed)
        return self.log.read(offset)

    def read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        records = self.log.read_range(offset, max_records, max_bytes)
        return [r for r in records if r.offset < self.committed]

    def read_encoded(self, offset: int, max_records: int, max_bytes: int) -> EncodedRange:
        return self.log.read_encoded(
            offset, max_records=max_records, max_bytes=max_bytes, end=self.committed
        )

    @property
    def committed_end(self) -> int:
        return self.committed

    def add_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        self._listeners.remove(listener)


def test_both_implementations_are_commit_logs(tmp_path: Path) -> None:
    with Log(tmp_path / "a") as a, Log(tmp_path / "b") as b:
        logs: list[CommitLog] = [LocalCommitLog(a), HeldCommitLog(b)]  # checked by mypy
        assert [log.committed_end for log in logs] == [0, 0]


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[tuple[HeldCommitLog, LogService]]:
    with Log(tmp_path / "log") as log:
        commit_log = HeldCommitLog(log)
        service = LogService(commit_log)
        service.start()
        try:
            yield commit_log, service
        finally:
            await service.close()


async def test_reads_and_state_stop_at_the_committed_end(
    held: tuple[HeldCommitLog, LogService],
) -> None:
    log, service = held
    log.append_uncommitted(b"a", b"b", b"c", timestamp_ms=1000)
    log.commit(1)

    fetched = await service.fetch(0)
    assert [r.value for r in fetched.records] == [b"a"]
    assert (fetched.next_offset, fetched.high_watermark) == (1, 1)
    encoded = await service.fetch_encoded(0)
    assert (encoded.count, encoded.next_offset, encoded.high_watermark) == (1, 1, 1)

    # At the committed end there is nothing to read yet, whatever was appended.
    at_end = await service.fetch(1)
    assert (at_end.records, at_end.next_offset, at_end.high_watermark) == ([], 1, 1)
    with pytest.raises(OffsetOutOfRange):
        await service.fetch(2)

    state = service.info()
    assert (state.commit_offset, state.next_offset, state.highest_offset) == (0, 3, 2)
    # Records 1 and 2 are stamped 1000 but not committed: not found, go to the end.
    lookup = service.offset_for_timestamp(1000)
    assert (lookup.offset, lookup.found) == (0, True)
    log.commit(0)
    assert service.info().commit_offset is None
    lookup = service.offset_for_timestamp(1000)
    assert (lookup.offset, lookup.found) == (0, False)


async def test_tailing_wakes_on_commit_not_on_append(
    held: tuple[HeldCommitLog, LogService],
) -> None:
    log, service = held
    log.append_uncommitted(b"a")
    log.commit(1)
    got: asyncio.Queue[list[bytes]] = asyncio.Queue()

    async def tail() -> None:
        async for batch in service.tail_encoded(0):
            records = log_pb2.FetchResponse.FromString(batch.data).records
            await got.put([r.value for r in records])

    task = asyncio.create_task(tail())
    try:
        assert await asyncio.wait_for(got.get(), 10) == [b"a"]
        log.append_uncommitted(b"b", b"c")
        # Appended, not committed: nothing to wait for has arrived.
        assert not await service.wait_for_offset(1, 0)
        for _ in range(10):
            await asyncio.sleep(0)
        assert got.empty()
        log.commit(3)
        assert await asyncio.wait_for(got.get(), 10) == [b"b", b"c"]
    finally:
        task.cancel()


async def test_produce_answers_the_offsets_the_commit_log_gave(
    held: tuple[HeldCommitLog, LogService],
) -> None:
    log, service = held
    appended = await service.produce([Record(b"x"), Record(b"y")])
    assert (appended.first, appended.last, list(appended.offsets)) == (0, 1, [0, 1])
    # The commit log stamps the term; the one given here is not the client's.
    log.commit(2)
    assert [r.term for r in (await service.fetch(0)).records] == [1, 1]

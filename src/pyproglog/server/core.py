"""The transport-independent service: produce with group commit, reads, tailing.

Both front ends (gRPC and the HTTP gateway) call this and only translate what
it answers: the rules (what a fetch answers as its next offset, what the
commit offset of an empty log is, what "no record at that time" answers) are
made here once, and returned as small values. The service runs on a
`CommitLog` (a single node's `LocalCommitLog`, or a cluster's replicated log)
and never sees which: every read is bounded by the committed end, and tailing
readers wake on commit. It runs on the asyncio loop that serves the front ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import operator
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from pyproglog.limits import ServiceLimits
from pyproglog.log import (
    DiskFull,
    EncodedRange,
    LogClosed,
    OffsetOutOfRange,
    Record,
    RecordLike,
    Write,
)
from pyproglog.log.format import PB_OVERHEAD
from pyproglog.server.commitlog import CommitLog, Written
from pyproglog.server.errors import InvalidArgument, ShuttingDown, record_too_large
from pyproglog.server.hooks import AppendTracer, ServiceObserver
from pyproglog.server.results import (
    Appended,
    EncodedFetch,
    Fetched,
    LogState,
    TimestampLookup,
)

__all__ = [
    "AppendTracer",
    "Appended",
    "EncodedFetch",
    "Fetched",
    "LogService",
    "LogState",
    "ServiceLimits",
    "ServiceObserver",
    "TimestampLookup",
]

_log = logging.getLogger("pyproglog.server")


_value = operator.attrgetter("value")
_timestamp = operator.attrgetter("timestamp_ms")


@dataclass(slots=True)
class _PendingProduce:
    write: Write  # the records, and an idempotent producer's id and sequence
    future: asyncio.Future[Appended]
    nbytes: int = 0
    origin: object = None  # AppendTracer.capture() of the producer, when tracing


class LogService:
    """One node's log as a service. `start()` on the serving loop; `close()` to drain."""

    def __init__(
        self,
        log: CommitLog,
        limits: ServiceLimits | None = None,
        *,
        observer: ServiceObserver | None = None,
        tracer: AppendTracer | None = None,
    ) -> None:
        self._commit_log = log
        self.limits = limits or ServiceLimits()
        self._observer = observer
        self._tracer = tracer
        self._pending: collections.deque[_PendingProduce] = collections.deque()
        self._pending_wakeup = asyncio.Event()
        self._committed = asyncio.Event()  # replaced after each notification
        self._closing = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Appends refused for a full disk since the last one that succeeded
        # (None: the disk is not full); the operator hears once per episode.
        self._disk_full_refusals: int | None = None

    @property
    def max_record_bytes(self) -> int:
        """The record size limit: the log's own, so that one limit is checked everywhere."""
        return self._commit_log.max_record_bytes

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._commit_log.add_commit_listener(self._on_commit)
        self._committer = asyncio.create_task(self._commit_loop(), name="proglog-committer")

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def begin_shutdown(self) -> None:
        """Refuse new produces and end tailing streams; in-flight produces still commit."""
        self._closing.set()
        self._wake_tailers()

    async def close(self) -> None:
        self.begin_shutdown()
        if self._committer is not None:
            self._pending_wakeup.set()
            await self._committer
            self._committer = None
        with contextlib.suppress(ValueError):
            self._commit_log.remove_commit_listener(self._on_commit)

    # -- produce ----------------------------------------------------------------

    def _validate(self, records: Sequence[RecordLike]) -> int:
        """Raise for a batch that must not be written; its value bytes otherwise."""
        if not records:
            raise InvalidArgument("a produce request needs at least one record")
        if len(records) > self.limits.max_batch_records:
            raise InvalidArgument(
                f"batch of {len(records)} records exceeds the limit of "
                f"{self.limits.max_batch_records} records"
            )
        limit = self._commit_log.max_record_bytes
        # C-speed passes over the batch; the loop below only runs to name a bad record.
        sizes = list(map(len, map(_value, records)))
        if max(sizes) <= limit and min(map(_timestamp, records)) >= 0:
            return sum(sizes)
        for i, rec in enumerate(records):
            size = len(rec.value)
            if size > limit:
                raise record_too_large(size, limit, i if len(records) > 1 else None)
            if rec.timestamp_ms < 0:
                # 0 means "now"; before the epoch is a client bug that would skew
                # time lookups and age-based retention.
                where = f"record {i}" if len(records) > 1 else "record"
                raise InvalidArgument(f"{where} has a negative timestamp_ms ({rec.timestamp_ms})")
        raise AssertionError("unreachable: a bad record was found above")

    async def produce(
        self, records: Sequence[RecordLike], *, producer_id: int = 0, sequence: int = 0
    ) -> Appended:
        """Append records atomically at contiguous offsets, once committed.

        Only `value`, `type` and `timestamp_ms` of a record are the client's:
        the log assigns the offset and the commit log stamps the term.
        Concurrent calls are coalesced into one append by the committer.
        With a `producer_id`, the records are batch `sequence` of an idempotent
        producer: a batch the log holds already is answered with its offsets
        (`duplicate`), one out of order raises OutOfOrderSequence.
        """
        nbytes = self._validate(records)
        if self._closing.is_set():
            raise ShuttingDown()
        fut: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        origin = self._tracer.capture() if self._tracer is not None else None
        item = _PendingProduce(Write(records, producer_id, sequence), fut, nbytes, origin)
        self._pending.append(item)
        self._pending_wakeup.set()
        return await fut

    async def _commit_loop(self) -> None:
        while True:
            await self._pending_wakeup.wait()
            self._pending_wakeup.clear()
            while self._pending:
                group = self._take_group()
                if group:
                    await self._commit(group)
            if self._closing.is_set() and not self._pending:
                return

    def _take_group(self) -> list[_PendingProduce]:
        group: list[_PendingProduce] = []
        count = 0
        while self._pending and (not group or count < self.limits.max_group_records):
            item = self._pending.popleft()
            if item.future.done():
                # Its caller is gone (cancelled: a deadline, a closed stream) before
                # the write began: it told its client nothing was known, so nothing is
                # written, rather than a record turning up after the client gave up.
                continue
            group.append(item)
            count += len(item.write.records)
        return group

    async def _commit(self, group: list[_PendingProduce]) -> None:
        """One append for the whole group: one fsync (`always`), one consensus entry."""
        writes = [item.write for item in group]
        total = sum(len(w.records) for w in writes)
        scope: AbstractContextManager[object] = contextlib.nullcontext()
        if self._tracer is not None:
            scope = self._tracer.append_scope(total, [item.origin for item in group])
        try:
            with scope:
                outcomes = await self._commit_log.append_writes(writes)
        except Exception as exc:  # every waiter gets the same error
            if isinstance(exc, DiskFull):
                self._on_disk_full(exc)
            for item in group:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self._disk_full_refusals is not None:
            _log.info(
                "appends work again: the disk has room (%d append(s) were refused)",
                self._disk_full_refusals,
            )
            self._disk_full_refusals = None
        appended = [
            item
            for item, o in zip(group, outcomes, strict=True)
            if isinstance(o, Written) and not o.duplicate
        ]
        if self._observer is not None and appended:
            # Counted here, once appended: a producer that stops waiting still wrote.
            count = sum(len(item.write.records) for item in appended)
            self._observer.on_append_batch(count)
            self._observer.on_produced(count, sum(item.nbytes for item in appended))
        for item, o in zip(group, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(o, Written):
                item.future.set_result(Appended(o.offset, len(item.write.records), o.duplicate))
            else:
                item.future.set_exception(o)

    def _on_disk_full(self, exc: DiskFull) -> None:
        if self._disk_full_refusals is None:
            self._disk_full_refusals = 0
            _log.error(
                "disk full: appends are refused (RESOURCE_EXHAUSTED / HTTP 507) until "
                "space is freed on the data directory's disk; reads still work. %s",
                exc,
            )
        self._disk_full_refusals += 1

    # -- notifications ------------------------------------------------------------

    def _on_commit(self, committed_end: int) -> None:
        # Called by the committing thread; hop onto the loop.
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake_tailers()
        else:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(self._wake_tailers)

    def _wake_tailers(self) -> None:
        event, self._committed = self._committed, asyncio.Event()
        event.set()

    async def wait_for_offset(self, offset: int, timeout: float | None) -> bool:
        """Wait until `offset` is committed (True) or the timeout passes / shutdown starts."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            event = self._committed  # taken before the check: no lost wake-up
            if self._commit_log.committed_end > offset:
                return True
            if self._closing.is_set():
                return False
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False

    # -- reads ------------------------------------------------------------------

    async def read_barrier(self) -> None:
        """For a linearizable read: wait until this node's reads see every write
        acknowledged before now (the cluster's ReadIndex; nothing on one node)."""
        await self._commit_log.read_barrier()

    def read(self, offset: int) -> Record:
        rec = self._commit_log.read(offset)
        if self._observer is not None:
            self._observer.on_consumed(1, len(rec.value))
        return rec

    def _consumed(self, records: list[Record]) -> list[Record]:
        if self._observer is not None and records:
            self._observer.on_consumed(len(records), sum([len(r.value) for r in records]))
        return records

    def _clamp(self, max_records: int, max_bytes: int) -> tuple[int, int]:
        lim = self.limits
        records = min(max_records or lim.default_fetch_records, lim.max_fetch_records)
        nbytes = min(max_bytes or lim.default_fetch_bytes, lim.max_fetch_bytes)
        return records, nbytes

    async def _ready_to_fetch(self, offset: int, max_wait_ms: int) -> bool:
        """Whether there is a record at `offset` to read, after waiting up to `max_wait_ms`.

        Below the lowest retained offset or past the committed end:
        OffsetOutOfRange. At the end: False once the wait is over.
        """
        lowest, end = self._commit_log.lowest_offset, self._commit_log.committed_end
        if offset < lowest or offset > end:
            raise OffsetOutOfRange(offset, lowest, end)
        if offset == end:
            wait = min(max_wait_ms, self.limits.max_wait_ms) / 1000
            return wait > 0 and await self.wait_for_offset(offset, wait)
        return True

    async def fetch(
        self, offset: int, max_records: int = 0, max_bytes: int = 0, max_wait_ms: int = 0
    ) -> Fetched:
        """Records from `offset`; waits up to `max_wait_ms` when there are none yet."""
        n, nbytes = self._clamp(max_records, max_bytes)
        records: list[Record] = []
        if await self._ready_to_fetch(offset, max_wait_ms):
            records = self._consumed(self._commit_log.read_range(offset, n, nbytes))
        return self._fetched(records, offset)

    def _fetched(self, records: list[Record], offset: int) -> Fetched:
        # The one next-offset rule: past the last record served, or where the reader was.
        nxt = records[-1].offset + 1 if records else offset
        return Fetched(records, nxt, self._commit_log.committed_end)

    async def fetch_encoded(
        self, offset: int, max_records: int = 0, max_bytes: int = 0, max_wait_ms: int = 0
    ) -> EncodedFetch:
        """`fetch`, answered with the records' stored encoding (no record objects)."""
        n, nbytes = self._clamp(max_records, max_bytes)
        if not await self._ready_to_fetch(offset, max_wait_ms):
            return EncodedFetch(b"", 0, offset, self._commit_log.committed_end)
        return self._encoded(self._read_encoded(offset, n, nbytes))

    def _read_encoded(self, offset: int, max_records: int, max_bytes: int) -> EncodedRange:
        got = self._commit_log.read_encoded(offset, max_records, max_bytes)
        if not got.count:
            # Committed, yet nothing whole to serve: read alone, the record raises
            # the error that names its damage, rather than a reader spinning here.
            self._commit_log.read(offset)
            raise RuntimeError(f"no record served at committed offset {offset}")
        return got

    def _encoded(self, got: EncodedRange) -> EncodedFetch:
        if self._observer is not None and got.count:
            # Every served record carries the same fixed-width fields around its
            # value, so the value bytes follow without looking at a record.
            self._observer.on_consumed(got.count, len(got.data) - got.count * PB_OVERHEAD)
        return EncodedFetch(got.data, got.count, got.next_offset, self._commit_log.committed_end)

    async def _until_committed(self, offset: int) -> None:
        """Return once `offset` is committed; ShuttingDown when the drain comes first."""
        while self._commit_log.committed_end <= offset:
            if self._closing.is_set() or not await self.wait_for_offset(offset, None):
                raise ShuttingDown()

    async def tail_encoded(
        self, offset: int, max_records: int = 0, max_bytes: int = 0
    ) -> AsyncIterator[EncodedFetch]:
        """Batches from `offset` on, as stored, forever: waits for new commits on a notification.

        When the server drains, it still delivers what was committed before,
        then ends (raising ShuttingDown) once the consumer has caught up: a drain
        lets in-flight reads finish like in-flight writes. The caller's send
        awaits give flow control: nothing is read ahead of a slow consumer.
        """
        n, nbytes = self._clamp(max_records, max_bytes)
        lowest = self._commit_log.lowest_offset
        if offset < lowest:
            raise OffsetOutOfRange(offset, lowest, self._commit_log.committed_end)
        while True:
            await self._until_committed(offset)
            try:
                got = self._encoded(self._read_encoded(offset, n, nbytes))
            except LogClosed:
                raise ShuttingDown() from None
            yield got
            offset = got.next_offset

    # -- state ------------------------------------------------------------------

    @property
    def committed_end(self) -> int:
        """The offset past the committed prefix (the high-water mark)."""
        return self._commit_log.committed_end

    def info(self) -> LogState:
        info = self._commit_log.info()
        committed = self._commit_log.committed_end
        empty = info.next_offset == info.lowest_offset
        return LogState(
            lowest_offset=info.lowest_offset,
            highest_offset=None if empty else info.highest_offset,
            next_offset=info.next_offset,
            segment_count=info.segment_count,
            size_bytes=info.size_bytes,
            commit_offset=committed - 1 if committed > info.lowest_offset else None,
            replication=self._commit_log.replication(),
        )

    def offset_for_timestamp(self, timestamp_ms: int) -> TimestampLookup:
        end = self._commit_log.committed_end
        offset = self._commit_log.offset_for_timestamp(timestamp_ms)
        if offset is None or offset >= end:
            # Not yet (or not yet committed): where the next committed record will be.
            return TimestampLookup(end, False)
        return TimestampLookup(offset, True)

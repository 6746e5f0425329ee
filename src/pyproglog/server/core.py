"""The transport-independent service: produce with group commit, reads, tailing.

Both front ends (gRPC and the HTTP gateway) call this; neither touches the log
directly. It runs on the asyncio loop that serves them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from pyproglog.log import (
    DiskFull,
    Log,
    LogClosed,
    LogInfo,
    OffsetOutOfRange,
    Record,
    RecordLike,
)
from pyproglog.log import RecordTooLarge as _LogRecordTooLarge
from pyproglog.log.config import SyncPolicy

_log = logging.getLogger("pyproglog.server")


class ServiceError(Exception):
    """Errors a client caused or must react to; each front end maps them to its status."""


class InvalidRecord(ServiceError):
    """Malformed input: nothing was written."""


class RecordTooLarge(InvalidRecord):
    pass


class ShuttingDown(ServiceError):
    def __init__(self) -> None:
        super().__init__("server is shutting down")


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    max_record_bytes: int = 1024 * 1024
    max_batch_records: int = 100_000
    # Per fetch/stream message: records and bytes.
    default_fetch_records: int = 1000
    max_fetch_records: int = 10_000
    default_fetch_bytes: int = 1024 * 1024
    max_fetch_bytes: int = 16 * 1024 * 1024
    max_wait_ms: int = 60_000
    # The most records one group commit appends at once.
    max_group_records: int = 50_000


class ServiceObserver(Protocol):
    """What the service reports for metrics; observability implements it, core imports none."""

    def on_produced(self, records: int, nbytes: int) -> None: ...
    def on_consumed(self, records: int, nbytes: int) -> None: ...
    def on_append_batch(self, records: int) -> None: ...


class AppendTracer(Protocol):
    """Tracing of group commits, without core knowing the tracing library.

    `capture()` runs in each producer's context and returns an opaque handle
    (its current span); `append_scope` wraps the one log append that commits
    those producers.
    """

    def capture(self) -> object: ...
    def append_scope(
        self, records: int, origins: Sequence[object]
    ) -> AbstractContextManager[object]: ...


@dataclass(slots=True)
class _PendingProduce:
    records: Sequence[RecordLike]
    future: asyncio.Future[int]
    nbytes: int = 0
    origin: object = None  # AppendTracer.capture() of the producer, when tracing


class LogService:
    """One node's log as a service. `start()` on the serving loop; `close()` to drain."""

    def __init__(
        self,
        log: Log,
        limits: ServiceLimits | None = None,
        *,
        observer: ServiceObserver | None = None,
        tracer: AppendTracer | None = None,
    ) -> None:
        self.log = log
        self.limits = limits or ServiceLimits()
        self._observer = observer
        self._tracer = tracer
        self._pending: collections.deque[_PendingProduce] = collections.deque()
        self._pending_wakeup = asyncio.Event()
        self._appended = asyncio.Event()  # replaced after each notification
        self._closing = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # fsync must not run on the loop; plain appends are page-cache writes.
        self._append_off_loop = log.config.sync_policy is SyncPolicy.ALWAYS
        # Appends refused for a full disk since the last one that succeeded
        # (None: the disk is not full); the operator hears once per episode.
        self._disk_full_refusals: int | None = None

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.log.add_listener(self._on_append)
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
            self.log.remove_listener(self._on_append)

    # -- produce ----------------------------------------------------------------

    def _validate(self, records: Sequence[RecordLike]) -> int:
        """Raise for a batch that must not be written; its value bytes otherwise."""
        if not records:
            raise InvalidRecord("a produce request needs at least one record")
        if len(records) > self.limits.max_batch_records:
            raise InvalidRecord(
                f"batch of {len(records)} records exceeds the limit of "
                f"{self.limits.max_batch_records} records"
            )
        limit = self.limits.max_record_bytes
        total = 0
        for i, rec in enumerate(records):
            size = len(rec.value)
            if size > limit:
                where = f"record {i}" if len(records) > 1 else "record"
                raise RecordTooLarge(f"{where} of {size} bytes exceeds the limit of {limit} bytes")
            if rec.timestamp_ms < 0:
                # 0 means "now"; before the epoch is a client bug that would skew
                # time lookups and age-based retention.
                where = f"record {i}" if len(records) > 1 else "record"
                raise InvalidRecord(f"{where} has a negative timestamp_ms ({rec.timestamp_ms})")
            total += size
        return total

    async def produce(self, records: Sequence[RecordLike]) -> int:
        """Append records atomically at contiguous offsets; the first offset.

        Concurrent calls are coalesced into one log append by the committer.
        """
        nbytes = self._validate(records)
        if self._closing.is_set():
            raise ShuttingDown()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        origin = self._tracer.capture() if self._tracer is not None else None
        self._pending.append(_PendingProduce(records, fut, nbytes, origin))
        self._pending_wakeup.set()
        return await fut

    async def _commit_loop(self) -> None:
        while True:
            await self._pending_wakeup.wait()
            self._pending_wakeup.clear()
            while self._pending:
                group = self._take_group()
                await self._commit(group)
            if self._closing.is_set() and not self._pending:
                return

    def _take_group(self) -> list[_PendingProduce]:
        group: list[_PendingProduce] = []
        count = 0
        while self._pending and (not group or count < self.limits.max_group_records):
            item = self._pending.popleft()
            group.append(item)
            count += len(item.records)
        return group

    async def _commit(self, group: list[_PendingProduce]) -> None:
        combined: list[RecordLike] = []
        for item in group:
            combined.extend(item.records)
        scope: AbstractContextManager[object] = contextlib.nullcontext()
        if self._tracer is not None:
            scope = self._tracer.append_scope(len(combined), [item.origin for item in group])
        try:
            # to_thread copies the context: the fsync span nests under the append span.
            with scope:
                if self._append_off_loop:
                    first = await asyncio.to_thread(self.log.append_batch, combined)
                else:
                    first = self.log.append_batch(combined)
        except Exception as exc:  # every waiter gets the same error
            if isinstance(exc, _LogRecordTooLarge):
                exc = RecordTooLarge(str(exc))
            elif isinstance(exc, DiskFull):
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
        if self._observer is not None:
            # Counted here, once appended: a producer that stops waiting still wrote.
            self._observer.on_append_batch(len(combined))
            self._observer.on_produced(len(combined), sum(item.nbytes for item in group))
        offset = first
        for item in group:
            if not item.future.done():
                item.future.set_result(offset)
            offset += len(item.records)

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

    def _on_append(self, next_offset: int) -> None:
        # Called by the appending thread; hop onto the loop.
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
        event, self._appended = self._appended, asyncio.Event()
        event.set()

    async def wait_for_offset(self, offset: int, timeout: float | None) -> bool:
        """Wait until `offset` exists (True) or the timeout passes / shutdown starts (False)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            event = self._appended  # taken before the check: no lost wake-up
            if self.log.next_offset > offset:
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

    def read(self, offset: int) -> Record:
        rec = self.log.read(offset)
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

    async def fetch(
        self, offset: int, max_records: int = 0, max_bytes: int = 0, max_wait_ms: int = 0
    ) -> list[Record]:
        """Records from `offset`; waits up to `max_wait_ms` when there are none yet.

        Below the lowest retained offset: OffsetOutOfRange. At the end: an empty
        list after the wait.
        """
        n, nbytes = self._clamp(max_records, max_bytes)
        lowest, next_offset = self.log.lowest_offset, self.log.next_offset
        if offset < lowest or offset > next_offset:
            raise OffsetOutOfRange(offset, lowest, next_offset)
        if offset == next_offset:
            wait = min(max_wait_ms, self.limits.max_wait_ms) / 1000
            if wait <= 0 or not await self.wait_for_offset(offset, wait):
                return []
        return self._consumed(self.log.read_range(offset, n, nbytes))

    async def tail(
        self, offset: int, max_records: int = 0, max_bytes: int = 0
    ) -> AsyncIterator[list[Record]]:
        """Batches from `offset` on, forever: waits for new records on a notification.

        When the server drains, it still delivers what was committed before,
        then ends (raising ShuttingDown) once the consumer has caught up: a drain
        lets in-flight reads finish like in-flight writes. The caller's send
        awaits give flow control: nothing is read ahead of a slow consumer.
        """
        n, nbytes = self._clamp(max_records, max_bytes)
        lowest = self.log.lowest_offset
        if offset < lowest:
            raise OffsetOutOfRange(offset, lowest, self.log.next_offset)
        while True:
            if self.log.next_offset <= offset:
                if self._closing.is_set() or not await self.wait_for_offset(offset, None):
                    raise ShuttingDown()
                continue
            try:
                batch = self.log.read_range(offset, n, nbytes)
            except LogClosed:
                raise ShuttingDown() from None
            yield self._consumed(batch)
            offset = batch[-1].offset + 1

    @property
    def next_offset(self) -> int:
        """The offset the next record will get (the high watermark)."""
        return self.log.next_offset

    def info(self) -> LogInfo:
        return self.log.info()

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        return self.log.offset_for_timestamp(timestamp_ms)

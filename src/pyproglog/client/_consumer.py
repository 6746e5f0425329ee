"""A consumer that rides over failovers: every record once, in offset order.

    async with AsyncClient(addrs) as client, Consumer(client, offset=0) as consumer:
        async for record in consumer:
            ...

It reads a node's batched tailing stream (ConsumeBatchStream). When the stream
breaks (the node died, drained, or the connection dropped) it asks the cluster
for its members again, backs off, and opens a stream on another node from the
next offset it has not delivered, so a reader sees no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from types import TracebackType

from pyproglog.client._aio import AsyncClient
from pyproglog.client._errors import (
    ClientError,
    DataLoss,
    DeadlineExceeded,
    OffsetOutOfRange,
    Unavailable,
)
from pyproglog.client._routing import backoff_delays
from pyproglog.client._types import FetchResult, Record

# A stream that stayed up this long before it broke counts as a recovery: the
# reconnect budget starts again.
_HEALTHY_STREAM = 5.0
DEFAULT_RECONNECT_TIMEOUT = 60.0


class Consumer:
    """`async for record in Consumer(client, ...)`: the log's records from a start, forever.

    Starts at `offset`, or at the first record stamped at or after
    `timestamp_ms`, or (neither given) at the log's lowest offset. Each stream
    message carries up to `max_records` / about `max_bytes` (0: the server's
    defaults). `position` is the next offset to deliver.

    A broken stream is resumed on another node (`client.read_node`, avoiding
    the one that failed) after a refresh and a backoff with full jitter; for up
    to `reconnect_timeout` seconds of failures in a row (None: forever), after
    which the last error is raised. Other errors end the iteration by raising:
    PermissionDenied, OffsetOutOfRange when the start is below the log's lowest
    offset, DataLoss when records not yet delivered were removed (retention)
    before a resume could read them.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        offset: int | None = None,
        timestamp_ms: int | None = None,
        max_records: int = 0,
        max_bytes: int = 0,
        reconnect_timeout: float | None = DEFAULT_RECONNECT_TIMEOUT,
    ) -> None:
        if offset is not None and timestamp_ms is not None:
            raise ValueError("give a Consumer an offset or a timestamp_ms, not both")
        if offset is not None and offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._client = client
        self._position = offset
        self._timestamp_ms = timestamp_ms
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.reconnect_timeout = reconnect_timeout
        self._node: str | None = None
        self._stream: AsyncIterator[FetchResult] | None = None
        self._stream_started = 0.0
        self._buf: tuple[Record, ...] = ()
        self._i = 0
        self._delivered = False
        self._avoid: set[str] = set()
        self._failing_since: float | None = None
        self._delays: Iterator[float] = iter(backoff_delays())
        self._closed = False

    @property
    def position(self) -> int | None:
        """The next offset to deliver; None until the start (lowest offset, or the
        timestamp's) has been looked up, on the first iteration."""
        return self._position

    @property
    def node(self) -> str | None:
        """The address of the node being read from now (None between streams)."""
        return self._node

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Record:
        # The per-record path: records of the current message, no await.
        i = self._i
        if i < len(self._buf):
            r = self._buf[i]
            self._i = i + 1
            self._position = r.offset + 1
            return r
        return await self._next_message()

    async def close(self) -> None:
        """End the stream; iterating afterwards ends at once. The client stays open."""
        self._closed = True
        self._buf, self._i = (), 0
        await self._drop_stream()

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Consumer(position={self._position}, node={self._node!r})"

    # -- streams ------------------------------------------------------------------

    async def _start_position(self) -> int:
        if self._timestamp_ms is not None:
            found = await self._client.offset_for_timestamp(self._timestamp_ms)
            return found.offset
        return (await self._client.info()).lowest_offset

    async def _next_message(self) -> Record:
        if self._closed:
            raise StopAsyncIteration
        if self._position is None:
            self._position = await self._start_position()
        while True:
            if self._stream is None:
                self._node = await self._client.read_node(avoid=self._avoid)
                self._stream = self._client.tail_batches(
                    self._position,
                    node=self._node,
                    max_records=self.max_records,
                    max_bytes=self.max_bytes,
                )
                self._stream_started = time.monotonic()
            try:
                res = await anext(self._stream)
            except StopAsyncIteration:
                err: ClientError = Unavailable(f"the stream from {self._node} ended")
            except (Unavailable, DeadlineExceeded) as exc:  # Unreachable included
                err = exc
            except OffsetOutOfRange as exc:
                if self._delivered and exc.lowest is not None and exc.lowest > self._position:
                    raise self._gap(exc.lowest, "the log now starts there") from None
                raise
            else:
                records = res.records
                if not records:
                    continue
                self._recovered()
                pos = self._position
                first = records[0].offset
                if first > pos:
                    raise self._gap(first, f"{self._node} sent that offset next")
                if first < pos:
                    # Already delivered (a resume from a node that re-sent them).
                    records = records[pos - first :]
                    if not records:
                        continue
                self._buf, self._i = records, 1
                self._position = records[0].offset + 1
                self._delivered = True
                return records[0]
            await self._resume_after(err)

    def _gap(self, at: int, why: str) -> DataLoss:
        return DataLoss(
            f"records {self._position}..{at - 1} are gone before they were delivered "
            f"(retention removed them; {why})"
        )

    def _recovered(self) -> None:
        self._failing_since = None
        self._avoid.clear()
        self._delays = iter(backoff_delays())

    async def _resume_after(self, err: ClientError) -> None:
        """The stream broke with `err`: drop it, refresh, back off (or raise when
        the failures have lasted longer than reconnect_timeout)."""
        failed = self._node
        await self._drop_stream()
        now = time.monotonic()
        if self._failing_since is None or now - self._stream_started >= _HEALTHY_STREAM:
            self._failing_since = now
        budget = self.reconnect_timeout
        if budget is not None and now - self._failing_since >= budget:
            raise err
        if failed is not None:
            self._avoid.add(failed)
        with contextlib.suppress(ClientError):
            await self._client.refresh()
        await asyncio.sleep(next(self._delays))

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._node = None
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            # Already running in another task (close() from elsewhere): its own
            # cancellation ends it.
            with contextlib.suppress(RuntimeError, ClientError):
                await aclose()

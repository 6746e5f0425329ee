"""A batching, pipelined, idempotent producer over the asyncio client.

    async with AsyncClient(addrs) as client, Producer(client) as producer:
        offset = await producer.send(b"hello")          # waits for the ack
        fut = producer.send_nowait(b"fast")             # a future of the offset
        await producer.flush()

Records are gathered into a batch, one ProduceBatch each, and up to
`max_in_flight` batches are on the wire at once. The open batch goes out when
it holds `max_batch_bytes` of values or `max_batch_records` records; when
`linger_ms` has passed since its first record and a slot on the wire is free;
or at once when an answer frees a slot and no full batch is waiting. So a
batch is not sealed while every slot is busy: it keeps growing until a slot
frees, and a backlog goes out as a few large batches rather than a queue of
small ones (the batch size follows the load), while at moderate rates each
answer sends what came in meanwhile without waiting for the linger.

An idempotent producer (the default) numbers its batches under a random
producer id, so a batch whose answer was lost can be sent again: the leader
answers a batch it already holds with its original offsets instead of
appending it twice, and refuses a batch that would land before the one it
expects (OUT_OF_ORDER_SEQUENCE), so batch n+1 is never appended before n.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType

from pyproglog.client._aio import AsyncClient
from pyproglog.client._client import RecordInput, Value
from pyproglog.client._errors import (
    BufferFull,
    ClientClosed,
    ClientError,
    DeadlineExceeded,
    InvalidArgument,
    OutOfOrderSequence,
    Unavailable,
)
from pyproglog.client._routing import backoff_delays
from pyproglog.client._types import Record

_log = logging.getLogger("pyproglog.client.producer")

# The leader remembers the last 8 batches of each producer: a batch further back
# than that cannot be recognised as a duplicate, so no more may be unacknowledged.
SERVER_WINDOW = 8
# What one ProduceBatch may carry (docs/api.md, Limits).
MAX_BATCH_RECORDS = 100_000


class _Batch:
    """Records sent, and acknowledged or failed, together."""

    __slots__ = (
        "deadline",
        "done",
        "futures",
        "last_error",
        "nbytes",
        "producer_id",
        "records",
        "running",
        "sequence",
        "timer",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.records: list[RecordInput] = []
        self.futures: list[asyncio.Future[int]] = []
        self.nbytes = 0
        self.deadline = deadline
        self.producer_id = 0
        self.sequence = 0
        self.last_error: ClientError | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.running = False  # an attempt is on the wire
        # Set once every record's future is: what flush() waits on.
        self.done: asyncio.Future[None] = loop.create_future()


def _new_producer_id() -> int:
    while True:
        pid = secrets.randbits(63)
        if pid:
            return pid


def _retriable(err: ClientError) -> bool:
    # What produce_sequenced gives up on when its time is up: the batch may or
    # may not be in the log, and a resend with the same sequence is safe.
    return isinstance(err, Unavailable | DeadlineExceeded)


class Producer:
    """Sends records in batches through `client`; see the module doc.

    `send` waits for room in the buffer, then for the record's offset;
    `submit` waits for room only and gives the future of the offset;
    `send_nowait` raises `BufferFull` when there is no room. `buffer_bytes`
    bounds the value bytes buffered or in flight. A record's future fails with
    a ClientError when its batch cannot be delivered within `delivery_timeout`
    seconds (retrying meanwhile), or is refused (InvalidArgument,
    PermissionDenied, ...); once a batch has failed, every batch after it that
    is not acknowledged yet fails too (their order could not be kept), and the
    producer goes on with a new producer id. Each such error is also logged once
    (logger `pyproglog.client.producer`), so records sent and forgotten do not
    fail silently, nor with a traceback each.

    With `idempotent=False` batches go out as plain writes: one whose outcome
    is unknown (the leader died mid-call) fails rather than risk a duplicate,
    and later batches are not held back by it.

    `close()` flushes and stops; it does not close the client.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        linger_ms: float = 5.0,
        max_batch_bytes: int = 1 << 20,
        max_batch_records: int = 10_000,
        buffer_bytes: int = 32 << 20,
        max_in_flight: int = 4,
        idempotent: bool = True,
        delivery_timeout: float = 120.0,
    ) -> None:
        if linger_ms < 0:
            raise ValueError(f"linger_ms must be >= 0, got {linger_ms}")
        if max_batch_bytes < 1 or buffer_bytes < 1:
            raise ValueError("max_batch_bytes and buffer_bytes must be positive")
        if not 1 <= max_batch_records <= MAX_BATCH_RECORDS:
            raise ValueError(f"max_batch_records must be 1..{MAX_BATCH_RECORDS}")
        if idempotent and not 1 <= max_in_flight <= SERVER_WINDOW:
            raise ValueError(
                f"max_in_flight must be 1..{SERVER_WINDOW} for an idempotent producer "
                f"(the batches the leader remembers per producer), got {max_in_flight}"
            )
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if delivery_timeout <= 0:
            raise ValueError(f"delivery_timeout must be positive, got {delivery_timeout}")
        self._client = client
        self.linger_ms = linger_ms
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_records = max_batch_records
        self.buffer_bytes = buffer_bytes
        self.max_in_flight = max_in_flight
        self.idempotent = idempotent
        self.delivery_timeout = delivery_timeout
        self._linger = linger_ms / 1000

        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffered = 0
        self._room = asyncio.Event()
        self._current: _Batch | None = None  # filling
        self._ready: deque[_Batch] = deque()  # sealed, not sent yet
        self._unacked: list[_Batch] = []  # sent (numbered), in sequence order
        self._running = 0  # attempts on the wire
        self._tasks: set[asyncio.Task[None]] = set()
        self._producer_id = _new_producer_id() if idempotent else 0
        self._next_sequence = 0
        # Resending from the earliest unacknowledged batch, one at a time, once
        # nothing is on the wire; `_renumber` first takes a new producer id.
        self._recovering = False
        self._renumber = False
        # A batch was given up: what is still on the wire ends, then a new producer id.
        self._failing: ClientError | None = None
        # Until a batch is acknowledged (first connection, after a resend) one batch
        # at a time: calls racing on a connection being set up reach the leader in
        # any order, and each one out of order costs a refusal and a resend.
        self._warm = False
        self._delays: Iterator[float] = iter(backoff_delays())
        self._logged: ClientError | None = None
        self._closed = False

    # -- public -------------------------------------------------------------------

    @property
    def producer_id(self) -> int:
        """The id batches are numbered under now (0 when not idempotent); it changes
        after a batch is given up, or when the leader has forgotten the producer."""
        return self._producer_id

    @property
    def buffered_bytes(self) -> int:
        """Value bytes accepted and not yet acknowledged or failed."""
        return self._buffered

    def send_nowait(self, value: Value, *, timestamp_ms: int = 0) -> asyncio.Future[int]:
        """Buffer a record; the future of its offset. BufferFull when there is no room."""
        if self._closed:
            raise ClientClosed()
        if type(value) is not bytes:
            value = value.encode() if isinstance(value, str) else bytes(value)
        n = len(value)
        if self._buffered + n > self.buffer_bytes:
            self._check_size(n)
            raise BufferFull(
                f"producer buffer is full: {self._buffered} of {self.buffer_bytes} bytes "
                f"waiting for acknowledgement, no room for {n} more"
            )
        return self._append(value, n, timestamp_ms)

    async def submit(self, value: Value, *, timestamp_ms: int = 0) -> asyncio.Future[int]:
        """Buffer a record, waiting for room; the future of its offset."""
        if self._closed:
            raise ClientClosed()
        if type(value) is not bytes:
            value = value.encode() if isinstance(value, str) else bytes(value)
        n = len(value)
        if self._buffered + n > self.buffer_bytes:
            self._check_size(n)
            while self._buffered + n > self.buffer_bytes:
                self._room.clear()
                await self._room.wait()
                if self._closed:
                    raise ClientClosed()
        return self._append(value, n, timestamp_ms)

    async def send(self, value: Value, *, timestamp_ms: int = 0) -> int:
        """Buffer a record, waiting for room, and wait for its offset.

        Cancelled once the record is buffered, it is still delivered: only the
        wait for its offset ends."""
        fut = await self.submit(value, timestamp_ms=timestamp_ms)
        return await fut

    async def flush(self) -> None:
        """Send what is buffered now and wait until all of it is acknowledged or failed.

        Delivery errors are on the records' futures, not raised here."""
        if self._current is not None:
            self._seal(self._current)
        pending = [b.done for b in (*self._unacked, *self._ready) if not b.done.done()]
        if pending:
            await asyncio.wait(pending)

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking records, deliver what is buffered (for up to `timeout` seconds,
        None: as long as delivery takes), then stop. What is not delivered by then
        fails with ClientClosed. The client stays open."""
        if self._closed:
            return
        self._closed = True
        self._room.set()  # senders waiting for room raise ClientClosed
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            pass
        finally:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            err = ClientClosed()
            for b in [*self._unacked, *self._ready]:
                self._fail(b, err)
            self._unacked.clear()
            self._ready.clear()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"Producer(producer_id={self._producer_id:#x}, buffered={self._buffered}, "
            f"unacknowledged={len(self._unacked)}, queued={len(self._ready)})"
        )

    # -- gathering (the per-record path: no task, no lock, one future) ------------

    def _check_size(self, n: int) -> None:
        if n > self.buffer_bytes:
            raise InvalidArgument(
                f"record of {n} bytes is larger than the producer's buffer_bytes "
                f"({self.buffer_bytes})"
            )

    def _append(self, value: bytes, n: int, timestamp_ms: int) -> asyncio.Future[int]:
        b = self._current
        if b is None or (b.nbytes + n > self.max_batch_bytes and b.records):
            if b is not None:
                self._seal(b)
            b = self._open()
        self._buffered += n
        fut: asyncio.Future[int] = self._loop.create_future()  # type: ignore[union-attr]
        b.records.append(value if not timestamp_ms else Record(value, timestamp_ms=timestamp_ms))
        b.futures.append(fut)
        b.nbytes += n
        if len(b.records) >= self.max_batch_records or b.nbytes >= self.max_batch_bytes:
            self._seal(b)
        return fut

    def _open(self) -> _Batch:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        b = _Batch(loop, time.monotonic() + self.delivery_timeout)
        b.timer = loop.call_later(self._linger, self._lingered, b)
        self._current = b
        return b

    def _lingered(self, b: _Batch) -> None:
        b.timer = None
        # With no slot free the batch stays open: the answer that frees one sends it.
        if b is self._current and self._can_send():
            self._seal(b)

    def _seal(self, b: _Batch) -> None:
        if b.timer is not None:
            b.timer.cancel()
            b.timer = None
        if b is self._current:
            self._current = None
        if not b.records:
            b.done.set_result(None)
            return
        self._ready.append(b)
        self._pump()

    # -- sending ------------------------------------------------------------------

    def _window(self) -> int:
        return self.max_in_flight if self._warm else 1

    def _can_send(self) -> bool:
        """Would a batch sealed now go on the wire at once?"""
        return (
            self._failing is None
            and not self._recovering
            and not self._ready
            and len(self._unacked) < self._window()
        )

    def _pump(self) -> None:
        """Start every attempt the state allows; called after each change."""
        if self._failing is not None:
            if self._running:
                return
            # Everything of the failed run is settled: start afresh.
            self._failing = None
            self._recovering = self._renumber = self._warm = False
            self._producer_id = _new_producer_id() if self.idempotent else 0
            self._next_sequence = 0
        if self._recovering:
            if self._running:
                return  # let every attempt end first: resends must go out in order
            if self._renumber:
                # The leader forgot this producer (idle expiry): nothing it holds
                # is ours any more, so number what is left from 0 under a new id.
                self._renumber = False
                self._producer_id = _new_producer_id()
                for i, b in enumerate(self._unacked):
                    b.producer_id, b.sequence = self._producer_id, i
                self._next_sequence = len(self._unacked)
            if self._unacked:
                self._start(self._unacked[0], next(self._delays))
                return
            self._recovering = False
        window = self._window()
        while self._ready and len(self._unacked) < window:
            b = self._ready.popleft()
            b.producer_id, b.sequence = self._producer_id, self._next_sequence
            self._next_sequence += 1
            self._unacked.append(b)
            self._start(b, 0.0)
        cur = self._current
        if cur is not None and cur.records and len(self._unacked) < window:
            # Only an attempt's end finds records in the open batch here (a seal
            # empties it first). The rule: an answer that leaves a slot free, with
            # nothing queued, sends the open batch at once, linger or not; the linger
            # seals only when a slot is free (`_lingered`). So at moderate rates a
            # record waits for the next answer or its linger, whichever comes first
            # (latency about a round trip, not the linger); under load every slot
            # stays busy and the open batch grows until one frees, so batches grow
            # with the backlog and the per-call cost is shared by more records. A
            # record that finds the pipeline idle waits out the linger for company.
            self._seal(cur)

    def _start(self, b: _Batch, delay: float) -> None:
        self._running += 1
        b.running = True
        task = asyncio.get_running_loop().create_task(self._attempt(b, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, b: _Batch, delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            remaining = b.deadline - time.monotonic()
            if remaining <= 0:
                raise b.last_error or Unavailable(
                    f"not acknowledged within the delivery timeout ({self.delivery_timeout:g}s)"
                )
            client_timeout = self._client.timeout
            timeout = remaining if client_timeout is None else min(remaining, client_timeout)
            if self.idempotent:
                ack = await self._client.produce_sequenced(
                    b.records, b.producer_id, b.sequence, timeout=timeout
                )
                base = ack.base_offset
            else:
                base = await self._client.produce_batch(b.records, timeout=timeout)
        except ClientError as exc:
            self._ended(b)
            self._failed(b, exc)
        except asyncio.CancelledError:
            self._ended(b)
            raise
        except Exception as exc:  # a bug below us: fail the batch, never hang its senders
            self._ended(b)
            self._give_up(b, ClientError(f"producer internal error: {exc!r}"))
        else:
            self._ended(b)
            self._acked(b, base)
        self._pump()

    def _ended(self, b: _Batch) -> None:
        self._running -= 1
        b.running = False

    def _acked(self, b: _Batch, base: int) -> None:
        self._delays = iter(backoff_delays())
        self._warm = True
        if b in self._unacked:
            self._unacked.remove(b)
        for i, fut in enumerate(b.futures):
            if not fut.done():
                fut.set_result(base + i)
        self._release(b)

    def _failed(self, b: _Batch, exc: ClientError) -> None:
        b.last_error = exc
        if not self.idempotent:
            self._drop(b, exc)
            return
        if self._failing is not None:
            # An earlier batch was given up while this one was on the wire.
            self._drop(b, self._failing if isinstance(exc, OutOfOrderSequence) else exc)
            return
        in_time = time.monotonic() < b.deadline
        if isinstance(exc, OutOfOrderSequence):
            earliest = min((u.sequence for u in self._unacked), default=b.sequence)
            if exc.expected_sequence > b.sequence or not in_time:
                # Either appended too long ago for the leader to say where, or the
                # batches before it never got in: this one cannot be delivered.
                self._give_up(b, exc)
            elif exc.expected_sequence < earliest:
                self._renumber = self._recovering = True
            else:
                self._recovering = True  # an earlier batch is not in yet: resend in order
            return
        if _retriable(exc) and in_time:
            self._recovering = True
            return
        self._give_up(b, exc)

    def _give_up(self, b: _Batch, exc: ClientError) -> None:
        """`b` will not be delivered; nor, in order, can anything after it."""
        self._drop(b, exc)
        if not self.idempotent:
            return
        later = ClientError(
            f"not sent: an earlier batch of producer {b.producer_id:#x} failed "
            f"({exc}), so this one could not keep its order"
        )
        self._failing = later
        # Those on the wire end by themselves: acknowledged ones are kept.
        for u in [u for u in self._unacked if not u.running]:
            self._drop(u, later)
        for r in self._ready:
            self._fail(r, later)
        self._ready.clear()
        if self._current is not None:
            cur, self._current = self._current, None
            if cur.timer is not None:
                cur.timer.cancel()
            self._fail(cur, later)

    def _drop(self, b: _Batch, exc: ClientError) -> None:
        if b in self._unacked:
            self._unacked.remove(b)
        self._fail(b, exc)

    def _fail(self, b: _Batch, exc: ClientError) -> None:
        for fut in b.futures:
            if not fut.done():
                fut.set_exception(exc)
                # Marked as seen: a fire-and-forget sender would otherwise get a
                # traceback per record from asyncio; one line per error instead.
                fut.exception()
        if exc is not self._logged:
            self._logged = exc
            _log.warning("producer %#x: records not delivered: %s", b.producer_id, exc)
        self._release(b)

    def _release(self, b: _Batch) -> None:
        self._buffered -= b.nbytes
        b.nbytes = 0
        if not b.done.done():
            b.done.set_result(None)
        self._room.set()

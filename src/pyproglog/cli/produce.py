"""`proglog produce`: lines of stdin (or the arguments) through one idempotent
`Producer`, which batches them, so a leader change neither loses nor repeats a
line; offsets printed in input order as they are acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from pyproglog.cli._client_session import (
    DEFAULT_ADDR,
    Addr,
    Direct,
    Json,
    Target,
    Timeout,
    TlsCa,
    TlsCert,
    TlsKey,
    emit_lines,
    on_terminal,
    run,
)
from pyproglog.cli.app import Opt, app, fail

if TYPE_CHECKING:
    from pyproglog.client import AsyncClient, Producer

# Large enough for throughput, small enough to stay far below the server's
# message size limit (32 MiB) whatever the line lengths.
_BATCH_MAX_BYTES = 4 * 1024 * 1024
# What one read of stdin takes: many lines of a pipe at once, one typed line as it comes.
_READ_BYTES = 1 << 16


async def _stdin_lines(fd: int) -> AsyncIterator[list[bytes]]:
    """Lines of `fd` (as bytes, without the newline), as many as each read brings.

    A read takes what is there, so a pipe gives many lines at once and a person
    typing gives each line as it is entered; the producer's linger does the
    batching.
    """
    loop = asyncio.get_running_loop()
    pending = b""
    waitable = True
    while True:
        if waitable:
            waitable = await _readable(loop, fd)
        try:
            chunk = os.read(fd, _READ_BYTES)
        except OSError as exc:
            raise fail(f"cannot read stdin: {exc.strerror}") from None
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        if lines:
            yield lines
    if pending:
        yield [pending]


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> bool:
    """Wait until `fd` has input (or its end). False when it cannot be waited on:
    a regular file, whose reads never block."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except (OSError, ValueError):
        return False
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return True


async def _arg_lines(values: list[str]) -> AsyncIterator[list[bytes]]:
    # fsencode gives back the exact bytes of arguments that are not valid UTF-8.
    yield [os.fsencode(v) for v in values]


async def _produce(
    client: AsyncClient,
    lines: AsyncIterator[list[bytes]],
    *,
    batch_size: int,
    linger_ms: float,
    delivery_timeout: float,
    json_out: bool,
) -> None:
    """Every line through one idempotent producer; offsets printed in input order."""
    from pyproglog.client import Producer

    # The producer logs each delivery failure; the command reports the first on
    # its own one line, and nothing else.
    quiet = logging.getLogger("pyproglog.client.producer")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    producer = Producer(
        client,
        linger_ms=linger_ms,
        max_batch_bytes=_BATCH_MAX_BYTES,
        max_batch_records=batch_size,
        delivery_timeout=delivery_timeout,
    )
    # A few batches beyond those on the wire: enough to keep the pipe full, few
    # enough that a record is never long in the buffer (its delivery timeout
    # runs from there) and that small records do not pile up in memory.
    stream = _ProduceStream(producer, json_out, max_unacked=2 * producer.max_in_flight * batch_size)
    feeder = asyncio.create_task(stream.feed(lines))
    done = False
    try:
        await stream.print_offsets()
        await feeder  # what reading the input raised, if anything
        await producer.close()  # every record is acknowledged by now
        done = True
    finally:
        if not done:
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder
            stream.abandon()
            # What is on the wire may still land; nothing more is sent.
            await producer.close(timeout=0)


class _ProduceStream:
    """Reads ahead of the acknowledgements, so that a pipe runs at producer speed,
    and prints the offsets in input order as their batches are acknowledged."""

    def __init__(self, producer: Producer, json_out: bool, *, max_unacked: int) -> None:
        self.producer = producer
        self.json_out = json_out
        self.terminal = on_terminal()
        self.max_unacked = max_unacked
        # The records' futures, one list per read of the input, oldest first; the
        # first `printed` of the oldest list are printed.
        self.pending: deque[list[asyncio.Future[int]]] = deque()
        self.printed = 0
        self.filling: list[asyncio.Future[int]] = []
        self.unacked = 0
        self.input_done = False
        self.arrived = asyncio.Event()  # a read's records are pending, or input ended
        self.room = asyncio.Event()  # records were printed

    async def feed(self, lines: AsyncIterator[list[bytes]]) -> None:
        from pyproglog.client import BufferFull

        producer = self.producer
        try:
            async for batch in lines:
                while self.unacked >= self.max_unacked:
                    self.room.clear()
                    await self.room.wait()
                futures: list[asyncio.Future[int]] = []
                self.filling = futures
                add, send = futures.append, producer.send_nowait
                for value in batch:
                    try:
                        add(send(value))
                    except BufferFull:
                        add(await producer.submit(value))
                self.filling = []
                if not futures:
                    continue
                self.pending.append(futures)
                self.unacked += len(futures)
                self.arrived.set()
        finally:
            self.input_done = True
            self.arrived.set()

    async def print_offsets(self) -> None:
        """Until every record is printed; raises the first failure, after printing
        the offsets before it."""
        while True:
            if not self.pending:
                if self.input_done:
                    return
                self.arrived.clear()
                await self.arrived.wait()
                continue
            head = self.pending[0][self.printed]
            if not head.done():
                await asyncio.wait((head,))
            offsets, error = self._take_acknowledged()
            _report_offsets(offsets, self.json_out, self.terminal)
            self.unacked -= len(offsets)
            self.room.set()
            if error is not None:
                raise error

    def _take_acknowledged(self) -> tuple[list[int], BaseException | None]:
        """The offsets acknowledged in order from the oldest unprinted record (all
        in one write), and the failure that stopped the run, if one did."""
        from pyproglog.client import Cancelled

        offsets: list[int] = []
        take = offsets.append
        while self.pending:
            futures = self.pending[0]
            i, n = self.printed, len(futures)
            # The per-record path of a stream: done() and result() only.
            while i < n and futures[i].done():
                try:
                    take(futures[i].result())
                except asyncio.CancelledError:
                    self.printed = i
                    return offsets, Cancelled("the record's delivery was cancelled")
                except Exception as error:
                    self.printed = i
                    return offsets, error
                i += 1
            if i < n:
                self.printed = i
                break
            self.pending.popleft()
            self.printed = 0
        return offsets, None

    def abandon(self) -> None:
        """After the first failure: the records after it fail (or land) without
        anybody asking, which asyncio would log."""
        for futures in (*self.pending, self.filling):
            for future in futures:
                future.add_done_callback(_settle)


def _settle(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


def _report_offsets(offsets: list[int], json_out: bool, terminal: bool) -> None:
    if json_out:
        emit_lines([f'{{"offset": {o}}}' for o in offsets])
    elif terminal:
        emit_lines([_offset_run(first, count) for first, count in _runs(offsets)])
    else:
        emit_lines(list(map(str, offsets)))


def _runs(offsets: list[int]) -> Iterator[tuple[int, int]]:
    """(first, count) of each stretch of consecutive offsets."""
    if not offsets:
        return
    first, count = offsets[0], 1
    for o in offsets[1:]:
        if o == first + count:
            count += 1
        else:
            yield first, count
            first, count = o, 1
    yield first, count


def _offset_run(first: int, count: int) -> str:
    if count == 1:
        return f"offset {first}"
    return f"offsets {first}-{first + count - 1} ({count} records)"


@app.command()
def produce(
    values: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="VALUE", help="Record values; none or '-' reads stdin, one record per line"
        ),
    ] = None,
    addr: Addr = DEFAULT_ADDR,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    timeout: Timeout = 5.0,
    json_out: Json = False,
    batch_size: Annotated[
        int, Opt("--batch-size", min=1, help="Records per produce request, at most")
    ] = 1000,
    linger_ms: Annotated[
        float,
        Opt("--linger-ms", min=0.0, help="How long a record waits for others to share its batch"),
    ] = 5.0,
    direct: Direct = False,
) -> None:
    """Append records; prints their offsets, in input order.

    Lines from stdin are sent as they arrive, in batches, through an
    idempotent producer: a leader change or a lost answer is retried without
    writing a line twice. --timeout bounds how long a record may take to be
    acknowledged, retries included.
    """
    from_stdin = not values or values == ["-"]
    if from_stdin and sys.stdin is None:
        raise fail("stdin is closed: give the values as arguments, or lines on stdin")
    if from_stdin and sys.stdin.isatty():
        typer.echo("proglog: reading records from stdin, one per line (Ctrl-D ends)", err=True)

    async def main(client: AsyncClient, target: Target) -> None:
        lines = _stdin_lines(sys.stdin.fileno()) if from_stdin else _arg_lines(values or [])
        await _produce(
            client,
            lines,
            batch_size=batch_size,
            linger_ms=linger_ms,
            delivery_timeout=timeout,
            json_out=json_out,
        )

    run(addr, tls_ca, tls_cert, tls_key, timeout, direct, main)

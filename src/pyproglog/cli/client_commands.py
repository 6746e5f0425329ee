"""Client commands of `proglog`: produce, consume, servers, info.

Human output on a terminal, stable line formats in pipes, JSON with --json.
Every failure is one `proglog: ...` line on stderr and exit code 1 (2 for
usage errors).

`produce` and `consume` route over a cluster (`pyproglog.client.AsyncClient`):
--addr names any node, or several comma-separated, and writes go to the leader,
reads to the followers. `produce` streams through the idempotent `Producer`, so
a leader change neither loses nor repeats a line; `consume --follow` reads
through the `Consumer`, which resumes on another node when its node goes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pyproglog.cli.app import Opt, app, fail

if TYPE_CHECKING:
    from pyproglog.client import (
        AsyncClient,
        Client,
        ClientTLS,
        LogInfo,
        Producer,
        Record,
        Server,
        Unreachable,
    )

DEFAULT_ADDR = "127.0.0.1:8400"
# Large enough for throughput, small enough to stay far below the server's
# message size limit (32 MiB) whatever the line lengths.
_BATCH_MAX_BYTES = 4 * 1024 * 1024
_FETCH_RECORDS = 1000
# What one read of stdin takes: many lines of a pipe at once, one typed line as it comes.
_READ_BYTES = 1 << 16
# consume --follow: waits between reconnection attempts.
_RETRY_FIRST = 0.1
_RETRY_MAX = 5.0
# grpc's own reconnection backoff grows to 120 s: a channel whose server came
# back would keep failing calls fast for that long. Ours bounds the wait.
# (Not grpc.min_reconnect_backoff_ms: it is also the connection timeout.)
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", int(_RETRY_FIRST * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(_RETRY_MAX * 1000)),
]

Addr = Annotated[
    str,
    Opt(
        "--addr",
        envvar="PROGLOG_ADDR",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="Server gRPC address: any node of a cluster, or several, comma-separated",
        show_default=True,
    ),
]
TlsCa = Annotated[
    Path | None,
    Opt(
        "--tls-ca",
        envvar="PROGLOG_TLS_CA",
        metavar="FILE",
        help="CA of the server certificate; turns TLS on  [default: none]",
    ),
]
TlsCert = Annotated[
    Path | None,
    Opt(
        "--tls-cert",
        envvar="PROGLOG_TLS_CERT",
        metavar="FILE",
        help="Client certificate (mutual TLS)  [default: none]",
    ),
]
TlsKey = Annotated[
    Path | None,
    Opt(
        "--tls-key",
        envvar="PROGLOG_TLS_KEY",
        metavar="FILE",
        help="Client certificate's key  [default: none]",
    ),
]
Timeout = Annotated[
    float,
    Opt(
        "--timeout",
        envvar="PROGLOG_TIMEOUT",
        min=0.001,
        help="Seconds to wait for the server",
    ),
]
Direct = Annotated[
    bool,
    Opt(
        "--direct",
        envvar="PROGLOG_DIRECT",
        help="Talk to the --addr node only, no routing: for a node reached through a "
        "port-forward or NAT, where the addresses the cluster advertises are not "
        "reachable (a follower still passes writes to the leader)",
    ),
]
Json = Annotated[bool, Opt("--json", help="One JSON object per line")]
JsonObject = Annotated[bool, Opt("--json", help="As a JSON object")]


def _addrs(addr: str) -> list[str]:
    """--addr's addresses, checked: a usage error names the bad one."""
    found = [a.strip() for a in addr.split(",") if a.strip()]
    if not found:
        raise fail(f"--addr must be HOST:PORT, got {addr!r}", 2)
    for one in found:
        if "://" in one or one.startswith("unix:"):
            continue
        host, sep, port = one.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise fail(f"--addr must be HOST:PORT, got {one!r}", 2)
    return found


def _tls(ca: Path | None, cert: Path | None, key: Path | None) -> ClientTLS | None:
    from pyproglog.client import ClientTLS

    if ca is None and cert is None and key is None:
        return None
    return ClientTLS(ca_file=ca, cert_file=cert, key_file=key)


@contextlib.contextmanager
def _one_line_errors(tls: bool, client_cert: bool) -> Iterator[None]:
    """Every client failure as one stderr line and exit code 1."""
    # grpc's C core logs TLS handshake failures on stderr at INFO level unless
    # told otherwise before grpc is first imported, which is why grpc and the
    # client are imported here and not at the top (`serve` keeps its default).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import grpc

    from pyproglog.client import ClientError, Unreachable

    try:
        yield
    except Unreachable as exc:
        raise fail(_unreachable(exc, tls, client_cert)) from None
    except ClientError as exc:
        raise fail(str(exc)) from None
    except grpc.RpcError as exc:  # the client translates these; a last line of defence
        raise fail(f"{exc.code().name}: {exc.details()}") from None
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as a killed-by-SIGPIPE
        # tool would, and keep the interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(141) from None


@contextlib.contextmanager
def _session(
    addr: str, ca: Path | None, cert: Path | None, key: Path | None, timeout: float
) -> Iterator[Client]:
    """A synchronous client for the command: of the one node given (which `info` and
    `servers` describe, also through a port-forward), or routed over several."""
    addrs = _addrs(addr)
    tls_on = ca is not None or cert is not None or key is not None
    with _one_line_errors(tls_on, cert is not None):
        from pyproglog.client import Client

        target: str | list[str] = addrs[0] if len(addrs) == 1 else addrs
        tls = _tls(ca, cert, key)
        with Client(target, tls=tls, timeout=timeout, options=_RECONNECT_OPTIONS) as client:
            yield client


@dataclass(frozen=True)
class _Target:
    """How the async commands reach the cluster."""

    addrs: list[str]
    tls: ClientTLS | None
    timeout: float
    direct: bool

    def client(self, node: str | None = None) -> AsyncClient:
        """The command's client (routed unless --direct), or a direct one of `node`."""
        from pyproglog.client import AsyncClient

        if node is not None or self.direct:
            target = node if node is not None else self.addrs[0]
            return AsyncClient(
                target,
                tls=self.tls,
                timeout=self.timeout,
                options=_RECONNECT_OPTIONS,
                routing=False,
            )
        return AsyncClient(
            self.addrs, tls=self.tls, timeout=self.timeout, options=_RECONNECT_OPTIONS, routing=True
        )


def _run(
    addr: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    timeout: float,
    direct: bool,
    main: Callable[[AsyncClient, _Target], Coroutine[Any, Any, None]],
) -> None:
    """Run `main(client, target)` on an event loop, failures as one stderr line."""
    addrs = _addrs(addr)
    if direct and len(addrs) > 1:
        raise fail("--direct talks to one node: give --addr a single HOST:PORT", 2)
    tls_on = ca is not None or cert is not None or key is not None
    with _one_line_errors(tls_on, cert is not None):
        target = _Target(addrs, _tls(ca, cert, key), timeout, direct)

        async def session() -> None:
            async with target.client() as client:
                await main(client, target)

        from pyproglog.client import Unreachable

        try:
            asyncio.run(session())
        except Unreachable as exc:
            failed = {a.rpartition(":")[0] for a in exc.addr.split(", ")}
            if (
                direct
                or exc.tls_problem is not None
                or failed & {a.rpartition(":")[0] for a in addrs}
            ):
                raise
            # Only hosts the cluster gave failed, none of --addr's: a port-forward, typically.
            raise fail(
                f"{exc} (an address the cluster advertises: if it cannot be reached from "
                "here, as through a port-forward or NAT, pass --direct)"
            ) from None


def _unreachable(exc: Unreachable, tls: bool, client_cert: bool) -> str:
    """What a person can act on when there is no connection, TLS failures above all."""
    addr = exc.addr
    problem = exc.tls_problem
    if problem == "plaintext_server":
        return f"the server at {addr} does not use TLS: drop --tls-ca, --tls-cert and --tls-key"
    if problem == "untrusted_server":
        return (
            f"the server at {addr} presented a certificate that --tls-ca does not verify "
            f"({exc.tls_detail}): pass the CA that signed the server's certificate"
        )
    if problem == "handshake_closed":
        # grpc reports only that the server hung up; which side disagrees
        # follows from what this client sent.
        if not tls:
            return (
                f"the server at {addr} closed the connection: "
                "if it uses TLS, pass --tls-ca (and --tls-cert/--tls-key if it requires them)"
            )
        if client_cert:
            return (
                f"the server at {addr} refused the TLS handshake: check that your client "
                "certificate is valid (not expired) and signed by the server's CA"
            )
        return (
            f"the server at {addr} refused the TLS handshake: it requires a client "
            "certificate (pass --tls-cert and --tls-key)"
        )
    return str(exc)


def _emit(line: str) -> None:
    # Flushed per line so a pipe reader (or a test) sees each record as it comes.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _emit_lines(lines: Sequence[str]) -> None:
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def _on_terminal() -> bool:
    return sys.stdout.isatty()


def _note(message: str) -> None:
    sys.stderr.write(f"proglog: {message}\n")
    sys.stderr.flush()


# -- produce ------------------------------------------------------------------------


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
        self.terminal = _on_terminal()
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
        _emit_lines([f'{{"offset": {o}}}' for o in offsets])
    elif terminal:
        _emit_lines([_offset_run(first, count) for first, count in _runs(offsets)])
    else:
        _emit_lines(list(map(str, offsets)))


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

    async def main(client: AsyncClient, target: _Target) -> None:
        lines = _stdin_lines(sys.stdin.fileno()) if from_stdin else _arg_lines(values or [])
        await _produce(
            client,
            lines,
            batch_size=batch_size,
            linger_ms=linger_ms,
            delivery_timeout=timeout,
            json_out=json_out,
        )

    _run(addr, tls_ca, tls_cert, tls_key, timeout, direct, main)


# -- consume ------------------------------------------------------------------------


def _record_json(rec: Record) -> str:
    try:
        text: str | None = rec.value.decode()
    except UnicodeDecodeError:
        text = None
    return json.dumps(
        {
            "offset": rec.offset,
            "timestamp_ms": rec.timestamp_ms,
            "value": text,
            "value_base64": base64.b64encode(rec.value).decode("ascii"),
        },
        ensure_ascii=False,
    )


_ESCAPES = str.maketrans(
    {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
)


def _record_line(rec: Record) -> str:
    # One line per record whatever the value: control characters and invalid
    # UTF-8 are escaped. --json is the exact form.
    text = rec.value.decode("utf-8", "backslashreplace").translate(_ESCAPES)
    return f"{rec.offset}\t{text}"


class _Enough(Exception):
    """--max records printed."""


class _Output:
    """Prints records, and ends the command (`_Enough`) after --max of them."""

    def __init__(self, line: Callable[[Record], str], max_records: int | None) -> None:
        self.line = line
        self.left = max_records
        self._flush_due = False
        self._broken: BrokenPipeError | None = None

    def records(self, records: Sequence[Record]) -> None:
        """Print and flush: each fetched batch at once."""
        self.write(records)
        sys.stdout.flush()

    def one(self, record: Record) -> None:
        """Print one record of a stream; flushed once the stream has nothing more
        at hand (when the loop gets control back), not per record: a backlog goes
        out in large writes, a record that comes alone at once."""
        if self._broken is not None:
            raise self._broken
        self.write((record,))
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def write(self, records: Sequence[Record]) -> None:
        if self.left is not None:
            records = records[: self.left]
            self.left -= len(records)
        if records:
            sys.stdout.write("\n".join([self.line(r) for r in records]) + "\n")
        if self.left == 0:
            sys.stdout.flush()
            raise _Enough()

    def _flush(self) -> None:
        self._flush_due = False
        try:
            sys.stdout.flush()
        except BrokenPipeError as exc:  # raised on the next record, in the command
            self._broken = exc


async def _read_to_end(client: AsyncClient, target: _Target, offset: int, out: _Output) -> None:
    """From `offset` to the end of the log, then stop.

    The fetches go to one node, picked as for reads: fetches spread over the
    followers could see different ends, and one behind another would call the
    next offset out of range. When that node goes, the rest comes from another.
    """
    avoid: set[str] = set()
    while True:
        node = None if target.direct else await client.read_node(avoid)
        try:
            if node is None:
                await _fetch_to_end(client, offset, out, resumed=False)
            else:
                async with target.client(node) as reader:
                    await _fetch_to_end(reader, offset, out, resumed=bool(avoid))
            return
        except _NodeLost as lost:
            if node is None or node in avoid:
                raise lost.error from None
            avoid.add(node)
            offset = lost.offset


class _NodeLost(Exception):
    def __init__(self, error: Exception, offset: int) -> None:
        self.error, self.offset = error, offset


async def _fetch_to_end(client: AsyncClient, offset: int, out: _Output, *, resumed: bool) -> int:
    """Fetch from `offset` until the end the node answers with; where it ended. A lost
    node is `_NodeLost`, with the offset to go on from."""
    from pyproglog.client import OffsetOutOfRange, Unavailable

    while True:
        try:
            res = await client.fetch(offset, max_records=_FETCH_RECORDS)
        except Unavailable as exc:
            raise _NodeLost(exc, offset) from None
        except OffsetOutOfRange as exc:
            if resumed and exc.next_offset is not None and offset > exc.next_offset:
                return offset  # a node not as far as the one that went: past its end
            raise
        out.records(res.records)
        if not res.records or res.next_offset >= res.high_watermark:
            return res.next_offset
        offset = res.next_offset


async def _follow(client: AsyncClient, offset: int, out: _Output, reconnect_timeout: float) -> None:
    """Records from `offset` on, forever, across failovers and server restarts.

    The Consumer resumes on another node by itself when its stream drops. When
    it gives up (no node served it for `reconnect_timeout` seconds: the whole
    cluster, or the one server, is down) we say so and start it again, with
    capped exponential backoff, at the offset after the last record printed:
    no gap, no duplicate. Errors that are not about the connection
    (permission, offset out of range) still end the command.
    """
    from pyproglog.client import Consumer, DeadlineExceeded, Unavailable

    # Also proves the connection: a tail at the end of the log gets no message that would.
    end = (await client.info()).next_offset
    if offset > end:
        _note(f"waiting for offset {offset} (log ends at {end})")
    position = offset
    lost = False
    delay = _RETRY_FIRST
    while True:
        try:
            if lost:
                await client.info()
                _note("reconnected")
                lost, delay = False, _RETRY_FIRST
            consumer = Consumer(client, offset=position, reconnect_timeout=reconnect_timeout)
            async with consumer:
                async for rec in consumer:
                    out.one(rec)
                    position = rec.offset + 1
            # A Consumer never ends by itself; one that does, ended its node's stream.
        except (Unavailable, DeadlineExceeded):
            pass
        if not lost:
            _note("connection lost, reconnecting…")
            lost = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RETRY_MAX)


@app.command()
def consume(
    offset: Annotated[int, Opt("--offset", min=0, help="First offset to read")] = 0,
    follow: Annotated[
        bool, Opt("--follow", "-f", help="Keep waiting for new records (Ctrl-C stops)")
    ] = False,
    max_records: Annotated[
        int | None, Opt("--max", min=1, help="Stop after this many records  [default: no limit]")
    ] = None,
    addr: Addr = DEFAULT_ADDR,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    timeout: Timeout = 5.0,
    json_out: Json = False,
    direct: Direct = False,
) -> None:
    """Print records from an offset to the end of the log, or on with --follow.

    Human output is "OFFSET<TAB>VALUE" with newlines, tabs and invalid UTF-8
    escaped; --json gives offset, timestamp_ms, value (null when not UTF-8)
    and value_base64. On a cluster the records come from a follower (the
    leader when there is none); with --follow, from another node when that one
    goes, with no gap and no duplicate. With --follow, --timeout bounds only
    the wait for a connection.
    """
    out = _Output(_record_json if json_out else _record_line, max_records)

    async def main(client: AsyncClient, target: _Target) -> None:
        with contextlib.suppress(_Enough):
            if follow:
                await _follow(client, offset, out, timeout)
            else:
                await _read_to_end(client, target, offset, out)

    try:
        _run(addr, tls_ca, tls_cert, tls_key, timeout, direct, main)
    except KeyboardInterrupt:
        # Ctrl-C is how --follow is meant to end.
        raise typer.Exit(0) from None


# -- servers, info ------------------------------------------------------------------


# A group whose own action lists: `proglog servers [--addr ...]` keeps working
# as the plain command it was, and `proglog servers remove NODE_ID` is its sub-command.
servers_app = typer.Typer(
    name="servers",
    rich_markup_mode=None,  # as `proglog` itself: flag names never cut (see app.py)
)
app.add_typer(servers_app)


@servers_app.callback(invoke_without_command=True)
def servers(
    ctx: typer.Context,
    addr: Addr = DEFAULT_ADDR,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    timeout: Timeout = 5.0,
    json_out: JsonObject = False,
) -> None:
    """List the cluster's servers; `servers remove NODE_ID` takes a dead one out.

    Each server's id, RPC address, whether it leads, and whether it votes (a
    learner is a new member still catching up), as GetServers says. With
    --json each server is also asked for its role and term, and the leader
    for every member's replication lag (lag_entries, in Raft entries, and
    match_index); a server that does not answer is listed with
    "reachable": false and the error.
    """
    if ctx.invoked_subcommand is not None:
        return
    with _session(addr, tls_ca, tls_cert, tls_key, timeout) as client:
        found = client.get_servers()
        if json_out:
            data = _servers_state(found, tls_ca, tls_cert, tls_key, timeout)
            _emit(json.dumps({"servers": data}))
        elif _on_terminal():
            from rich.console import Console
            from rich.table import Table

            table = Table("ID", "RPC ADDRESS", "ROLE", "VOTE")
            for s in found:
                role = "[bold]leader[/]" if s.is_leader else "follower"
                table.add_row(s.id, s.rpc_addr, role, _vote(s))
            Console().print(table)
        else:
            for s in found:
                role = "leader" if s.is_leader else "follower"
                _emit(f"{s.id}\t{s.rpc_addr}\t{role}\t{_vote(s)}")


def _vote(server: Server) -> str:
    return "voter" if server.voter else "learner"


def _servers_state(
    found: list[Server],
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    timeout: float,
) -> list[dict[str, Any]]:
    """Each server's GetServers entry with its own role and term, and its lag as the
    leader reports it. Best effort: one server's failure is that server's row."""
    from concurrent.futures import ThreadPoolExecutor

    from pyproglog.client import Client, ClientError

    tls = _tls(ca, cert, key)

    def ask(server: Server) -> LogInfo | str:
        if not server.rpc_addr:
            return "its RPC address is not known yet"
        try:
            with Client(server.rpc_addr, tls=tls, timeout=timeout) as client:
                return client.info()
        except ClientError as exc:
            return str(exc)

    # In parallel: an unreachable server costs one timeout, not one per server.
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(found)))) as pool:
        answers = list(pool.map(ask, found))
    # The lag is the leader's view; the newest term wins if two claim the role.
    leaders = [a for a in answers if not isinstance(a, str) and a.role == "leader"]
    leader = max(leaders, key=lambda a: a.term, default=None)
    replicas = {r.id: r for r in leader.replicas} if leader is not None else {}
    rows: list[dict[str, Any]] = []
    for server, answer in zip(found, answers, strict=True):
        row: dict[str, Any] = {
            "id": server.id,
            "rpc_addr": server.rpc_addr,
            "is_leader": server.is_leader,
            "voter": server.voter,
        }
        if isinstance(answer, str):
            row |= {"reachable": False, "error": answer, "role": None, "term": None}
        else:
            row |= {"reachable": True, "role": answer.role, "term": answer.term}
        replica = replicas.get(server.id)
        row["lag_entries"] = replica.lag_entries if replica is not None else None
        row["match_index"] = replica.match_index if replica is not None else None
        rows.append(row)
    return rows


@servers_app.command("remove")
def remove_server(
    name: Annotated[str, typer.Argument(metavar="NODE_ID", help="The member's node name")],
    addr: Addr = DEFAULT_ADDR,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    timeout: Timeout = 10.0,
) -> None:
    """Remove a member from the cluster for good (a node that died with its disk).

    Any member takes the request and passes it to the leader. A node that only
    stopped stays a member and rejoins as it was: it needs no removal. With
    ACLs on, this needs the `admin` action.
    """
    with _session(addr, tls_ca, tls_cert, tls_key, timeout) as client:
        import grpc  # after _session: it quiets grpc's C core first

        from pyproglog.client import ClientError

        try:
            client.remove_server(name)
        except ClientError as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # A plain `proglog serve` does not serve the peer service at all.
            raise fail(f"the server at {addr} is a single node, not a cluster member") from None
    _emit(f"removed {name} from the cluster")


def _info_fields(info: LogInfo) -> dict[str, Any]:
    return {
        "lowest_offset": info.lowest_offset,
        "highest_offset": info.highest_offset,
        "next_offset": info.next_offset,
        "empty": info.empty,
        "commit_offset": info.commit_offset,
        "segment_count": info.segment_count,
        "size_bytes": info.size_bytes,
        "role": info.role,
        "term": info.term,
        "leader_id": info.leader_id,
        "leader_addr": info.leader_addr,
    }


def _replicas(info: LogInfo) -> list[dict[str, Any]]:
    return [
        {
            "id": r.id,
            "rpc_addr": r.rpc_addr,
            "voter": r.voter,
            "match_index": r.match_index,
            "lag_entries": r.lag_entries,
        }
        for r in info.replicas
    ]


def _plain(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@app.command()
def info(
    addr: Addr = DEFAULT_ADDR,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    timeout: Timeout = 5.0,
    json_out: JsonObject = False,
) -> None:
    """Show the log's offsets, segments and size (highest is null when empty), and the
    node's role, term and leader (with --json, on the leader, every replica's lag)."""
    with _session(addr, tls_ca, tls_cert, tls_key, timeout) as client:
        got = client.info()
        fields = _info_fields(got)
        if json_out:
            _emit(json.dumps({**fields, "replicas": _replicas(got)}))
        elif _on_terminal():
            from rich.console import Console
            from rich.table import Table

            table = Table(show_header=False, box=None)
            for key, value in fields.items():
                if value is None:
                    shown = "none" if key.startswith("leader") else "none (the log is empty)"
                else:
                    shown = _plain(value)
                table.add_row(key.replace("_", " "), shown)
            Console().print(table)
        else:
            for key, value in fields.items():
                _emit(f"{key}\t{_plain(value)}")

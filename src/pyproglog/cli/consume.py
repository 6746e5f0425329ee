"""`proglog consume`: records from an offset to the end of the log, read from one
node (a follower on a cluster), or on with --follow through the `Consumer`,
which resumes on another node when its node goes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from pyproglog.cli._client_session import (
    DEFAULT_ADDR,
    RETRY_FIRST,
    RETRY_MAX,
    Addr,
    Direct,
    Json,
    Target,
    Timeout,
    TlsCa,
    TlsCert,
    TlsKey,
    note,
    run,
)
from pyproglog.cli.app import Opt, app

if TYPE_CHECKING:
    from pyproglog.client import AsyncClient, Record

_FETCH_RECORDS = 1000


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


async def _read_to_end(client: AsyncClient, target: Target, offset: int, out: _Output) -> None:
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
        note(f"waiting for offset {offset} (log ends at {end})")
    position = offset
    lost = False
    delay = RETRY_FIRST
    while True:
        try:
            if lost:
                await client.info()
                note("reconnected")
                lost, delay = False, RETRY_FIRST
            consumer = Consumer(client, offset=position, reconnect_timeout=reconnect_timeout)
            async with consumer:
                async for rec in consumer:
                    out.one(rec)
                    position = rec.offset + 1
            # A Consumer never ends by itself; one that does, ended its node's stream.
        except (Unavailable, DeadlineExceeded):
            pass
        if not lost:
            note("connection lost, reconnecting…")
            lost = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


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

    async def main(client: AsyncClient, target: Target) -> None:
        with contextlib.suppress(_Enough):
            if follow:
                await _follow(client, offset, out, timeout)
            else:
                await _read_to_end(client, target, offset, out)

    try:
        run(addr, tls_ca, tls_cert, tls_key, timeout, direct, main)
    except KeyboardInterrupt:
        # Ctrl-C is how --follow is meant to end.
        raise typer.Exit(0) from None

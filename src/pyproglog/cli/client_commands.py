"""Client commands of `proglog`: produce, consume, servers, info.

Human output on a terminal, stable line formats in pipes, JSON with --json.
Every failure is one `proglog: ...` line on stderr and exit code 1 (2 for
usage errors).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pyproglog.cli.app import Opt, app, fail

if TYPE_CHECKING:
    from pyproglog.client import Client, LogInfo, Record, Server, Unreachable

DEFAULT_ADDR = "127.0.0.1:8400"
# Large enough for throughput, small enough to stay far below the server's
# message size limit (32 MiB) whatever the line lengths.
_BATCH_MAX_BYTES = 4 * 1024 * 1024
_FETCH_RECORDS = 1000
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
        metavar="HOST:PORT",
        help="Server gRPC address",
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
Json = Annotated[bool, Opt("--json", help="One JSON object per line")]
JsonObject = Annotated[bool, Opt("--json", help="As a JSON object")]


@contextlib.contextmanager
def _session(
    addr: str, ca: Path | None, cert: Path | None, key: Path | None, timeout: float
) -> Iterator[Client]:
    """A client for the command, turning every failure into one stderr line."""
    if "://" not in addr and not addr.startswith("unix:"):
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise fail(f"--addr must be HOST:PORT, got {addr!r}", 2)
    # grpc's C core logs TLS handshake failures on stderr at INFO level unless
    # told otherwise before grpc is first imported, which is why grpc and the
    # client are imported here and not at the top (`serve` keeps its default).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import grpc

    from pyproglog.client import Client, ClientError, ClientTLS, Unreachable

    tls = None
    try:
        if ca is not None or cert is not None or key is not None:
            tls = ClientTLS(ca_file=ca, cert_file=cert, key_file=key)
        with Client(addr, tls=tls, timeout=timeout, options=_RECONNECT_OPTIONS) as client:
            yield client
    except Unreachable as exc:
        raise fail(_unreachable(exc, tls is not None, cert is not None)) from None
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


def _on_terminal() -> bool:
    return sys.stdout.isatty()


# -- produce ------------------------------------------------------------------------


def _stdin_batches(batch_size: int) -> Iterator[list[bytes]]:
    """Lines of stdin (as bytes, without the newline) in batches.

    A batch is sent when full or when no more input is ready, so interactive
    input and `tail -f | proglog produce` are sent line by line instead of
    waiting for a full batch.
    """
    fd = sys.stdin.fileno()
    pending = b""
    batch: list[bytes] = []
    size = 0
    eof = False
    while not eof:
        chunk = os.read(fd, 1 << 16)
        if chunk:
            *lines, pending = (pending + chunk).split(b"\n")
        else:
            eof = True
            lines = [pending] if pending else []
        for line in lines:
            batch.append(line)
            size += len(line)
            if len(batch) >= batch_size or size >= _BATCH_MAX_BYTES:
                yield batch
                batch, size = [], 0
        if batch and (eof or not _input_ready(fd)):
            yield batch
            batch, size = [], 0


def _input_ready(fd: int) -> bool:
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):  # not selectable: assume more is coming
        return True
    return bool(readable)


def _arg_batches(values: list[str], batch_size: int) -> Iterator[list[bytes]]:
    # fsencode gives back the exact bytes of arguments that are not valid UTF-8.
    data = [os.fsencode(v) for v in values]
    for i in range(0, len(data), batch_size):
        yield data[i : i + batch_size]


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
        int, Opt("--batch-size", min=1, help="Records per produce request")
    ] = 1000,
) -> None:
    """Append records; prints their offsets."""
    from_stdin = not values or values == ["-"]
    if from_stdin and sys.stdin.isatty():
        typer.echo("proglog: reading records from stdin, one per line (Ctrl-D ends)", err=True)
    batches = _stdin_batches(batch_size) if from_stdin else _arg_batches(values or [], batch_size)
    with _session(addr, tls_ca, tls_cert, tls_key, timeout) as client:
        for batch in batches:
            first = client.produce_batch(batch)
            _report_offsets(first, len(batch), json_out)


def _report_offsets(first: int, count: int, json_out: bool) -> None:
    if json_out:
        for offset in range(first, first + count):
            _emit(json.dumps({"offset": offset}))
    elif _on_terminal():
        if count == 1:
            _emit(f"offset {first}")
        else:
            _emit(f"offsets {first}-{first + count - 1} ({count} records)")
    else:
        for offset in range(first, first + count):
            _emit(str(offset))


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


def _records(client: Client, offset: int, follow: bool) -> Generator[Record, None, None]:
    if follow:
        yield from _follow(client, offset)
        return
    # Up to the end of the log as it is now, then stop.
    while True:
        res = client.fetch(offset, max_records=_FETCH_RECORDS)
        yield from res.records
        if not res.records or res.next_offset >= res.high_watermark:
            return
        offset = res.next_offset


def _note(message: str) -> None:
    sys.stderr.write(f"proglog: {message}\n")
    sys.stderr.flush()


def _follow(client: Client, offset: int) -> Generator[Record, None, None]:
    """Records from `offset` on, forever, across server restarts.

    A lost connection (the server stopping, restarting, or the network) is
    retried with capped exponential backoff, resuming at the offset after the
    last record printed: no gap, no duplicate. Errors that are not about the
    connection (permission, offset out of range) still end the command.
    """
    from pyproglog.client import Unavailable

    next_offset = offset
    end_checked = False
    lost = False
    delay = _RETRY_FIRST
    while True:
        try:
            if lost or not end_checked:
                # Also proves the connection after a loss: a tail at the end of
                # the log gets no message that would.
                end = client.info().next_offset
                if lost:
                    _note("reconnected")
                    lost, delay = False, _RETRY_FIRST
                if next_offset > end and not end_checked:
                    _note(f"waiting for offset {next_offset} (log ends at {end})")
                end_checked = True
            for rec in client.tail(next_offset):
                next_offset = rec.offset + 1
                yield rec
            # A tail never ends by itself; a server that ends it is going away.
        except Unavailable:
            if not client.reached:
                raise  # never connected: a wrong address, not a restart
        if not lost:
            _note("connection lost, reconnecting…")
            lost = True
        time.sleep(delay)
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
) -> None:
    """Print records from an offset to the end of the log, or on with --follow.

    Human output is "OFFSET<TAB>VALUE" with newlines, tabs and invalid UTF-8
    escaped; --json gives offset, timestamp_ms, value (null when not UTF-8)
    and value_base64. With --follow, --timeout bounds only the wait for a
    connection.
    """
    line = _record_json if json_out else _record_line
    try:
        with _session(addr, tls_ca, tls_cert, tls_key, timeout) as client:
            records = _records(client, offset, follow)
            try:
                for count, rec in enumerate(records, 1):
                    _emit(line(rec))
                    if max_records is not None and count >= max_records:
                        break
            finally:
                records.close()  # cancels a tail stream before the channel closes
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

    from pyproglog.client import Client, ClientError, ClientTLS

    tls = None
    if ca is not None or cert is not None or key is not None:
        tls = ClientTLS(ca_file=ca, cert_file=cert, key_file=key)

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

"""`proglog servers` (list, `remove NODE_ID`) and `proglog info`: what the
cluster's members and a node's log say about themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pyproglog.cli._client_session import (
    DEFAULT_ADDR,
    Addr,
    JsonObject,
    Timeout,
    TlsCa,
    TlsCert,
    TlsKey,
    client_tls,
    emit,
    on_terminal,
    session,
)
from pyproglog.cli.app import app, fail

if TYPE_CHECKING:
    from pyproglog.client import LogInfo, Server


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
    with session(addr, tls_ca, tls_cert, tls_key, timeout) as client:
        found = client.get_servers()
        if json_out:
            data = _servers_state(found, tls_ca, tls_cert, tls_key, timeout)
            emit(json.dumps({"servers": data}))
        elif on_terminal():
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
                emit(f"{s.id}\t{s.rpc_addr}\t{role}\t{_vote(s)}")


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

    tls = client_tls(ca, cert, key)

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
    with session(addr, tls_ca, tls_cert, tls_key, timeout) as client:
        import grpc  # after session: it quiets grpc's C core first

        from pyproglog.client import ClientError

        try:
            client.remove_server(name)
        except ClientError as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # A plain `proglog serve` does not serve the peer service at all.
            raise fail(f"the server at {addr} is a single node, not a cluster member") from None
    emit(f"removed {name} from the cluster")


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
    with session(addr, tls_ca, tls_cert, tls_key, timeout) as client:
        got = client.info()
        fields = _info_fields(got)
        if json_out:
            emit(json.dumps({**fields, "replicas": _replicas(got)}))
        elif on_terminal():
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
                emit(f"{key}\t{_plain(value)}")

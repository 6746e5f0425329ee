"""`proglog`: run a node (`serve`) and talk to one (`produce`, `consume`, `servers`).

Errors are one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pyproglog.auth.errors import SecurityError
from pyproglog.config import ConfigError, Settings
from pyproglog.log import LogError
from pyproglog.log.config import SyncPolicy

app = typer.Typer(
    name="proglog",
    help="Proglog: a distributed commit log.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"proglog: {message}", err=True)
    return typer.Exit(code)


Opt = typer.Option


@app.callback()
def _root() -> None:
    """Proglog: a distributed commit log."""


@app.command()
def serve(
    config_file: Annotated[Path | None, Opt(help="YAML file with any of these settings")] = None,
    data_dir: Annotated[Path | None, Opt(help="Where the log lives [./proglog-data]")] = None,
    node_name: Annotated[str | None, Opt(help="Unique name in the cluster [host name]")] = None,
    bind_addr: Annotated[str | None, Opt(help="Gossip address host:port [127.0.0.1:8401]")] = None,
    rpc_port: Annotated[int | None, Opt(help="gRPC port on the bind host [8400]")] = None,
    start_join_addrs: Annotated[
        list[str] | None, Opt(help="Gossip addresses of members to join")
    ] = None,
    bootstrap: Annotated[
        bool | None, Opt("--bootstrap/--no-bootstrap", help="Start a new cluster")
    ] = None,
    acl_model_file: Annotated[Path | None, Opt(help="casbin model")] = None,
    acl_policy_file: Annotated[Path | None, Opt(help="casbin policy")] = None,
    server_tls_cert_file: Annotated[Path | None, Opt(help="Serving certificate")] = None,
    server_tls_key_file: Annotated[Path | None, Opt(help="Serving key")] = None,
    server_tls_ca_file: Annotated[
        Path | None, Opt(help="CA for client certificates (requires them)")
    ] = None,
    peer_tls_cert_file: Annotated[Path | None, Opt(help="Certificate for other nodes")] = None,
    peer_tls_key_file: Annotated[Path | None, Opt(help="Key for other nodes")] = None,
    peer_tls_ca_file: Annotated[Path | None, Opt(help="CA of other nodes")] = None,
    http_addr: Annotated[
        str | None, Opt(help="HTTP/JSON gateway host:port, '' for none [127.0.0.1:8080]")
    ] = None,
    segment_max_store_bytes: Annotated[int | None, Opt(help="Store size to roll at")] = None,
    segment_max_index_bytes: Annotated[
        int | None, Opt(help="Index size (multiple of 12) to roll at")
    ] = None,
    max_record_bytes: Annotated[int | None, Opt(help="Largest record value [1 MiB]")] = None,
    sync_policy: Annotated[
        SyncPolicy | None, Opt(help="When to fsync: never, interval, always [interval]")
    ] = None,
    sync_interval_ms: Annotated[int | None, Opt(help="fsync period for 'interval'")] = None,
    retention_bytes: Annotated[int | None, Opt(help="Delete old segments past this size")] = None,
    retention_ms: Annotated[int | None, Opt(help="Delete segments older than this")] = None,
    log_level: Annotated[str | None, Opt(help="debug, info, warning, error [info]")] = None,
    log_format: Annotated[str | None, Opt(help="auto, console or json [auto]")] = None,
    request_log_level: Annotated[
        str | None, Opt(help="Level of the one-line-per-call request log [debug]")
    ] = None,
    metrics: Annotated[
        bool | None, Opt("--metrics/--no-metrics", help="Serve /metrics on the gateway [on]")
    ] = None,
    shutdown_grace_seconds: Annotated[
        float | None, Opt(help="Time in-flight calls get on shutdown [10]")
    ] = None,
) -> None:
    """Run a Proglog node (single node with no flags, data in ./proglog-data)."""
    overrides = {k: v for k, v in locals().items() if k != "config_file"}
    try:
        settings = Settings.load(overrides, config_file)
        settings.log_config()
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    from pyproglog.agent import run

    try:
        run(settings)
    except (OSError, LogError, SecurityError) as exc:
        raise fail(str(exc)) from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# Registers produce, consume, servers and info on `app`; last, since it uses `fail`.
from pyproglog.cli import client_commands as _client_commands  # noqa: E402, F401
from pyproglog.cli.certs import certs as _certs  # noqa: E402

app.add_typer(_certs)

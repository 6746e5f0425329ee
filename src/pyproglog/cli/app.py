"""`proglog`: run a node (`serve`) and talk to one (`produce`, `consume`, `servers`).

Errors are one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import enum
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
    # Plain click help: rich's option table cuts flag names ("--server-tl…") to
    # fit a narrow terminal or a pipe; click wraps the help text instead.
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"proglog: {message}", err=True)
    return typer.Exit(code)


Opt = typer.Option

_MIB = 1024 * 1024


def _size(n: int) -> str:
    return f"{n // _MIB} MiB" if n % _MIB == 0 else f"{n / _MIB:.1f} MiB"


def _defaults() -> dict[str, str]:
    """What each `serve` setting is when no flag, variable or file sets it.

    The options themselves default to None (so env and --config-file can fill
    them), which click cannot show: the help states the Settings defaults.
    """
    fields = Settings.model_fields
    shown: dict[str, str] = {}
    for name, field in fields.items():
        value = field.default
        if isinstance(value, bool):
            shown[name] = "on" if value else "off"
        elif isinstance(value, int) and name.endswith("_bytes"):
            shown[name] = f"{value} ({_size(value)})" if value >= _MIB else str(value)
        elif isinstance(value, enum.Enum):
            shown[name] = str(value.value)
        elif value is None or value == "" or field.default_factory is not None:
            shown[name] = "none"
        else:
            shown[name] = str(value)
    shown["http_addr"] = f"{fields['http_addr'].default}; '' turns the gateway off"
    shown["node_name"] = "the host name"
    shown["data_dir"] = f"./{fields['data_dir'].default}"
    shown["bootstrap"] = "on when no --start-join-addrs"
    shown["cluster_key_file"] = "none: plaintext gossip, with a warning"
    shown["advertise_addr"] = "the --bind-addr host and --rpc-port"
    return shown


_DEFAULTS = _defaults()


def _help(name: str, text: str) -> str:
    return f"{text}  [default: {_DEFAULTS[name]}]"


def _print_version(value: bool) -> None:
    # An option callback, not the group's: the group wants a command first.
    if value:
        typer.echo(f"proglog {_version()}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        Opt(
            "--version",
            is_eager=True,
            callback=_print_version,
            expose_value=False,
            help="Print the version and exit",
        ),
    ] = False,
) -> None:
    """Proglog: a distributed commit log."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("pyproglog")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


@app.command()
def serve(
    config_file: Annotated[
        Path | None,
        Opt(metavar="FILE", help="YAML file with any of these settings (flag names as keys)"),
    ] = None,
    # A str, not a Path: typer would turn '' into '.', and config refuses ''.
    data_dir: Annotated[
        str | None, Opt(metavar="DIR", help=_help("data_dir", "Where the log lives"))
    ] = None,
    node_name: Annotated[
        str | None,
        Opt(
            metavar="NAME",
            help=_help(
                "node_name", "This server's name in the cluster and in GetServers (keep it stable)"
            ),
        ),
    ] = None,
    bind_addr: Annotated[
        str | None,
        Opt(
            metavar="HOST:PORT",
            help=_help(
                "bind_addr",
                "Gossip address (UDP and TCP; keep it stable across restarts); "
                "its host is also where gRPC listens",
            ),
        ),
    ] = None,
    rpc_port: Annotated[
        int | None,
        Opt(metavar="PORT", help=_help("rpc_port", "gRPC port on the bind host (0: any free)")),
    ] = None,
    start_join_addrs: Annotated[
        list[str] | None,
        Opt(
            metavar="HOST:PORT",
            help=_help(
                "start_join_addrs", "Gossip addresses of members to join (repeat for several)"
            ),
        ),
    ] = None,
    bootstrap: Annotated[
        bool | None,
        Opt(
            "--bootstrap/--no-bootstrap",
            help=_help("bootstrap", "Start a new cluster (ignored once the node has state)"),
        ),
    ] = None,
    cluster_key_file: Annotated[
        Path | None,
        Opt(
            metavar="FILE",
            help=_help(
                "cluster_key_file",
                "Shared key (base64, 32 bytes) gossip is encrypted with; every node needs "
                "the same one (make it with `proglog certs cluster-key`)",
            ),
        ),
    ] = None,
    leave_on_shutdown: Annotated[
        bool | None,
        Opt(
            "--leave-on-shutdown/--no-leave-on-shutdown",
            help=_help(
                "leave_on_shutdown",
                "On SIGTERM leave the cluster (removed from its configuration); without it "
                "a stopped node stays a member and rejoins on restart",
            ),
        ),
    ] = None,
    advertise_addr: Annotated[
        str | None,
        Opt(
            metavar="HOST[:PORT]",
            help=_help(
                "advertise_addr",
                "Host other nodes and clients reach this node's gRPC and gossip ports on "
                "(NAT, Kubernetes); a :PORT replaces the advertised gRPC port (a NodePort)",
            ),
        ),
    ] = None,
    gossip_profile: Annotated[
        str | None,
        Opt(
            metavar="lan|local",
            help=_help(
                "gossip_profile",
                "Gossip timing: lan (a failure is seen in 5-7 s) or local (about 1 s; "
                "loopback tests and development)",
            ),
        ),
    ] = None,
    raft_tick_ms: Annotated[
        int | None,
        Opt(metavar="MS", help=_help("raft_tick_ms", "Raft clock: milliseconds per tick")),
    ] = None,
    election_ticks: Annotated[
        int | None,
        Opt(
            metavar="TICKS",
            help=_help(
                "election_ticks",
                "Ticks without a leader before a follower campaigns (randomized up to 2x; "
                "more than --heartbeat-ticks)",
            ),
        ),
    ] = None,
    heartbeat_ticks: Annotated[
        int | None,
        Opt(metavar="TICKS", help=_help("heartbeat_ticks", "Ticks between leader heartbeats")),
    ] = None,
    acl_model_file: Annotated[
        Path | None,
        Opt(metavar="FILE", help=_help("acl_model_file", "casbin model (ACL on with a policy)")),
    ] = None,
    acl_policy_file: Annotated[
        Path | None, Opt(metavar="FILE", help=_help("acl_policy_file", "casbin policy"))
    ] = None,
    server_tls_cert_file: Annotated[
        Path | None,
        Opt(metavar="FILE", help=_help("server_tls_cert_file", "Serving certificate (PEM)")),
    ] = None,
    server_tls_key_file: Annotated[
        Path | None, Opt(metavar="FILE", help=_help("server_tls_key_file", "Serving key (PEM)"))
    ] = None,
    server_tls_ca_file: Annotated[
        Path | None,
        Opt(
            metavar="FILE",
            help=_help("server_tls_ca_file", "CA for client certificates (requires them)"),
        ),
    ] = None,
    peer_tls_cert_file: Annotated[
        Path | None,
        Opt(
            metavar="FILE",
            help=_help("peer_tls_cert_file", "Certificate this node shows other nodes"),
        ),
    ] = None,
    peer_tls_key_file: Annotated[
        Path | None,
        Opt(metavar="FILE", help=_help("peer_tls_key_file", "Key of --peer-tls-cert-file")),
    ] = None,
    peer_tls_ca_file: Annotated[
        Path | None,
        Opt(metavar="FILE", help=_help("peer_tls_ca_file", "CA of other nodes' certificates")),
    ] = None,
    http_addr: Annotated[
        str | None,
        Opt(metavar="HOST:PORT", help=_help("http_addr", "HTTP/JSON gateway and /metrics")),
    ] = None,
    segment_max_store_bytes: Annotated[
        int | None,
        Opt(metavar="BYTES", help=_help("segment_max_store_bytes", "Store size to roll at")),
    ] = None,
    segment_max_index_bytes: Annotated[
        int | None,
        Opt(
            metavar="BYTES",
            help=_help("segment_max_index_bytes", "Index size (multiple of 12) to roll at"),
        ),
    ] = None,
    max_record_bytes: Annotated[
        int | None, Opt(metavar="BYTES", help=_help("max_record_bytes", "Largest record value"))
    ] = None,
    sync_policy: Annotated[
        SyncPolicy | None, Opt(help=_help("sync_policy", "When to fsync appended records"))
    ] = None,
    sync_interval_ms: Annotated[
        int | None,
        Opt(metavar="MS", help=_help("sync_interval_ms", "fsync period for 'interval'")),
    ] = None,
    retention_bytes: Annotated[
        int | None,
        Opt(
            metavar="BYTES",
            help=_help("retention_bytes", "Delete the oldest segments past this size"),
        ),
    ] = None,
    retention_ms: Annotated[
        int | None,
        Opt(metavar="MS", help=_help("retention_ms", "Delete segments older than this")),
    ] = None,
    log_level: Annotated[
        str | None,
        Opt(metavar="debug|info|warning|error", help=_help("log_level", "Log level")),
    ] = None,
    log_format: Annotated[
        str | None,
        Opt(
            metavar="auto|console|json",
            help=_help("log_format", "Log format (auto: console on a terminal, else json)"),
        ),
    ] = None,
    request_log_level: Annotated[
        str | None,
        Opt(
            metavar="LEVEL",
            help=_help("request_log_level", "Level of the one-line-per-call request log"),
        ),
    ] = None,
    metrics: Annotated[
        bool | None,
        Opt("--metrics/--no-metrics", help=_help("metrics", "Serve /metrics on the gateway")),
    ] = None,
    shutdown_grace_seconds: Annotated[
        float | None,
        Opt(
            metavar="SECONDS",
            help=_help("shutdown_grace_seconds", "Time in-flight calls get on shutdown"),
        ),
    ] = None,
) -> None:
    """Run a Proglog node (single node with no flags, data in ./proglog-data).

    Every option can also come from a PROGLOG_<NAME> environment variable or
    the --config-file, in that order of precedence after the flags.
    """
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


# Register produce, consume, servers and info on `app`; last, since they use `fail`.
# Unsorted: `proglog --help` lists the commands in the order they are registered.
# isort: off
from pyproglog.cli import produce as _produce  # noqa: E402, F401
from pyproglog.cli import consume as _consume  # noqa: E402, F401
from pyproglog.cli import servers as _servers  # noqa: E402, F401

# isort: on
from pyproglog.cli.certs import certs as _certs  # noqa: E402

app.add_typer(_certs)

"""What the client commands (produce, consume, servers, info) share.

Human output on a terminal, stable line formats in pipes, JSON with --json.
Every failure is one `proglog: ...` line on stderr and exit code 1 (2 for
usage errors).

--addr names any node of a cluster, or several comma-separated: `run` gives
the async commands (produce, consume) a `pyproglog.client.AsyncClient` routed
over the cluster unless --direct (writes to the leader, reads to the
followers); `session` gives servers and info a synchronous `Client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pyproglog.cli.app import Opt, fail

if TYPE_CHECKING:
    from pyproglog.client import AsyncClient, Client, ClientTLS, Unreachable

DEFAULT_ADDR = "127.0.0.1:8400"
# consume --follow: waits between reconnection attempts.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0
# grpc's own reconnection backoff grows to 120 s: a channel whose server came
# back would keep failing calls fast for that long. Ours bounds the wait.
# (Not grpc.min_reconnect_backoff_ms: it is also the connection timeout.)
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", int(RETRY_FIRST * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(RETRY_MAX * 1000)),
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


def parse_addrs(addr: str) -> list[str]:
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


def client_tls(ca: Path | None, cert: Path | None, key: Path | None) -> ClientTLS | None:
    from pyproglog.client import ClientTLS

    if ca is None and cert is None and key is None:
        return None
    return ClientTLS(ca_file=ca, cert_file=cert, key_file=key)


@contextlib.contextmanager
def one_line_errors(tls: bool, client_cert: bool) -> Iterator[None]:
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
def session(
    addr: str, ca: Path | None, cert: Path | None, key: Path | None, timeout: float
) -> Iterator[Client]:
    """A synchronous client for the command: of the one node given (which `info` and
    `servers` describe, also through a port-forward), or routed over several."""
    addrs = parse_addrs(addr)
    tls_on = ca is not None or cert is not None or key is not None
    with one_line_errors(tls_on, cert is not None):
        from pyproglog.client import Client

        target: str | list[str] = addrs[0] if len(addrs) == 1 else addrs
        tls = client_tls(ca, cert, key)
        with Client(target, tls=tls, timeout=timeout, options=_RECONNECT_OPTIONS) as client:
            yield client


@dataclass(frozen=True)
class Target:
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


def run(
    addr: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    timeout: float,
    direct: bool,
    main: Callable[[AsyncClient, Target], Coroutine[Any, Any, None]],
) -> None:
    """Run `main(client, target)` on an event loop, failures as one stderr line."""
    addrs = parse_addrs(addr)
    if direct and len(addrs) > 1:
        raise fail("--direct talks to one node: give --addr a single HOST:PORT", 2)
    tls_on = ca is not None or cert is not None or key is not None
    with one_line_errors(tls_on, cert is not None):
        target = Target(addrs, client_tls(ca, cert, key), timeout, direct)

        async def command() -> None:
            async with target.client() as client:
                await main(client, target)

        from pyproglog.client import Unreachable

        try:
            asyncio.run(command())
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


def emit(line: str) -> None:
    # Flushed per line so a pipe reader (or a test) sees each record as it comes.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def emit_lines(lines: Sequence[str]) -> None:
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def on_terminal() -> bool:
    return sys.stdout.isatty()


def note(message: str) -> None:
    sys.stderr.write(f"proglog: {message}\n")
    sys.stderr.flush()

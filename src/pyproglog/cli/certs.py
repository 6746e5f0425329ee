"""`proglog certs`: development certificates, the files of the book's cfssl set-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pyproglog.auth.errors import SecurityError
from pyproglog.cli.app import fail

# pyproglog.auth.certs (cryptography, casbin) is imported by the commands only:
# every `proglog` invocation loads this module.

certs = typer.Typer(
    name="certs",
    help="Make development certificates: a CA, a server and client certificates.",
    no_args_is_help=True,
    rich_markup_mode=None,  # as `proglog` itself: flag names never cut (see app.py)
)

Opt = typer.Option


def _report(paths: list[Path]) -> None:
    for path in paths:
        typer.echo(f"wrote {path}")


@certs.command("init")
def init(
    out: Annotated[Path, Opt(metavar="DIR", help="Directory to write the files to")],
    hosts: Annotated[
        list[str] | None,
        Opt(
            metavar="HOST",
            help="More names or IPs server.pem is valid for (repeat, or comma-separate)",
        ),
    ] = None,
    more_hosts: Annotated[
        list[str] | None,
        # So that `--hosts a b` (the documented form) means two hosts.
        typer.Argument(metavar="HOST", help="More names or IPs, like --hosts", show_default=False),
    ] = None,
    days: Annotated[
        int | None,
        Opt(metavar="DAYS", help="Validity of every certificate, in days  [default: 365]"),
    ] = None,
    force: Annotated[bool, Opt(help="Replace an existing CA in the directory")] = False,
) -> None:
    """A CA, server.pem (localhost, 127.0.0.1, --hosts) and the root and nobody clients.

    Also writes the example ACL, model.conf and policy.csv (root may produce and
    consume, nobody nothing), unless they exist.
    """
    from pyproglog.auth.certs import DEFAULT_DAYS, init_dir

    given = [*(hosts or []), *(more_hosts or [])]
    names = [h.strip() for arg in given for h in arg.split(",") if h.strip()]
    try:
        _report(init_dir(out, names, days=DEFAULT_DAYS if days is None else days, force=force))
    except SecurityError as exc:
        raise fail(str(exc)) from None


@certs.command("client")
def client(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The subject: the certificate's common name")
    ],
    out: Annotated[Path, Opt(metavar="DIR", help="Directory with the CA (ca.pem, ca-key.pem)")],
    days: Annotated[
        int | None, Opt(metavar="DAYS", help="Validity of the certificate, in days  [default: 365]")
    ] = None,
) -> None:
    """A client certificate NAME-client.pem (and its key) signed by the CA in --out."""
    from pyproglog.auth.certs import DEFAULT_DAYS, add_client

    try:
        _report(add_client(out, name, days=DEFAULT_DAYS if days is None else days))
    except SecurityError as exc:
        raise fail(str(exc)) from None


@certs.command("cluster-key")
def cluster_key(
    out: Annotated[Path, Opt(metavar="FILE", help="File to write the key to (mode 0600)")],
    force: Annotated[bool, Opt(help="Replace an existing file")] = False,
) -> None:
    """A new gossip key for --cluster-key-file: give every node of the cluster the same file."""
    from pyproglog.discovery.keys import new_cluster_key

    try:
        _write_secret(out, (new_cluster_key() + "\n").encode("ascii"), force=force)
    except FileExistsError:
        raise fail(f"{out} exists; pass --force to replace it") from None
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {out}")


def _write_secret(path: Path, data: bytes, *, force: bool) -> None:
    """Write `data` to `path`, readable by its owner only, all or nothing.

    Durability: the bytes go to a temporary file in the same directory, created
    0600 (never briefly world-readable), fsynced, then linked (no --force: fails
    if `path` exists, even if it appeared meanwhile) or renamed over `path`, and
    the directory is fsynced. A crash at any instant leaves no file or the whole
    key, never a partial one.
    """
    import os
    import tempfile

    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

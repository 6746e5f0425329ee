"""Durable file-system steps the engine (and the cluster's small state files) build on."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["sync_directory", "write_atomic"]


def sync_directory(directory: str | os.PathLike[str]) -> None:
    """fsync a directory: the names created, renamed or removed in it are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` by `data`: the old content or the new one survives any crash."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the new bytes are on disk before the name points at them
    os.replace(tmp, target)
    sync_directory(target.parent)  # the rename itself is durable

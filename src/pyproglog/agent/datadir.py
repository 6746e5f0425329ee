"""The data directory's lock: one node per directory.

Two nodes on one directory would overwrite each other's acknowledged records,
and a node that fails to start would still cut the running node's
pre-allocated files as it closes the log (the running node then dies of
SIGBUS). So the agent takes this lock before anything else touches the
directory, and never opens the log without it.

The lock is `flock(LOCK_EX)` on `DIR/LOCK`: the kernel drops it when the
holder's descriptor closes, however the process ends (`kill -9` included), so
a stale lock file never keeps a node from restarting. The file stays in place
on exit: deleting it would let a node lock a new inode while another still
holds the old one. The holder's pid is written into it for the message a
second node prints; the lock itself does not depend on it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = "LOCK"


class StartupError(OSError):
    """The node cannot start; the message is the one line the operator sees."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class DataDirInUse(StartupError):
    pass


def _holder_pid(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
    # The holder locks before it writes its pid: a moment where the file is empty.
    return "unknown"


class DataDirLock:
    """An exclusive lock on a data directory, held until `release()` or process exit."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path) -> DataDirLock:
        """Create the directory if needed and lock it; StartupError when impossible."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StartupError(f"data directory {directory} is not a directory") from None
        except OSError as exc:
            raise StartupError(
                f"cannot create data directory {directory}: {_reason(exc)}"
            ) from None
        path = directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"cannot open {path}: {_reason(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _holder_pid(fd) if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
            os.close(fd)
            if pid is None:
                raise StartupError(f"cannot lock {path}: {_reason(exc)}") from None
            raise DataDirInUse(
                f"data directory {directory} is in use by another proglog process (pid {pid})"
            ) from None
        # Informational only (see the module doc): a full disk must not stop the node here.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(directory, fd)

    def release(self) -> None:
        """Unlock (after the log is closed); the file stays. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _reason(exc: OSError) -> str:
    """`[Errno 13] Permission denied: 'x'` -> `permission denied`."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]

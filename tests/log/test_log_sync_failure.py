"""A failed fsync: the appender hears of it and the log takes no more writes until reopened.

After fsync fails, Linux may have dropped the dirty pages and reports the error
once, so a retry that "succeeds" proves nothing. Only the OS call is made to
fail here (a real EIO cannot be produced on demand); everything else is real.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pyproglog.log import Log, LogConfig, LogWriteError, SyncPolicy


def failing_fdatasync(fd: int) -> None:
    raise OSError(errno.EIO, "Input/output error")


@pytest.mark.parametrize("batch", [False, True])
def test_failed_fsync_refuses_appends_until_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: bool
) -> None:
    config = LogConfig(sync_policy=SyncPolicy.ALWAYS)
    log = Log(tmp_path, config)
    assert log.append(b"before") == 0

    def append(value: bytes) -> int:
        if batch:
            from pyproglog.log import Record

            return log.append_batch([Record(value)])
        return log.append(value)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fdatasync", failing_fdatasync)
        with pytest.raises(LogWriteError) as failed:
            append(b"unsure")
    assert failed.value.errno == errno.EIO
    # fsync works again, but what it reported lost cannot be taken back: refused.
    with pytest.raises(LogWriteError, match="refuses appends until it is reopened"):
        append(b"after")
    with pytest.raises(LogWriteError, match="refuses appends until it is reopened"):
        log.sync()
    # Reads go on.
    assert log.read(0).value == b"before"
    next_offset = log.next_offset
    log.close()

    reopened = Log(tmp_path, config)
    assert reopened.next_offset == next_offset
    assert reopened.read(0).value == b"before"
    assert reopened.append(b"again") == next_offset
    reopened.close()


def test_interval_sync_failure_refuses_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log(tmp_path, LogConfig(sync_policy=SyncPolicy.INTERVAL, sync_interval_ms=10))
    with monkeypatch.context() as patch:
        patch.setattr(os, "fdatasync", failing_fdatasync)
        log.append(b"x")
        # The background syncer hits the error; wait for it by its effect.
        assert log._syncer is not None
        thread = log._syncer._thread
        thread.join(timeout=30)
        assert not thread.is_alive()
    with pytest.raises(LogWriteError, match="refuses appends until it is reopened"):
        log.append(b"y")
    assert log.read(0).value == b"x"
    log.close()

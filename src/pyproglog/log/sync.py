"""Group fsync: appends are numbered, and one fdatasync covers every append before it.

fsync happens outside the log's lock, so readers and new appenders are never
stuck behind a disk flush; appenders that arrive while one fsync runs share
the next. After a failed fsync the log refuses appends until it is reopened
(see `GroupSync.sync_upto`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pyproglog.log.errors import LogClosed, LogWriteError
from pyproglog.log.stats import LogStats

_log = logging.getLogger("pyproglog.log")


class GroupSync:
    def __init__(self, stats: LogStats) -> None:
        self.stats = stats
        # Set when an fsync fails: see sync_upto.
        self.failure: LogWriteError | None = None
        self._cond = threading.Condition()
        self.synced_seq = 0
        self._syncing = False

    def refused(self) -> LogWriteError:
        """The error for an append after a failed fsync (a fresh one each time:
        re-raising one instance would grow its traceback)."""
        failure = self.failure
        assert failure is not None
        return LogWriteError(str(failure), failure.errno)

    def sync_upto(self, seq: int, snapshot: Callable[[], tuple[int, Callable[[], None]]]) -> None:
        """Return once appends up to `seq` are synced, syncing them if nobody is.

        `snapshot()`, called under the log's lock, gives the number of the last
        append written and the function that syncs the active segment.
        """
        with self._cond:
            while self.synced_seq < seq:
                if self.failure is not None:
                    raise self.refused()
                if not self._syncing:
                    self._syncing = True
                    break
                self._cond.wait()
            else:
                return
        synced = False
        target = 0
        try:
            target, sync = snapshot()
            started = time.perf_counter()
            try:
                with self.stats.sync_hook():
                    sync()
            except LogWriteError as exc:
                # After a failed fsync the kernel may have dropped the dirty
                # pages and a retry can "succeed" without the data (Linux
                # reports the error once). What was acknowledged as synced can
                # no longer be promised, so the log takes no more writes until
                # it is reopened and recovered from what is really on disk.
                self.failure = LogWriteError(
                    f"{exc}; the log refuses appends until it is reopened", exc.errno
                )
                _log.error("fsync failed, appends refused until reopen: %s", exc)
                raise self.failure from exc
            self.stats.record_sync(time.perf_counter() - started)
            synced = True
        finally:
            with self._cond:
                self._syncing = False
                if synced:
                    self.synced_seq = max(self.synced_seq, target)
                self._cond.notify_all()


class IntervalSyncer:
    """SyncPolicy.INTERVAL: a background thread syncs every `interval_ms` when
    something new was appended."""

    def __init__(self, group: GroupSync, interval_ms: int, written: Callable[[], int]) -> None:
        self._group = group
        self._interval = interval_ms / 1000
        self._written = written  # the last append's number; LogClosed once closed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proglog-log-sync", daemon=True)
        self.sync: Callable[[int], None] = lambda seq: None

    def start(self, sync: Callable[[int], None]) -> None:
        self.sync = sync
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                seq = self._written()
                if seq > self._group.synced_seq:
                    self.sync(seq)
            except LogClosed:
                return
            except LogWriteError:
                return  # sync_upto logged it; the log now refuses appends

    def stop(self) -> None:
        """Ask the thread to end (safe under the log's lock); `join` waits for it."""
        self._stop.set()

    def join(self) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

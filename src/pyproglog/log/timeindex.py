"""The sparse time index: "first offset at or after time T" without a scan.

Entries are (watermark, relative offset) where the watermark is the largest
timestamp of any record up to and including that offset. Watermarks never
decrease, even when producers send timestamps out of order, so a binary search
over them is sound: every record before an entry with watermark < T is older
than T. An entry is added every `interval_bytes` of store. Like the index it is
a cache: entries that point past the recovered end are dropped on open, and a
lost entry only lengthens the (bounded) scan.
"""

from __future__ import annotations

import bisect
import logging
import os

from pyproglog.log.format import TIME_ENTRY, TIME_ENTRY_WIDTH

_log = logging.getLogger("pyproglog.log")


class TimeIndex:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._watermarks: list[int] | None = None  # loaded on first use
        self._rels: list[int] = []
        self._pending = bytearray()
        self._file_entries = 0

    def load(self, entry_count: int) -> None:
        """Read the file, keeping the valid prefix of entries below `entry_count`."""
        if self._watermarks is not None:
            return
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size - size % TIME_ENTRY_WIDTH, 0)
        wms: list[int] = []
        rels: list[int] = []
        for wm, rel in TIME_ENTRY.iter_unpack(data):
            if rel >= entry_count or (rels and (rel <= rels[-1] or wm < wms[-1])):
                break
            wms.append(wm)
            rels.append(rel)
        self._watermarks, self._rels = wms, rels
        self._file_entries = len(wms)
        if len(wms) * TIME_ENTRY_WIDTH != size:
            os.ftruncate(self._fd, len(wms) * TIME_ENTRY_WIDTH)

    def last(self) -> tuple[int, int] | None:
        assert self._watermarks is not None
        if not self._watermarks:
            return None
        return self._watermarks[-1], self._rels[-1]

    def add(self, watermark: int, rel: int) -> None:
        assert self._watermarks is not None
        self._watermarks.append(watermark)
        self._rels.append(rel)
        self._pending += TIME_ENTRY.pack(watermark, rel)

    def flush(self) -> None:
        """Best effort: a lost time entry costs a longer scan, never a wrong answer."""
        if not self._pending:
            return
        try:
            os.pwrite(self._fd, self._pending, self._file_entries * TIME_ENTRY_WIDTH)
            self._file_entries += len(self._pending) // TIME_ENTRY_WIDTH
        except OSError as exc:
            assert self._watermarks is not None
            _log.warning("time index write failed, entries dropped: %s", exc)
            del self._watermarks[self._file_entries :]
            del self._rels[self._file_entries :]
        self._pending.clear()

    def scan_start(self, timestamp_ms: int) -> int:
        """Relative offset from which to scan for the first record with ts >= timestamp_ms."""
        assert self._watermarks is not None
        i = bisect.bisect_left(self._watermarks, timestamp_ms)
        return 0 if i == 0 else self._rels[i - 1] + 1

    def truncate(self, entry_count: int) -> None:
        """Drop entries at or past `entry_count` (after a suffix drop)."""
        self.load(entry_count)
        assert self._watermarks is not None
        # Write out pending entries first, so that the file holds exactly the
        # in-memory entries: cutting to `keep` entries must never extend the
        # file past what was written (zero entries would end the valid run).
        self.flush()
        keep = bisect.bisect_left(self._rels, entry_count)
        del self._watermarks[keep:]
        del self._rels[keep:]
        self._file_entries = keep
        os.ftruncate(self._fd, keep * TIME_ENTRY_WIDTH)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.flush()
        finally:
            os.close(self._fd)
            self._fd = -1

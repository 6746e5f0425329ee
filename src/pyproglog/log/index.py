"""The index: a memory-mapped file of fixed-width entries (relative offset, store position).

The file is pre-allocated to its full size with posix_fallocate (not a sparse
ftruncate) so that a store through the mapping can never fault for lack of disk
space, and cut to its used size on a clean close. A file still at full size on
open therefore means "not closed cleanly"; the used prefix is found by binary
search (entry i must hold relative offset i) and then checked against the store
by the segment. The index is a cache of the store: anything doubtful is rebuilt
from the store, never trusted.
"""

from __future__ import annotations

import mmap
import os

from pyproglog.log.errors import OffsetOutOfRange, write_error_from
from pyproglog.log.format import (
    INDEX_ENTRY,
    INDEX_ENTRY_WIDTH,
    INDEX_RUN,
    STORE_HEADER_SIZE,
    index_run,
)

_ZERO_PAGE = bytes(64 * 1024)


class Index:
    def __init__(self, path: str, max_bytes: int, sealed_entries: int | None = None) -> None:
        """Open (or create) the index at `path`.

        The active segment's index is pre-allocated to `max_bytes`. A sealed
        segment's (`sealed_entries` given: how many records it must hold) only
        gets the room those entries need: a cleanly closed one is mapped at its
        own size and its file is neither grown nor cut. (A segment that holds
        one batch larger than a segment has more than `max_bytes` of entries.)
        """
        self.path = path
        self.max_entries = max_bytes // INDEX_ENTRY_WIDTH
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            whole = size - size % INDEX_ENTRY_WIDTH
            if sealed_entries is None:
                capacity = max(max_bytes, whole)
                closed_cleanly = size != capacity and size % INDEX_ENTRY_WIDTH == 0
            else:
                own = max(self.max_entries, whole // INDEX_ENTRY_WIDTH)
                want = min(sealed_entries, own) * INDEX_ENTRY_WIDTH
                capacity = max(want, whole, INDEX_ENTRY_WIDTH)
                closed_cleanly = size == want
            if size < capacity:
                os.posix_fallocate(fd, 0, capacity)
            self._mm = mmap.mmap(fd, capacity)
        except OSError as exc:
            os.close(fd)
            raise write_error_from(exc, f"allocating index {path}") from exc
        self._fd = fd
        self._file_size = max(size, capacity)
        self.capacity = capacity // INDEX_ENTRY_WIDTH
        # How many entries an active segment may hold: one bound for its append path.
        self.limit = min(self.max_entries, self.capacity)
        # A cleanly closed index is exactly its entries; anything else is probed.
        self.closed_cleanly = closed_cleanly
        self.entries = self._probe(size // INDEX_ENTRY_WIDTH)
        self._closed = False

    def reserve(self, entries: int = 0) -> None:
        """Room for max(`max_entries`, `entries`): a sealed segment made active
        again by truncate_after, or a batch larger than a segment in its own.

        Raises DiskFull when there is no space; the index is unchanged then.
        """
        want = max(self.max_entries, entries) * INDEX_ENTRY_WIDTH
        if self.capacity * INDEX_ENTRY_WIDTH >= want:
            return
        try:
            os.posix_fallocate(self._fd, 0, want)
            mm = mmap.mmap(self._fd, want)
        except OSError as exc:
            raise write_error_from(exc, f"allocating index {self.path}") from exc
        self._mm.flush()
        self._mm.close()
        self._mm = mm
        self.capacity = want // INDEX_ENTRY_WIDTH
        self.limit = min(self.max_entries, self.capacity)
        self._file_size = want

    def _valid(self, i: int) -> bool:
        rel, pos = INDEX_ENTRY.unpack_from(self._mm, i * INDEX_ENTRY_WIDTH)
        return bool(rel == i and pos >= STORE_HEADER_SIZE)

    def _probe(self, upper: int) -> int:
        """Length of the prefix of valid entries among the first `upper`."""
        lo, hi = 0, min(upper, self.capacity)
        if hi and self._valid(hi - 1):
            return hi
        while lo < hi:
            mid = (lo + hi) // 2
            if self._valid(mid):
                lo = mid + 1
            else:
                hi = mid
        return lo

    @property
    def is_full(self) -> bool:
        return self.entries >= self.max_entries

    @property
    def free(self) -> int:
        return max(0, min(self.max_entries, self.capacity) - self.entries)

    def read(self, i: int) -> tuple[int, int]:
        """Entry i as (relative offset, position); -1 is the last entry."""
        if i < 0:
            i += self.entries
        if not 0 <= i < self.entries:
            raise OffsetOutOfRange(i, 0, self.entries)
        rel, pos = INDEX_ENTRY.unpack_from(self._mm, i * INDEX_ENTRY_WIDTH)
        return rel, pos

    def position(self, i: int) -> int:
        return int(INDEX_ENTRY.unpack_from(self._mm, i * INDEX_ENTRY_WIDTH)[1])

    def positions(self, start: int, stop: int) -> list[int]:
        """Store positions of entries [start, stop)."""
        out: list[int] = []
        mm = self._mm
        for i in range(start, stop, INDEX_RUN):
            k = min(INDEX_RUN, stop - i)
            out += index_run(k).unpack_from(mm, i * INDEX_ENTRY_WIDTH)[1::2]
        return out

    def write(self, pos: int) -> int:
        """Add one entry; the number of entries now."""
        rel = self.entries
        if rel >= self.capacity:
            raise ValueError("index full")  # callers check `free` first; a bug if reached
        INDEX_ENTRY.pack_into(self._mm, rel * INDEX_ENTRY_WIDTH, rel, pos)
        self.entries = rel + 1
        return rel + 1

    def write_many(self, positions: list[int]) -> None:
        n = len(positions)
        if self.entries + n > self.capacity:
            raise ValueError("index full")  # callers check `free` first; a bug if reached
        rel = self.entries
        mm = self._mm
        if n == 1:
            INDEX_ENTRY.pack_into(mm, rel * INDEX_ENTRY_WIDTH, rel, positions[0])
            self.entries = rel + 1
            return
        # One struct call per run of entries: (rel, pos) pairs interleaved at C speed.
        for i in range(0, n, INDEX_RUN):
            run = positions[i : i + INDEX_RUN]
            k = len(run)
            args = [0] * (2 * k)
            args[0::2] = range(rel + i, rel + i + k)
            args[1::2] = run
            index_run(k).pack_into(mm, (rel + i) * INDEX_ENTRY_WIDTH, *args)
        self.entries = rel + n

    def set_position(self, i: int, pos: int) -> None:
        """Rewrite entry i (a rebuild from the store found its frame elsewhere)."""
        INDEX_ENTRY.pack_into(self._mm, i * INDEX_ENTRY_WIDTH, i, pos)

    def truncate(self, entries: int) -> None:
        """Keep the first `entries`; zero the rest so a later probe cannot find them."""
        start = entries * INDEX_ENTRY_WIDTH
        stop = max(self.entries, self._probe(self.capacity)) * INDEX_ENTRY_WIDTH
        while start < stop:
            n = min(len(_ZERO_PAGE), stop - start)
            self._mm[start : start + n] = _ZERO_PAGE[:n]
            start += n
        self.entries = entries

    def close(self) -> None:
        """Flush and cut the file to its entries: the mark of a clean close."""
        if self._closed:
            return
        self._closed = True
        self._mm.flush()
        self._mm.close()
        try:
            # A sealed segment's index that is already exactly its entries is
            # left alone (not even its mtime changes).
            if self._file_size != self.entries * INDEX_ENTRY_WIDTH:
                os.ftruncate(self._fd, self.entries * INDEX_ENTRY_WIDTH)
        finally:
            os.close(self._fd)

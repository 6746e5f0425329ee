"""The store: an append-only file of checksummed frames, written through a memory map.

While a store takes appends its file is pre-allocated (posix_fallocate, not a
sparse ftruncate) and mapped, and an append is a copy into the mapping: no
system call. The pages belong to the kernel's page cache from the moment they
are written, so an acknowledged append survives the process being killed.
`sync()` (fdatasync, which writes back pages dirtied through the map too) makes
it survive a power loss.

Because the space is allocated before it is mapped, a store through the map
never faults (SIGBUS) for lack of disk space; growing the allocation is a
syscall that fails cleanly with DiskFull instead, before anything is written.

Bytes after the logical end are always zero: a clean close (and `seal()`) cuts
the file to its logical size, and `truncate` zeroes what it drops from a mapped
store, so a dropped or torn frame can never later be read as a valid one. A file
found longer than its frames (not closed cleanly) is cut back by the segment's
recovery with `truncate`, which zeroes whatever is not zero after the end.

The header (format v2) also records the consensus index and term of the last
entry before the segment's first record, written once when the file is created,
so that `term(first_index - 1)` survives retention removing older segments.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
from collections.abc import Iterable

from crc32c import crc32c

from pyproglog.log.errors import CorruptSegment, LogClosed, write_error_from
from pyproglog.log.format import FRAME_PREFIX, STORE_HEADER, STORE_HEADER_SIZE, STORE_MAGIC

_ZERO_CHUNK = bytes(1 << 20)
_pack_prefix_into = FRAME_PREFIX.pack_into
# A standalone store (no capacity given) grows its allocation in steps of this.
_DEFAULT_GROWTH = 1 << 20
# Pages written through the map count in the process's resident set (as file
# pages) for as long as they stay mapped. Every this many bytes appended, the
# store unmaps what lies behind the write position (MADV_DONTNEED: for a shared
# file mapping the pages, dirty or not, stay in the page cache and go to disk as
# usual), so that RSS does not grow with the active segment.
RELEASE_EVERY = 8 << 20


class Store:
    def __init__(
        self, path: str, capacity: int = 0, entry_before: tuple[int, int] = (0, 0)
    ) -> None:
        """Open (or create) the store at `path`.

        `capacity` is how much the file is pre-allocated to when it first has to
        grow (a segment passes its max_store_bytes); the store never refuses an
        append for lack of capacity, it grows its allocation instead (a batch
        larger than a segment gets a segment of its own that grows to hold it).
        `entry_before` (consensus index, term) goes into the header of a new file.
        """
        self.path = path
        self.capacity = capacity
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size < STORE_HEADER_SIZE:
                # New file, or a crash between creating it and writing its header
                # (one pwrite of 24 bytes; `entry_before` is the caller's to know).
                head = os.pread(fd, min(size, len(STORE_MAGIC)), 0)
                if head != STORE_MAGIC[: len(head)]:
                    raise CorruptSegment(path, 0, "not a proglog store file")
                os.pwrite(fd, STORE_HEADER.pack(STORE_MAGIC, *entry_before), 0)
                size = STORE_HEADER_SIZE
            magic, prev_index, prev_term = STORE_HEADER.unpack(os.pread(fd, STORE_HEADER_SIZE, 0))
            if magic != STORE_MAGIC:
                why = "format v2 expected" if magic[:7] == STORE_MAGIC[:7] else "bad magic"
                raise CorruptSegment(path, 0, f"not a proglog store file ({why})")
            mm = mmap.mmap(fd, size)
        except OSError as exc:
            os.close(fd)
            raise write_error_from(exc, f"opening {path}") from exc
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._mm = mm
        # (consensus index, term) of the last entry before this segment's first record.
        self.entry_before = (prev_index, prev_term)
        # Length of the mapping, which is always the length of the file.
        self._mapped = size
        # Logical size: the end of the last frame. Until the segment's recovery
        # has looked at the file, everything in it counts.
        self._size = size
        # Appends past this position release the written pages from the map.
        self.release_at = size + RELEASE_EVERY
        self._closed = False
        # Serialises fsync against close and remapping: a sync racing a segment
        # roll must not fsync a closed (and perhaps reused) descriptor.
        self._io_lock = threading.Lock()

    @property
    def size(self) -> int:
        """Logical size: the header plus every frame appended."""
        return self._size

    @property
    def allocated_size(self) -> int:
        """Length of the file (pre-allocated room included)."""
        return self._mapped

    # -- writing ---------------------------------------------------------------

    def reserve(self, end: int = 0) -> None:
        """Make the file at least max(`end`, capacity) bytes, allocated, and map it.

        Raises DiskFull (nothing written, the store unchanged) when there is no space.
        """
        if self._closed:
            raise LogClosed()
        want = max(end, self.capacity)
        if want <= self._mapped:
            return
        if end > self.capacity:
            want = max(end, self._mapped + _DEFAULT_GROWTH)
        with self._io_lock:
            try:
                os.posix_fallocate(self._fd, 0, want)
                # The old map is not closed: a reader may still hold it. It goes
                # when the last reference does (and stays valid until then).
                mm = mmap.mmap(self._fd, want)
            except OSError as exc:
                # Whatever fallocate managed to add is zeros past the end; give it back.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._mapped)
                raise write_error_from(exc, f"allocating {self.path}") from exc
            self._mm = mm
            self._mapped = want

    def append_encoded(self, frames: bytes | bytearray) -> int:
        """Write frames already encoded (see `format`) after the last one; their position.

        One copy into the mapping: the store's only write path, with `append_pieces`.
        Only the allocation of more room (rare: when the file is not yet
        pre-allocated, or a batch outgrows its segment) can fail, with nothing written.
        """
        pos = self._size
        end = pos + len(frames)
        if end > self._mapped:
            self.reserve(end)
        self._mm[pos:end] = frames
        self._size = end
        if end >= self.release_at:
            self.release()
        return pos

    def append_body(self, body: bytes) -> int:
        """Frame `body` (length + CRC-32C prefix) and write it after the last frame;
        its position. The one-frame path of `append_encoded`, by the same rules,
        without building the frame first."""
        pos = self._size
        start = pos + FRAME_PREFIX.size
        end = start + len(body)
        if end > self._mapped:
            self.reserve(end)
        mm = self._mm
        mm[start:end] = body
        _pack_prefix_into(mm, pos, len(body), crc32c(body))
        self._size = end
        if end >= self.release_at:
            self.release()
        return pos

    def append_pieces(self, pieces: Iterable[bytes | bytearray], size: int) -> int:
        """Write `pieces` (`size` bytes in all) back to back after the last frame; the position.

        Room for all of them is allocated first, so only that can fail, with
        nothing written; the pieces are taken (made, by a generator) one at a
        time, each copied before the next. A kill between two copies leaves a prefix of the
        pieces: the frames' entry numbering lets recovery cut the torn entry whole.
        """
        pos = self._size
        end = pos + size
        if end > self._mapped:
            self.reserve(end)
        mm = self._mm
        at = pos
        for piece in pieces:
            n = len(piece)
            mm[at : at + n] = piece
            at += n
        if at != end:
            raise ValueError(f"pieces of {at - pos} bytes, not {size}")  # a bug if reached
        self._size = end
        if end >= self.release_at:
            self.release()
        return pos

    def patch(self, pos: int, data: bytes) -> None:
        """Overwrite bytes inside the frames (a frame re-written whole, same size,
        by `Segment.truncate_after`); in the page cache at once, like an append."""
        if self._closed:
            raise LogClosed()
        if not STORE_HEADER_SIZE <= pos <= pos + len(data) <= self._size:
            raise ValueError("patch outside the store's frames")  # a bug if reached
        if pos + len(data) > self._mapped:
            self.reserve(self._size)
        self._mm[pos : pos + len(data)] = data

    def release(self) -> None:
        """Unmap the pages behind the write position (see RELEASE_EVERY); data stays."""
        stop = self._size - self._size % mmap.PAGESIZE
        if stop:
            self._mm.madvise(mmap.MADV_DONTNEED, 0, stop)
        self.release_at = self._size + RELEASE_EVERY

    def sync(self) -> None:
        """fdatasync: the durability point for data in this file.

        fdatasync writes back the pages dirtied through the map as well. It
        never touches the mapping, so it is safe from any thread (group commit)
        while an append writes further on.
        """
        with self._io_lock:
            if self._closed:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise write_error_from(exc, f"syncing {self.path}") from exc

    def truncate(self, size: int) -> bool:
        """Drop everything after `size` bytes (a frame boundary).

        The dropped bytes are zeroed in the mapping rather than cut from the
        file, so that no stale frame can come back (not even after a later
        append of the same length and a crash) and the file keeps its
        allocation. Zeroing needs no new space. Right after opening, the logical
        size is the whole file, so the segment's recovery zeroes whatever a
        crash left after the last valid frame, torn frame included. Call
        `sync()` afterwards to make the cut durable. Returns whether any
        non-zero byte was dropped.
        """
        if self._closed:
            raise LogClosed()
        size = max(size, STORE_HEADER_SIZE)
        if size >= self._size:
            return False
        stop = self._size
        self._size = size
        return self._zero(size, stop)

    def end_at_zero_tail(self, end: int) -> bool:
        """Make `end` the logical size if every byte after it is zero; whether it was.

        For a sealed segment left long by a crash during a roll: its tail is
        pre-allocated zeroes, which `seal()` then cuts. Anything else after its
        frames is left exactly as it is (never zeroed: it may be someone's data).
        """
        if self._closed:
            raise LogClosed()
        if end >= self._size or self._zero(end, self._size, write=False):
            return False
        self._size = max(end, STORE_HEADER_SIZE)
        return True

    def _zero(self, start: int, stop: int, write: bool = True) -> bool:
        """Zero every non-zero byte in [start, stop); whether there was one.

        Allocated but never written ranges are holes to SEEK_DATA on most
        filesystems, so a crash-left file of mostly pre-allocated zeroes is not
        read through; elsewhere it is compared a chunk at a time. With
        `write=False` only looks (and stops at the first non-zero byte).
        """
        mm = self._mm
        fd = self._fd
        found = False
        pos = start
        while pos < stop:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
                hole = os.lseek(fd, data, os.SEEK_HOLE)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nothing but holes from pos on
                    break
                data, hole = pos, stop  # no SEEK_DATA here: compare everything
            end = min(hole, stop)
            at = data
            while at < end:
                n = min(len(_ZERO_CHUNK), end - at)
                if mm[at : at + n] != _ZERO_CHUNK[:n]:
                    if not write:
                        return True
                    mm[at : at + n] = _ZERO_CHUNK[:n]
                    found = True
                at += n
            if end <= pos:
                break
            pos = end
        return found

    def seal(self) -> None:
        """Cut the file to its frames and map just those (a sealed segment's store).

        The next append (after truncate_after made this store active again)
        pre-allocates again. Best effort: a failure leaves the store as it was.
        """
        if self._closed or self._mapped == self._size:
            return
        with self._io_lock:
            try:
                os.ftruncate(self._fd, self._size)
                self._mm = mmap.mmap(self._fd, self._size)
                self._mapped = self._size
            except OSError:
                pass

    # -- reading ---------------------------------------------------------------

    def read(self, pos: int) -> bytes:
        """The body of the frame at `pos`, checksum verified."""
        if pos < STORE_HEADER_SIZE:
            raise CorruptSegment(self.path, pos, "position inside the store header")
        prefix = self.read_at(pos, FRAME_PREFIX.size)
        if len(prefix) < FRAME_PREFIX.size:
            raise CorruptSegment(self.path, pos, "frame prefix past the end of the store")
        # Any body length is valid here (the store frames opaque bodies; `append`
        # accepts any); a length running past the end is a torn frame.
        length, crc = FRAME_PREFIX.unpack(prefix)
        if pos + FRAME_PREFIX.size + length > self.size:
            raise CorruptSegment(self.path, pos, "torn frame: length runs past the end")
        body = self.read_at(pos + FRAME_PREFIX.size, length)
        if len(body) < length or crc32c(body) != crc:
            raise CorruptSegment(self.path, pos, "torn frame or checksum mismatch")
        return body

    def read_at(self, pos: int, n: int) -> bytes:
        """Up to `n` bytes from `pos`, never past the logical end.

        From the active (pre-allocated) store a slice of the map, whose pages
        the appends release again (see RELEASE_EVERY); from a sealed one a
        pread, so that reading old segments does not pile their pages up in
        the resident set for as long as the segment is open.
        """
        if self._closed:
            raise LogClosed()
        end = min(pos + n, self._size)
        if self._mapped > end:
            try:
                return self._mm[pos:end]
            except ValueError:  # the map was closed under us by close()
                raise LogClosed() from None
        if pos >= end:
            return b""
        return os.pread(self._fd, end - pos, pos)

    def view_at(self, pos: int, n: int) -> bytes | memoryview:
        """Like `read_at`, but from the active (mapped) store a view of the map, no
        copy: for a caller that copies what it needs under the log's lock and
        drops the view before the lock is released (close and remapping wait
        for the lock)."""
        if self._closed:
            raise LogClosed()
        end = min(pos + n, self._size)
        if self._mapped > end:
            return memoryview(self._mm)[pos:end]
        return self.read_at(pos, n)

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Unmap and cut the file to its frames: the mark of a clean close."""
        if self._closed:
            return
        with self._io_lock:
            self._closed = True
            with contextlib.suppress(BufferError):  # nothing exports the map
                self._mm.close()
            try:
                if self._mapped != self._size:
                    os.ftruncate(self._fd, self._size)
            except OSError:
                pass  # left long: the next open finds the end by recovery
            finally:
                os.close(self._fd)

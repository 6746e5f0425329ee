"""The store: an append-only file of checksummed frames.

Appends collect in an in-process buffer and reach the file on `flush()` (the
log flushes at the end of every append call, so an acknowledged append is in
the kernel and survives the process being killed). `sync()` is the fsync that
makes it survive a power loss. A failed flush cuts the file back to the last
whole write, so a half-written frame never stays behind.
"""

from __future__ import annotations

import contextlib
import os
import threading

from crc32c import crc32c

from pyproglog.log.errors import CorruptSegment, LogClosed, write_error_from
from pyproglog.log.format import FRAME_PREFIX, STORE_HEADER_SIZE, STORE_MAGIC


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size < STORE_HEADER_SIZE:
                # New file, or a crash between creating it and writing its header.
                if os.pread(fd, size, 0) != STORE_MAGIC[:size]:
                    raise CorruptSegment(path, 0, "not a proglog store file")
                os.pwrite(fd, STORE_MAGIC, 0)
                size = STORE_HEADER_SIZE
            elif os.pread(fd, STORE_HEADER_SIZE, 0) != STORE_MAGIC:
                raise CorruptSegment(path, 0, "not a proglog store file (bad magic)")
        except OSError as exc:
            os.close(fd)
            raise write_error_from(exc, f"opening {path}") from exc
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._flushed = size
        self._buf = bytearray()
        self._closed = False
        # Serialises fsync against close: a sync racing a segment roll must not
        # fsync a closed (and perhaps reused) descriptor.
        self._io_lock = threading.Lock()

    @property
    def size(self) -> int:
        """Logical size: flushed bytes plus what is still buffered."""
        return self._flushed + len(self._buf)

    @property
    def flushed_size(self) -> int:
        return self._flushed

    def append(self, body: bytes) -> tuple[int, int]:
        """Frame `body` (length + CRC-32C prefix) and buffer it: (bytes written, position)."""
        pos = self.size
        self._buf += FRAME_PREFIX.pack(len(body), crc32c(body))
        self._buf += body
        return FRAME_PREFIX.size + len(body), pos

    def append_encoded(self, frames: bytes | bytearray) -> int:
        """Buffer frames already encoded by `format.encode_batch`; their start position."""
        pos = self.size
        self._buf += frames
        return pos

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
        if self._closed:
            raise LogClosed()
        if pos + n > self._flushed and self._buf:
            self.flush()
        return os.pread(self._fd, n, pos)

    def flush(self) -> None:
        if not self._buf:
            return
        if self._closed:
            raise LogClosed()
        view = memoryview(self._buf)
        written = 0
        try:
            while written < len(view):
                written += os.pwrite(self._fd, view[written:], self._flushed + written)
        except OSError as exc:
            # Nothing half-written may stay: cut back to the last whole flush.
            # Shrinking needs no space, so this works on a full disk too.
            view.release()
            # Rebind rather than clear(): a slice of the buffer may still be
            # referenced from the exception's traceback, and a bytearray with
            # exported views cannot be resized.
            self._buf = bytearray()
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._flushed)
            raise write_error_from(exc, f"writing {self.path}") from exc
        view.release()
        self._flushed += written
        self._buf.clear()

    def sync(self, flush: bool = True) -> None:
        """Flush, then fdatasync: the durability point for data in this file.

        `flush=False` syncs only what is already flushed. The buffer belongs to
        the writer, so a sync from another thread (group commit) must pass it:
        two concurrent flushes would write the same bytes twice and count them
        twice in the file size.
        """
        if flush:
            self.flush()
        with self._io_lock:
            if self._closed:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise write_error_from(exc, f"syncing {self.path}") from exc

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes (a frame boundary), dropping anything buffered."""
        self._buf.clear()
        size = max(size, STORE_HEADER_SIZE)
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise write_error_from(exc, f"truncating {self.path}") from exc
        self._flushed = size

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._io_lock:
                self._closed = True
                os.close(self._fd)

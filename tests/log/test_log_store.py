"""Store: framed appends, buffering, sync, reopen, cut-back on a failed write."""

from __future__ import annotations

import errno
import os

import pytest
from crc32c import crc32c

from pyproglog.log import CorruptSegment, DiskFull, LogClosed, LogWriteError
from pyproglog.log.format import (
    FRAME_PREFIX,
    FRAME_PREFIX_SIZE,
    STORE_HEADER,
    STORE_HEADER_SIZE,
    STORE_MAGIC,
)
from pyproglog.log.store import RELEASE_EVERY, Store

PAYLOADS = [b"hello world", b"", b"\x00\xff" * 700]


def append(store: Store, body: bytes) -> tuple[int, int]:
    """Frame `body` as the segment does (length + CRC-32C) and write it: (size, position)."""
    frame = FRAME_PREFIX.pack(len(body), crc32c(body)) + body
    return len(frame), store.append_encoded(frame)


def _fill(store: Store) -> list[int]:
    positions = []
    expected = STORE_HEADER_SIZE
    for body in PAYLOADS:
        n, pos = append(store, body)
        assert n == FRAME_PREFIX_SIZE + len(body)
        assert pos == expected
        positions.append(pos)
        expected += n
    assert store.size == expected
    return positions


def test_append_returns_positions_and_sizes_that_add_up(tmp_path):
    store = Store(str(tmp_path / "s.store"))
    positions = _fill(store)
    total = STORE_HEADER_SIZE + sum(FRAME_PREFIX_SIZE + len(p) for p in PAYLOADS)
    assert store.size == total
    for pos, body in zip(positions, PAYLOADS, strict=True):
        assert store.read(pos) == body
    store.close()


def test_data_survives_close_and_reopen(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    positions = _fill(store)
    size = store.size
    store.close()
    assert os.path.getsize(path) == size
    with open(path, "rb") as f:
        assert f.read(STORE_HEADER_SIZE) == STORE_HEADER.pack(STORE_MAGIC, 0, 0)

    store = Store(path)
    assert store.size == size
    for pos, body in zip(positions, PAYLOADS, strict=True):
        assert store.read(pos) == body
    # Appends continue after the old data.
    _, pos = append(store, b"more")
    assert pos == size
    assert store.read(pos) == b"more"
    store.close()


def _file_bytes(path: str, pos: int, n: int) -> bytes:
    """What another process would read from the file (not through our map)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, pos)
    finally:
        os.close(fd)


def test_appends_are_in_the_file_at_once(tmp_path):
    # Written through the map: in the page cache (and so in the file for any
    # reader, and safe from a kill -9) when append returns; no flush needed.
    path = str(tmp_path / "s.store")
    store = Store(path)
    assert os.path.getsize(path) == STORE_HEADER_SIZE
    n1, p1 = append(store, b"a" * 100)
    n2, p2 = append(store, b"b" * 50)
    assert store.size == STORE_HEADER_SIZE + n1 + n2
    assert _file_bytes(path, p1 + FRAME_PREFIX_SIZE, 100) == b"a" * 100
    assert _file_bytes(path, p2 + FRAME_PREFIX_SIZE, 50) == b"b" * 50
    assert store.read(p2) == b"b" * 50
    store.close()
    assert os.path.getsize(path) == STORE_HEADER_SIZE + n1 + n2


def test_store_is_preallocated_and_zero_after_its_frames(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path, capacity=64 * 1024)
    store.reserve()
    assert os.path.getsize(path) == store.allocated_size == 64 * 1024
    assert os.stat(path).st_blocks * 512 >= 64 * 1024  # allocated, not sparse
    n, pos = append(store, b"x" * 10)
    assert _file_bytes(path, pos + n, 64 * 1024) == bytes(64 * 1024 - pos - n)
    store.close()
    # A clean close cuts the file to its frames.
    assert os.path.getsize(path) == pos + n


def test_sync_fdatasyncs_what_was_written_through_the_map(tmp_path, monkeypatch):
    synced: list[bytes] = []
    real = os.fdatasync
    path = str(tmp_path / "s.store")

    def spy(fd: int) -> None:
        synced.append(_file_bytes(path, STORE_HEADER_SIZE, 18))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    store = Store(path)
    n, pos = append(store, b"x" * 10)
    assert synced == []
    store.sync()
    # The fdatasync saw the file with the frame already written.
    assert synced == [_file_bytes(path, pos, n)]
    assert synced[0][FRAME_PREFIX_SIZE:] == b"x" * 10
    store.close()
    assert os.path.getsize(path) == STORE_HEADER_SIZE + n


def test_close_cuts_the_file_to_its_frames(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    n, pos = append(store, b"closing")
    store.close()
    assert os.path.getsize(path) == STORE_HEADER_SIZE + n
    with pytest.raises(LogClosed):
        store.read(pos)
    store.close()  # idempotent


def test_file_without_magic_is_refused(tmp_path):
    path = tmp_path / "s.store"
    path.write_bytes(b"NOTASTORE-and-more-bytes")
    with pytest.raises(CorruptSegment, match="not a proglog store"):
        Store(str(path))
    path.write_bytes(b"XY")  # shorter than the header and not its prefix
    with pytest.raises(CorruptSegment):
        Store(str(path))


def test_partially_written_header_is_completed(tmp_path):
    # A crash between creating the file and writing its header.
    path = tmp_path / "s.store"
    path.write_bytes(STORE_MAGIC[:3])
    store = Store(str(path))
    assert store.size == STORE_HEADER_SIZE
    _, pos = append(store, b"ok")
    assert store.read(pos) == b"ok"
    store.close()
    assert path.read_bytes()[: len(STORE_MAGIC)] == STORE_MAGIC


def test_torn_and_flipped_frames_raise(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    _, p1 = append(store, b"first record")
    _, p2 = append(store, b"second record")
    store.close()
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[p1 + FRAME_PREFIX_SIZE + 2] ^= 0x01  # a byte of the first body
    with open(path, "wb") as f:
        f.write(data[:-3])  # and tear the second frame
    store = Store(path)
    with pytest.raises(CorruptSegment):
        store.read(p1)
    with pytest.raises(CorruptSegment):
        store.read(p2)
    with pytest.raises(CorruptSegment):
        store.read(len(data) + 100)  # no prefix at all
    store.close()


def test_truncate_zeroes_what_it_drops(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    _, p1 = append(store, b"keep")
    _, p2 = append(store, b"drop")
    append(store, b"dropped too")
    end = store.size
    assert store.truncate(p2)
    assert store.size == p2
    # The dropped frames are zeroes in the file, not stale frames a crash could revive.
    assert _file_bytes(path, p2, end - p2) == bytes(end - p2)
    assert store.read(p1) == b"keep"
    with pytest.raises(CorruptSegment):
        store.read(p2)
    _, p3 = append(store, b"new")
    assert p3 == p2
    assert store.read(p3) == b"new"
    assert not store.truncate(store.size)  # nothing to drop
    store.close()
    assert os.path.getsize(path) == p3 + FRAME_PREFIX_SIZE + 3


def test_failed_allocation_writes_nothing(tmp_path, monkeypatch):
    path = str(tmp_path / "s.store")
    store = Store(path)
    _, p1 = append(store, b"durable")
    store.seal()  # cut to its frames: the next append must allocate
    good_size = store.size
    assert os.path.getsize(path) == good_size

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(DiskFull) as info:
        append(store, b"y" * 200)
    assert isinstance(info.value, LogWriteError)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()

    assert os.path.getsize(path) == good_size  # nothing was added
    assert store.size == good_size
    assert store.read(p1) == b"durable"
    _, p2 = append(store, b"after")
    assert p2 == good_size
    assert store.read(p2) == b"after"
    store.close()


def test_reopen_of_a_long_file_counts_it_all_until_cut(tmp_path):
    # A store not closed cleanly: frames, a torn frame, then pre-allocated zeroes.
    path = str(tmp_path / "s.store")
    store = Store(path, capacity=8192)
    n, pos = append(store, b"whole")
    end = pos + n
    store.append_encoded(b"\x20\x00\x00\x00torn")  # a prefix of a frame
    with open(path, "rb") as f:
        crashed = f.read()
    store.close()
    with open(path, "wb") as f:
        f.write(crashed)
    assert len(crashed) == 8192
    store = Store(path, capacity=8192)
    assert store.size == 8192  # until the segment's recovery says where the frames end
    assert store.truncate(end)  # the torn frame was not zero
    assert _file_bytes(path, end, 8192 - end) == bytes(8192 - end)
    assert store.read(pos) == b"whole"
    store.close()
    assert os.path.getsize(path) == end


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_appended_pages_do_not_pile_up_in_the_resident_set(tmp_path):
    # Pages written through the map are released behind the write position
    # (MADV_DONTNEED keeps their data: shared file mapping) every RELEASE_EVERY bytes.
    path = str(tmp_path / "s.store")
    store = Store(path, capacity=4 * RELEASE_EVERY)
    store.reserve()
    body = bytes(range(256)) * 256
    before = _rss_file_kib()
    positions = [append(store, body)[1] for _ in range(3 * RELEASE_EVERY // len(body))]
    grown = _rss_file_kib() - before
    assert grown < 2 * RELEASE_EVERY // 1024, f"RssFile grew by {grown} KiB"
    for pos in positions[:: len(positions) // 16]:
        assert store.read(pos) == body
    assert _file_bytes(path, positions[0] + FRAME_PREFIX_SIZE, len(body)) == body
    store.close()
    store = Store(path)
    assert store.read(positions[-1]) == body
    store.close()


def test_header_keeps_the_entry_before_the_first_record(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path, entry_before=(41, 7))
    assert store.entry_before == (41, 7)
    store.close()
    # Written once, when the file is created: what a later opener passes is ignored.
    store = Store(path, entry_before=(0, 0))
    assert store.entry_before == (41, 7)
    store.close()
    with open(path, "rb") as f:
        assert f.read() == STORE_HEADER.pack(STORE_MAGIC, 41, 7)


def test_store_of_the_old_format_is_refused_by_name(tmp_path):
    path = tmp_path / "s.store"
    path.write_bytes(b"PLSTORE\x01" + bytes(40))
    with pytest.raises(CorruptSegment, match="format v2 expected"):
        Store(str(path))

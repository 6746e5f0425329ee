"""Store: framed appends, buffering, sync, reopen, cut-back on a failed write."""

from __future__ import annotations

import errno
import os

import pytest

from pyproglog.log import CorruptSegment, DiskFull, LogClosed, LogWriteError
from pyproglog.log.format import FRAME_PREFIX_SIZE, STORE_HEADER_SIZE, STORE_MAGIC
from pyproglog.log.store import Store

PAYLOADS = [b"hello world", b"", b"\x00\xff" * 700]


def _fill(store: Store) -> list[int]:
    positions = []
    expected = STORE_HEADER_SIZE
    for body in PAYLOADS:
        n, pos = store.append(body)
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
        assert f.read(STORE_HEADER_SIZE) == STORE_MAGIC

    store = Store(path)
    assert store.size == store.flushed_size == size
    for pos, body in zip(positions, PAYLOADS, strict=True):
        assert store.read(pos) == body
    # Appends continue after the old data.
    _, pos = store.append(b"more")
    assert pos == size
    assert store.read(pos) == b"more"
    store.close()


def test_writes_are_buffered_until_flush(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    assert os.path.getsize(path) == STORE_HEADER_SIZE
    n1, _ = store.append(b"a" * 100)
    n2, _ = store.append(b"b" * 50)
    # Nothing reached the file yet.
    assert os.path.getsize(path) == STORE_HEADER_SIZE
    assert store.flushed_size == STORE_HEADER_SIZE
    assert store.size == STORE_HEADER_SIZE + n1 + n2
    store.flush()
    assert os.path.getsize(path) == STORE_HEADER_SIZE + n1 + n2
    assert store.flushed_size == store.size
    store.close()


def test_reading_a_buffered_frame_flushes_it(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    _, pos = store.append(b"buffered")
    assert os.path.getsize(path) == STORE_HEADER_SIZE
    assert store.read(pos) == b"buffered"
    assert os.path.getsize(path) == store.size
    store.close()


def test_sync_writes_buffered_data_and_fdatasyncs(tmp_path, monkeypatch):
    synced: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    path = str(tmp_path / "s.store")
    store = Store(path)
    n, _ = store.append(b"x" * 10)
    assert synced == []
    store.sync()
    # The fdatasync saw the file with the frame already written.
    assert synced == [STORE_HEADER_SIZE + n]
    assert os.path.getsize(path) == STORE_HEADER_SIZE + n
    store.close()


def test_close_flushes(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    n, pos = store.append(b"closing")
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
    _, pos = store.append(b"ok")
    assert store.read(pos) == b"ok"
    store.close()
    assert path.read_bytes()[:STORE_HEADER_SIZE] == STORE_MAGIC


def test_torn_and_flipped_frames_raise(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    _, p1 = store.append(b"first record")
    _, p2 = store.append(b"second record")
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


def test_truncate_cuts_and_drops_buffer(tmp_path):
    path = str(tmp_path / "s.store")
    store = Store(path)
    _, p1 = store.append(b"keep")
    _, p2 = store.append(b"drop")
    store.flush()
    store.append(b"buffered")
    store.truncate(p2)
    assert store.size == store.flushed_size == p2
    assert os.path.getsize(path) == p2
    assert store.read(p1) == b"keep"
    _, p3 = store.append(b"new")
    assert p3 == p2
    assert store.read(p3) == b"new"
    store.close()


def test_failed_flush_cuts_back_to_last_whole_write(tmp_path, monkeypatch):
    path = str(tmp_path / "s.store")
    store = Store(path)
    _, p1 = store.append(b"durable")
    store.flush()
    good_size = store.size

    real_pwrite = os.pwrite

    def half_then_enospc(fd: int, data: object, offset: int) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        if len(view) > 4:
            real_pwrite(fd, view[: len(view) // 2], offset)  # a torn write reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_enospc)
    store.append(b"y" * 200)
    with pytest.raises(DiskFull) as info:
        store.flush()
    assert isinstance(info.value, LogWriteError)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()

    assert os.path.getsize(path) == good_size  # the half frame was cut away
    assert store.size == good_size
    assert store.read(p1) == b"durable"
    _, p2 = store.append(b"after")
    assert p2 == good_size
    assert store.read(p2) == b"after"
    store.close()

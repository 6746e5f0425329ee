"""Disk full: clear error, reads keep working, nothing half-written, recovery once space is freed.

The main test runs on a real 2 MiB tmpfs (we run as root). Where mounting is not
permitted it falls back to injected ENOSPC errors on the store's writes and the
index's pre-allocation.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproglog.log import (
    DiskFull,
    Log,
    LogConfig,
    LogWriteError,
    OffsetOutOfRange,
    Record,
    SyncPolicy,
)
from pyproglog.log.format import FRAME_OVERHEAD, INDEX_ENTRY_WIDTH, STORE_HEADER_SIZE
from pyproglog.log.store import Store


class Disk:
    root: Path

    def fill(self) -> None:
        raise NotImplementedError

    def free(self) -> None:
        raise NotImplementedError


class TmpfsDisk(Disk):
    """A real, small filesystem: fill() writes a filler file until ENOSPC."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            chunk = 1 << 16
            while chunk:
                try:
                    if os.write(fd, b"\xee" * chunk) < chunk:
                        chunk //= 2
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        finally:
            os.close(fd)
        probe = os.open(self.root / "probe", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            with pytest.raises(OSError):
                os.write(probe, b"x" * 8192)
        finally:
            os.close(probe)
            os.remove(self.root / "probe")

    def free(self) -> None:
        os.remove(self.filler)


class InjectedDisk(Disk):
    """Fallback: ENOSPC injected into the storage engine's writes and pre-allocation."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.full = False
        real_pwrite = os.pwrite
        real_fallocate = os.posix_fallocate

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_pwrite(fd, data, offset)

        def fallocate(fd: int, offset: int, length: int) -> None:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_fallocate(fd, offset, length)

        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "posix_fallocate", fallocate)

    def fill(self) -> None:
        self.full = True

    def free(self) -> None:
        self.full = False


def mount_tmpfs(mnt: Path, size: str) -> bool:
    """Mount a tmpfs of `size` on `mnt`; False where that is not permitted."""
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]
    try:
        return subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    except OSError:  # no mount(8) here
        return False


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not mount_tmpfs(mnt, "2m"):
        yield InjectedDisk(mnt, monkeypatch)
        return
    try:
        yield TmpfsDisk(mnt)
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def value(i: int) -> bytes:
    # 100 .. ~3 KB, different for every offset.
    return f"{i}:".encode() + bytes([i % 251]) * (100 + (i * 7919) % 3000)


def assert_log_holds(log: Log, n: int) -> None:
    assert log.lowest_offset == 0
    assert log.next_offset == n
    for off in range(n):
        assert log.read(off).value == value(off)
    assert [r.offset for r in log.iter_records()] == list(range(n))
    with pytest.raises(OffsetOutOfRange):
        log.read(n)


@pytest.mark.parametrize("policy", [SyncPolicy.NEVER, SyncPolicy.ALWAYS])
def test_disk_full(disk: Disk, policy: SyncPolicy) -> None:
    cfg = LogConfig(
        max_store_bytes=24 * 1024,
        max_index_bytes=INDEX_ENTRY_WIDTH * 16,
        max_record_bytes=4096,
        sync_policy=policy,
    )
    path = disk.root / "log"
    log = Log(path, cfg)
    try:
        n = 0
        for _ in range(30):
            assert log.append(value(n)) == n
            n += 1
        assert log.info().segment_count > 1
        disk.fill()

        # A few small appends may still fit in the last page of a file; soon one fails.
        with pytest.raises(DiskFull) as info:
            for _ in range(2000):
                assert log.append(value(n)) == n
                n += 1
        assert isinstance(info.value, LogWriteError)
        assert info.value.errno in (errno.ENOSPC, errno.EDQUOT)
        assert "no space left" in str(info.value)
        # The failed record is not there; everything before it is.
        assert_log_holds(log, n)

        # A batch fails as a whole.
        with pytest.raises(DiskFull):
            log.append_batch([Record(value(n + k)) for k in range(5)])
        assert_log_holds(log, n)

        disk.free()
        # Without reopening: appends work again, across segment rolls.
        segments = log.info().segment_count
        for _ in range(20):
            assert log.append(value(n)) == n
            n += 1
        assert log.append_batch([Record(value(n + k)) for k in range(3)]) == n
        n += 3
        assert log.info().segment_count > segments
        assert_log_holds(log, n)
    finally:
        log.close()
    # Nothing half-written comes back on reopen either.
    log = Log(path, cfg)
    try:
        assert_log_holds(log, n)
    finally:
        log.close()


def test_failed_roll_leaves_no_stray_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A roll that cannot allocate the new index must not leave files that a reopen
    would take for a segment (and then drop everything after it as a "hole")."""
    big, small = b"B" * 100, b"s" * 10
    cfg = LogConfig(
        max_store_bytes=STORE_HEADER_SIZE + 4 * (FRAME_OVERHEAD + len(big)),
        max_index_bytes=INDEX_ENTRY_WIDTH * 64,
        max_record_bytes=len(big),
    )
    log = Log(tmp_path, cfg)
    for _ in range(3):
        log.append(big)

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    # The fourth record fills the segment; the roll after it fails.
    with pytest.raises(DiskFull):
        log.append(big)
    monkeypatch.undo()
    assert log.next_offset == 3
    assert sorted(os.listdir(tmp_path)) == [
        "00000000000000000000.index",
        "00000000000000000000.store",
        "00000000000000000000.timeindex",
    ]
    # Smaller records: the first segment now ends at a later offset than before.
    for i in range(3, 12):
        assert log.append(small) == i
    assert log.info().segment_count > 1
    log.close()
    log = Log(tmp_path, cfg)
    assert log.next_offset == 12
    assert [log.read(i).value for i in range(12)] == [big] * 3 + [small] * 9
    log.close()


def test_stray_empty_store_file_does_not_cost_data(tmp_path: Path):
    cfg = LogConfig(
        max_store_bytes=STORE_HEADER_SIZE + 3 * (FRAME_OVERHEAD + 10),
        max_record_bytes=10,
    )
    log = Log(tmp_path, cfg)
    for i in range(10):
        log.append(b"%010d" % i)
    bases = [log.read_range(0, 1)[0].offset]
    log.close()
    assert bases == [0]
    # An empty store file inside the first segment's range (as a crashed or failed
    # roll could leave) must not make the later segments look like a hole.
    Store(str(tmp_path / f"{1:020d}.store")).close()
    log = Log(tmp_path, cfg)
    assert log.lowest_offset == 0
    assert log.next_offset == 10
    assert [log.read(i).value for i in range(10)] == [b"%010d" % i for i in range(10)]
    log.close()
    # Not a file the log wrote: ignored (with a warning), never deleted.
    assert f"{1:020d}.store" in os.listdir(tmp_path)


def test_no_room_for_a_new_store_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The new segment's store cannot be pre-allocated: DiskFull, its files are gone,
    reads keep working and appends work again once there is space."""
    cfg = LogConfig(
        max_store_bytes=STORE_HEADER_SIZE + 4 * (FRAME_OVERHEAD + 10),
        max_index_bytes=INDEX_ENTRY_WIDTH * 64,
        max_record_bytes=10,
    )
    log = Log(tmp_path, cfg)
    for i in range(3):
        log.append(b"%010d" % i)
    real = os.posix_fallocate

    def no_room_for_stores(fd: int, offset: int, length: int) -> None:
        if length == cfg.max_store_bytes:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", no_room_for_stores)
    with pytest.raises(DiskFull):
        log.append(b"%010d" % 3)  # fills the segment; the roll cannot allocate
    assert log.next_offset == 3
    assert sorted(os.listdir(tmp_path)) == [
        "00000000000000000000.index",
        "00000000000000000000.store",
        "00000000000000000000.timeindex",
    ]
    assert [log.read(i).value for i in range(3)] == [b"%010d" % i for i in range(3)]
    monkeypatch.undo()
    for i in range(3, 10):
        assert log.append(b"%010d" % i) == i
    log.close()
    log = Log(tmp_path, cfg)
    assert [log.read(i).value for i in range(10)] == [b"%010d" % i for i in range(10)]
    log.close()

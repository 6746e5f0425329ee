"""Threads: readers only ever see complete, correct records while writers append."""

from __future__ import annotations

import functools
import os
import random
import threading
from collections.abc import Callable

import crc32c as crc32c_module
import pytest

from pyproglog.log import Log, LogConfig, OffsetOutOfRange, Record, SyncPolicy
from pyproglog.log import segment as segment_module
from pyproglog.log.format import INDEX_ENTRY_WIDTH
from pyproglog.log.segment import Segment

SMALL = LogConfig(
    max_store_bytes=16 * 1024,
    max_index_bytes=INDEX_ENTRY_WIDTH * 64,
    max_record_bytes=2048,
)


def value(i: int) -> bytes:
    return f"{i}:".encode() + bytes([i % 256]) * ((i * 37) % 1500)


def run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("policy", [SyncPolicy.NEVER, SyncPolicy.ALWAYS])
def test_readers_see_only_complete_records_while_one_writer_appends(tmp_path, policy):
    cfg = LogConfig(
        max_store_bytes=SMALL.max_store_bytes,
        max_index_bytes=SMALL.max_index_bytes,
        max_record_bytes=SMALL.max_record_bytes,
        sync_policy=policy,
    )
    log = Log(tmp_path, cfg)
    total = 1500 if policy is SyncPolicy.NEVER else 300  # an fsync per append is slow
    done = threading.Event()
    reads = [0, 0, 0]

    def writer() -> None:
        try:
            rng = random.Random(0)
            n = 0
            while n < total:
                k = rng.choice([1, 1, 2, 5])
                assert log.append_batch([Record(value(n + j)) for j in range(k)]) == n
                n += k
        finally:
            done.set()

    def reader(me: int) -> None:
        rng = random.Random(me)
        seen_next = 0
        while True:
            finished = done.is_set()
            nxt = log.next_offset
            assert nxt >= seen_next  # never goes backwards
            seen_next = nxt
            if nxt:
                # Whatever next_offset says exists can be read, whole and correct.
                last = log.read(nxt - 1)
                assert (last.offset, last.value) == (nxt - 1, value(nxt - 1))
                off = rng.randrange(nxt)
                rec = log.read(off)
                assert (rec.offset, rec.value) == (off, value(off))
                got = log.read_range(off, rng.randrange(1, 50), rng.randrange(1, 40_000))
                assert got
                assert [(r.offset, r.value) for r in got] == [
                    (off + k, value(off + k)) for k in range(len(got))
                ]
                reads[me] += 1
            with pytest.raises(OffsetOutOfRange):
                log.read(total + 1000)  # beyond anything the writer will write
            if finished:
                return

    run_threads([writer] + [functools.partial(reader, me) for me in range(3)])
    assert all(reads)
    assert log.next_offset >= total
    assert [r.value for r in log.iter_records()] == [value(i) for i in range(log.next_offset)]
    log.close()


@pytest.mark.parametrize("policy", [SyncPolicy.ALWAYS, SyncPolicy.INTERVAL])
def test_concurrent_writers_with_background_or_group_sync(tmp_path, policy):
    """fsync runs outside the log's lock (group commit / interval thread) while other
    threads append: every record must land exactly once, intact."""
    cfg = LogConfig(
        max_store_bytes=SMALL.max_store_bytes,
        max_index_bytes=SMALL.max_index_bytes,
        max_record_bytes=SMALL.max_record_bytes,
        sync_policy=policy,
        sync_interval_ms=1,
    )
    log = Log(tmp_path, cfg)
    writers, per_writer = 4, 300
    offsets: dict[int, list[int]] = {w: [] for w in range(writers)}

    def payload(w: int, i: int) -> bytes:
        return f"w{w}-{i}-".encode() + bytes([w]) * ((i * 13) % 700)

    def writer(w: int) -> None:
        for i in range(per_writer):
            offsets[w].append(log.append(payload(w, i)))

    run_threads([functools.partial(writer, w) for w in range(writers)])
    n = writers * per_writer
    assert log.next_offset == n
    assert sorted(o for w in offsets for o in offsets[w]) == list(range(n))
    for w in range(writers):
        assert offsets[w] == sorted(offsets[w])
        for i, off in enumerate(offsets[w]):
            assert log.read(off).value == payload(w, i)
    log.close()
    log = Log(tmp_path, cfg)
    assert log.next_offset == n
    for w in range(writers):
        for i, off in enumerate(offsets[w]):
            assert log.read(off).value == payload(w, i)
    log.close()


def _count_fdatasync(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], threading.Event]:
    calls: list[int] = []
    called = threading.Event()
    real = os.fdatasync

    def spy(fd: int) -> None:
        real(fd)
        calls.append(fd)
        called.set()

    monkeypatch.setattr(os, "fdatasync", spy)
    return calls, called


def test_sync_policy_always_syncs_before_append_returns(tmp_path, monkeypatch):
    log = Log(tmp_path, LogConfig(sync_policy=SyncPolicy.ALWAYS))
    calls, _ = _count_fdatasync(monkeypatch)
    for i in range(5):
        log.append(b"x")
        assert len(calls) >= i + 1
    log.close()


def test_sync_policy_never_does_not_sync(tmp_path, monkeypatch):
    calls, _ = _count_fdatasync(monkeypatch)
    log = Log(tmp_path, LogConfig(sync_policy=SyncPolicy.NEVER))
    for _ in range(5):
        log.append(b"x")
    log.close()
    assert calls == []
    # An explicit sync still forces it.
    log = Log(tmp_path, LogConfig(sync_policy=SyncPolicy.NEVER))
    log.append(b"y")
    log.sync()
    assert len(calls) == 1
    log.close()


def test_sync_policy_interval_syncs_in_the_background(tmp_path, monkeypatch):
    log = Log(tmp_path, LogConfig(sync_policy=SyncPolicy.INTERVAL, sync_interval_ms=5))
    calls, called = _count_fdatasync(monkeypatch)
    log.append(b"x")
    assert called.wait(timeout=30)
    assert calls
    log.close()


def test_sync_outside_the_lock_never_touches_a_write_in_progress(tmp_path, monkeypatch):
    """Group commit runs fsync outside the log's lock. Force the unlucky interleaving:
    a sync that got past the lock runs exactly while another thread's append is in
    the middle of writing its frames. The sync must neither write nor count those
    bytes (a double count would put every later frame at a wrong position)."""
    log = Log(tmp_path, LogConfig())
    log.append(b"first")
    main = threading.current_thread()
    syncing = threading.Event()
    may_sync = threading.Event()
    sync_errors: list[BaseException] = []
    real_sync = Segment.sync
    real_crc32c = crc32c_module.crc32c  # what segment.py uses

    def held_sync(self: Segment) -> None:
        if threading.current_thread() is not main:
            syncing.set()
            assert may_sync.wait(timeout=30)
        real_sync(self)

    def syncer() -> None:
        try:
            log.sync()
        except BaseException as exc:
            sync_errors.append(exc)

    def crc32c(data: bytes, value: int = 0) -> int:
        # Log.append (Segment.append_one) copies the frame body into the store's
        # map, then checksums it for the frame prefix (no syscall to hook): the
        # write is in progress.
        if threading.current_thread() is main and not may_sync.is_set():
            may_sync.set()  # the sync now runs while this write is in progress
            thread.join(timeout=30)
        return int(real_crc32c(data, value))

    monkeypatch.setattr(Segment, "sync", held_sync)
    thread = threading.Thread(target=syncer)
    thread.start()
    assert syncing.wait(timeout=30)  # the syncer is past the lock, about to sync
    monkeypatch.setattr(segment_module, "crc32c", crc32c)
    assert log.append(b"second") == 1
    monkeypatch.undo()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert sync_errors == []
    assert log.append(b"third") == 2
    assert [r.value for r in log.iter_records()] == [b"first", b"second", b"third"]
    log.close()
    log = Log(tmp_path, LogConfig())
    assert [r.value for r in log.iter_records()] == [b"first", b"second", b"third"]
    log.close()

"""Idempotent producers: which batches of which producer the log holds.

A producer names itself with a random id and numbers its batches 0, 1, 2, ...;
the log appends batch n only after batch n-1, and a batch it already holds is
answered with its first offsets instead of being appended again. This module is
that bookkeeping: `ProducerTable` (pure, in memory) and `ProducerFile` (its
durable form, the file `producers` beside the segments).

The table is a function of the log: every replica that holds the same entries
holds the same table, because it changes only with appends (stamped with the
entry's time, so expiry is the same everywhere), truncations and resets. So a
retry that reaches a new leader after a failover is still recognised.

Bounds: per producer the last `window` batches (a retry of an older one is
refused as out of order: a producer never has more than `window` in flight);
producers idle for `expiry_ms` (entry time) are forgotten, and beyond
`max_producers` the least recently written one is.
"""

from __future__ import annotations

import collections
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from crc32c import crc32c

from pyproglog.log.errors import DuplicateInFlight, LogError, OutOfOrderSequence
from pyproglog.log.files import write_atomic
from pyproglog.log.format import RecordLike

__all__ = [
    "DEFAULT_EXPIRY_MS",
    "DEFAULT_MAX_PRODUCERS",
    "WINDOW",
    "AppendPlan",
    "Duplicate",
    "ProducerBatch",
    "ProducerFile",
    "ProducerTable",
    "Write",
    "plan_writes",
]

WINDOW = 8
DEFAULT_EXPIRY_MS = 24 * 3600 * 1000
DEFAULT_MAX_PRODUCERS = 100_000


@dataclass(frozen=True, slots=True)
class ProducerBatch:
    """Records [start, start + count) of an append are batch `sequence` of `producer_id`."""

    producer_id: int
    sequence: int
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class Write:
    """One client write of an append (a group commit appends several at once)."""

    records: Sequence[RecordLike]
    producer_id: int = 0  # 0: a plain write, appended every time
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A write the log already holds: where its records were appended the first time."""

    first_offset: int


@dataclass(slots=True)
class _Held:
    sequence: int
    first_offset: int
    count: int
    consensus_index: int


@dataclass(slots=True)
class _Producer:
    batches: collections.deque[_Held]
    last_stamp_ms: int


class ProducerTable:
    def __init__(
        self,
        *,
        window: int = WINDOW,
        expiry_ms: int = DEFAULT_EXPIRY_MS,
        max_producers: int = DEFAULT_MAX_PRODUCERS,
    ) -> None:
        self.window = window
        self.expiry_ms = expiry_ms
        self.max_producers = max_producers
        # Least recently written first: expiry and the size bound pop from the front.
        self._producers: collections.OrderedDict[int, _Producer] = collections.OrderedDict()
        # Consensus index -> its batches the table holds (a cluster's entries only).
        self._by_index: dict[int, list[tuple[int, _Held]]] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def held(self, producer_id: int, sequence: int) -> _Held | None:
        """The batch when the log holds it (None for the next one to append);
        OutOfOrderSequence when appending it would break the producer's order."""
        p = self._producers.get(producer_id)
        if p is None:
            if sequence != 0:
                raise OutOfOrderSequence(producer_id, sequence, 0)
            return None
        last = p.batches[-1].sequence
        if sequence == last + 1:
            return None
        if sequence <= last:
            for b in p.batches:
                if b.sequence == sequence:
                    return b
        raise OutOfOrderSequence(producer_id, sequence, last + 1)

    def add(
        self, batch: ProducerBatch, first_offset: int, consensus_index: int, stamp_ms: int
    ) -> None:
        """Record that the log now holds `batch` at `first_offset` (an append's records)."""
        pid = batch.producer_id
        held = _Held(batch.sequence, first_offset, batch.count, consensus_index)
        p = self._producers.get(pid)
        if p is None:
            p = self._producers[pid] = _Producer(collections.deque(), stamp_ms)
        else:
            self._producers.move_to_end(pid)
            p.last_stamp_ms = max(p.last_stamp_ms, stamp_ms)
        p.batches.append(held)
        if consensus_index:
            self._by_index.setdefault(consensus_index, []).append((pid, held))
        if len(p.batches) > self.window:
            self._unindex(pid, p.batches.popleft())
        self._expire(stamp_ms)

    def _unindex(self, pid: int, held: _Held) -> None:
        if not held.consensus_index:
            return
        at = self._by_index.get(held.consensus_index)
        if at is None:
            return
        at[:] = [(q, h) for q, h in at if h is not held]
        if not at:
            del self._by_index[held.consensus_index]

    def _drop(self, pid: int) -> None:
        for held in self._producers.pop(pid).batches:
            self._unindex(pid, held)

    def _expire(self, now_ms: int) -> None:
        producers = self._producers
        horizon = now_ms - self.expiry_ms
        while producers:
            pid, first = next(iter(producers.items()))
            if first.last_stamp_ms >= horizon and len(producers) <= self.max_producers:
                return
            self._drop(pid)

    def truncate_after(self, offset: int) -> None:
        """Forget every batch with a record after `offset` (the log dropped them)."""
        for pid in list(self._producers):
            batches = self._producers[pid].batches
            while batches and batches[-1].first_offset + batches[-1].count - 1 > offset:
                self._unindex(pid, batches.pop())
            if not batches:
                del self._producers[pid]

    def clear(self) -> None:
        self._producers.clear()
        self._by_index.clear()

    def batches_of_entry(self, consensus_index: int, first_offset: int) -> list[ProducerBatch]:
        """The producer batches of the entry `consensus_index` that the table still holds,
        `start` relative to the entry's `first_offset` (to send the entry to a follower)."""
        found = [
            ProducerBatch(pid, b.sequence, b.first_offset - first_offset, b.count)
            for pid, b in self._by_index.get(consensus_index, ())
        ]
        found.sort(key=lambda b: b.start)
        return found

    def live(self) -> Iterator[tuple[int, _Held, int]]:
        """(producer id, batch, stamp) of everything held, by offset (for compaction)."""
        items = [(pid, b, p.last_stamp_ms) for pid, p in self._producers.items() for b in p.batches]
        items.sort(key=lambda t: t[1].first_offset)
        return iter(items)


@dataclass(slots=True)
class AppendPlan:
    """What an append of several writes does: the records to append (with their
    producer batches), and per write either its position among those records, a
    Duplicate, or the error that refuses it."""

    records: list[RecordLike]
    batches: list[ProducerBatch]
    outcomes: list[int | Duplicate | LogError]


def plan_writes(table: ProducerTable, writes: Sequence[Write], committed_end: int) -> AppendPlan:
    """Decide each write of one append against the table (and the writes before it in
    the same append). A duplicate whose first attempt is not committed yet
    (`committed_end`) is refused as DuplicateInFlight: its offsets may still change."""
    records: list[RecordLike] = []
    batches: list[ProducerBatch] = []
    outcomes: list[int | Duplicate | LogError] = []
    # This append's own batches, per producer: (sequence, position), in order.
    here: dict[int, list[tuple[int, int]]] = {}
    for w in writes:
        pos = len(records)
        pid = w.producer_id
        if pid:
            mine = here.get(pid)
            try:
                if mine is None:
                    held = table.held(pid, w.sequence)
                    if held is not None:
                        if held.first_offset + held.count <= committed_end:
                            outcomes.append(Duplicate(held.first_offset))
                        else:
                            outcomes.append(DuplicateInFlight(pid, w.sequence))
                        continue
                else:
                    last = mine[-1][0]
                    if w.sequence <= last:
                        same = [p for s, p in mine if s == w.sequence]
                        if not same:
                            raise OutOfOrderSequence(pid, w.sequence, last + 1)
                        outcomes.append(same[0])  # appended by this very append
                        continue
                    if w.sequence != last + 1:
                        raise OutOfOrderSequence(pid, w.sequence, last + 1)
            except OutOfOrderSequence as exc:
                outcomes.append(exc)
                continue
            here.setdefault(pid, []).append((w.sequence, pos))
            batches.append(ProducerBatch(pid, w.sequence, pos, len(w.records)))
        records.extend(w.records)
        outcomes.append(pos)
    return AppendPlan(records, batches, outcomes)


# -- the durable form ------------------------------------------------------------------

# consensus index, producer id, sequence, first offset, count, stamp, then a
# CRC-32C of those 44 bytes: fixed width, so the file can be bisected by offset.
_LINE = struct.Struct("<QQQQIq")
_CRC = struct.Struct("<I")
LINE_SIZE = _LINE.size + _CRC.size
# Rewrite the file with the live batches only when it is this many times their size.
_COMPACT_FACTOR = 4
_COMPACT_MIN_BYTES = 1 << 20


def _line(cidx: int, pid: int, seq: int, first: int, count: int, stamp_ms: int) -> bytes:
    body = _LINE.pack(cidx, pid, seq, first, count, stamp_ms)
    return body + _CRC.pack(crc32c(body))


class ProducerFile:
    """The producer batches of the log's appends, one fixed-width line each, in offset order.

    Durability: a line is written (to the page cache) *before* its records go to
    the store, and fsynced before the store is (the log's sync calls `sync` first),
    so a record that survives a crash has its line: after a kill -9 at any instant
    the file holds every batch of the log, plus perhaps lines of an append whose
    records never made it, which `load` cuts off (their offsets are past the log's
    end). A torn last line is cut off too.
    """

    NAME = "producers"

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, self.NAME)
        self._fd: int | None = None
        self.size = 0
        self._dirty = False

    def load(self, table: ProducerTable, next_offset: int) -> int:
        """Replay the file into `table`, dropping what the log does not hold; lines kept."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return 0
        good = 0
        for pos in range(0, len(data) - LINE_SIZE + 1, LINE_SIZE):
            body = data[pos : pos + _LINE.size]
            (crc,) = _CRC.unpack_from(data, pos + _LINE.size)
            if crc32c(body) != crc:
                break
            cidx, pid, seq, first, count, stamp = _LINE.unpack(body)
            if first + count > next_offset:
                break  # an append whose records are not in the log: nothing after it is
            table.add(ProducerBatch(pid, seq, 0, count), first, cidx, stamp)
            good = pos + LINE_SIZE
        if good < len(data):
            self._truncate_file(good)
        self.size = good
        return good // LINE_SIZE

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return self._fd

    def append(
        self, batches: Sequence[ProducerBatch], first_offset: int, cidx: int, stamp_ms: int
    ) -> None:
        """Write the lines of one append's batches (page cache; `sync` makes them durable)."""
        out = b"".join(
            _line(cidx, b.producer_id, b.sequence, first_offset + b.start, b.count, stamp_ms)
            for b in batches
        )
        fd = self._open()
        written = os.write(fd, out)
        self.size += written
        self._dirty = True
        if written != len(out):  # a short write (disk full): the caller undoes the append
            raise OSError(28, "short write to the producer file")

    def sync(self) -> None:
        if self._dirty and self._fd is not None:
            self._dirty = False
            os.fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        """Cut the file back to `size` bytes (undo a failed append; works on a full disk)."""
        self._truncate_file(size)
        self.size = size

    def truncate_after(self, offset: int) -> None:
        """Drop the lines of batches with records after `offset` (lines are in offset order)."""
        lo, hi = 0, self.size // LINE_SIZE
        if not hi:
            return
        with open(self.path, "rb") as f:
            while lo < hi:  # first line whose batch ends after `offset`
                mid = (lo + hi) // 2
                f.seek(mid * LINE_SIZE)
                _, _, _, first, count, _ = _LINE.unpack(f.read(_LINE.size))
                if first + count - 1 > offset:
                    hi = mid
                else:
                    lo = mid + 1
        self.truncate(lo * LINE_SIZE)

    def maybe_compact(self, table: ProducerTable) -> None:
        """Rewrite the file with the table's live batches when it has grown far past them."""
        if self.size < _COMPACT_MIN_BYTES:
            return
        live = list(table.live())
        if self.size < _COMPACT_FACTOR * LINE_SIZE * max(len(live), 1):
            return
        data = b"".join(
            _line(b.consensus_index, pid, b.sequence, b.first_offset, b.count, stamp)
            for pid, b, stamp in live
        )
        self.close()
        write_atomic(self.path, data)
        self.size = len(data)

    def reset(self) -> None:
        self.truncate(0)

    def _truncate_file(self, size: int) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, size)
            os.fdatasync(self._fd)
            return
        if os.path.exists(self.path):
            with open(self.path, "r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

"""`RaftStorage` over the segmented log: the log is the Raft log, stored once.

Layout (DATA_DIR is the `Log`'s directory):
- DATA entries are the records in the `Log`: entry i of term t is one
  `append_batch(records, term=t, consensus_index=i)` (all or nothing after a crash).
- NOOP and CONFIG entries: `DATA_DIR/raft/entries` (sidefile.py), so offsets stay dense.
- Hard state and snapshot metadata: `DATA_DIR/raft/state` (hardstate.py), replaced atomically.

Crash-safety rules that keep the index sequence free of holes (kill -9 or power
loss at any instant):
- before a side entry is written, the `Log` is synced: a side entry on disk implies
  every earlier DATA entry is on disk (even under sync-policy `interval`);
- a conflicting suffix is cut from the `Log` first, then from the side file: a crash
  in between leaves side entries past the log's end, which recovery finds (an entry
  whose predecessor is missing) and drops;
- recovery checks the sequence around every side entry and the snapshot point, and
  drops everything after the first hole, with a warning.
"""

from __future__ import annotations

import bisect
import logging
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from pyproglog.cluster.hardstate import (
    Addresses,
    PersistedState,
    StateFileError,
    load_state,
    save_state,
)
from pyproglog.cluster.payload import DataBatch, StoredBatch
from pyproglog.cluster.sidefile import SideEntry, SideFile, ensure_dir
from pyproglog.log import Log, RecordLike
from pyproglog.log.files import sync_directory, write_atomic
from pyproglog.log.format import FRAME_OVERHEAD
from pyproglog.raft import (
    CompactedError,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    SnapshotMeta,
    UnavailableError,
)

__all__ = ["LogStorage", "StorageError"]

_log = logging.getLogger("pyproglog.cluster.storage")

CACHE_ENTRIES = 8192
"""Recent entries whose metadata is kept in RAM (no record bytes): the hot path
(terms of the last entries, followers slightly behind) never touches the disk."""


class StorageError(Exception):
    """The data directory cannot be (or no longer is) a Raft log."""


class _Meta(NamedTuple):
    term: int
    kind: EntryKind
    first: int
    """First record offset (DATA); for a side entry, the log's next offset when written."""
    end: int
    """Offset just past the entry's records: the log's end once the entry is committed."""
    size: int


_value = operator.attrgetter("value")


def batch_bytes(records: Sequence[RecordLike]) -> int:
    """Stored bytes of a batch: the same sum `Log.append_batch` computes."""
    return sum(map(len, map(_value, records))) + len(records) * FRAME_OVERHEAD


class LogStorage:
    """Implements `pyproglog.raft.RaftStorage`, plus the writes a runtime makes per Ready.

    `directory` is where the cluster's own files go (DATA_DIR/raft), created if absent.

    Not thread-safe: one runtime thread calls it (the `Log` underneath is).
    """

    def __init__(self, log: Log, directory: Path | str) -> None:
        self._log = log
        self._dir = Path(directory)  # DATA_DIR/raft: the runtime passes it
        ensure_dir(self._dir)
        self._state_path = self._dir / "state"
        if log.first_offset_of_entry(0) is not None:
            raise StorageError(
                f"{log.directory} holds records of a single-node log (consensus index 0); "
                "it cannot become a cluster node's Raft log: start the cluster node "
                "on an empty data directory"
            )
        try:
            saved = load_state(self._state_path)
        except StateFileError as exc:
            raise StorageError(str(exc)) from exc
        self._has_state_file = saved is not None
        st = saved or PersistedState(snapshot=SnapshotMeta(lowest_offset=log.lowest_offset))
        self._hs: HardState = st.hard
        self._snap: SnapshotMeta = st.snapshot
        self._snap_addresses: Addresses = st.addresses
        self._commit_dirty = False
        side_path = self._dir / "entries"
        if st.reset_pending:
            _log.warning("a snapshot install was interrupted; finishing it")
            self._reset_log(st.snapshot)
            write_atomic(side_path, b"")
            self._save_state()
        found, damaged, torn = SideFile.load(side_path)
        self._side_file = SideFile(side_path)
        sync_directory(self._dir)  # the side file's name is durable before it is relied on
        self._side: dict[int, SideEntry] = {e.index: e for e in found}
        self._side_idx: list[int] = [e.index for e in found]
        self._conf_idx: list[int] = [e.index for e in found if e.kind is EntryKind.CONFIG]
        self._cache: list[_Meta] = []
        self._cache_base = 0
        self._last = max(self.snapshot().index, log.last_consensus_index, *self._side_idx[-1:])
        if damaged:
            keep = self._side_idx[-1] if self._side_idx else 0
            keep = max(keep, self.snapshot().index)
            if torn is not None and torn > keep:
                keep = torn - 1  # the damaged line's own index is still readable
            torn = None
            _log.warning(
                "the side file was damaged: dropping every entry after index %d "
                "(last index was %d)",
                keep,
                self._last,
            )
            self._truncate_after(keep)
        if torn is not None and self.snapshot().index < torn <= log.last_consensus_index:
            # A kill -9 mid-write tears only the newest line, after which no DATA
            # was appended; DATA past it means the disk lost a written line.
            _log.warning(
                "side entry %d is lost but later entries are stored: dropping every entry after %d",
                torn,
                torn - 1,
            )
            self._truncate_after(torn - 1)
        self._repair_holes()
        if self._hs.commit > self._last:
            _log.warning(
                "hard state commit %d is beyond the last stored index %d: entries %d..%d "
                "were acknowledged but not on disk (a power loss under sync-policy interval?); "
                "clamping the commit index, the leader will send them again",
                self._hs.commit,
                self._last,
                self._last + 1,
                self._hs.commit,
            )
            self._hs = HardState(self._hs.term, self._hs.vote, self._last)
            self._save_state()

    # -- recovery -----------------------------------------------------------------------
    def _exists(self, index: int) -> bool:
        return (
            index == self.snapshot().index
            or index in self._side
            or self._log.entry_span(index) is not None
        )

    def _repair_holes(self) -> None:
        """Drop everything after the first missing index. Holes can only sit next to a
        side entry or the snapshot point (DATA is a prefix of what was appended)."""
        snap = self.snapshot().index
        last = self._last
        missing: int | None = None
        after = [s for s in self._side_idx if s > snap]
        for b in [snap, *after]:
            if b < last and not self._exists(b + 1):
                missing = b + 1 if missing is None else min(missing, b + 1)
                break  # boundaries ascend: the first one found is the lowest of its kind
        for s in after:
            if missing is not None and s - 1 >= missing:
                break
            if not self._exists(s - 1):
                missing = s - 1
                break
        if missing is not None:
            _log.warning(
                "entry %d is missing from the Raft log (last index %d): dropping every "
                "entry after %d",
                missing,
                last,
                missing - 1,
            )
            self._truncate_after(missing - 1)

    # -- the RaftStorage protocol ---------------------------------------------------------
    def first_index(self) -> int:
        return self.snapshot().index + 1

    def last_index(self) -> int:
        return self._last

    def snapshot(self) -> SnapshotMeta:
        saved = self._snap
        index, term = self._log.entry_before_first()
        if index <= saved.index:
            return saved
        # Retention removed segments past the saved snapshot: the log's first entry
        # tells where it starts now.
        conf = saved.conf
        k = bisect.bisect_right(self._conf_idx, index) - 1
        if k >= 0 and self._conf_idx[k] > saved.index:
            c = self._side[self._conf_idx[k]].conf
            assert c is not None
            conf = c
        return SnapshotMeta(index, term, conf, self._log.lowest_offset)

    def hard_state(self) -> HardState:
        return self._hs

    def term(self, index: int) -> int:
        snap = self.snapshot()
        if index == snap.index:
            return snap.term
        if index < snap.index:
            raise CompactedError(f"index {index} is compacted (first index {snap.index + 1})")
        if index > self._last:
            raise UnavailableError(f"index {index} is beyond the last index {self._last}")
        return self._meta(index).term

    def entries(self, lo: int, hi: int, max_bytes: int) -> Sequence[Entry]:
        snap = self.snapshot().index
        if lo <= snap:
            raise CompactedError(f"index {lo} is compacted (first index {snap + 1})")
        if hi > self._last + 1:
            raise UnavailableError(f"index {hi - 1} is beyond the last index {self._last}")
        out: list[Entry] = []
        total = 0
        for i in range(lo, hi):
            m = self._meta(i)
            total += m.size
            if out and total > max_bytes:
                break
            out.append(Entry(i, m.term, m.kind, m.size, self._payload(i, m)))
        return out

    def config_entries(self, lo: int) -> Sequence[Entry]:
        start = max(lo, self.snapshot().index + 1)
        k = bisect.bisect_left(self._conf_idx, start)
        out = []
        for i in self._conf_idx[k:]:
            e = self._side[i]
            out.append(Entry(i, e.term, EntryKind.CONFIG, e.size, e.conf))
        return out

    def _payload(self, index: int, m: _Meta) -> object:
        if m.kind is EntryKind.DATA:
            producers = self._log.producer_batches(index, m.first)
            return StoredBatch(m.first, m.end - m.first, tuple(producers))
        if m.kind is EntryKind.CONFIG:
            return self._side[index].conf
        return None

    def _meta(self, index: int) -> _Meta:
        """Metadata of a stored entry (first_index <= index <= last_index)."""
        c = index - self._cache_base
        if 0 <= c < len(self._cache):
            return self._cache[c]
        side = self._side.get(index)
        if side is not None:
            return _Meta(side.term, side.kind, -1, -1, side.size)
        span = self._log.entry_span(index)
        if span is None:
            raise StorageError(f"entry {index} is missing from the log (last index {self._last})")
        first, end, term, size = span
        return _Meta(term, EntryKind.DATA, first, end, size)

    # -- the runtime's side ---------------------------------------------------------------
    def has_state(self) -> bool:
        """Whether anything was persisted: a node with state never bootstraps."""
        return (
            self._has_state_file
            or bool(self._side)
            or self._last > 0
            or self._log.next_offset != self._log.lowest_offset
        )

    def bootstrap(self, conf: ConfState) -> None:
        """A fresh node founding a cluster: snapshot at index 0 holding `conf`."""
        if self.has_state():
            raise StorageError("this data directory already holds Raft state: not bootstrapping")
        self._snap = SnapshotMeta(0, 0, conf, self._log.lowest_offset)
        self._save_state()

    def append(
        self,
        entries: Sequence[Entry],
        addresses: Mapping[int, tuple[str, str]] | None = None,
    ) -> list[int]:
        """Persist a Ready's entries, replacing any stored suffix from entries[0].index.

        Returns, per entry, the first offset of its records (-1 for NOOP/CONFIG and for
        entries at or below the snapshot, which are skipped). `addresses` (node id ->
        (name, rpc address)) is stored with each CONFIG entry.

        Durability: each DATA entry is one `Log.append_batch`; under sync-policy
        `always` it is fdatasynced before it returns, under `interval` within the
        interval (and before any later side entry). Side entries are fsynced before
        this returns. So under `always` everything is durable on return.
        """
        out = [-1] * len(entries)
        if not entries:
            return out
        snap = self.snapshot().index
        k = 0
        n = len(entries)
        while k < n and entries[k].index <= snap:
            k += 1  # already covered by the snapshot
        # A runtime re-persisting an entry it read from here: nothing to write.
        while k < n:
            e = entries[k]
            if not (isinstance(e.payload, StoredBatch) and e.index <= self._last):
                break
            m = self._meta(e.index)
            if m.kind is not EntryKind.DATA or m.term != e.term:
                raise StorageError(f"entry {e.index}: a stored batch of another entry")
            out[k] = e.payload.first_offset
            k += 1
        if k == n:
            return out
        first = entries[k].index
        if first > self._last + 1:
            raise UnavailableError(f"append at {first} leaves a gap after {self._last}")
        if first <= self._last:
            self._truncate_after(first - 1)
        run: list[SideEntry] = []
        addrs = dict(addresses or {})
        log = self._log
        for j in range(k, n):
            e = entries[j]
            if e.kind is EntryKind.DATA:
                if run:
                    self._write_side(run)
                    run = []
                p = e.payload
                if isinstance(p, StoredBatch):
                    raise StorageError(f"entry {e.index}: a stored batch that is not stored here")
                if not isinstance(p, DataBatch):
                    raise TypeError(f"entry {e.index}: DATA payload {type(p).__name__}")
                records = p.records
                if not records:
                    raise StorageError(f"entry {e.index}: a DATA entry without records")
                offset = log.append_batch(
                    records,
                    term=e.term,
                    consensus_index=e.index,
                    timestamp_ms=p.stamp_ms or None,
                    producers=p.producers,
                )
                out[j] = offset
                self._cached(
                    e.index,
                    _Meta(e.term, e.kind, offset, offset + len(records), batch_bytes(records)),
                )
            else:
                conf: ConfState | None = None
                if e.kind is EntryKind.CONFIG:
                    assert isinstance(e.payload, ConfState)
                    conf = e.payload
                run.append(
                    SideEntry(
                        e.index, e.term, e.kind, e.size, conf, addrs if conf is not None else {}
                    )
                )
        if run:
            self._write_side(run)
        self._last = entries[-1].index
        return out

    def _write_side(self, run: list[SideEntry]) -> None:
        # The Log first: a side entry on disk then implies every earlier DATA entry is.
        self._log.sync()
        self._side_file.append(run)  # fsynced
        end = self._log.next_offset
        for s in run:
            self._side[s.index] = s
            self._side_idx.append(s.index)
            if s.kind is EntryKind.CONFIG:
                self._conf_idx.append(s.index)
            self._cached(s.index, _Meta(s.term, s.kind, end, end, s.size))

    def _cached(self, index: int, m: _Meta) -> None:
        cache = self._cache
        if not cache or self._cache_base + len(cache) != index:
            self._cache = [m]
            self._cache_base = index
            return
        cache.append(m)
        if len(cache) > 2 * CACHE_ENTRIES:
            del cache[:CACHE_ENTRIES]
            self._cache_base += CACHE_ENTRIES

    def _truncate_after(self, index: int) -> None:
        """Drop every entry after `index`: the Log first, then the side file (see the
        module docstring for why this order)."""
        self._log.truncate_after_entry(index)
        if self._side_idx and self._side_idx[-1] > index:
            k = bisect.bisect_right(self._side_idx, index)
            for i in self._side_idx[k:]:
                del self._side[i]
            del self._side_idx[k:]
            del self._conf_idx[bisect.bisect_right(self._conf_idx, index) :]
            self._side_file.rewrite(self._side[i] for i in self._side_idx)
        keep = index + 1 - self._cache_base
        if keep <= 0:
            self._cache = []
        else:
            del self._cache[keep:]
        self._last = max(min(index, self._last), self.snapshot().index)

    def set_hard_state(self, hs: HardState) -> None:
        """Persist term and vote atomically (fsynced) before returning when they change.

        The commit index alone is a hint (a restarted node learns it from the leader
        again): a change of `commit` only is kept in memory and written with the
        next term/vote/snapshot write or at `close`; a crash may lose it.
        """
        old = self._hs
        if hs == old:
            return
        self._hs = hs
        if hs.term != old.term or hs.vote != old.vote:
            self._save_state()
        else:
            self._commit_dirty = True

    def apply_snapshot(
        self, meta: SnapshotMeta, addresses: Mapping[int, tuple[str, str]] | None = None
    ) -> None:
        """A follower installs the leader's snapshot: its log restarts at
        `meta.lowest_offset`, after entry (meta.index, meta.term); side entries go.

        Crash safety: the new metadata is written FIRST, with a `reset_pending`
        flag, then the log is reset and the side file cleared, then the flag is
        cleared. A crash anywhere in between leaves the flag set, and the next open
        redoes the (idempotent) reset. (Writing the metadata last would be unsafe:
        a crash after the reset would leave an empty log with no record of the
        snapshot's membership.)
        """
        if meta.index <= self.snapshot().index:
            return
        self._snap = meta
        self._snap_addresses = dict(addresses or {})
        self._save_state(reset_pending=True)
        self._reset_log(meta)
        self._side_file.rewrite([])
        self._side.clear()
        self._side_idx.clear()
        self._conf_idx.clear()
        self._cache = []
        self._last = meta.index
        self._save_state()

    def _reset_log(self, meta: SnapshotMeta) -> None:
        self._log.reset(entry_before=(meta.index, meta.term), at_offset=meta.lowest_offset)
        sync_directory(self._log.directory)  # the removed segments stay removed

    def compacted_to_retention(self) -> None:
        """After Log retention removed segments: record the snapshot point they leave
        (so its membership no longer depends on the side file) and prune side entries
        at or below it. Written in that order: a crash in between keeps extra lines."""
        snap = self.snapshot()
        if snap.index <= self._snap.index:
            return
        self._snap_addresses = self.addresses(snap.index)
        self._snap = snap
        self._save_state()
        k = bisect.bisect_right(self._side_idx, snap.index)
        if k:
            for i in self._side_idx[:k]:
                del self._side[i]
            del self._side_idx[:k]
            del self._conf_idx[: bisect.bisect_right(self._conf_idx, snap.index)]
            self._side_file.rewrite(self._side[i] for i in self._side_idx)

    def addresses(self, index: int | None = None) -> dict[int, tuple[str, str]]:
        """Node id -> (name, rpc address) stored with the last CONFIG entry at or
        before `index` (default: the last), else with the snapshot."""
        hi = self._last if index is None else index
        k = bisect.bisect_right(self._conf_idx, hi) - 1
        if k >= 0:
            return dict(self._side[self._conf_idx[k]].addresses)
        return dict(self._snap_addresses)

    def entry_offsets(self, index: int) -> tuple[int, int] | None:
        """(first offset, record count) of a DATA entry; None for NOOP/CONFIG."""
        self.term(index)  # raises outside [first_index - 1, last_index]
        if index == self.snapshot().index:
            return None
        m = self._meta(index)
        if m.kind is not EntryKind.DATA:
            return None
        return m.first, m.end - m.first

    def committed_end_after(self, index: int) -> int:
        """The log offset just past every record of the entries <= index (the
        high-water mark once `index` is committed)."""
        if index >= self._last:
            return self._log.next_offset
        c = index - self._cache_base
        if 0 <= c < len(self._cache):
            return self._cache[c].end
        return self._log.offset_after_entry(index)

    def close(self) -> None:
        """Write the lazily kept commit hint, close the side file (not the Log)."""
        if self._commit_dirty:
            self._save_state()
        self._side_file.close()

    def _save_state(self, reset_pending: bool = False) -> None:
        # Durability: atomic replace + fsync (log.files.write_atomic) before returning.
        save_state(
            self._state_path,
            PersistedState(self._hs, self._snap, self._snap_addresses, reset_pending),
        )
        self._has_state_file = True
        self._commit_dirty = False

"""LogStorage: the RaftStorage contract over the segmented log, crash recovery, and
real Raft cores replicating through it (real files in tmp_path, no mocks)."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from pyproglog.cluster.hardstate import load_state, save_state
from pyproglog.cluster.payload import DataBatch, StoredBatch
from pyproglog.cluster.storage import LogStorage, StorageError
from pyproglog.log import Log, LogConfig, Record
from pyproglog.log.format import FRAME_OVERHEAD, INDEX_ENTRY_WIDTH, STORE_HEADER_SIZE
from pyproglog.raft import (
    CompactedError,
    ConfChange,
    ConfChangeKind,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    Raft,
    Role,
    SnapshotMeta,
    UnavailableError,
)

CONF = ConfState(frozenset({1, 2, 3}))
ADDRS = {i: (f"n{i}", f"127.0.0.1:{8400 + i}") for i in (1, 2, 3, 4)}


def recs(tag: str, n: int) -> list[Record]:
    return [Record(f"{tag}-{k}".encode(), timestamp_ms=1_700_000_000_000 + k) for k in range(n)]


def size_of(records: Sequence[Record]) -> int:
    return sum(len(r.value) for r in records) + len(records) * FRAME_OVERHEAD


def data(index: int, term: int, n: int = 2) -> Entry:
    r = recs(f"i{index}t{term}", n)
    return Entry(index, term, EntryKind.DATA, size_of(r), DataBatch(r))


def noop(index: int, term: int) -> Entry:
    return Entry(index, term, EntryKind.NOOP, 0, None)


def config(index: int, term: int, voters: Iterable[int]) -> Entry:
    return Entry(index, term, EntryKind.CONFIG, 0, ConfState(frozenset(voters)))


def open_storage(path: Path, cfg: LogConfig | None = None) -> tuple[Log, LogStorage]:
    log = Log(path, cfg)
    return log, LogStorage(log, path / "raft")


def close(log: Log, st: LogStorage) -> None:
    st.close()
    log.close()


def values(log: Log, first: int, count: int) -> list[bytes]:
    return [log.read(o).value for o in range(first, first + count)]


def entry_view(log: Log, e: Entry) -> tuple[object, ...]:
    """An entry with its payload resolved to what it stands for (record values)."""
    p = e.payload
    if isinstance(p, StoredBatch):
        p = values(log, p.first_offset, p.count)
    elif isinstance(p, DataBatch):
        p = [r.value for r in p.records]
    return (e.index, e.term, e.kind, e.size, p)


def assert_same(mem: MemoryStorage, st: LogStorage, log: Log) -> None:
    assert st.first_index() == mem.first_index()
    assert st.last_index() == mem.last_index()
    assert st.hard_state() == mem.hard_state()
    snap, msnap = st.snapshot(), mem.snapshot()
    assert (snap.index, snap.term, snap.conf) == (msnap.index, msnap.term, msnap.conf)
    first, last = mem.first_index(), mem.last_index()
    for i in range(first - 1, last + 1):
        assert st.term(i) == mem.term(i), i
    for bad, err in ((first - 2, CompactedError), (last + 1, UnavailableError)):
        if bad >= 0:
            with pytest.raises(err):
                mem.term(bad)
            with pytest.raises(err):
                st.term(bad)
    for lo in range(first, last + 1):
        for hi in range(lo, last + 2):
            for budget in (0, 150, 300, 10_000):
                got = [entry_view(log, e) for e in st.entries(lo, hi, budget)]
                want = [entry_view(log, e) for e in mem.entries(lo, hi, budget)]
                assert got == want, (lo, hi, budget)
    with pytest.raises(UnavailableError):
        st.entries(first, last + 2, 1 << 20)
    if first > 1:
        with pytest.raises(CompactedError):
            st.entries(first - 1, last + 1, 1 << 20)
    for lo in range(0, last + 2):
        assert [(e.index, e.term, e.payload) for e in st.config_entries(lo)] == [
            (e.index, e.term, e.payload) for e in mem.config_entries(lo)
        ]


def both_append(mem: MemoryStorage, st: LogStorage, entries: list[Entry]) -> list[int]:
    mem.append(entries)
    return st.append(entries, ADDRS)


# -- the contract, side by side with MemoryStorage ----------------------------------------


def test_the_contract_matches_memory_storage(tmp_path: Path) -> None:
    log, st = open_storage(tmp_path)
    mem = MemoryStorage(CONF)
    assert not st.has_state()
    st.bootstrap(CONF)
    assert st.has_state()
    assert_same(mem, st, log)

    offsets = both_append(
        mem, st, [data(1, 1, 3), noop(2, 2), data(3, 2, 1), config(4, 2, {1, 2}), data(5, 2, 2)]
    )
    assert offsets == [0, -1, 3, -1, 4]
    assert st.entry_offsets(1) == (0, 3)
    assert st.entry_offsets(2) is None
    assert st.entry_offsets(5) == (4, 2)
    assert [st.committed_end_after(i) for i in range(6)] == [0, 3, 3, 4, 4, 6]
    assert_same(mem, st, log)
    assert log.read(3).term == 2

    # A conflicting suffix from index 3: records and side entries after 2 go.
    offsets = both_append(mem, st, [data(3, 3, 2), data(4, 3, 1)])
    assert offsets == [3, 5]
    assert log.next_offset == 6
    assert_same(mem, st, log)
    assert st.addresses() == {}  # the CONFIG entry that carried them was cut

    offsets = both_append(mem, st, [config(5, 3, {1, 2, 3, 4}), noop(6, 4)])
    assert offsets == [-1, -1]
    assert st.addresses() == ADDRS
    assert st.committed_end_after(6) == 6
    assert_same(mem, st, log)

    # A gap is refused by both.
    with pytest.raises(UnavailableError):
        mem.append([data(9, 4)])
    with pytest.raises(UnavailableError):
        st.append([data(9, 4)])

    hs = HardState(term=4, vote=1, commit=5)
    mem.set_hard_state(hs)
    st.set_hard_state(hs)
    assert_same(mem, st, log)

    # A follower installs a snapshot: the log restarts at the leader's lowest offset.
    meta = SnapshotMeta(index=10, term=4, conf=ConfState(frozenset({1, 2})), lowest_offset=100)
    mem.apply_snapshot(meta)
    st.apply_snapshot(meta, {1: ADDRS[1], 2: ADDRS[2]})
    assert st.snapshot() == meta
    assert log.lowest_offset == 100 and log.next_offset == 100
    assert log.entry_before_first() == (10, 4)
    assert_same(mem, st, log)
    assert st.addresses() == {1: ADDRS[1], 2: ADDRS[2]}
    # Entries at or below the snapshot are skipped, as MemoryStorage does.
    offsets = both_append(mem, st, [data(10, 4), data(11, 4, 3), noop(12, 5)])
    assert offsets == [-1, 100, -1]
    assert st.entry_offsets(11) == (100, 3)
    assert_same(mem, st, log)
    # An older snapshot is ignored.
    st.apply_snapshot(replace(meta, index=5))
    assert st.last_index() == 12
    close(log, st)


def test_re_persisting_a_stored_batch_writes_nothing(tmp_path: Path) -> None:
    log, st = open_storage(tmp_path)
    st.bootstrap(CONF)
    st.append([data(1, 1), data(2, 1), noop(3, 2)])
    (stored,) = st.entries(2, 3, 1 << 20)
    assert stored.payload == StoredBatch(2, 2)
    assert st.append([stored, data(3, 2)]) == [2, 4]  # index 3 is replaced
    assert st.last_index() == 3
    assert log.next_offset == 6
    with pytest.raises(StorageError):
        st.append([Entry(4, 2, EntryKind.DATA, 10, StoredBatch(9, 1))])
    close(log, st)


# -- reopening ------------------------------------------------------------------------------


def test_everything_comes_back_after_close_and_reopen(tmp_path: Path) -> None:
    log, st = open_storage(tmp_path)
    mem = MemoryStorage(CONF)
    st.bootstrap(CONF)
    both_append(mem, st, [data(1, 1), noop(2, 2), config(3, 2, {1, 2, 3, 4}), data(4, 2, 3)])
    for hs in (HardState(2, 1, 0), HardState(2, 1, 3)):  # the second: commit only (lazy)
        mem.set_hard_state(hs)
        st.set_hard_state(hs)
    close(log, st)

    log, st = open_storage(tmp_path)
    assert st.has_state()
    assert_same(mem, st, log)  # sizes too: the stored bytes, as they were computed on append
    assert st.addresses(3) == ADDRS
    assert st.committed_end_after(3) == 2
    with pytest.raises(StorageError):
        st.bootstrap(CONF)
    close(log, st)


def test_a_torn_side_file_tail_and_a_leftover_tmp_file(tmp_path: Path) -> None:
    log, st = open_storage(tmp_path)
    mem = MemoryStorage(CONF)
    st.bootstrap(CONF)
    both_append(mem, st, [data(1, 1), noop(2, 2), data(3, 2)])
    st.set_hard_state(HardState(2, 1, 3))
    # The crash happens while CONFIG 4 is being written: no later DATA exists.
    st.append([config(4, 2, {1, 2})], ADDRS)
    close(log, st)
    side = tmp_path / "raft" / "entries"
    raw = side.read_bytes()
    side.write_bytes(raw[: len(raw) - 7])  # mid-record
    (tmp_path / "raft" / "state.tmp").write_bytes(b"half a new state")

    log, st = open_storage(tmp_path)
    mem.set_hard_state(HardState(2, 1, 3))
    assert_same(mem, st, log)
    assert not (tmp_path / "raft" / "state.tmp").exists()
    # Appends go after the intact lines, not after the garbage.
    both_append(mem, st, [config(4, 3, {1, 2, 3})])
    close(log, st)
    log, st = open_storage(tmp_path)
    assert_same(mem, st, log)
    close(log, st)


def test_a_hole_after_a_lost_side_entry_drops_what_follows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log, st = open_storage(tmp_path)
    st.bootstrap(CONF)
    st.append([data(1, 1), noop(2, 2), data(3, 2), data(4, 2)])
    st.set_hard_state(HardState(2, 1, 4))
    close(log, st)
    # A damaged disk lost the only side line: DATA 3 and 4 now follow a hole at 2.
    side = tmp_path / "raft" / "entries"
    side.write_bytes(side.read_bytes()[:-3])

    with caplog.at_level(logging.WARNING, logger="pyproglog.cluster.storage"):
        log, st = open_storage(tmp_path)
    assert st.last_index() == 1
    assert log.next_offset == 2
    assert st.hard_state() == HardState(2, 1, 1)  # clamped, so that the core can start
    assert "side entry 2 is lost" in caplog.text
    assert "commit 4 is beyond the last stored index 1" in caplog.text
    close(log, st)


def test_a_damaged_middle_line_drops_everything_after_it(tmp_path: Path) -> None:
    log, st = open_storage(tmp_path)
    st.bootstrap(CONF)
    st.append([data(1, 1), noop(2, 2), data(3, 2), config(4, 2, {1, 2}), data(5, 2)], ADDRS)
    close(log, st)
    side = tmp_path / "raft" / "entries"
    lines = side.read_bytes().splitlines(keepends=True)
    side.write_bytes(lines[0][:-5] + b"X" * 4 + b"\n" + lines[1])  # line 1 (NOOP 2) damaged

    log, st = open_storage(tmp_path)
    assert st.last_index() == 1
    assert log.next_offset == 2
    close(log, st)


def test_interrupted_truncation_leaves_stale_side_entries_that_recovery_drops(
    tmp_path: Path,
) -> None:
    log, st = open_storage(tmp_path)
    st.bootstrap(CONF)
    st.append([data(1, 1), data(2, 1), noop(3, 2), data(4, 2), config(5, 2, {1})], ADDRS)
    close(log, st)
    # A conflict at 2 cut the Log first, then the crash came before the side file.
    log = Log(tmp_path)
    log.truncate_after_entry(1)
    log.close()

    log, st = open_storage(tmp_path)
    assert st.last_index() == 1  # NOOP 3 and CONFIG 5 follow a hole at 2
    assert st.config_entries(0) == []
    close(log, st)


def test_an_interrupted_snapshot_install_is_finished_on_open(tmp_path: Path) -> None:
    log, st = open_storage(tmp_path)
    st.bootstrap(CONF)
    st.append([data(1, 1), noop(2, 2), data(3, 2)])
    close(log, st)
    # The crash came right after the intent was written (before the log was reset).
    path = tmp_path / "raft" / "state"
    saved = load_state(path)
    assert saved is not None
    meta = SnapshotMeta(index=7, term=3, conf=ConfState(frozenset({1, 2})), lowest_offset=50)
    saved.snapshot, saved.reset_pending = meta, True
    save_state(path, saved)

    log, st = open_storage(tmp_path)
    assert st.snapshot() == meta
    assert (st.first_index(), st.last_index()) == (8, 7)
    assert log.lowest_offset == log.next_offset == 50
    assert st.config_entries(0) == []
    loaded = load_state(path)
    assert loaded is not None and not loaded.reset_pending
    close(log, st)


def test_a_single_node_log_cannot_become_a_raft_log(tmp_path: Path) -> None:
    with Log(tmp_path) as log:
        log.append(b"single-node record")
        with pytest.raises(StorageError, match="single-node log"):
            LogStorage(log, tmp_path / "raft")


def test_a_damaged_state_file_is_refused(tmp_path: Path) -> None:
    log, st = open_storage(tmp_path)
    st.bootstrap(CONF)
    st.set_hard_state(HardState(5, 2, 0))
    close(log, st)
    state = tmp_path / "raft" / "state"
    state.write_bytes(state.read_bytes().replace(b'"term":5', b'"term":1'))
    with Log(tmp_path) as log, pytest.raises(StorageError, match="damaged"):
        LogStorage(log, tmp_path / "raft")


def test_snapshot_follows_log_retention(tmp_path: Path) -> None:
    cfg = LogConfig(
        max_store_bytes=STORE_HEADER_SIZE + 4 * (FRAME_OVERHEAD + 12),
        max_index_bytes=INDEX_ENTRY_WIDTH * 64,
        max_record_bytes=64,
    )
    log, st = open_storage(tmp_path, cfg)
    st.bootstrap(CONF)
    ents: list[Entry] = []
    for i in range(1, 21):
        if i == 7:
            ents.append(config(i, 1, {1, 2, 3, 4}))
        elif i % 5 == 0:
            ents.append(noop(i, 1 + i // 5))
        else:
            ents.append(data(i, 1 + i // 5))
    st.append(ents, ADDRS)
    log.compact_before(log.next_offset - 2)
    snap = st.snapshot()
    index, term = log.entry_before_first()
    assert snap.index == index > 7 and snap.term == term
    assert snap.conf == ConfState(frozenset({1, 2, 3, 4}))
    assert snap.lowest_offset == log.lowest_offset
    assert st.first_index() == index + 1
    assert st.term(index) == term
    with pytest.raises(CompactedError):
        st.term(index - 1)
    assert st.entries(index + 1, 21, 1 << 20)[-1].index == 20
    st.compacted_to_retention()
    close(log, st)
    log, st = open_storage(tmp_path, cfg)
    assert st.snapshot() == snap
    assert st.addresses() == ADDRS
    assert st.last_index() == 20
    close(log, st)


# -- real Raft cores over LogStorage -----------------------------------------------------


class Node:
    def __init__(self, root: Path, node: int, cfg: LogConfig, conf: ConfState | None) -> None:
        self.id = node
        self.path = root / f"n{node}"
        self.cfg = cfg
        self.log, self.st = open_storage(self.path, cfg)
        if conf is not None and not self.st.has_state():
            self.st.bootstrap(conf)
        self.core = self._core()

    def _core(self) -> Raft:
        rng = random.Random(self.id * 7919 + self.st.hard_state().term)
        return Raft(Config(id=self.id, election_tick=10), self.st, rng)

    def reopen(self) -> None:
        close(self.log, self.st)
        self.log, self.st = open_storage(self.path, self.cfg)
        self.core = self._core()


class Cluster:
    """Deterministic and lossless: every message is delivered, Ready handled in etcd order."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes = {n.id: n for n in nodes}
        self.inbox: list[Message] = []
        self.snapshots_sent = 0

    def wire(self, sender: Node, m: Message) -> Message:
        """What a transport does: stored entries travel as their records."""
        if not any(isinstance(e.payload, StoredBatch) for e in m.entries):
            return m
        ents = []
        for e in m.entries:
            p = e.payload
            if isinstance(p, StoredBatch):
                rs = sender.log.read_range(p.first_offset, p.count)
                e = replace(e, payload=DataBatch(rs))
            ents.append(e)
        return replace(m, entries=tuple(ents))

    def handle_ready(self, node: Node) -> None:
        rd = node.core.ready()
        if rd.snapshot is not None:
            node.st.apply_snapshot(rd.snapshot)
        node.st.append(rd.entries, ADDRS)
        if rd.hard_state is not None:
            node.st.set_hard_state(rd.hard_state)
        self.inbox.extend(self.wire(node, m) for m in rd.messages)
        node.core.advance(rd)

    def stabilize(self) -> None:
        for _ in range(1000):
            moved = False
            for node in self.nodes.values():
                if node.core.has_ready():
                    self.handle_ready(node)
                    moved = True
            inbox, self.inbox = self.inbox, []
            for m in inbox:
                if m.to in self.nodes:
                    self.nodes[m.to].core.step(m)
                    if m.snapshot is not None:
                        self.snapshots_sent += 1
                        # The data is already there: the follower's log restarts at
                        # the leader's lowest offset and fills by replication.
                        self.nodes[m.frm].core.report_snapshot(m.to, True)
                    moved = True
            if not moved:
                return
        raise AssertionError("no quiescence")

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for node in self.nodes.values():
                node.core.tick()
            self.stabilize()

    def leader(self) -> Node:
        for _ in range(100):
            leaders = [n for n in self.nodes.values() if n.core.role is Role.LEADER]
            if leaders:
                assert len(leaders) == 1
                return leaders[0]
            self.tick()
        raise AssertionError("no leader")

    def propose(self, count: int, tag: str) -> None:
        leader = self.leader()
        for k in range(count):
            rs = recs(f"{tag}{k}", 1 + k % 3)
            leader.core.propose(DataBatch(rs), size_of(rs))
            self.stabilize()
        self.tick(3)  # heartbeats carry the commit index to everyone


def check_same_logs(nodes: Sequence[Node], start: int = 1) -> None:
    ref = nodes[0]
    last = ref.st.last_index()
    for node in nodes:
        assert node.st.last_index() == last
        assert node.log.next_offset == ref.log.next_offset
        assert node.core.log.committed == last
    for i in range(start, last + 1):
        term = ref.st.term(i)
        span = ref.st.entry_offsets(i)
        for node in nodes:
            assert node.st.term(i) == term
            assert node.st.entry_offsets(i) == span
            if span is not None:
                first, count = span
                assert node.log.first_offset_of_entry(i) == first
                got = node.log.read_range(first, count)
                assert [r.value for r in got] == [r.value for r in ref.log.read_range(first, count)]
                assert {r.term for r in got} == {term}
        assert {n.st.committed_end_after(i) for n in nodes} == {ref.st.committed_end_after(i)}


def test_three_cores_replicate_reopen_and_catch_a_new_node_up_by_snapshot(
    tmp_path: Path,
) -> None:
    cfg = LogConfig(
        max_store_bytes=STORE_HEADER_SIZE + 8 * (FRAME_OVERHEAD + 16),
        max_index_bytes=INDEX_ENTRY_WIDTH * 64,
        max_record_bytes=64,
    )
    cl = Cluster(Node(tmp_path, i, cfg, CONF) for i in (1, 2, 3))
    cl.propose(12, "a")
    nodes = list(cl.nodes.values())
    check_same_logs(nodes)
    assert nodes[0].log.next_offset == sum(1 + k % 3 for k in range(12))

    # Close and reopen every node: storage and a new core.
    for node in nodes:
        node.reopen()
    check_same_logs(nodes)
    cl.propose(12, "b")  # a new election (a NOOP in the side file) and more entries
    check_same_logs(nodes)

    # Retention on the leader, then a new node joins: it gets a SNAPSHOT and its log
    # starts at the leader's lowest offset.
    leader = cl.leader()
    leader.log.compact_before(leader.log.next_offset - 4)
    leader.st.compacted_to_retention()
    snap = leader.st.snapshot()
    assert snap.index > 0 and snap.lowest_offset == leader.log.lowest_offset > 0
    newcomer = Node(tmp_path, 4, cfg, None)
    cl.nodes[4] = newcomer
    leader.core.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    cl.stabilize()
    cl.propose(6, "c")
    assert cl.snapshots_sent >= 1
    assert newcomer.st.snapshot().index == snap.index
    assert newcomer.log.lowest_offset == snap.lowest_offset
    assert newcomer.st.addresses() == ADDRS
    check_same_logs([leader, newcomer], start=snap.index + 1)
    check_same_logs(list(cl.nodes.values()), start=snap.index + 1)

    newcomer.reopen()
    assert newcomer.st.snapshot().index == snap.index
    check_same_logs([leader, newcomer], start=snap.index + 1)
    for node in cl.nodes.values():
        close(node.log, node.st)


def _persist_then_die(node: Node) -> None:
    """The runtime's step 1 for the node's Ready (persist), then a crash before step 2
    (send): the Ready's messages are lost, and the node restarts from its storage."""
    rd = node.core.ready()
    assert rd.messages, "the crash should lose messages"
    if rd.snapshot is not None:
        node.st.apply_snapshot(rd.snapshot)
    node.st.append(rd.entries, ADDRS)
    if rd.hard_state is not None:
        node.st.set_hard_state(rd.hard_state)
    node.reopen()


def test_a_crash_between_persist_and_send_loses_only_the_messages(tmp_path: Path) -> None:
    cl = Cluster(Node(tmp_path, i, LogConfig(), CONF) for i in (1, 2, 3))
    cl.propose(3, "a")
    leader = cl.leader()
    follower, other = (n for n in cl.nodes.values() if n is not leader)
    rs = recs("x", 2)
    leader.core.propose(DataBatch(rs), size_of(rs))
    cl.handle_ready(leader)
    inbox, cl.inbox = cl.inbox, []
    for m in inbox:
        cl.nodes[m.to].core.step(m)
    # A follower persists the entry, then dies before acknowledging it.
    _persist_then_die(follower)
    assert follower.st.last_index() == leader.st.last_index()
    # The leader persists its next entry, then dies before sending it.
    more = recs("y", 1)
    leader.core.propose(DataBatch(more), size_of(more))
    _persist_then_die(leader)
    cl.stabilize()
    cl.propose(3, "b")  # a new election, then more entries
    nodes = [leader, follower, other]
    check_same_logs(nodes)
    for node in nodes:  # stored on every node before the crashes: committed
        log = node.log
        stored = values(log, log.lowest_offset, log.next_offset - log.lowest_offset)
        assert stored.count(b"x-0") == stored.count(b"x-1") == 1
        close(node.log, node.st)

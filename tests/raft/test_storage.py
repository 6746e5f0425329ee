"""MemoryStorage: the reference RaftStorage the core and the simulator run on."""

from __future__ import annotations

import pytest

from pyproglog.raft import (
    CompactedError,
    ConfState,
    Entry,
    EntryKind,
    MemoryStorage,
    UnavailableError,
)

CONF = ConfState(frozenset({1, 2, 3}))


def filled(n: int = 10, size: int = 10) -> MemoryStorage:
    st = MemoryStorage(CONF)
    st.append([Entry(i, 1 + i // 4, EntryKind.DATA, size, i) for i in range(1, n + 1)])
    return st


def test_indexes_and_terms() -> None:
    st = filled()
    assert (st.first_index(), st.last_index()) == (1, 10)
    assert st.term(0) == 0 and st.term(4) == 2 and st.term(10) == 3
    with pytest.raises(UnavailableError):
        st.term(11)


def test_entries_respect_the_byte_budget_but_return_at_least_one() -> None:
    st = filled(size=10)
    assert [e.index for e in st.entries(2, 11, 35)] == [2, 3, 4]
    assert [e.index for e in st.entries(2, 11, 5)] == [2]
    assert [e.index for e in st.entries(2, 5, 10_000)] == [2, 3, 4]
    assert st.entries(3, 3, 100) == []


def test_append_replaces_a_conflicting_suffix() -> None:
    st = filled()
    st.append([Entry(6, 9, EntryKind.DATA, 1, "new")])
    assert st.last_index() == 6 and st.term(6) == 9
    assert [e.index for e in st.entries(1, 7, 10**9)] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(UnavailableError, match="gap"):
        st.append([Entry(9, 9, EntryKind.DATA, 1, None)])


def test_compact_keeps_the_boundary_term_and_membership() -> None:
    st = MemoryStorage(CONF)
    new_conf = ConfState(frozenset({1, 2}), frozenset({4}))
    st.append(
        [
            Entry(1, 1, EntryKind.NOOP, 0, None),
            Entry(2, 1, EntryKind.CONFIG, 0, new_conf),
            Entry(3, 2, EntryKind.DATA, 5, "a"),
            Entry(4, 2, EntryKind.DATA, 5, "b"),
        ]
    )
    st.compact(3, lowest_offset=42)
    snap = st.snapshot()
    assert (snap.index, snap.term, snap.conf, snap.lowest_offset) == (3, 2, new_conf, 42)
    assert st.first_index() == 4 and st.term(3) == 2
    with pytest.raises(CompactedError):
        st.term(2)
    with pytest.raises(CompactedError):
        st.entries(3, 5, 100)
    assert [e.payload for e in st.entries(4, 5, 1)] == ["b"]
    assert st.config_entries(1) == []


def test_config_entries_are_listed_from_an_index() -> None:
    st = MemoryStorage(CONF)
    c1 = ConfState(frozenset({1, 2, 3}), frozenset({4}))
    st.append(
        [
            Entry(1, 1, EntryKind.CONFIG, 0, c1),
            Entry(2, 1, EntryKind.DATA, 5, "a"),
            Entry(3, 1, EntryKind.CONFIG, 0, CONF),
        ]
    )
    assert [e.index for e in st.config_entries(1)] == [1, 3]
    assert [e.index for e in st.config_entries(2)] == [3]


def test_apply_snapshot_restarts_the_log() -> None:
    st = filled()
    other = filled(20)
    other.compact(15)
    st.apply_snapshot(other.snapshot())
    assert (st.first_index(), st.last_index()) == (16, 15)
    assert st.term(15) == other.term(15)

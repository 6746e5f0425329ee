"""Majority arithmetic over a set of voters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def quorum(voters: int) -> int:
    return voters // 2 + 1


def committed_index(voters: Iterable[int], match: Mapping[int, int]) -> int:
    """The highest index a majority of voters has (0 for no voters)."""
    acked = sorted((match.get(v, 0) for v in voters), reverse=True)
    if not acked:
        return 0
    return acked[len(acked) // 2]


def vote_result(voters: Iterable[int], votes: Mapping[int, bool]) -> bool | None:
    """True once a majority granted, False once a majority can no longer grant, else None."""
    vs = list(voters)
    granted = sum(1 for v in vs if votes.get(v) is True)
    rejected = sum(1 for v in vs if votes.get(v) is False)
    q = quorum(len(vs))
    if granted >= q:
        return True
    if rejected > len(vs) - q:
        return False
    return None

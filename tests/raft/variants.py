"""Test-only cores with one known bug each: the simulator must catch every one.

They override the small hooks the production core keeps for exactly this purpose
(`Raft._may_grant_vote` and friends); the production code paths stay as they are.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pyproglog.raft import Config, MemoryStorage, Message, Raft


class CommitOldTerm(Raft):
    """Counts replicas of entries from earlier terms toward commit (Raft paper, Figure 8)."""

    def _may_commit_at(self, index: int) -> bool:
        return True


class TwoVotesPerTerm(Raft):
    """Grants every vote request, even after voting for someone else in the term."""

    def _may_grant_vote(self, m: Message) -> bool:
        return True


class VoteWithoutLogCheck(Raft):
    """Grants votes without checking that the candidate's log is up to date."""

    def _log_ok_for_vote(self, m: Message) -> bool:
        return True


class EagerConfChange(Raft):
    """Starts a membership change before the previous one (or an entry of its term) committed."""

    def _may_change_conf(self) -> bool:
        return True


class ReadBeforeTermCommit(Raft):
    """Serves read indexes before the new leader committed an entry of its term."""

    def _may_serve_reads(self) -> bool:
        return True


class ReadWithoutHeartbeat(Raft):
    """Answers read indexes from its own commit index without confirming leadership."""

    def _read_needs_quorum(self) -> bool:
        return False


VARIANTS: dict[str, Callable[[Config, MemoryStorage, random.Random], Raft]] = {
    "commit-old-term": CommitOldTerm,
    "two-votes": TwoVotesPerTerm,
    "vote-no-log-check": VoteWithoutLogCheck,
    "eager-conf-change": EagerConfChange,
    "read-before-term-commit": ReadBeforeTermCommit,
    "read-without-heartbeat": ReadWithoutHeartbeat,
}

"""Errors the core raises to its runtime. Each message is one line, fit to show a user."""

from __future__ import annotations


class RaftError(Exception):
    """Base of every error the Raft core raises."""


class NotLeader(RaftError):
    """A call only the leader may serve; `leader` is the known leader's id, or 0."""

    def __init__(self, leader: int) -> None:
        hint = f"the leader is node {leader}" if leader else "no leader is known"
        super().__init__(f"this node is not the leader ({hint})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader cannot take proposals now (a leadership transfer is under way)."""


class ConfChangeRejected(RaftError):
    """A membership change the rules forbid now or at all."""


class CompactedError(RaftError):
    """The asked index is below the storage's first index (retention removed it)."""


class UnavailableError(RaftError):
    """The asked index is above the storage's last index."""


class TransferRefused(RaftError):
    """A leadership transfer to a node that cannot lead (a learner, or not a member)."""

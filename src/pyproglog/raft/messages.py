"""The values the core trades with its runtime: entries, membership, hard state, messages.

All are frozen dataclasses with slots: cheap to build, safe to share between the
core, the runtime and the simulator, and typed field by field. Encoding them for
the wire is the runtime's job; the core never looks inside an entry's payload.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

NONE = 0
"""Node id 0 means "nobody": no vote cast, no leader known. Real ids are > 0."""


class EntryKind(IntEnum):
    DATA = 0
    """A group-commit batch of records; the payload is the runtime's handle for it."""
    NOOP = 1
    """Appended by a new leader at once, so that it can commit an entry of its own term."""
    CONFIG = 2
    """A membership change; the payload is the whole `ConfState` after the change."""


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind
    size: int
    """Bytes the entry stands for (its records), used for the in-flight and message budgets."""
    payload: object = None


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership: voters decide elections and commits, learners only receive entries."""

    voters: frozenset[int]
    learners: frozenset[int] = frozenset()

    def contains(self, node: int) -> bool:
        return node in self.voters or node in self.learners


class ConfChangeKind(Enum):
    ADD_LEARNER = "add-learner"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    kind: ConfChangeKind
    node: int


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """A snapshot is metadata only: the runtime streams the data after it is accepted."""

    index: int = 0
    term: int = 0
    conf: ConfState = ConfState(frozenset())
    lowest_offset: int = 0
    """The runtime's own position (the first record offset the snapshot's log keeps)."""


class MsgType(Enum):
    PRE_VOTE = "pre-vote"
    PRE_VOTE_RESP = "pre-vote-resp"
    VOTE = "vote"
    VOTE_RESP = "vote-resp"
    APPEND = "append"
    APPEND_RESP = "append-resp"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_RESP = "heartbeat-resp"
    SNAPSHOT = "snapshot"
    TIMEOUT_NOW = "timeout-now"
    READ_INDEX = "read-index"
    READ_INDEX_RESP = "read-index-resp"


@dataclass(frozen=True, slots=True)
class Message:
    """One message between cores. Field use per type:

    - (PRE_)VOTE: `index`/`log_term` = the candidate's last entry; `force` when a leadership
      transfer asked for it (voters then ignore their leader lease).
    - APPEND: `index`/`log_term` = the entry before `entries`; `commit` = the leader's commit.
    - APPEND_RESP: `index` = the follower's last matching index on success, the rejected
      `index` on reject, with `reject_hint`/`log_term` for fast backtracking.
    - HEARTBEAT(_RESP): `commit`, and `context` echoing a read-index round; the response
      carries the follower's last `index`, with `reject` when that is below the commit the
      heartbeat sent (the follower lost entries it had acknowledged).
    - SNAPSHOT: `snapshot` metadata only.
    - READ_INDEX(_RESP): `context` names the request; the response's `index` is the read index.
    """

    type: MsgType
    to: int
    frm: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    snapshot: SnapshotMeta | None = None
    force: bool = False

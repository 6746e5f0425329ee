"""What the core hands its runtime after inputs, and the order the runtime must follow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from pyproglog.raft.messages import Entry, HardState, Message, SnapshotMeta


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read-index answer: serve the read named `context` once `index` is applied."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the runtime, handled in this order (etcd's):

    1. persist `snapshot` (if any), `entries` (replacing any stored suffix from the first
       one's index) and `hard_state` (if not None) durably;
    2. THEN send `messages` — votes and acknowledgements in them promise that step 1 is
       durable, so sending earlier could grant two votes in a term after a crash;
    3. apply `committed_entries` in order, serve `read_states` once applied;
    4. call `advance(ready)`.
    """

    hard_state: HardState | None
    entries: Sequence[Entry]
    snapshot: SnapshotMeta | None
    messages: Sequence[Message]
    committed_entries: Sequence[Entry]
    read_states: Sequence[ReadState]
    role: Role
    leader: int

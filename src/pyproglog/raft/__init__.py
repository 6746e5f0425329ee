"""The Raft consensus core: a pure, deterministic state machine (no I/O, no clock).

Imports nothing else of pyproglog. See docs/cluster.md for how a runtime drives it.
"""

from pyproglog.raft.core import Config, Raft
from pyproglog.raft.errors import (
    CompactedError,
    ConfChangeRejected,
    NotLeader,
    ProposalDropped,
    RaftError,
    TransferRefused,
    UnavailableError,
)
from pyproglog.raft.messages import (
    NONE,
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    SnapshotMeta,
)
from pyproglog.raft.progress import ProgressState
from pyproglog.raft.ready import ReadState, Ready, Role
from pyproglog.raft.storage import MemoryStorage, RaftStorage

__all__ = [
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeKind",
    "ConfChangeRejected",
    "ConfState",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "MemoryStorage",
    "Message",
    "MsgType",
    "NotLeader",
    "ProgressState",
    "ProposalDropped",
    "Raft",
    "RaftError",
    "RaftStorage",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotMeta",
    "TransferRefused",
    "UnavailableError",
]

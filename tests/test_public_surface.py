"""The public surface, pinned (httpx's tests/test_exported_members.py, per package).

A package's `__all__` must be exactly its public names: every name it binds
that does not start with `_`, apart from its own submodules and `annotations`.
So a helper imported into `__init__` without an underscore, or a name
exported and then deleted, fails here; and the expected sets below make every
change to what users may import a visible edit of this file.
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import pytest

import pyproglog

SRC = Path(pyproglog.__file__).parent

EXPECTED: dict[str, set[str]] = {
    "pyproglog.agent": {"Agent", "DataDirInUse", "StartupError", "run"},
    "pyproglog.cluster": {
        "ClusterNode",
        "ClusterOptions",
        "NodeStatus",
        "PeerStatus",
        "RaftNode",
        "RaftTiming",
        "ReplicatedLog",
        "node_id",
    },
    "pyproglog.client": {
        "AsyncClient",
        "BatchAck",
        "BufferFull",
        "Cancelled",
        "Client",
        "ClientClosed",
        "ClientError",
        "ClientTLS",
        "Consumer",
        "DEFAULT_TIMEOUT",
        "DataLoss",
        "DeadlineExceeded",
        "FetchResult",
        "InvalidArgument",
        "LogInfo",
        "OffsetOutOfRange",
        "OutOfOrderSequence",
        "PermissionDenied",
        "Producer",
        "Record",
        "ReplicaState",
        "RecordInput",
        "ResourceExhausted",
        "Server",
        "ServerError",
        "TLSConfigError",
        "TLSProblem",
        "TimestampOffset",
        "Unauthenticated",
        "Unavailable",
        "Unreachable",
        "Value",
    },
    "pyproglog.cli": {"app", "main"},
    "pyproglog.discovery": {
        "TAG_ID",
        "TAG_RPC_ADDR",
        "ClusterKeyError",
        "EventKind",
        "GossipMembership",
        "Member",
        "MemberEvent",
        "MemberStatus",
        "Membership",
        "MembershipError",
        "StaticMembership",
        "load_cluster_key",
        "new_cluster_key",
    },
    "pyproglog.log": {
        "AppendPlan",
        "CorruptSegment",
        "DiskFull",
        "Duplicate",
        "DuplicateInFlight",
        "EncodedRange",
        "InvalidConfig",
        "Log",
        "LogClosed",
        "LogConfig",
        "LogError",
        "LogInfo",
        "LogWriteError",
        "MissingRecords",
        "OffsetOutOfRange",
        "OutOfOrderSequence",
        "ProducerBatch",
        "Record",
        "RecordLike",
        "RecordTooLarge",
        "SyncPolicy",
        "Write",
    },
    "pyproglog.observability": {
        "NodeMetrics",
        "ObservabilityInterceptor",
        "Tracing",
        "configure_logging",
    },
    "pyproglog.raft": {
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
        "NONE",
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
    },
    "pyproglog.server": {
        "CommitListener",
        "CommitLog",
        "LocalCommitLog",
        "LogService",
        "NoQuorum",
        "NotLeader",
        "Reason",
        "ServerInfo",
        "ServerLister",
        "ServiceError",
        "ShuttingDown",
    },
    "pyproglog.testing": {
        "READY",
        "Cluster",
        "ClusterError",
        "History",
        "HistoryError",
        "Load",
        "ServerProcess",
        "TcpProxy",
        "free_port",
        "run_serve",
        "started_agent",
    },
}


def public_names(module: types.ModuleType) -> set[str]:
    """What `from module import *` would offer if there were no `__all__`, minus submodules."""
    prefix = module.__name__ + "."
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "annotations"
        and not (isinstance(value, types.ModuleType) and value.__name__ == prefix + name)
    }


def packages_with_all() -> list[str]:
    """Every package of ours whose `__init__` declares `__all__` (generated code aside)."""
    found = []
    for init in sorted(SRC.rglob("__init__.py")):
        rel = init.parent.relative_to(SRC)
        if rel.parts[:1] == ("api",) or "__all__" not in init.read_text():
            continue
        found.append(".".join(("pyproglog", *rel.parts)))
    return found


@pytest.mark.parametrize("package", packages_with_all())
def test_all_is_exactly_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{package}.__all__ repeats a name"
    missing = sorted(set(exported) - set(vars(module)))
    assert not missing, f"{package}.__all__ names what it does not define: {missing}"
    unlisted = sorted(public_names(module) - set(exported))
    assert not unlisted, f"{package} binds public names not in __all__: {unlisted}"


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_public_surface_is_pinned(package: str) -> None:
    module = importlib.import_module(package)
    assert set(module.__all__) == EXPECTED[package]


def test_every_pinned_package_is_checked_for_strays() -> None:
    assert set(EXPECTED) <= set(packages_with_all())


def test_a_stray_public_name_is_caught() -> None:
    """The rule itself: an unlisted import is a public name, a private alias is not."""
    module = types.ModuleType("pyproglog.example")
    exec("from __future__ import annotations\nimport os\nimport os as _os", vars(module))
    assert public_names(module) == {"os"}
    module.__dict__["sub"] = types.ModuleType("pyproglog.example.sub")
    assert public_names(module) == {"os"}

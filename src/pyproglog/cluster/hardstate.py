"""The Raft hard state and snapshot metadata: one small file, replaced atomically.

Format: one line, `<crc32 as 8 hex digits> <json>\\n`. Written as temp file,
fsync, rename over the old one, fsync of the directory: after kill -9 or a power
loss at any instant the file is the old version or the new one, whole. The crc
catches a disk that returns damaged bytes: a damaged state file is an error (the
term and vote in it must never silently go back to zero).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyproglog.log.files import write_atomic
from pyproglog.raft import ConfState, HardState, SnapshotMeta

__all__ = [
    "PersistedState",
    "StateFileError",
    "load_state",
    "save_state",
]

Addresses = dict[int, tuple[str, str]]


class StateFileError(Exception):
    """A state or side file that cannot be trusted (damaged, or of another format)."""


@dataclass(slots=True)
class PersistedState:
    hard: HardState = field(default_factory=HardState)
    snapshot: SnapshotMeta = field(default_factory=SnapshotMeta)
    addresses: Addresses = field(default_factory=dict)
    """Node id -> (name, rpc address) of the snapshot's members, when known."""
    reset_pending: bool = False
    """Set while a snapshot install resets the log: a crash mid-way redoes it on open."""


def frame_line(obj: object) -> bytes:
    # Keys in insertion order: a side entry starts with its index, readable in a torn line.
    body = json.dumps(obj, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def parse_line(line: bytes) -> Any:
    """The JSON of one framed line; None when it is torn or damaged."""
    if not line.endswith(b"\n") or len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        return json.loads(body)
    except ValueError:
        return None


def conf_to_json(conf: ConfState) -> dict[str, list[int]]:
    return {"voters": sorted(conf.voters), "learners": sorted(conf.learners)}


def conf_from_json(obj: dict[str, Any]) -> ConfState:
    return ConfState(frozenset(obj["voters"]), frozenset(obj["learners"]))


def addresses_to_json(addresses: Addresses) -> dict[str, dict[str, str]]:
    return {str(k): {"name": n, "rpc_addr": a} for k, (n, a) in sorted(addresses.items())}


def addresses_from_json(obj: dict[str, Any]) -> Addresses:
    return {int(k): (v["name"], v["rpc_addr"]) for k, v in obj.items()}


def save_state(path: Path, st: PersistedState) -> None:
    snap = st.snapshot
    write_atomic(
        path,
        frame_line(
            {
                "version": 1,
                "term": st.hard.term,
                "vote": st.hard.vote,
                "commit": st.hard.commit,
                "snapshot": {
                    "index": snap.index,
                    "term": snap.term,
                    "lowest_offset": snap.lowest_offset,
                    **conf_to_json(snap.conf),
                },
                "addresses": addresses_to_json(st.addresses),
                "reset_pending": st.reset_pending,
            }
        ),
    )


def load_state(path: Path) -> PersistedState | None:
    """The saved state, or None when there is none. A leftover temp file (a crash
    before its rename) is not the state: it is removed."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    obj = parse_line(data)
    if not isinstance(obj, dict) or obj.get("version") != 1:
        raise StateFileError(
            f"{path}: the Raft state file is damaged (checksum or format); "
            "refusing to start with a lost term/vote"
        )
    s = obj["snapshot"]
    return PersistedState(
        hard=HardState(term=obj["term"], vote=obj["vote"], commit=obj["commit"]),
        snapshot=SnapshotMeta(
            index=s["index"],
            term=s["term"],
            conf=conf_from_json(s),
            lowest_offset=s["lowest_offset"],
        ),
        addresses=addresses_from_json(obj["addresses"]),
        reset_pending=bool(obj["reset_pending"]),
    )

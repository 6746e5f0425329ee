"""The NOOP and CONFIG entries of the Raft log: a small append-only file of its own.

They carry no records, so keeping them out of the segmented log keeps offsets
dense. One line per entry, `<crc32 as 8 hex digits> <json>\\n` (see hardstate.py).

Durability: `append` fsyncs before returning (the caller syncs the segmented log
first, so an entry here implies every earlier DATA entry is on disk). A kill -9
mid-write leaves a torn last line, which `load` drops (and cuts off the file, so
later appends do not follow garbage). Truncation rewrites the whole file
atomically (it is small).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyproglog.cluster.hardstate import (
    Addresses,
    addresses_from_json,
    addresses_to_json,
    conf_from_json,
    conf_to_json,
    frame_line,
    parse_line,
)
from pyproglog.log.files import sync_directory, write_atomic
from pyproglog.raft import ConfState, EntryKind

__all__ = ["SideEntry", "SideFile"]

_log = logging.getLogger("pyproglog.cluster.storage")

_KINDS = {EntryKind.NOOP: "noop", EntryKind.CONFIG: "config"}
_BY_NAME = {v: k for k, v in _KINDS.items()}
_TORN_INDEX = re.compile(rb'[0-9a-f]{8} \{"index":(\d+),')


@dataclass(frozen=True, slots=True)
class SideEntry:
    index: int
    term: int
    kind: EntryKind
    size: int = 0
    conf: ConfState | None = None
    addresses: Addresses = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "index": self.index,
            "term": self.term,
            "kind": _KINDS[self.kind],
            "size": self.size,
        }
        if self.conf is not None:
            obj["conf"] = conf_to_json(self.conf)
            obj["addresses"] = addresses_to_json(self.addresses)
        return obj

    @staticmethod
    def from_json(obj: dict[str, Any]) -> SideEntry:
        kind = _BY_NAME[obj["kind"]]
        conf = conf_from_json(obj["conf"]) if "conf" in obj else None
        if kind is EntryKind.CONFIG and conf is None:
            raise ValueError("a CONFIG entry without its membership")
        return SideEntry(
            index=obj["index"],
            term=obj["term"],
            kind=kind,
            size=obj.get("size", 0),
            conf=conf,
            addresses=addresses_from_json(obj.get("addresses", {})),
        )


class SideFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "ab")  # noqa: SIM115 -- held open for the node's life

    @staticmethod
    def load(path: Path) -> tuple[list[SideEntry], bool, int | None]:
        """The intact entries, in order; whether damage was found *before* the last
        line (entries after it are then unknown: the caller must treat the log after
        the last intact entry as lost); and the index the first dropped line names,
        when readable. A torn last line is the normal trace of a kill -9 mid-write and is
        dropped (cut off the file); the caller checks that no DATA entry follows it."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], False, None
        torn: int | None = None
        found: list[SideEntry] = []
        pos = 0
        damaged = False
        while pos < len(data):
            nl = data.find(b"\n", pos)
            end = len(data) if nl < 0 else nl + 1
            obj = parse_line(data[pos:end])
            entry: SideEntry | None = None
            if isinstance(obj, dict):
                try:
                    entry = SideEntry.from_json(obj)
                except (KeyError, ValueError, TypeError):
                    entry = None
            if entry is not None and found and entry.index <= found[-1].index:
                entry = None  # indexes only grow: out of order is damage
            if entry is None:
                m = _TORN_INDEX.match(data, pos, end)
                torn = int(m.group(1)) if m else None
                damaged = end < len(data)
                if damaged:
                    _log.warning(
                        "%s: damaged line at byte %d; dropping it and every line after it",
                        path,
                        pos,
                    )
                else:
                    _log.info("%s: dropping a torn last line (%d bytes)", path, end - pos)

                with open(path, "r+b") as f:
                    f.truncate(pos)
                    os.fsync(f.fileno())
                break
            found.append(entry)
            pos = end
        return found, damaged, torn

    def append(self, entries: Iterable[SideEntry]) -> None:
        data = b"".join(frame_line(e.to_json()) for e in entries)
        if not data:
            return
        self._f.write(data)
        self._f.flush()
        # Durability: fsync before returning -- the entry is acknowledged after this.
        os.fsync(self._f.fileno())

    def rewrite(self, entries: Iterable[SideEntry]) -> None:
        """Replace the whole file (truncation, or clearing at a snapshot install)."""
        self._f.close()
        write_atomic(self.path, b"".join(frame_line(e.to_json()) for e in entries))
        self._f = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._f.close()


def ensure_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(parents=True)
        sync_directory(directory.parent)

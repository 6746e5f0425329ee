"""The gossip addresses of the members last seen: where a restarted node looks for
its cluster when it was given no `--start-join-addrs` (the first node was not).

A hint, not state: written whole (temp file + rename) without fsync; a lost or
stale file only means the node waits to be found by a peer instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["SeedFile"]

_log = logging.getLogger("pyproglog.cluster")


class SeedFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: list[str] | None = None

    def load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            _log.warning("ignoring %s: %s", self.path, exc)
            return []
        if not isinstance(data, list):
            return []
        return [a for a in data if isinstance(a, str)]

    def save(self, addrs: Iterable[str]) -> None:
        seeds = sorted(set(addrs))
        if seeds == self._last:
            return
        self._last = seeds
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(seeds))
            os.replace(tmp, self.path)
        except OSError as exc:
            _log.warning("cannot save the gossip seeds to %s: %s", self.path, exc)

"""Raft node ids from node names.

The core wants integer ids > 0; operators name nodes (`--node-name`). The id is
a stable hash of the name, so every node derives the same id for a peer from
its name alone (in gossip tags, in GetServers), with no id to hand out.
"""

from __future__ import annotations

import hashlib

__all__ = ["node_id"]


def node_id(name: str) -> int:
    """63-bit, never 0 (0 means "nobody" to the core)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1

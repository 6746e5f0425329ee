"""Who is in the cluster: the `Membership` protocol and the values it speaks in.

Consumers (the cluster's reconciler, GetServers) see members and events only
through these types, so gossip (`GossipMembership`) and a fixed peer list
(`StaticMembership`) are interchangeable.

Rules every implementation keeps, and every consumer may rely on:
- Events never describe the local node.
- A callback first gets a JOINED for every member already known when it is
  subscribed (or, if it subscribed before `start()`, when start finishes), then
  live events. A member can thus be reported JOINED twice: handlers must be
  idempotent (key by `name`, compare `epoch`).
- A JOINED for a name already known with a higher `epoch` is that node's
  restart (a new process). A restart is never reported as LEFT: a consumer may
  take LEFT as "this node asked to leave the cluster".
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "TAG_ID",
    "TAG_RPC_ADDR",
    "EventKind",
    "Member",
    "MemberEvent",
    "MemberStatus",
    "Membership",
    "MembershipError",
]

#: Gossip tag with the node's Raft id (decimal, > 0).
TAG_ID = "id"
#: Gossip tag with the node's client/peer gRPC address (host:port).
TAG_RPC_ADDR = "rpc_addr"


class MemberStatus(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"  # missed probes; may still refute
    DEAD = "dead"  # failure detected; not a leave
    LEFT = "left"  # left on purpose


class EventKind(enum.Enum):
    JOINED = "joined"
    LEFT = "left"
    FAILED = "failed"
    UPDATED = "updated"  # tags changed
    RECOVERED = "recovered"  # a suspect refuted the suspicion


class MembershipError(Exception):
    """Joining or running the membership failed; the message says what to check."""


def _valid_hostport(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    return (
        bool(sep and host and port.isdigit())
        and 0 < int(port) <= 65535
        and not any(c.isspace() or c in "/@?#" for c in host)
    )


@dataclass(frozen=True, slots=True)
class Member:
    """One node as this node sees it.

    `epoch` tells one run of a node from the next: a restarted process comes back
    with a higher one (gossip gives the start time in ms; static uses 0).
    """

    name: str
    addr: str  # gossip address, host:port
    tags: Mapping[str, str]
    status: MemberStatus
    epoch: int

    @property
    def node_id(self) -> int | None:
        """The Raft id from the `id` tag; None when absent or not an integer > 0."""
        raw = self.tags.get(TAG_ID)
        if raw is None or not raw.isascii() or not raw.isdigit():
            return None
        value = int(raw)
        return value if value > 0 else None

    @property
    def rpc_addr(self) -> str | None:
        """The gRPC address from the `rpc_addr` tag; None when absent or not host:port.

        Peers advertise it themselves, so it is checked before anyone dials it.
        """
        raw = self.tags.get(TAG_RPC_ADDR)
        return raw if raw is not None and _valid_hostport(raw) else None

    @property
    def is_alive(self) -> bool:
        return self.status in (MemberStatus.ALIVE, MemberStatus.SUSPECT)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    member: Member


class Membership(Protocol):
    async def start(self) -> None:
        """Join the cluster (or found it); raises MembershipError when the join fails."""
        ...

    def members(self) -> list[Member]:
        """The current view, self included."""
        ...

    def subscribe(self, callback: Callable[[MemberEvent], None]) -> None:
        """Call `callback` on the event loop for every event (see the module rules)."""
        ...

    async def update_tags(self, **changes: str | None) -> None:
        """Change this node's tags (None removes one); the others see UPDATED."""
        ...

    async def leave(self) -> None:
        """Leave on purpose: the others see LEFT at once. Then stop."""
        ...

    async def stop(self) -> None:
        """Stop without leaving: the others see FAILED once they detect it."""
        ...

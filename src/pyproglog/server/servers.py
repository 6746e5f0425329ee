"""Who serves the log: the cluster view GetServers and `/v1/servers` answer from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ServerInfo", "ServerLister"]


@dataclass(frozen=True, slots=True)
class ServerInfo:
    id: str
    rpc_addr: str  # the client-facing gRPC address
    is_leader: bool
    voter: bool = True  # False: a learner (a new member still catching up)


# The agent provides it: a single node lists itself as leader, a cluster its membership.
ServerLister = Callable[[], Sequence[ServerInfo]]

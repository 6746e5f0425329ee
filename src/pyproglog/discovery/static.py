"""A fixed member list: tests, and clusters whose peers are known in advance."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence

from pyproglog.discovery.membership import (
    EventKind,
    Member,
    MemberEvent,
    MembershipError,
    MemberStatus,
)

__all__ = ["StaticMembership"]

_log = logging.getLogger(__name__)
_Callback = Callable[[MemberEvent], None]


class StaticMembership:
    """Every member is alive and stays so: there is no failure detection.

    Subscribers get a JOINED for each peer (as with gossip), and nothing after
    that. `leave()` is local only: this node's own status becomes LEFT; nobody
    else is told, since there is nobody to tell.
    """

    def __init__(self, self_member: Member, peers: Sequence[Member]) -> None:
        names = [self_member.name, *(p.name for p in peers)]
        if len(set(names)) != len(names):
            raise MembershipError(f"member names must be unique, got {names}")
        self._self = dataclasses.replace(self_member, status=MemberStatus.ALIVE)
        self._peers = [dataclasses.replace(p, status=MemberStatus.ALIVE) for p in peers]
        self._callbacks: list[_Callback] = []
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        if self._started:
            raise MembershipError("the membership is already started")
        self._started = True
        loop = asyncio.get_running_loop()
        for callback in self._callbacks:
            loop.call_soon(self._replay, callback)

    def members(self) -> list[Member]:
        return [self._self, *self._peers]

    def subscribe(self, callback: _Callback) -> None:
        self._callbacks.append(callback)
        if self._started and not self._stopped:
            asyncio.get_running_loop().call_soon(self._replay, callback)

    async def update_tags(self, **changes: str | None) -> None:
        tags = {k: v for k, v in {**self._self.tags, **changes}.items() if v is not None}
        self._self = dataclasses.replace(self._self, tags=tags)

    async def leave(self) -> None:
        self._self = dataclasses.replace(self._self, status=MemberStatus.LEFT)
        await self.stop()

    async def stop(self) -> None:
        self._stopped = True

    def _replay(self, callback: _Callback) -> None:
        if self._stopped:
            return
        for peer in self._peers:
            try:
                callback(MemberEvent(EventKind.JOINED, peer))
            except Exception:
                _log.exception("membership event handler failed")

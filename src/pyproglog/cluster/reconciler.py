"""Membership events → configuration changes, on the leader (the book's `Replicator` role
of Serf's handler: a node that joins the gossip is added to Raft).

- A live gossip member that is not in the configuration is added as a learner,
  then promoted to voter once it has caught up (one change at a time; the core
  refuses a second while one is uncommitted, and we simply try again).
- Nothing is ever removed here: a stopped, crashed or restarting node stays a
  voter (a plain stop must never shrink the cluster). Removal is explicit:
  `--leave-on-shutdown` or `proglog servers remove`.
- A member removed on request is not re-added while the same process (same
  gossip epoch) is still alive: it is on its way out.
- Every node (leader or not) learns peers' RPC addresses from the gossip tags.
- A new leader re-reads every member at once: events it saw as a follower were
  not acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pyproglog.cluster.node import RaftNode
from pyproglog.discovery import EventKind, Member, MemberEvent, Membership, MemberStatus
from pyproglog.raft import ConfChange, ConfChangeKind, ConfChangeRejected

__all__ = ["Reconciler"]

_log = logging.getLogger("pyproglog.cluster")


class Reconciler:
    def __init__(self, node: RaftNode, membership: Membership, *, interval: float = 0.2) -> None:
        self.node = node
        self.membership = membership
        self.interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # id -> gossip epoch of the process that was removed on request.
        self.removed: dict[int, int] = {}
        self._stopped = False

    def start(self) -> None:
        self.membership.subscribe(self._on_event)
        self.node.add_role_listener(self._wake.set)
        self._learn(self.membership.members())
        self._task = asyncio.create_task(self._run(), name="proglog-reconciler")

    async def stop(self) -> None:
        # The flag as well as the cancel: asyncio.wait_for in 3.11 can swallow a
        # cancellation that lands as its timeout fires, and the loop would go on.
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def forget(self, node_id: int) -> None:
        """`node_id` was removed on request: do not add its current process back."""
        for m in self.membership.members():
            if m.node_id == node_id:
                self.removed[node_id] = m.epoch

    def _on_event(self, event: MemberEvent) -> None:
        self._learn([event.member])
        nid = event.member.node_id
        if nid is not None and event.kind in (EventKind.JOINED, EventKind.RECOVERED):
            # Back (a restart, a healed partition): no need to wait out a retry backoff.
            self.node.transport.retry_now(nid)
        self._wake.set()

    def _learn(self, members: list[Member]) -> None:
        book = {}
        for m in members:
            if m.node_id is not None and m.rpc_addr is not None:
                book[m.node_id] = (m.name, m.rpc_addr)
        if book:
            self.node.learn_addresses(book)

    async def _run(self) -> None:
        while not self._stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            if self._stopped or not self.node.is_leader:
                continue
            try:
                await self._reconcile()
            except Exception as exc:  # a failed change is retried next round
                _log.debug("membership change deferred: %s", exc)

    async def _reconcile(self) -> None:
        node = self.node
        members = self.membership.members()
        self._learn(members)
        conf = node.conf()
        timeout = node.timing.election_timeout * 2
        for m in members:
            nid = m.node_id
            if nid is None or nid == node.id or conf.contains(nid):
                continue
            if m.status is not MemberStatus.ALIVE or m.rpc_addr is None:
                continue
            if self.removed.get(nid) == m.epoch:
                continue
            self.removed.pop(nid, None)
            _log.info("adding %s (%s) as a learner", m.name, m.rpc_addr)
            await self._change(ConfChange(ConfChangeKind.ADD_LEARNER, nid), timeout)
            return  # one change at a time
        for nid in node.caught_up_learners():
            name = node.addresses.get(nid, (str(nid), ""))[0]
            _log.info("promoting %s to voter: it has caught up", name)
            await self._change(ConfChange(ConfChangeKind.PROMOTE, nid), timeout)
            return

    async def _change(self, change: ConfChange, timeout: float) -> None:
        with contextlib.suppress(ConfChangeRejected):
            await self.node.change_conf(change, timeout)

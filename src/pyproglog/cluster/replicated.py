"""`ReplicatedLog`: the CommitLog of a cluster node (the book's DistributedLog).

Writes go through Raft: on the leader a batch becomes one proposal and is
answered once committed; on a follower it is forwarded to the leader over the
peer service (the client was authorized here, on its own certificate, before
the call reached the service). Reads on any node serve committed records only:
every read is bounded by the committed end, and tailing wakes on commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from pyproglog.cluster.node import RaftNode
from pyproglog.cluster.transport import relayed_error
from pyproglog.log import EncodedRange, Log, LogInfo, OffsetOutOfRange, Record, Write
from pyproglog.raft import NONE, Role
from pyproglog.server.commitlog import CommitListener, WriteOutcome
from pyproglog.server.errors import NoQuorum, NotLeader
from pyproglog.server.results import ReplicaState, ReplicationState

__all__ = ["ReplicatedLog"]


class ReplicatedLog:
    """CommitLog over a RaftNode and its segmented log."""

    def __init__(self, node: RaftNode, log: Log, *, write_timeout: float) -> None:
        self.node = node
        self.log = log
        self.write_timeout = write_timeout
        # How long a write waits for a leader to be known (an election in progress).
        self.leader_wait = node.timing.election_timeout * 2

    @property
    def max_record_bytes(self) -> int:
        return self.log.config.max_record_bytes

    async def append_writes(self, writes: Sequence[Write]) -> list[WriteOutcome]:
        node = self.node
        if node.failure is not None:
            raise NoQuorum(f"this node cannot replicate: {node.failure}")
        if node.leader == NONE and not await node.wait_for_leader(self.leader_wait):
            raise NotLeader(None)
        if node.is_leader:
            try:
                return await node.propose_writes(writes, self.write_timeout)
            except NotLeader:
                # Refused before it was proposed (leadership is moving: a transfer on
                # SIGTERM, or just lost): nothing was written, so it may go to the
                # leader that takes over, and the producer sees no error.
                if not await self._leader_elsewhere():
                    raise
        return await self._forward(writes)

    async def _leader_elsewhere(self) -> bool:
        """Wait (up to leader_wait) for another node to lead; whether one does."""
        node = self.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.leader_wait
        while node.is_leader or node.leader == NONE or node.leader_addr is None:
            left = deadline - loop.time()
            if left <= 0:
                return False
            await node.wait_changed(left)
        return True

    async def _forward(self, writes: Sequence[Write]) -> list[WriteOutcome]:
        node = self.node
        leader = node.leader
        if leader == NONE or node.leader_addr is None:
            raise NotLeader(node.leader_addr)
        try:
            return await node.transport.forward(leader, writes, self.write_timeout)
        except grpc.aio.AioRpcError as exc:
            why = exc.details() or exc.code().name
            relayed = relayed_error(exc)
            if relayed is exc:  # the leader unreachable or gone: no answer of its own
                raise NoQuorum(
                    f"forwarding the write to the leader at {node.leader_addr} failed: {why}"
                ) from None
            raise relayed from None

    # -- reads: committed records only ------------------------------------------------------

    def _bound(self, offset: int) -> int:
        end = self.node.committed_end
        if offset >= end:
            raise OffsetOutOfRange(offset, self.log.lowest_offset, end)
        return end

    def read(self, offset: int) -> Record:
        self._bound(offset)
        return self.log.read(offset)

    def read_range(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        end = self._bound(offset)
        return self.log.read_range(offset, min(max_records, end - offset), max_bytes)

    def read_encoded(self, offset: int, max_records: int, max_bytes: int) -> EncodedRange:
        end = self._bound(offset)
        n = min(max_records, end - offset)
        return self.log.read_encoded(offset, max_records=n, max_bytes=max_bytes)

    @property
    def committed_end(self) -> int:
        return self.node.committed_end

    @property
    def lowest_offset(self) -> int:
        return self.log.lowest_offset

    def info(self) -> LogInfo:
        return self.log.info()

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        return self.log.offset_for_timestamp(timestamp_ms)

    async def read_barrier(self) -> None:
        await self.node.read_barrier(self.write_timeout)

    def add_commit_listener(self, listener: CommitListener) -> None:
        self.node.add_commit_listener(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        self.node.remove_commit_listener(listener)

    def replication(self) -> ReplicationState:
        node = self.node
        if node.core is None:  # not started yet: no configuration to speak of
            return ReplicationState(node.role.value, node.term, None, None)
        st = node.status()
        role = st.role.value
        if st.role is Role.FOLLOWER and st.id in node.conf().learners:
            role = "learner"
        leader_id = leader_addr = None
        if st.leader != NONE:
            leader_id, leader_addr = node.addresses.get(st.leader, (str(st.leader), ""))
            leader_addr = leader_addr or None
        # Only the leader knows how far each member has got (status() says 0 elsewhere).
        replicas = (
            tuple(
                ReplicaState(p.name, p.rpc_addr, p.voter, p.match, p.lag)
                for p in sorted(st.peers, key=lambda p: p.name)
            )
            if st.role is Role.LEADER
            else ()
        )
        return ReplicationState(role, st.term, leader_id, leader_addr, replicas)

"""`ClusterNode`: everything a node needs to be part of a cluster, started and stopped
in the agent's order.

    open()              Raft storage over the log, the peer transport
    add_to_server(s)    the peer service on the node's gRPC server (before it starts)
    join()              gossip: announce this node, learn the others; then the Raft
                        driver (bootstrapping only when gossip found no cluster)
                        and the reconciler
    hand_over()         on SIGTERM: leadership transfer, then leave if asked to
    part()              stop gossiping (a graceful leave if asked to)
    close()             stop the driver and the transport; flush the Raft state

`commit_log` is the service's CommitLog (ReplicatedLog); `servers()` answers
GetServers from the Raft configuration and the addresses gossip told us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pyproglog.cluster.ids import node_id
from pyproglog.cluster.node import RaftNode, RaftTiming
from pyproglog.cluster.payload import StoredBatch
from pyproglog.cluster.reconciler import Reconciler
from pyproglog.cluster.replicated import ReplicatedLog
from pyproglog.cluster.seeds import SeedFile
from pyproglog.cluster.storage import LogStorage
from pyproglog.cluster.transport import PeerTransport, add_peer_service, peer_max_message_bytes
from pyproglog.discovery import EventKind, GossipMembership, MemberEvent, Membership
from pyproglog.log import Log, Write
from pyproglog.observability.cluster_metrics import ClusterFigures, PeerFigures
from pyproglog.raft import NONE, ConfChange, ConfChangeKind, ConfChangeRejected, Message
from pyproglog.server.commitlog import WriteOutcome
from pyproglog.server.errors import Busy, InvalidArgument, NotLeader
from pyproglog.server.servers import ServerInfo

__all__ = ["ClusterNode", "ClusterOptions"]

# Gossip tag of a node that is in a cluster's configuration (has Raft state): a
# node told to bootstrap does not when it sees one (pod 0 that lost its volume).
MEMBER_TAG = "member"

_log = logging.getLogger("pyproglog.cluster")


@dataclass(frozen=True)
class ClusterOptions:
    name: str
    rpc_addr: str
    """The client/peer RPC address others are told (advertised)."""
    bind_addr: str
    """Gossip host:port."""
    join_addrs: Sequence[str] = ()
    bootstrap: bool = False
    advertise_host: str | None = None
    cluster_key: bytes | None = None
    gossip_fast: bool = False
    timing: RaftTiming = field(default_factory=RaftTiming)
    peer_credentials: grpc.ChannelCredentials | None = None
    leave_on_shutdown: bool = False
    write_timeout: float = 10.0


class ClusterNode:
    def __init__(self, log: Log, data_dir: Path, options: ClusterOptions, *, sync_always: bool):
        self.log = log
        self.data_dir = data_dir
        self.options = options
        self.id = node_id(options.name)
        self._sync_always = sync_always
        self.node: RaftNode | None = None
        self.commit_log: ReplicatedLog | None = None
        self.membership: Membership | None = None
        self.reconciler: Reconciler | None = None
        self._had_state = False
        self._tagger: asyncio.Task[None] | None = None
        self._seeds = SeedFile(data_dir / "raft" / "gossip-seeds")

    # -- start ----------------------------------------------------------------------------

    async def open(self) -> None:
        o = self.options
        storage = await asyncio.to_thread(LogStorage, self.log, self.data_dir / "raft")
        self._had_state = storage.has_state()
        transport = PeerTransport(
            self.id,
            self._resolve,
            credentials=o.peer_credentials,
            address_book=lambda: self.node.address_book() if self.node else {},
            # The peers' gRPC servers take what --max-record-bytes allows (agent.py).
            max_message_bytes=peer_max_message_bytes(self.log.config.max_record_bytes),
        )
        self.node = RaftNode(
            node_id=self.id,
            name=o.name,
            rpc_addr=o.rpc_addr,
            log=self.log,
            storage=storage,
            transport=transport,
            timing=o.timing,
            sync_always=self._sync_always,
        )
        self.commit_log = ReplicatedLog(self.node, self.log, write_timeout=o.write_timeout)

    def _resolve(self, batch: StoredBatch) -> bytes:
        """A stored entry's records as stored (the peer stream carries these bytes)."""
        got = self.log.read_encoded(batch.first_offset, max_records=batch.count, max_bytes=1 << 62)
        if got.count != batch.count:
            raise OSError(
                f"entry at offset {batch.first_offset}: read {got.count} of {batch.count} records"
            )
        return got.data

    def add_to_server(self, server: grpc.aio.Server) -> None:
        add_peer_service(server, self)

    async def join(self) -> None:
        """Start gossiping. A new node must reach one of `--start-join-addrs`; a
        member with state also tries the peers it knew (a restarted first node
        has no join addresses) and, when none answers, starts alone and is found."""
        o = self.options
        assert self.node is not None
        tags = {"id": str(self.id), "rpc_addr": o.rpc_addr}
        if self._had_state:
            tags[MEMBER_TAG] = "1"
        seeds = list(o.join_addrs)
        seeds += [a for a in self._seeds.load() if a not in seeds and a != o.bind_addr]
        self.membership = GossipMembership(
            o.name,
            o.bind_addr,
            tags,
            seeds,
            advertise_host=o.advertise_host,
            key=o.cluster_key,
            fast=o.gossip_fast,
            # A new node must find the cluster it was pointed at; a bootstrapping
            # one tries (see below) but may be the first.
            must_join=not self._had_state and not o.bootstrap,
        )
        await self.membership.start()
        await self.node.start(bootstrap=self._may_bootstrap())
        if not self._had_state:
            self._tagger = asyncio.create_task(self._tag_when_member(), name="proglog-member-tag")
        self.membership.subscribe(self._remember_seeds)
        self.reconciler = Reconciler(self.node, self.membership)
        self.reconciler.start()

    def _may_bootstrap(self) -> bool:
        """Bootstrap only a new node asked to, and only when gossip found no cluster:
        a first node whose disk was lost and that comes back with `--bootstrap`
        (a StatefulSet's pod 0 given the others as join addresses) must rejoin the
        cluster that goes on without it, not found a second one beside it."""
        if not self.options.bootstrap:
            return False
        if self._had_state:
            _log.info("cluster state found in the data directory: rejoining, not bootstrapping")
            return False
        assert self.membership is not None
        others = [
            m
            for m in self.membership.members()
            if m.node_id not in (None, self.id) and m.tags.get(MEMBER_TAG) == "1"
        ]
        if others:
            names = ", ".join(sorted(m.name for m in others))
            _log.warning(
                "--bootstrap ignored: this node has no state but gossip found the cluster "
                "of %s; waiting to be added to it instead of founding another",
                names,
            )
            return False
        return True

    async def _tag_when_member(self) -> None:
        """Say in gossip once this node is in the configuration (see _may_bootstrap)."""
        node, membership = self.node, self.membership
        assert node is not None and membership is not None
        while not node.conf().contains(node.id):
            await asyncio.sleep(0.2)
        try:
            await membership.update_tags(**{MEMBER_TAG: "1"})
        except Exception as exc:
            _log.warning("cannot tag this node as a cluster member in gossip: %s", exc)

    def _remember_seeds(self, event: MemberEvent) -> None:
        if self.membership is not None and event.kind is not EventKind.UPDATED:
            self._seeds.save(m.addr for m in self.membership.members() if m.addr)

    # -- PeerHandler (the peer service calls these) -------------------------------------------

    def deliver(self, message: Message, addresses: dict[int, tuple[str, str]]) -> None:
        if self.node is not None:
            self.node.deliver(message, addresses)

    async def forward(self, writes: Sequence[Write]) -> list[WriteOutcome]:
        """Writes a follower forwarded: proposed here if we lead, never forwarded again
        (propose_writes raises NotLeader on a node that does not lead)."""
        node = self.node
        assert node is not None
        return await node.propose_writes(writes, self.options.write_timeout)

    async def remove_server(self, name: str) -> None:
        node = self.node
        assert node is not None
        target = node_id(name)
        if not node.conf().contains(target):
            raise InvalidArgument(f"{name} is not a member of the cluster")
        if not node.is_leader:
            if node.leader == NONE:
                raise NotLeader(None)
            await node.transport.remove_server(node.leader, name, self.options.write_timeout)
            return
        if target == node.id:
            # The leader cannot remove itself: hand over first, then ask the new leader.
            if not await node.transfer_leadership(node.timing.election_timeout):
                raise NotLeader(None)
            await node.wait_for_leader(node.timing.election_timeout * 2)
            await node.transport.remove_server(node.leader, name, self.options.write_timeout)
            return
        if self.reconciler is not None:
            self.reconciler.forget(target)
        change = ConfChange(ConfChangeKind.REMOVE, target)
        try:
            await node.change_conf(change, self.options.write_timeout)
        except ConfChangeRejected as exc:  # one change at a time: the reconciler's is pending
            raise Busy(f"cannot remove {name} now: {exc}; retry") from None
        _log.info("removed %s from the cluster", name)

    # -- what GetServers answers ---------------------------------------------------------------

    def servers(self) -> list[ServerInfo]:
        node = self.node
        if node is None or node.core is None:
            return []
        conf = node.conf()
        members = conf.voters | conf.learners
        if not members:  # not added yet: we only know ourselves
            return [ServerInfo(self.options.name, self.options.rpc_addr, False, voter=False)]
        out = []
        for pid in sorted(members, key=lambda p: node.addresses.get(p, (str(p), ""))[0]):
            name, addr = node.addresses.get(pid, (str(pid), ""))
            out.append(ServerInfo(name, addr, pid == node.leader, voter=pid in conf.voters))
        return out

    def figures(self) -> ClusterFigures:
        """What the metrics show, read at each scrape."""
        node = self.node
        assert node is not None
        st = node.status()
        queued = node.transport.queued_bytes()
        peers = tuple(
            PeerFigures(p.name, p.lag, queued.get(p.id, 0)) for p in st.peers if p.id != node.id
        )
        return ClusterFigures(
            role=st.role.value,
            term=st.term,
            commit_index=st.commit_index,
            applied_index=st.applied_index,
            committed_end=st.committed_end,
            elections=node.elections,
            leader_changes=node.leader_changes,
            proposals_committed=node.proposals_committed,
            snapshot_installs=node.snapshot_installs,
            peers=peers if node.is_leader else (),
        )

    # -- stop -----------------------------------------------------------------------------------

    async def hand_over(self) -> None:
        """SIGTERM: leadership moves first (a rolling restart costs a fraction of an
        election), then, with --leave-on-shutdown, the node leaves the configuration."""
        node = self.node
        if node is None or node.failure is not None:
            return
        timeout = node.timing.election_timeout
        if node.is_leader:
            await node.transfer_leadership(timeout)
        if self.options.leave_on_shutdown:
            try:
                await self.remove_server(self.options.name)
            except Exception as exc:
                _log.warning("could not leave the cluster configuration: %s", exc)

    async def part(self) -> None:
        """Stop gossiping: a graceful leave with --leave-on-shutdown, else just stop
        (the others see the node fail, and it stays a member)."""
        if self._tagger is not None:
            self._tagger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tagger
        if self.reconciler is not None:
            await self.reconciler.stop()
        if self.membership is not None:
            try:
                if self.options.leave_on_shutdown:
                    await self.membership.leave()
                await self.membership.stop()
            except Exception as exc:
                _log.warning("leaving the gossip failed: %s", exc)

    async def close(self) -> None:
        """Stop the Raft driver and the transport; flush the Raft state."""
        if self.node is not None:
            await self.node.stop()

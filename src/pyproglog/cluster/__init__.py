"""The cluster runtime: Raft over the segmented log, the peer transport, membership.

`ClusterNode` is what the agent starts; the rest is here for tests and tools.
See docs/cluster.md.
"""

from pyproglog.cluster.ids import node_id
from pyproglog.cluster.node import NodeStatus, PeerStatus, RaftNode, RaftTiming
from pyproglog.cluster.replicated import ReplicatedLog
from pyproglog.cluster.runtime import ClusterNode, ClusterOptions

__all__ = [
    "ClusterNode",
    "ClusterOptions",
    "NodeStatus",
    "PeerStatus",
    "RaftNode",
    "RaftTiming",
    "ReplicatedLog",
    "node_id",
]

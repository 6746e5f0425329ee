"""Who is in the cluster: membership behind one protocol (docs/cluster.md).

`GossipMembership` (kinship: SWIM + Lifeguard, encrypted with the cluster key)
for real clusters, `StaticMembership` for tests and fixed peer lists. Both speak
`Member` and `MemberEvent`; the rules consumers rely on are in
`pyproglog.discovery.membership`. This package imports nothing else of ours.
"""

from pyproglog.discovery.gossip import GossipMembership
from pyproglog.discovery.keys import ClusterKeyError, load_cluster_key, new_cluster_key
from pyproglog.discovery.membership import (
    TAG_ID,
    TAG_RPC_ADDR,
    EventKind,
    Member,
    MemberEvent,
    Membership,
    MembershipError,
    MemberStatus,
)
from pyproglog.discovery.static import StaticMembership

__all__ = [
    "TAG_ID",
    "TAG_RPC_ADDR",
    "ClusterKeyError",
    "EventKind",
    "GossipMembership",
    "Member",
    "MemberEvent",
    "MemberStatus",
    "Membership",
    "MembershipError",
    "StaticMembership",
    "load_cluster_key",
    "new_cluster_key",
]

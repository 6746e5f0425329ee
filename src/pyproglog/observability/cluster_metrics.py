"""Prometheus figures of a cluster node, read at scrape time from a plain snapshot.

The cluster hands a callable returning `ClusterFigures`; nothing here imports the
cluster (observability sits below it), and the Raft driver pays for no gauge it
never shows. Peers are labelled by node name: a cluster has a handful of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["ClusterCollector", "ClusterFigures", "PeerFigures"]

ROLES = ("follower", "pre-candidate", "candidate", "leader")


@dataclass(frozen=True, slots=True)
class PeerFigures:
    name: str
    lag_entries: int  # the leader's view: entries the peer lacks
    inflight_bytes: int  # replication bytes queued to the peer


@dataclass(frozen=True, slots=True)
class ClusterFigures:
    role: str
    term: int
    commit_index: int
    applied_index: int
    committed_end: int  # the offset past the committed records (the high-water mark)
    elections: int  # campaigns this node started
    leader_changes: int  # times the known leader changed
    proposals_committed: int
    snapshot_installs: int
    peers: tuple[PeerFigures, ...]  # filled on the leader only


class ClusterCollector(Collector):
    def __init__(self, figures: Callable[[], ClusterFigures]) -> None:
        self._figures = figures

    def describe(self) -> Iterable[Metric]:
        return []  # figures exist only once the node runs: collected, not described

    def collect(self) -> Iterator[Metric]:
        f = self._figures()
        role = GaugeMetricFamily(
            "proglog_raft_role", "1 for the role this node has now", labels=["role"]
        )
        for name in ROLES:
            role.add_metric([name], 1 if f.role == name else 0)
        yield role
        gauges = (
            ("proglog_raft_term", "Current Raft term", f.term),
            ("proglog_raft_commit_index", "Highest Raft index known committed", f.commit_index),
            ("proglog_raft_applied_index", "Highest Raft index applied", f.applied_index),
            (
                "proglog_raft_committed_offset_end",
                "Offset past the committed records: what consumers may read up to",
                f.committed_end,
            ),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        counters = (
            ("proglog_raft_elections", "Elections this node started", f.elections),
            ("proglog_raft_leader_changes", "Changes of the known leader", f.leader_changes),
            (
                "proglog_raft_proposals_committed",
                "Entries this node proposed as leader and saw committed",
                f.proposals_committed,
            ),
            (
                "proglog_raft_snapshot_installs",
                "Snapshots this node installed (catch-up past the leader's retention)",
                f.snapshot_installs,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        lag = GaugeMetricFamily(
            "proglog_raft_peer_lag_entries",
            "Entries a peer lacks (reported by the leader)",
            labels=["peer"],
        )
        inflight = GaugeMetricFamily(
            "proglog_raft_peer_inflight_bytes",
            "Replication bytes queued to a peer",
            labels=["peer"],
        )
        for p in f.peers:
            lag.add_metric([p.name], p.lag_entries)
            inflight.add_metric([p.name], p.inflight_bytes)
        yield lag
        yield inflight

"""SIGTERM on the leader hands leadership over before the node stops (TimeoutNow).

behaviour.md, Cluster. Without a transfer the others would wait out an election
timeout after the leader's last heartbeat; with one, the old leader names its
successor before it exits. The test reads that from the node's own log rather
than timing the gap (no timing thresholds in tests; bench/cluster.py measures it).
"""

from __future__ import annotations

import pytest

from pyproglog.testing import Cluster
from tests.cluster.process.conftest import produce, produce_routed


@pytest.mark.timeout(120)
def test_sigterm_on_the_leader_hands_leadership_over(cluster: Cluster) -> None:
    for round_ in range(2):  # twice: the second time from a leader that took over
        old = cluster.leader()
        before = produce(old.stub(), f"before-{round_}".encode())
        cluster.wait_converged()
        others = [n.name for n in cluster.live() if n.name != old.name]

        assert cluster.stop(old.name, timeout=10) == 0
        new = cluster.new_leader(old.name)
        said = old.output()
        # The hand-over happened while the node still ran, before it stopped: to
        # the node that now leads (a later election would not be named here).
        handed = said.find(f"leadership handed to {new.name}")
        assert handed != -1, said
        assert handed < said.rfind("proglog stopped"), said

        # A client routing by GetServers gets through with one retry at most.
        offset = produce_routed(cluster, f"after-{round_}".encode(), via=others[0], retries=1)
        assert offset > before
        cluster.restart(old.name)
        cluster.wait_converged()

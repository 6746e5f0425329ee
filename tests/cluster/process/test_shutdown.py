"""SIGTERM on the leader hands leadership over before the node stops (TimeoutNow).

behaviour.md, Cluster. Without a transfer the others would wait out an election
timeout (0.5-1 s at these timings) after the leader's last heartbeat, which it
sends until it exits; with one, a new leader is in place when the process is
gone.
"""

from __future__ import annotations

import time

import pytest

from pyproglog.testing import Cluster
from tests.cluster.process.conftest import produce, produce_routed

# Below the 0.5 s minimum election timeout: only a transfer made before the exit
# can explain a leader this soon after it.
SOON = 0.4


@pytest.mark.timeout(120)
def test_sigterm_on_the_leader_hands_leadership_over(cluster: Cluster) -> None:
    for round_ in range(2):  # twice: the second time from a leader that took over
        old = cluster.leader()
        before = produce(old.stub(), f"before-{round_}".encode())
        cluster.wait_converged()
        others = [n.name for n in cluster.live() if n.name != old.name]

        assert cluster.stop(old.name, timeout=10) == 0
        exited = time.monotonic()
        cluster.new_leader(old.name, timeout=5)
        took = time.monotonic() - exited
        assert took < SOON, f"no leader until {took:.2f} s after the old one exited"

        # A client routing by GetServers gets through with one retry at most.
        offset = produce_routed(cluster, f"after-{round_}".encode(), via=others[0], retries=1)
        assert offset > before
        cluster.restart(old.name)
        cluster.wait_converged()

"""Membership: who is in the cluster, as GetServers and the CLI tell it.

behaviour.md, Cluster: three members each started with the address of one
other; GetServers lists all three with exactly one leader; a node that leaves
(--leave-on-shutdown + SIGTERM) is no longer listed and no longer receives
records; a node that only stopped is still listed and rejoins as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from pyproglog.log import Log, LogConfig
from pyproglog.testing import Cluster
from tests.cluster.process.conftest import CALL, MakeCluster, produce

ALL = ["n1", "n2", "n3"]


def listed(cluster: Cluster, name: str) -> list[str]:
    return sorted(s.id for s in cluster.servers(name))


def cli(*args: str) -> str:
    """Run `proglog ARGS`; its stdout (a failure shows its stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "pyproglog", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"proglog {' '.join(args)}: {done.returncode}\n{done.stderr}"
    return done.stdout


def wait_listed(cluster: Cluster, name: str, expected: list[str], timeout: float = 15.0) -> None:
    cluster.wait(
        f"{name} to list {expected}",
        lambda: True if listed(cluster, name) == expected else None,
        timeout,
    )


@pytest.mark.timeout(90)
def test_three_nodes_each_joining_one_other_list_three_with_one_leader(cluster: Cluster) -> None:
    # n2 was given n1's gossip address, n3 only n2's: n3 still finds n1.
    assert cluster["n3"].join == [cluster["n2"].gossip_addr]
    leader = cluster.leader()
    for node in cluster.live():
        wait_listed(cluster, node.name, ALL)
        servers = cluster.servers(node.name)
        assert [s.id for s in servers if s.is_leader] == [leader.name]
        # Each member's client address is the one it advertises.
        assert {s.id: s.rpc_addr for s in servers} == {n: cluster[n].addr for n in ALL}


@pytest.mark.timeout(90)
def test_the_cli_lists_the_servers(cluster: Cluster) -> None:
    leader = cluster.leader()
    wait_listed(cluster, "n2", ALL)
    rows = json.loads(cli("servers", "--addr", cluster["n2"].addr, "--json"))["servers"]
    assert sorted(r["id"] for r in rows) == ALL
    assert [r["id"] for r in rows if r["is_leader"]] == [leader.name]


@pytest.mark.timeout(120)
def test_leave_stop_and_rejoin(make_cluster: MakeCluster) -> None:
    # Only n3 leaves on shutdown; n2 just stops.
    cluster = make_cluster(node_args={"n3": ["--leave-on-shutdown"]})
    cluster.leader()
    for name in ALL:
        wait_listed(cluster, name, ALL)

    # A plain stop (even of the leader: it hands over) never shrinks the cluster.
    cluster.stop("n2")
    leader = cluster.leader(among=["n1", "n3"])
    for name in ("n1", "n3"):
        assert listed(cluster, name) == ALL
    first = produce(leader.stub(), b"while n2 is down")

    # n2 rejoins as it was: still one entry for it, and it gets what it missed.
    cluster.restart("n2")
    for name in ALL:
        wait_listed(cluster, name, ALL)
    cluster.wait_committed(first, "n2")
    assert cluster.read_log("n2")[-1] == (first, b"while n2 is down")

    # Leaving: the others see two members.
    cluster.stop("n3")
    for name in ("n1", "n2"):
        wait_listed(cluster, name, ["n1", "n2"])
    leader = cluster.leader(among=["n1", "n2"])
    after = produce(leader.stub(), b"after n3 left", timeout=CALL)
    for name in ("n1", "n2"):
        cluster.wait_committed(after, name)
        assert cluster.read_log(name)[-1] == (after, b"after n3 left")

    # The node that left holds nothing produced after it left.
    with Log(cluster["n3"].data_dir, LogConfig()) as log:
        assert log.next_offset <= after


@pytest.mark.timeout(90)
def test_a_dead_member_is_removed_with_the_cli(cluster: Cluster) -> None:
    leader = cluster.leader()
    dead = cluster.followers(leader)[0]
    cluster.kill(dead.name)
    alive = sorted(n.name for n in cluster.live())
    # A crash never shrinks the cluster by itself ...
    time.sleep(1.5)
    for name in alive:
        assert listed(cluster, name) == ALL
    # ... an operator does, through any node.
    cli("servers", "remove", dead.name, "--addr", cluster[alive[-1]].addr)
    for name in alive:
        wait_listed(cluster, name, alive)
    # Two voters now: both must take part, and do.
    offset = produce(cluster.leader().stub(), b"after the removal")
    for name in alive:
        cluster.wait_committed(offset, name)

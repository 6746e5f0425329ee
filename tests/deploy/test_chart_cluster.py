"""The chart's StatefulSet through Kubernetes' lifecycle, with real processes.

Each pod is `proglog serve` started as the kubelet starts it (tests/deploy/
chart.py `Pod`): the chart's container command and env for that pod's name,
its Secrets as files, its volume as a directory. There is no cluster DNS and
no pod IP here, so every pod's stable name,
`t-proglog-N.t-proglog-headless.ns1.svc.cluster.local`, stands for 127.0.0.1,
and each pod gets its own local ports in place of the chart's 8400/8401/8080
(which every pod shares in Kubernetes, each on its own IP):
tests/deploy/localnames.py rewrites the env the entrypoint script computed,
between its `exec` and the node. The script itself (ordinal, bootstrap, join
addresses) runs unchanged.

What the StatefulSet does is played by hand: an install starts every pod at
once (podManagementPolicy Parallel) and restarts a container that exits
(restartPolicy Always); a restart is SIGTERM then a new container on the same
volume; a lost volume is an empty directory; a scale-up renders the chart with
one more replica and starts the new ordinal; a scale-down stops the highest.
The values add `gossip-profile: local` (through `config:`, as a user could):
loopback failure detection in about a second instead of the LAN's 5-6 s.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from pyproglog.client import Client, ClientError, Record, Server
from tests.deploy.chart import VENV_BIN, LocalNet, Obj, Pod, pod_name, pod_values, render

T = TypeVar("T")


def values(replicas: int) -> Obj:
    return pod_values(replicaCount=replicas, config={"gossip-profile": "local"})


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 20.0,
    seen: list[object] | None = None,
) -> T:
    """`probe()`'s first answer that is not None; a node not answering yet is a None.
    On failure the message shows the last of `seen` (what the probe put there)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = probe()
        except ClientError as exc:
            got, last = None, exc
        if got is not None:
            return got
        time.sleep(0.1)
    saw = f"; last seen: {seen[-1]}" if seen else ""
    pytest.fail(f"timed out waiting for {what} (last error: {last}{saw})", pytrace=False)


def servers(pod: Pod) -> list[Server]:
    with Client(pod.addr, timeout=2) as client:
        return client.get_servers()


def one_cluster(
    pods: Sequence[Pod], timeout: float = 20.0, ask: Sequence[Pod] | None = None
) -> Server:
    """Every pod of `ask` (default: `pods`) names exactly `pods` as the servers, all
    voters, and the same one leader (a second cluster would name itself alone, or
    another leader)."""
    names = sorted(p.name for p in pods)
    asked = pods if ask is None else ask
    seen: list[object] = []

    def probe() -> Server | None:
        views = {p.name: servers(p) for p in asked}
        seen.append(views)
        leaders = []
        for view in views.values():
            if sorted(s.id for s in view) != names or not all(s.voter for s in view):
                return None
            leaders += [s for s in view if s.is_leader]
        return leaders[0] if len(leaders) == len(asked) and len(set(leaders)) == 1 else None

    return wait_for(f"one cluster of {names}", probe, timeout, seen)


def records(pod: Pod, count: int) -> list[Record]:
    """The first `count` records as `pod` serves them (committed ones only)."""

    def probe() -> list[Record] | None:
        with Client(pod.addr, timeout=2) as client:
            if client.info().next_offset < count:
                return None
            return [client.consume(i) for i in range(count)]

    return wait_for(f"{count} records on {pod.name}", probe)


def produce(pod: Pod, *values: bytes) -> list[int]:
    """Through any pod: a follower forwards to the leader (retried across a leader change)."""

    def probe() -> list[int]:
        with Client(pod.addr, timeout=5) as client:
            return [client.produce(v) for v in values]

    return wait_for(f"a write through {pod.name}", probe)


def info_term(pod: Pod) -> int:
    with Client(pod.addr, timeout=2) as client:
        return client.info().term


def proglog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [f"{VENV_BIN}/proglog", *args], capture_output=True, text=True, timeout=30, check=True
    )


def install(tmp_path: Path, pods: list[Pod], net: LocalNet) -> list[Pod]:
    """`helm install` with replicas 3: every pod at once (podManagementPolicy
    Parallel). Pod 0 (--bootstrap, joining the others) that reaches no member
    founds the cluster; a joining pod that finds no peer yet exits and is
    restarted (restartPolicy Always) until pod 0 is up."""
    objs = render(values(3))
    ps = [Pod(objs, tmp_path / pod_name(i), pod_name(i), net) for i in range(3)]
    pods.extend(ps)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: p.start(60, restarts=30), ps))
    one_cluster(ps)
    assert [p.name for p in ps if p.said("bootstrapping a new cluster")] == [pod_name(0)]
    assert produce(ps[1], b"a", b"b", b"c") == [0, 1, 2]
    return ps


def upgrade(installed: list[Obj], new_values: Obj) -> list[Obj]:
    """`helm upgrade`: the chart-made Secrets (the cluster key, TLS) are kept, as
    the chart's `lookup` keeps them; `helm template` cannot look anything up,
    so the installed ones stand in for what it made anew."""
    kept = [o for o in installed if o["kind"] == "Secret"]
    return [o for o in render(new_values) if o["kind"] != "Secret"] + kept


def lose_volume(pod: Pod) -> None:
    """Pod 0 comes back on an empty volume: no state, still told --bootstrap; gossip
    finds the members through its join addresses, so it waits to be added (it
    is still a voter under the same name and Raft id) and founds nothing."""
    assert pod.terminate() == 0
    pod.wipe_volume()
    pod.start()
    assert pod.said("--bootstrap ignored")
    assert not pod.said("bootstrapping a new cluster")


def test_statefulset_lifecycle(tmp_path: Path, pods: list[Pod]) -> None:
    net = LocalNet()
    ps = install(tmp_path, pods, net)
    before = records(ps[0], 3)
    assert [r.value for r in before] == [b"a", b"b", b"c"]

    # Pod 0 restarted with its volume (a rolling update): it is still told
    # --bootstrap, and rejoins as the member it was instead.
    assert ps[0].terminate() == 0
    ps[0].start()
    # It opened its state: neither founded a cluster nor waited to be added.
    assert not ps[0].said("bootstrapping a new cluster")
    assert not ps[0].said("no cluster state yet")
    one_cluster(ps)
    # Its records as they were, written in the same terms: the same history.
    assert records(ps[0], 3) == before
    assert produce(ps[0], b"d") == [3]

    # Scale-up to 4: the chart rendered again; the new pod joins through all
    # the others, the leader adds it as a learner and promotes it once caught up.
    p3 = Pod(upgrade(ps[0].objs, values(4)), tmp_path / pod_name(3), pod_name(3), net)
    pods.append(p3)
    p3.start(60, restarts=5)
    one_cluster([*ps, p3])
    assert any(p.said(f"adding {p3.name} ") and p.said(f"promoting {p3.name} ") for p in ps)
    listed = json.loads(proglog("servers", "--json", "--addr", ps[1].addr).stdout)["servers"]
    assert {s["id"]: s["voter"] for s in listed} == {p.name: True for p in [*ps, p3]}
    assert [r.value for r in records(p3, 4)] == [b"a", b"b", b"c", b"d"]

    # Scale-down to 3: out of the configuration first, then the pod stops.
    assert proglog("servers", "remove", p3.name, "--addr", ps[0].addr).returncode == 0
    assert p3.terminate() == 0
    one_cluster(ps)
    assert produce(ps[1], b"e") == [4]

    # Pod 0 lost its volume: the cluster goes on as it was, with one leader
    # among the others, and pod 0 founds nothing of its own.
    lose_volume(ps[0])
    assert produce(ps[2], b"f") == [5]
    leader = one_cluster(ps, ask=ps[1:])
    # Caught up as the voter it was, under the leader the others follow.
    assert one_cluster(ps) == leader
    assert records(ps[0], 6) == records(ps[1], 6)

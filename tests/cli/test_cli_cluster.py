"""`proglog produce` and `proglog consume` against three `proglog serve` processes.

`--addr` names any node (or several): writes go to the leader, reads to the
followers, and both ride over nodes killed with SIGKILL mid-stream. What the
commands printed is checked against what the nodes hold afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from pyproglog.client import Client
from pyproglog.testing import free_port
from pyproglog.testing.cluster import Cluster
from tests.cli.test_cli import STEP, LineReader, _env, lines, proglog
from tests.client.helpers import counts

# Long enough for an election and a restarted node's catch-up on a loaded machine.
TIMEOUT = "30"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("cli-cluster"), size=3) as c:
        yield c


def all_addrs(cluster: Cluster) -> str:
    return ",".join(n.addr for n in cluster.nodes.values())


def heal(cluster: Cluster, name: str) -> None:
    """Bring a killed node back and wait until every node holds the same log."""
    cluster.restart(name)
    cluster.wait_converged(timeout=60)


def test_any_node_will_do_writes_go_to_the_leader(cluster: Cluster) -> None:
    leader = cluster.leader()
    follower = cluster.followers(leader)[0]
    before = counts(cluster, "ProduceBatch")
    # A dead address first: the routed client goes on to the next one.
    addrs = f"127.0.0.1:{free_port()},{follower.addr}"
    out = lines(proglog("produce", "r-a", "r-b", "--addr", addrs, "--timeout", TIMEOUT))
    after = counts(cluster, "ProduceBatch")
    assert {k: v - before[k] for k, v in after.items()} == {
        n.name: (1 if n.name == leader.name else 0) for n in cluster.live()
    }
    first = int(out[0])
    assert out == [str(first), str(first + 1)]
    end = cluster.wait_converged()
    # Read back from a follower: to the end of the log, no further.
    got = lines(proglog("consume", "--offset", str(first), "--addr", follower.addr))
    assert got == [f"{first}\tr-a", f"{first + 1}\tr-b"]
    assert end == first + 2
    # servers too takes any of several addresses.
    rows = [r.split("\t") for r in lines(proglog("servers", "--addr", addrs, "--timeout", TIMEOUT))]
    assert sorted(r[0] for r in rows) == ["n1", "n2", "n3"]
    assert [r[0] for r in rows if r[2] == "leader"] == [leader.name]


def test_a_produce_pipe_survives_the_leader_killed_mid_stream(cluster: Cluster) -> None:
    old = cluster.leader()
    seed = cluster.followers(old)[0]
    start = cluster.wait_converged()
    values = [f"pipe-{i}" for i in range(40_000)]
    half = len(values) // 2
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyproglog", "produce", "--addr", seed.addr, "--timeout", TIMEOUT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out = LineReader(proc.stdout)
    killed = threading.Event()

    def write() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # the command failed: the test says so
            for i in range(0, len(values), 500):
                if i == half:
                    killed.wait(STEP * 3)
                proc.stdin.write("".join(f"{v}\n" for v in values[i : i + 500]))
                proc.stdin.flush()
            proc.stdin.close()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        printed = [out.next()]
        # Killed while the first half is still being sent.
        cluster.kill(old.name)
        killed.set()
        while (line := out.next(STEP * 3)) is not None:
            printed.append(line)
        assert proc.wait(STEP) == 0, proc.stderr.read()
        assert proc.stderr.read() == ""
    finally:
        killed.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        writer.join(STEP)
    assert len(printed) == len(values), printed[-3:]
    cluster.new_leader(old.name)
    heal(cluster, old.name)
    log = cluster.read_log(seed.name, timeout=60)
    ours = [(o, v.decode()) for o, v in log if o >= start]
    # Every line exactly once, in input order, at the offset the command printed.
    assert [v for _, v in ours] == values
    assert [str(o) for o, _ in ours] == printed


def test_consume_follow_delivers_exactly_the_log_across_kills(cluster: Cluster) -> None:
    start = cluster.wait_converged()
    addrs = all_addrs(cluster)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pyproglog", "consume", "--follow", "--json"),
            *("--offset", str(start), "--addr", addrs, "--timeout", TIMEOUT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = LineReader(proc.stdout), proc.stderr
    delivered: list[tuple[int, str]] = []

    def read_until(end: int) -> None:
        while not delivered or delivered[-1][0] < end - 1:
            line = out.next(STEP * 3)
            assert line is not None, err.read() if proc.poll() is not None else ""
            rec = json.loads(line)
            delivered.append((rec["offset"], rec["value"]))

    try:
        with Client(addrs.split(","), timeout=float(TIMEOUT)) as client:
            client.produce_batch([f"follow-0-{i}" for i in range(300)])
            read_until(cluster.wait_converged())
            # Every node killed once, the leader first: the node the consumer
            # reads from goes at some point, and it carries on from another.
            victims = [cluster.leader().name]
            victims += [n.name for n in cluster.live() if n.name != victims[0]]
            for round_, name in enumerate(victims, 1):
                cluster.kill(name)
                # Written after the kill, not during it: a plain write cut mid-call
                # would be raised, its outcome unknown.
                cluster.new_leader(name) if round_ == 1 else cluster.leader()
                client.produce_batch([f"follow-{round_}-{i}" for i in range(300)])
                heal(cluster, name)
                client.produce_batch([f"follow-{round_}-after-{i}" for i in range(300)])
                read_until(cluster.wait_converged())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(STEP) == 0
        assert out.next() is None  # nothing past the end, no duplicate at the end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Nothing said: the Consumer rode over every kill by itself (no "connection lost").
    assert err.read() == ""
    log = [(o, v.decode()) for o, v in cluster.read_log(victims[0], timeout=60) if o >= start]
    assert len(log) == 300 * 7
    # No gap, no duplicate, in order: exactly the log.
    assert delivered == log


def remote_ports(pid: int) -> set[int]:
    """The remote ports of the TCP connections process `pid` holds (Linux /proc)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                    ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def test_consume_to_the_end_goes_on_from_another_node_when_its_node_dies(
    cluster: Cluster,
) -> None:
    leader = cluster.leader()
    start = cluster.wait_converged()
    with Client(leader.addr, timeout=float(TIMEOUT)) as client:
        for i in range(0, 100_000, 10_000):
            client.produce_batch([f"read-{j}" for j in range(i, i + 10_000)])
    end = cluster.wait_converged()
    # Asked through the leader, the records come from a follower, found by its
    # connection; stdout is not read yet, so the command stops, mid-log, on a full pipe.
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pyproglog", "consume", "--offset", str(start)),
            *("--addr", leader.addr, "--timeout", TIMEOUT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )
    try:
        followers = {n.rpc_port: n for n in cluster.followers(leader)}
        reading = cluster.wait(
            "the command to read from a follower",
            lambda: next((followers[p] for p in remote_ports(proc.pid) if p in followers), None),
            timeout=STEP,
        )
        cluster.kill(reading.name)
        out, err = proc.communicate(timeout=STEP * 3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err == ""
    got = [line.split("\t", 1) for line in out.splitlines()]
    log = cluster.read_log(leader.name, timeout=60)
    assert [(int(o), v) for o, v in got] == [(o, v.decode()) for o, v in log if o >= start]
    assert int(got[-1][0]) == end - 1
    heal(cluster, reading.name)

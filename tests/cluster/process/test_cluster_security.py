"""A secure cluster as real processes: mutual TLS between the nodes, the ACL's
`replicate` and `admin` actions, and gossip encrypted with a cluster key
(spec/cluster.md, "The node", Security; docs/cluster.md, Security).

One three-node cluster with everything on serves the whole module; a test that
needs an odd node (a wrong certificate, a wrong key) starts it beside the three
and kills it at the end. The `Cluster` helper talks plaintext gRPC to its nodes,
so this file keeps its own small harness with TLS channels (root and nobody).

The odd nodes still join the gossip (they hold the cluster key), so the leader
adds each as a learner and tries to replicate to it: that is the attack. Their
server side is genuine (our CA's server.pem) so the leader *can* reach them;
only what they present when they dial the others is wrong, and since a node
answers its leader by dialing it, the leader never hears from them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.auth.certs import CertPaths, add_client, init_dir
from pyproglog.discovery import new_cluster_key
from pyproglog.testing import ServerProcess, free_port, run_serve

T = TypeVar("T")

CALL = 5.0  # bounds one call that is expected to succeed
# An election timeout of 0.5-1 s and a heartbeat every 50 ms, as the other cluster tests.
RAFT = ("--raft-tick-ms", "50", "--election-ticks", "10", "--heartbeat-ticks", "1")
# How long an odd node is watched for records it must never get: 40 heartbeats,
# each of which would carry the leader's commit index to a node that had entries.
WATCH = 2.0
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Material:
    ours: CertPaths  # the cluster's CA: servers, peers and clients
    theirs: CertPaths  # another CA, with its own "proglog server" certificate
    key: Path  # the cluster key
    wrong_key: Path

    def peer(self, subject: str = "proglog server", *, ca: CertPaths | None = None) -> Pem:
        """A certificate a node presents to its peers: the server certificate (CN
        "proglog server", allowed `replicate`) or a client certificate."""
        paths = ca or self.ours
        if subject == "proglog server":
            return Pem(paths.server, paths.server_key)
        return Pem(paths.client(subject), paths.client_key(subject))

    def credentials(self, subject: str) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ours.ca.read_bytes(),
            private_key=self.ours.client_key(subject).read_bytes(),
            certificate_chain=self.ours.client(subject).read_bytes(),
        )

    def cli_tls(self, subject: str) -> list[str]:
        return [
            "--tls-ca",
            str(self.ours.ca),
            "--tls-cert",
            str(self.ours.client(subject)),
            "--tls-key",
            str(self.ours.client_key(subject)),
        ]


@dataclass
class Node:
    name: str
    gossip_port: int
    rpc_port: int
    process: ServerProcess

    @property
    def gossip_addr(self) -> str:
        return f"127.0.0.1:{self.gossip_port}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.rpc_port}"


@dataclass
class SecureCluster:
    root: Path
    material: Material
    nodes: dict[str, Node] = field(default_factory=dict)
    _channels: dict[tuple[str, str], grpc.Channel] = field(default_factory=dict)

    def node_args(
        self,
        name: str,
        gossip_port: int,
        rpc_port: int,
        *,
        peer: Pem,
        cluster_key: Path,
        join: str | None,
    ) -> list[str]:
        ours = self.material.ours
        return [
            "--node-name",
            name,
            "--bind-addr",
            f"127.0.0.1:{gossip_port}",
            # After ServerProcess's own `--rpc-port 0`: the last flag wins.
            "--rpc-port",
            str(rpc_port),
            "--gossip-profile",
            "local",
            *RAFT,
            "--log-level",
            "info",
            "--server-tls-cert-file",
            str(ours.server),
            "--server-tls-key-file",
            str(ours.server_key),
            "--server-tls-ca-file",
            str(ours.ca),
            "--peer-tls-cert-file",
            str(peer.cert),
            "--peer-tls-key-file",
            str(peer.key),
            "--peer-tls-ca-file",
            str(ours.ca),
            "--acl-model-file",
            str(ours.model),
            "--acl-policy-file",
            str(ours.policy),
            "--cluster-key-file",
            str(cluster_key),
            *(["--start-join-addrs", join] if join else ["--bootstrap"]),
        ]

    def start(
        self,
        name: str,
        *,
        peer: Pem | None = None,
        cluster_key: Path | None = None,
        bootstrap: bool = False,
        extra: tuple[str, ...] = (),
    ) -> Node:
        gossip_port, rpc_port = free_port(), free_port()
        while rpc_port == gossip_port:
            rpc_port = free_port()
        join = None if bootstrap else self.first().gossip_addr
        args = self.node_args(
            name,
            gossip_port,
            rpc_port,
            peer=peer or self.material.peer(),
            cluster_key=cluster_key or self.material.key,
            join=join,
        )
        args += extra  # after node_args: the last flag wins
        process = ServerProcess(self.root / name, args, http=False, ready_timeout=60)
        node = self.nodes[name] = Node(name, gossip_port, rpc_port, process)
        try:
            process.start()
        except RuntimeError as e:
            raise AssertionError(f"{name} did not start: {e}\n{self.describe()}") from None
        return node

    def first(self) -> Node:
        return next(iter(self.nodes.values()))

    def stub(self, name: str, subject: str = "root") -> log_pb2_grpc.LogStub:
        key = (name, subject)
        if key not in self._channels:
            self._channels[key] = grpc.secure_channel(
                self.nodes[name].addr,
                self.material.credentials(subject),
                options=CHANNEL_OPTIONS,
            )
        return log_pb2_grpc.LogStub(self._channels[key])

    def servers(self, name: str) -> list[log_pb2.Server]:
        resp = self.stub(name).GetServers(log_pb2.GetServersRequest(), timeout=1.0)
        return list(resp.servers)

    def info(self, name: str) -> log_pb2.GetLogInfoResponse:
        resp: log_pb2.GetLogInfoResponse = self.stub(name).GetLogInfo(
            log_pb2.GetLogInfoRequest(), timeout=1.0
        )
        return resp

    def read_log(self, name: str) -> list[tuple[int, bytes]]:
        """The node's committed log, (offset, value) in order."""
        stub = self.stub(name)
        offset = self.info(name).lowest_offset
        out: list[tuple[int, bytes]] = []
        while True:
            req = log_pb2.FetchRequest(offset=offset, max_records=1000)
            resp = stub.Fetch(req, timeout=CALL)
            out += [(r.offset, bytes(r.value)) for r in resp.records]
            if not resp.records or resp.next_offset >= resp.high_watermark:
                return out
            offset = resp.next_offset

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll `probe` until it returns something other than None (RPC errors count
        as None)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                got = probe()
            except grpc.RpcError as e:
                got, last = None, f"{e.code().name}: {e.details()}"
            if got is not None:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what} (last error: {last})\n"
                    + self.describe()
                )
            time.sleep(0.05)

    def leader(self, among: tuple[str, ...] = ("n1", "n2", "n3")) -> str:
        """The leader every node of `among` names, once they agree."""

        def probe() -> str | None:
            named = set()
            for name in among:
                marked = [s.id for s in self.servers(name) if s.is_leader]
                named.add(marked[0] if len(marked) == 1 else None)
            return named.pop() if len(named) == 1 else None

        return self.wait(f"{among} to agree on a leader", probe)

    def voters(self, name: str) -> list[str]:
        return sorted(s.id for s in self.servers(name) if s.voter)

    def describe(self) -> str:
        return "\n".join(
            f"--- {n.name} ---\n" + "".join(n.process.output) for n in self.nodes.values()
        )

    def output(self, name: str) -> str:
        return "".join(self.nodes[name].process.output)

    def kill(self, name: str) -> None:
        self.nodes[name].process.kill()

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        for node in self.nodes.values():
            node.process.kill()


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    root = tmp_path_factory.mktemp("pki")
    init_dir(root / "ours")
    add_client(root / "ours", "intruder")
    init_dir(root / "theirs")
    key, wrong_key = root / "cluster.key", root / "wrong.key"
    key.write_text(new_cluster_key() + "\n")
    wrong_key.write_text(new_cluster_key() + "\n")
    return Material(CertPaths(root / "ours"), CertPaths(root / "theirs"), key, wrong_key)


@pytest.fixture(scope="module")
def cluster(
    material: Material, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureCluster]:
    """n1 (bootstrap), n2, n3: mutual TLS for clients and peers, the example ACL, a
    cluster key; yielded once all three are voters under one leader."""
    c = SecureCluster(tmp_path_factory.mktemp("cluster"), material)
    try:
        c.start("n1", bootstrap=True)
        c.start("n2")
        c.start("n3")
        c.wait(
            "n1, n2, n3 to be voters on every node",
            lambda: (
                True if all(c.voters(n) == ["n1", "n2", "n3"] for n in ("n1", "n2", "n3")) else None
            ),
        )
        c.leader()
        yield c
    finally:
        c.close()


def produce(stub: log_pb2_grpc.LogStub, value: bytes) -> int:
    req = log_pb2.ProduceRequest(record=log_pb2.Record(value=value))
    return int(stub.Produce(req, timeout=CALL).offset)


def refused_produce(stub: log_pb2_grpc.LogStub) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        produce(stub, b"nope")
    return err.value


def follower_of(cluster: SecureCluster) -> tuple[str, str]:
    leader = cluster.leader()
    return leader, next(n for n in ("n1", "n2", "n3") if n != leader)


def replicated_everywhere(cluster: SecureCluster, values: list[bytes]) -> list[tuple[int, bytes]]:
    """Wait until n1, n2 and n3 hold `values` at the same offsets; those records."""

    def probe() -> list[tuple[int, bytes]] | None:
        logs = [cluster.read_log(n) for n in ("n1", "n2", "n3")]
        mine = [[(o, v) for o, v in log if v in values] for log in logs]
        if len(mine[0]) == len(values) and mine[0] == mine[1] == mine[2]:
            return mine[0]
        return None

    return cluster.wait(f"{len(values)} records on n1, n2 and n3", probe)


def watch_empty(cluster: SecureCluster, name: str, leader: str) -> None:
    """For WATCH seconds, `name` holds no record and the leader never counts it as a voter
    (a node that got entries would commit them from the leader's heartbeats)."""
    deadline = time.monotonic() + WATCH
    while time.monotonic() < deadline:
        info = cluster.info(name)
        assert info.next_offset == 0 and info.empty, (
            f"{name} received records:\n{cluster.describe()}"
        )
        assert name not in cluster.voters(leader), cluster.describe()
        time.sleep(0.1)


def test_a_tls_acl_cluster_replicates_roots_records_and_refuses_nobody(
    cluster: SecureCluster,
) -> None:
    leader, follower = follower_of(cluster)
    root = cluster.stub(follower, "root")

    # Written on a follower with root's certificate: forwarded to the leader.
    values = [b"secure-a", b"secure-b", b"secure-c"]
    batch = root.ProduceBatch(
        log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=v) for v in values[:2]]),
        timeout=CALL,
    )
    single = produce(root, values[2])
    assert single == batch.last_offset + 1 == batch.base_offset + 2
    held = replicated_everywhere(cluster, values)
    assert held == [(batch.base_offset + i, v) for i, v in enumerate(values)]

    # nobody is refused on the follower (authorized there, before forwarding) and on
    # the leader; the refused writes take no offset.
    for name in (follower, leader):
        err = refused_produce(cluster.stub(name, "nobody"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "nobody not permitted to produce to *"
    assert produce(root, b"secure-d") == single + 1
    replicated_everywhere(cluster, [*values, b"secure-d"])
    assert all(v != b"nope" for _, v in cluster.read_log(leader))


def test_a_node_whose_peer_certificate_is_from_another_ca_gets_nothing(
    cluster: SecureCluster, material: Material
) -> None:
    leader, follower = follower_of(cluster)
    # The other CA's server certificate: same subject ("proglog server", allowed
    # `replicate`), so only the CA check keeps it out.
    cluster.start(
        "outsider",
        peer=material.peer(ca=material.theirs),
        # A dial that never got through is logged at debug only.
        extra=("--log-level", "debug"),
    )
    try:
        # The leader sees it in the gossip and adds it as a learner: from then on it
        # tries to replicate to it.
        cluster.wait(
            "the leader to list the outsider",
            lambda: True if "outsider" in [s.id for s in cluster.servers(leader)] else None,
        )
        values = [b"outsider-a", b"outsider-b"]
        for v in values:
            produce(cluster.stub(follower), v)
        replicated_everywhere(cluster, values)
        watch_empty(cluster, "outsider", leader)
        assert cluster.voters(leader) == ["n1", "n2", "n3"]

        # Its answers to the leader fail the TLS handshake: the leader's port closes
        # the connection before any call, so its stream to the leader never opens.
        def refusals() -> list[str] | None:
            said = cluster.output("outsider").splitlines()
            broke = f"at {cluster.nodes[leader].addr} broke: failed to connect"
            return [line for line in said if broke in line] or None

        first = cluster.wait("the outsider to log its refused dial", refusals)[0]
        assert "Socket closed" in first, cluster.describe()
    finally:
        cluster.kill("outsider")


def test_a_node_whose_peer_subject_may_not_replicate_gets_nothing(
    cluster: SecureCluster, material: Material
) -> None:
    leader, follower = follower_of(cluster)
    # A genuine certificate of our CA, but its subject has no `replicate` right.
    cluster.start("intruder", peer=material.peer("intruder"))
    try:
        cluster.wait(
            "the leader to list the intruder",
            lambda: True if "intruder" in [s.id for s in cluster.servers(leader)] else None,
        )
        values = [b"intruder-a", b"intruder-b"]
        for v in values:
            produce(cluster.stub(follower), v)
        replicated_everywhere(cluster, values)
        watch_empty(cluster, "intruder", leader)
        assert cluster.voters(leader) == ["n1", "n2", "n3"]
        # The leader's ACL refuses its stream, and says why.
        cluster.wait(
            "the intruder to log the leader's refusal",
            lambda: (
                True
                if "intruder not permitted to replicate" in cluster.output("intruder")
                else None
            ),
        )
    finally:
        cluster.kill("intruder")


@pytest.fixture(scope="module")
def stranger_start(
    cluster: SecureCluster, material: Material, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """A node with every certificate right but another cluster key, told to join n1."""
    gossip_port, rpc_port = free_port(), free_port()
    args = cluster.node_args(
        "stranger",
        gossip_port,
        rpc_port,
        peer=material.peer(),
        cluster_key=material.wrong_key,
        join=cluster.first().gossip_addr,
    )
    return run_serve(tmp_path_factory.mktemp("stranger") / "data", args)


def test_a_node_with_another_cluster_key_cannot_join(
    cluster: SecureCluster, stranger_start: subprocess.CompletedProcess[str]
) -> None:
    result = stranger_start
    everything = result.stdout + result.stderr
    assert result.returncode != 0, everything
    assert "the gossip handshake failed" in result.stderr, everything
    assert "--cluster-key-file" in result.stderr, everything
    assert "proglog serving" not in result.stdout, everything
    # The cluster never heard of it.
    leader = cluster.leader()
    assert "stranger" not in [s.id for s in cluster.servers(leader)]


def test_a_failed_join_is_one_line_not_a_traceback(
    stranger_start: subprocess.CompletedProcess[str],
) -> None:
    result = stranger_start
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("proglog: could not join the cluster"), result.stderr
    assert "--cluster-key-file" in last, result.stderr


def servers_remove(
    cluster: SecureCluster, name: str, addr: str, subject: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pyproglog",
            "servers",
            "remove",
            name,
            "--addr",
            addr,
            "--timeout",
            "10",
            *cluster.material.cli_tls(subject),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_servers_remove_needs_admin(cluster: SecureCluster) -> None:
    leader, follower = follower_of(cluster)
    cluster.start("n4")
    cluster.wait(
        "the leader to count n4 as a voter",
        lambda: True if "n4" in cluster.voters(leader) else None,
    )
    cluster.kill("n4")  # died with its disk: what `servers remove` is for

    # nobody may not, neither on the leader nor through a follower (the follower
    # checks the operator's own certificate before it passes the call on).
    for addr in (cluster.nodes[leader].addr, cluster.nodes[follower].addr):
        refused = servers_remove(cluster, "n4", addr, "nobody")
        assert refused.returncode != 0, refused.stdout
        assert "nobody not permitted to admin" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr
    assert "n4" in cluster.voters(leader)

    done = servers_remove(cluster, "n4", cluster.nodes[follower].addr, "root")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "removed n4 from the cluster"
    cluster.wait(
        "n4 to leave the configuration",
        lambda: True if "n4" not in [s.id for s in cluster.servers(leader)] else None,
    )
    assert cluster.voters(leader) == ["n1", "n2", "n3"]

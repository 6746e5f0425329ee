"""Several `proglog serve` processes as one cluster, on loopback, for tests and benchmarks.

    with Cluster(tmp_path, size=3) as cluster:   # returns once all are voters under a leader
        leader = cluster.leader()
        leader.stub().Produce(...)
        cluster.kill(leader.name)                # SIGKILL
        cluster.new_leader(leader.name)          # the others elect one
        cluster.restart(leader.name)             # same data dir, same flags, same ports
        cluster.wait_converged()                 # every node: same log, all committed

Every node gets fixed free ports (gossip, gRPC, HTTP) at construction, so a
restarted node comes back at the same addresses: gossip refuses a known name
from a new address for a while, and peers know it by its RPC address.

With `proxies=True` each node advertises a `PeerProxy` in front of its gRPC
port: clients and peers reach it only through that proxy. A PeerProxy knows
which node each connection comes from, so `isolate` can cut a node both ways
(its own proxy swallows what reaches it, the others' swallow what it sends),
`deafen` only one way; `heal` ends both. `freeze`/`thaw` (SIGSTOP/SIGCONT)
make a node silent without closing its connections.

Everything each node printed, across restarts, is kept; the errors of this
module carry it (`describe()`), so a failed wait explains itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing.net import free_port
from pyproglog.testing.process import ServerProcess
from pyproglog.testing.proxy import Direction, TcpProxy, _Fault

T = TypeVar("T")

# The Raft timing every test node gets: an election timeout of 0.5-1 s.
FAST_RAFT = ("--raft-tick-ms", "50", "--election-ticks", "10", "--heartbeat-ticks", "1")
# Short reconnect backoff: a restarted node is reached again within a fraction of a second.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    # Channels to one address share connections process-wide by default: one
    # cut connection would then fail every channel of every test thread.
    ("grpc.use_local_subchannel_pool", 1),
]
CALL_TIMEOUT = 2.0


# The node a proxied connection comes from, set in the task that serves it.
_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("source", default=None)


class PeerProxy(TcpProxy):
    """A TcpProxy that knows which node each connection comes from, so the traffic of one
    peer can be cut alone (`cut_sources`): what a full partition of a node needs, since
    what it sends goes through the *others'* proxies.

    The sender is found the way `ss -p` finds it: the connection's source port in
    /proc/net/tcp gives a socket inode, and the node process holding that inode is
    the sender (Linux only; loopback only, like TcpProxy).
    """

    def __init__(self, target: str, pids: Callable[[], Mapping[int, str]]) -> None:
        self._pids = pids
        self.cut_sources: set[str] = set()
        self.senders: list[str | None] = []  # per accepted connection: the node, None: not a node
        super().__init__(target)

    def start(self) -> PeerProxy:
        super().start()
        return self

    def __enter__(self) -> PeerProxy:
        return self.start()

    # TcpProxy reads `_faults[direction]` for every chunk it forwards: answering through
    # this property lets a cut source's chunks be swallowed with no copy of its pumps.
    @property  # type: ignore[override]
    def _faults(self) -> MutableMapping[Direction, _Fault]:
        return _SourceFaults(self._base_faults, self)

    @_faults.setter
    def _faults(self, faults: dict[Direction, _Fault]) -> None:
        self._base_faults = faults

    async def _connect(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        port = client_w.get_extra_info("peername")[1]
        own_port = int(self.addr.rsplit(":", 1)[1])
        sender = await asyncio.to_thread(_sender, port, own_port, dict(self._pids()))
        self.senders.append(sender)
        _SOURCE.set(sender)
        await super()._connect(client_r, client_w)


class _SourceFaults(MutableMapping[Direction, _Fault]):
    def __init__(self, base: dict[Direction, _Fault], proxy: PeerProxy) -> None:
        self._base, self._proxy = base, proxy

    def __getitem__(self, d: Direction) -> _Fault:
        if _SOURCE.get() in self._proxy.cut_sources:
            return _Fault(blackhole=True)
        return self._base[d]

    def __setitem__(self, d: Direction, f: _Fault) -> None:
        self._base[d] = f

    def __delitem__(self, d: Direction) -> None:
        del self._base[d]

    def __iter__(self) -> Iterator[Direction]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


def _sender(src_port: int, dst_port: int, pids: Mapping[int, str]) -> str | None:
    """The name of the node whose process owns the loopback socket src_port -> dst_port."""
    inode = ""
    # gRPC's sockets are often IPv6 ones carrying IPv4 (::ffff:127.0.0.1): in tcp6.
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == src_port
                    and int(remote.rsplit(":", 1)[1], 16) == dst_port
                ):
                    inode = fields[9]
                    break
        if inode:
            break
    if not inode:
        return None
    want = f"socket:[{inode}]"
    for pid, name in pids.items():
        fd_dir = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") == want:
                        return name
    return None


class ClusterError(AssertionError):
    """A cluster did not reach the state a test waited for; the message has every node's output."""


@dataclass
class Node:
    """One member: its ports and flags are fixed for its life; its process comes and goes."""

    name: str
    data_dir: Path
    gossip_port: int
    rpc_port: int
    http_port: int
    args: list[str]
    bootstrap: bool
    join: list[str]  # gossip addresses to join when not bootstrapping
    proxy: PeerProxy | None = None
    process: ServerProcess | None = None
    # Output of the processes that ended, oldest first (the live one's is in process.output).
    past_output: list[list[str]] = field(default_factory=list)
    _channel: grpc.Channel | None = None

    @property
    def gossip_addr(self) -> str:
        return f"127.0.0.1:{self.gossip_port}"

    @property
    def rpc_addr(self) -> str:
        """Where the node's gRPC really listens (bypasses the proxy)."""
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def addr(self) -> str:
        """Where clients and peers reach it: the proxy when there is one."""
        return self.proxy.addr if self.proxy is not None else self.rpc_addr

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return (
            self.process is not None
            and self.process.proc is not None
            and (self.process.proc.poll() is None)
        )

    def command_args(self) -> list[str]:
        args = [
            "--node-name",
            self.name,
            "--bind-addr",
            self.gossip_addr,
            # After ServerProcess's own `--rpc-port 0`/`--http-addr`: the last flag wins.
            "--rpc-port",
            str(self.rpc_port),
            "--http-addr",
            f"127.0.0.1:{self.http_port}",
        ]
        if self.proxy is not None:
            args += ["--advertise-addr", self.proxy.addr]
        if self.bootstrap:
            args.append("--bootstrap")
        for seed in self.join:  # the flag repeats, one seed each
            args += ["--start-join-addrs", seed]
        return args + self.args

    def output(self) -> str:
        runs = [*self.past_output]
        if self.process is not None:
            runs.append(list(self.process.output))
        return "".join(
            f"--- {self.name} run {i + 1} ---\n" + "".join(r) for i, r in enumerate(runs)
        )

    def channel(self) -> grpc.Channel:
        """A channel to `addr`, kept for the node's life (it reconnects across restarts)."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.addr, options=CHANNEL_OPTIONS)
        return self._channel

    def stub(self) -> log_pb2_grpc.LogStub:
        return log_pb2_grpc.LogStub(self.channel())

    def direct_stub(self) -> tuple[grpc.Channel, log_pb2_grpc.LogStub]:
        """A new channel to the real gRPC port, around the proxy (close it after use)."""
        ch = grpc.insecure_channel(self.rpc_addr, options=CHANNEL_OPTIONS)
        return ch, log_pb2_grpc.LogStub(ch)

    def close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class Cluster:
    """`size` nodes named n1..nN: n1 bootstraps, node i joins node i-1 (each knows one other).

    `args` go to every node; `node_args` adds flags per node name. The gossip
    profile is `local` (failure detection ~1 s) and Raft runs at FAST_RAFT.
    """

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        args: Sequence[str] = (),
        node_args: Mapping[str, Sequence[str]] | None = None,
        proxies: bool = False,
        ready_timeout: float = 60.0,
    ) -> None:
        self.root = root
        self.ready_timeout = ready_timeout
        self.use_proxies = proxies
        self.nodes: dict[str, Node] = {}
        base = ["--gossip-profile", "local", *FAST_RAFT, "--log-level", "info", *args]
        names = [f"n{i + 1}" for i in range(size)]
        ports = _distinct_ports(3 * size)
        for i, name in enumerate(names):
            node = Node(
                name=name,
                data_dir=root / name,
                gossip_port=ports[3 * i],
                rpc_port=ports[3 * i + 1],
                http_port=ports[3 * i + 2],
                args=[*base, *((node_args or {}).get(name, ()))],
                bootstrap=i == 0,
                join=[] if i == 0 else [f"127.0.0.1:{ports[3 * (i - 1)]}"],
            )
            self.nodes[name] = node

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Cluster:
        """Start every node in order, each once it can join the one before."""
        try:
            for node in self.nodes.values():
                if self.use_proxies and node.proxy is None:
                    node.proxy = PeerProxy(node.rpc_addr, self._pids).start()
                self.start_node(node.name)
            self.wait_formed()
        except BaseException:
            self.close()
            raise
        return self

    def _pids(self) -> dict[int, str]:
        return {n.pid: n.name for n in self.nodes.values() if n.alive}

    # -- faults (proxies=True) -------------------------------------------------------------

    def isolate(self, name: str) -> None:
        """Partition `name` from everyone: nothing reaches it through its proxy (peers and
        clients), and what it sends to the other nodes is swallowed by theirs. Its real
        gRPC port (`Node.direct_stub`) still answers, as a client on its side would."""
        node = self.nodes[name]
        if node.proxy is None:
            raise ClusterError("isolate needs Cluster(proxies=True)")
        node.proxy.blackhole("up")
        node.proxy.blackhole("down")
        for other in self.nodes.values():
            if other.proxy is not None and other.name != name:
                other.proxy.cut_sources.add(name)

    def deafen(self, name: str) -> None:
        """One-way loss: nothing reaches `name`; what it sends still arrives."""
        node = self.nodes[name]
        if node.proxy is None:
            raise ClusterError("deafen needs Cluster(proxies=True)")
        node.proxy.blackhole("up")
        node.proxy.blackhole("down")

    def heal(self) -> None:
        """Every fault gone. Connections that lost bytes mid-stream are reset (a real
        partition ends the same way, with timed-out connections)."""
        for node in self.nodes.values():
            if node.proxy is not None:
                node.proxy.heal()
                node.proxy.cut_sources.clear()
                node.proxy.drop_connections()

    def wait_formed(self, timeout: float = 30.0) -> Node:
        """Wait until every live node lists every node as a voter under one leader; the leader.

        A node prints its readiness line before the leader has added it (as a learner,
        promoted once caught up): a test that starts faults earlier tests the join."""
        names = sorted(self.nodes)

        def probe() -> bool | None:
            for node in self.live():
                servers = self.servers(node.name, timeout=1.0)
                if sorted(s.id for s in servers if s.voter) != names:
                    return None
            return True

        self.wait(f"every node to list {names} as voters", probe, timeout)
        return self.leader(timeout)

    def start_node(self, name: str) -> Node:
        node = self.nodes[name]
        if node.alive:
            raise ClusterError(f"{name} is already running")
        if node.process is not None:
            node.past_output.append(list(node.process.output))
        node.process = ServerProcess(
            node.data_dir, node.command_args(), ready_timeout=self.ready_timeout
        )
        try:
            node.process.start()
        except RuntimeError as e:
            raise ClusterError(f"{name} did not start: {e}\n{self.describe()}") from None
        return node

    def restart(self, name: str) -> Node:
        """Start a node that was stopped or killed again: same data dir, flags and ports."""
        return self.start_node(name)

    def kill(self, name: str) -> None:
        """SIGKILL: no leave, no transfer, nothing flushed."""
        node = self.nodes[name]
        if node.process is not None:
            node.process.kill()

    def stop(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code. A node started with --leave-on-shutdown leaves."""
        node = self.nodes[name]
        assert node.process is not None
        try:
            return node.process.stop(timeout)
        except subprocess.TimeoutExpired:
            node.process.kill()
            raise ClusterError(
                f"{name} did not stop within {timeout} s\n{self.describe()}"
            ) from None

    def freeze(self, name: str) -> None:
        """SIGSTOP: the node is silent but its connections stay open (a long GC or VM
        pause, a hung disk): peers see no reset, only silence."""
        os.kill(self.nodes[name].pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        os.kill(self.nodes[name].pid, signal.SIGCONT)

    def wipe(self, name: str) -> None:
        """Delete a stopped node's data. It then rejoins through a peer (never bootstraps:
        a wiped bootstrap node would otherwise start a second cluster of its own)."""
        node = self.nodes[name]
        if node.alive:
            raise ClusterError(f"wipe {name}: stop it first")
        shutil.rmtree(node.data_dir, ignore_errors=True)
        if node.bootstrap:
            node.bootstrap = False
            node.join = [n.gossip_addr for n in self.nodes.values() if n.name != name]

    def close(self) -> None:
        """SIGKILL every node (a test that cares how a node stops calls `stop`), then the
        proxies."""
        for node in self.nodes.values():
            node.close_channel()
            if node.process is not None:
                node.process.kill()
        for node in self.nodes.values():
            if node.proxy is not None:
                node.proxy.close()
                node.proxy = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- looking at it -----------------------------------------------------------------------

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.alive]

    def describe(self) -> str:
        """Every node's output, for a failure message."""
        return "\n".join(n.output() for n in self.nodes.values())

    def servers(self, name: str, timeout: float = CALL_TIMEOUT) -> list[log_pb2.Server]:
        resp = self.nodes[name].stub().GetServers(log_pb2.GetServersRequest(), timeout=timeout)
        return list(resp.servers)

    def info(self, name: str, timeout: float = CALL_TIMEOUT) -> log_pb2.GetLogInfoResponse:
        req = log_pb2.GetLogInfoRequest()
        resp: log_pb2.GetLogInfoResponse = self.nodes[name].stub().GetLogInfo(req, timeout=timeout)
        return resp

    def committed_end(self, name: str, timeout: float = CALL_TIMEOUT) -> int:
        """The offset past the node's committed prefix (its high-water mark)."""
        info = self.info(name, timeout)
        req = log_pb2.FetchRequest(offset=info.lowest_offset, max_records=1)
        resp = self.nodes[name].stub().Fetch(req, timeout=timeout)
        return int(resp.high_watermark)

    def read_log(self, name: str, timeout: float = 10.0) -> list[tuple[int, bytes]]:
        """The node's whole committed log, (offset, value) in order."""
        stub = self.nodes[name].stub()
        info = self.info(name)
        out: list[tuple[int, bytes]] = []
        offset, end = info.lowest_offset, None
        deadline = time.monotonic() + timeout
        while end is None or offset < end:
            if time.monotonic() > deadline:
                raise ClusterError(f"read_log {name}: stuck at {offset} of {end}")
            req = log_pb2.FetchRequest(offset=offset, max_records=1000, max_bytes=4 << 20)
            resp = stub.Fetch(req, timeout=CALL_TIMEOUT)
            end = end if end is not None else resp.high_watermark
            for r in resp.records:
                if r.offset < end:
                    out.append((r.offset, r.value))
            if resp.next_offset <= offset:
                break
            offset = resp.next_offset
        return out

    def wait(
        self,
        what: str,
        probe: Callable[[], T | None],
        timeout: float = 15.0,
        interval: float = 0.05,
    ) -> T:
        """Poll `probe` until it returns something other than None (errors count as None)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                got = probe()
            except (grpc.RpcError, ClusterError) as e:
                got, last = None, e
            if got is not None:
                return got
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out after {timeout} s waiting for {what} (last error: {last})\n"
                    + self.describe()
                )
            time.sleep(interval)

    def leader(self, timeout: float = 15.0, among: Sequence[str] | None = None) -> Node:
        """The leader every live node (or every node of `among`) names, once they agree.

        On timeout the error lists what each node said."""
        said: dict[str, str] = {}

        def probe() -> Node | None:
            names = list(among) if among is not None else [n.name for n in self.live()]
            said.clear()
            leaders: set[str] = set()
            for name in names:
                try:
                    servers = self.servers(name, timeout=1.0)
                except grpc.RpcError as e:
                    said[name] = f"error {e.code().name}: {e.details()}"
                    leaders.add("?")
                    continue
                marked = [s.id for s in servers if s.is_leader]
                said[name] = f"servers={[s.id for s in servers]} leaders={marked}"
                leaders.add(marked[0] if len(marked) == 1 else "?")
            if len(leaders) == 1 and (lead := leaders.pop()) in self.nodes:
                return self.nodes[lead] if self.nodes[lead].alive else None
            return None

        deadline = time.monotonic() + timeout
        while True:
            got = probe()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                lines = "\n".join(f"  {n}: {s}" for n, s in said.items())
                raise ClusterError(
                    f"no agreed leader within {timeout} s:\n{lines}\n" + self.describe()
                )
            time.sleep(0.05)

    def new_leader(self, old: str, timeout: float = 15.0) -> Node:
        """The leader the live nodes other than `old` agree on, once it is not `old`."""
        others = [n.name for n in self.live() if n.name != old]
        said: list[str] = []

        def probe() -> Node | None:
            try:
                lead = self.leader(among=others, timeout=0.5)
            except ClusterError as e:
                said[:] = [str(e).split("\n--- ", 1)[0]]
                return None
            said[:] = [f"they still name {lead.name}"]
            return lead if lead.name != old else None

        deadline = time.monotonic() + timeout
        while (got := probe()) is None:
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{others} elected no new leader within {timeout} s after {old} went: "
                    f"{said[0] if said else ''}\n" + self.describe()
                )
            time.sleep(0.05)
        return got

    def followers(self, leader: Node | None = None) -> list[Node]:
        lead = leader or self.leader()
        return [n for n in self.live() if n.name != lead.name]

    def wait_converged(self, timeout: float = 20.0, names: Sequence[str] | None = None) -> int:
        """Wait until the nodes hold the same log, all of it committed; its end offset."""

        def probe() -> int | None:
            picked = list(names) if names is not None else [n.name for n in self.live()]
            states = set()
            for name in picked:
                info = self.info(name, timeout=1.0)
                committed = self.committed_end(name, timeout=1.0)
                if committed != info.next_offset:
                    return None
                states.add(committed)
            return states.pop() if len(states) == 1 else None

        return self.wait("every node to hold the same committed log", probe, timeout)

    def wait_committed(self, offset: int, name: str, timeout: float = 15.0) -> None:
        """Wait until `name` has committed `offset`."""
        self.wait(
            f"{name} to commit offset {offset}",
            lambda: True if self.committed_end(name, 1.0) > offset else None,
            timeout,
        )


def _distinct_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports

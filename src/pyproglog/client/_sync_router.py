"""The sync driver of the routing rules (`_routing`): channels, GetServers, the retry loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc

from pyproglog.api.raft.v1 import raft_pb2_grpc
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.client._errors import ClientClosed
from pyproglog.client._routing import Attempts, Kind, ReadFrom, View
from pyproglog.client._types import Server


class Conn:
    """One server's channel and stubs."""

    def __init__(self, addr: str, make_channel: Callable[[str], grpc.Channel]) -> None:
        self.addr = addr
        self.channel = make_channel(addr)
        self.stub = log_pb2_grpc.LogStub(self.channel)
        self._raft: raft_pb2_grpc.RaftStub | None = None
        # Raw bytes in and out: only whether the server answers matters.
        self.health_check = self.channel.unary_unary("/grpc.health.v1.Health/Check")
        # Whether the server has answered on this channel: a deadline passing
        # before that means "unreachable", after it "slow".
        self.reached = False

    @property
    def raft(self) -> raft_pb2_grpc.RaftStub:
        if self._raft is None:
            self._raft = raft_pb2_grpc.RaftStub(self.channel)
        return self._raft

    def close(self) -> None:
        self.channel.close()


class Router:
    """The cluster's `View` and a channel per server; thread-safe (network
    questions are asked outside any lock)."""

    def __init__(
        self,
        seeds: Sequence[str],
        make_channel: Callable[[str], grpc.Channel],
        *,
        read_from: ReadFrom,
        refresh_interval: float | None,
    ) -> None:
        self.view = View(seeds, read_from=read_from, refresh_interval=refresh_interval)
        self._make_channel = make_channel
        self._lock = threading.Lock()
        self._conns: dict[str, Conn] = {}
        self._closed = False

    def conn(self, addr: str) -> Conn:
        with self._lock:
            if self._closed:
                raise ClientClosed()
            c = self._conns.get(addr)
            if c is None:
                c = self._conns[addr] = Conn(addr, self._make_channel)
            return c

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            c.close()

    @property
    def reached(self) -> bool:
        with self._lock:
            return any(c.reached for c in self._conns.values())

    @property
    def servers(self) -> list[Server]:
        return self.view.servers

    @property
    def leader(self) -> str | None:
        return self.view.leader

    def update(self, servers: Iterable[Server]) -> None:
        self.view.update(servers)

    def refresh(self, deadline: float | None, first: str | None = None) -> bool:
        """A round of GetServers (`RefreshRound`); whether anybody answered."""
        round_ = self.view.refresh_round(first)
        for addr in round_.order:
            ask = round_.ask_timeout(deadline)
            if ask is None:
                break
            try:
                conn = self.conn(addr)
            except ClientClosed:
                return False
            try:
                resp = conn.stub.GetServers(log_pb2.GetServersRequest(), timeout=ask)
            except grpc.RpcError:
                continue
            except ValueError:  # the channel was closed under us (client closed)
                return False
            conn.reached = True
            servers = [Server.from_pb(s) for s in resp.servers]
            if round_.answer(servers):
                break
        return round_.finish()


def call(
    router: Router,
    kind: Kind,
    invoke: Callable[[Conn, float | None], Any],
    timeout: float | None,
    *,
    offset: int | None = None,
) -> Any:
    """Run `invoke(conn, attempt_timeout)` on the routed server, retrying what may be
    retried within the deadline `timeout` (seconds from now)."""
    run = Attempts(router.view, kind, timeout, offset=offset)
    if router.view.stale():
        router.refresh(run.deadline)
    while run.remaining() > 0:
        addr = run.pick()
        if addr is None:
            time.sleep(run.pause())
            router.refresh(run.deadline)
            continue
        conn = router.conn(addr)
        attempt = run.attempt_timeout()
        try:
            resp = invoke(conn, attempt)
        except grpc.RpcError as exc:
            pause = run.failed(conn, exc, attempt)
            if pause is not None:
                time.sleep(pause)
                router.refresh(run.deadline)
            continue
        conn.reached = True
        return resp
    raise run.gave_up()

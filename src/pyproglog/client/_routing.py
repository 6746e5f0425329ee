"""Where a routed client's calls go: the cluster view, one channel per server, retries.

grpcio for Python has no pluggable resolver or picker (the book's chapter 9 wrote
both in Go), so the same job lives here: GetServers gives the members and the
leader, writes go to the leader, reads round-robin over the followers.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import grpc

from pyproglog.api.raft.v1 import raft_pb2_grpc
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.client._errors import (
    ClientClosed,
    ClientError,
    Unavailable,
    Unreachable,
    from_rpc_error,
)
from pyproglog.client._types import Server

ReadFrom = Literal["followers", "leader"]
Kind = Literal["write", "read"]

DEFAULT_REFRESH_INTERVAL = 30.0
# Exponential backoff between attempts: full jitter over [0, step], the step
# doubling from the first to the cap. Election timeouts are 0.5-1 s in tests and
# a few seconds in production, so a cap of 1 s finds a new leader promptly.
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 1.0
# One GetServers question during a refresh: a silent (not refusing) member must
# not eat the whole deadline of the call that asked for the refresh.
REFRESH_ASK_TIMEOUT = 1.0
# With no deadline at all (timeout=None), retries still end: never a hang on a
# cluster that is down.
UNBOUNDED_RETRY_BUDGET = 60.0

# Reasons that say the server did not take the write: another node, or the same
# one later, may. NO_QUORUM and WRITE_FAILED are left out on purpose: the write
# may still commit, and a retry could append it twice.
_SAFE_WRITE_REASONS = frozenset({"NOT_LEADER", "SHUTTING_DOWN"})


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


def retriable(err: ClientError, exc: grpc.RpcError, kind: Kind) -> bool:
    """Whether another attempt may succeed and cannot do harm.

    A read may be retried after any UNAVAILABLE. A write only when the server
    said it did not take it (NOT_LEADER, SHUTTING_DOWN) or when the request
    never left the client (no connection). A connection lost mid-call, or
    NO_QUORUM, leaves the write's outcome unknown: the caller decides.
    """
    if not isinstance(err, Unavailable):
        return False
    if kind == "read":
        return True
    if err.error_reason is not None:
        return err.error_reason in _SAFE_WRITE_REASONS
    return isinstance(err, Unreachable) and _never_sent(exc)


def _never_sent(exc: grpc.RpcError) -> bool:
    # grpc fails a call at once with this text when it has no connection (refused,
    # unresolvable, or the channel is backing off after such a failure): nothing
    # was sent. "Socket closed", "Connection reset" etc. come after sending.
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    details = exc.details() or ""
    return "failed to connect to all addresses" in details or "DNS resolution failed" in details


class Router:
    """The cluster as the client last saw it, and a channel per server.

    Thread-safe: the view is swapped under a lock; network questions are asked
    outside it.
    """

    def __init__(
        self,
        seeds: Sequence[str],
        make_channel: Callable[[str], grpc.Channel],
        *,
        read_from: ReadFrom,
        refresh_interval: float | None,
    ) -> None:
        if not seeds:
            raise ValueError("a routed client needs at least one bootstrap address")
        self.seeds = list(dict.fromkeys(seeds))
        self.read_from: ReadFrom = read_from
        self.refresh_interval = refresh_interval
        self._make_channel = make_channel
        self._lock = threading.Lock()
        self._conns: dict[str, Conn] = {}
        self._servers: list[Server] = []
        self._leader: str | None = None
        self._rr = itertools.count()
        self._refreshed_at: float | None = None
        # Whether a member answered the last refresh: a view with no leader then
        # means an election, not a cluster that is down.
        self._answered = False
        self._closed = False

    # -- channels ----------------------------------------------------------------------

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

    # -- the view ----------------------------------------------------------------------

    @property
    def servers(self) -> list[Server]:
        with self._lock:
            return list(self._servers)

    @property
    def leader(self) -> str | None:
        with self._lock:
            return self._leader

    def electing(self) -> bool:
        """Members answer but name no leader."""
        with self._lock:
            return self._answered and self._leader is None

    def stale(self) -> bool:
        with self._lock:
            if self._refreshed_at is None:
                return True
            if self.refresh_interval is None:
                return False
            return time.monotonic() - self._refreshed_at >= self.refresh_interval

    def update(self, servers: Iterable[Server]) -> None:
        view = [s for s in servers if s.rpc_addr]
        leaders = [s.rpc_addr for s in view if s.is_leader]
        with self._lock:
            self._refreshed_at = time.monotonic()
            self._answered = True
            if view:
                self._servers = view
                self._leader = leaders[0] if len(leaders) == 1 else None

    def hint_leader(self, addr: str) -> None:
        """A server named the leader (NOT_LEADER's leader_addr): go there at once."""
        with self._lock:
            self._leader = addr
            if all(s.rpc_addr != addr for s in self._servers):
                self._servers = [*self._servers, Server(addr, addr, True)]

    def forget_leader(self, addr: str) -> None:
        with self._lock:
            if self._leader == addr:
                self._leader = None

    def refresh(self, deadline: float | None, first: str | None = None) -> bool:
        """Ask the members (then the seeds) for GetServers until one names a leader.

        Keeps the last view when nobody answers; whether anybody did.
        """
        with self._lock:
            known = [s.rpc_addr for s in self._servers]
            old_leader = self._leader
        # The old leader last: when a call just failed there, it is likely gone.
        order = [a for a in [first, *known, *self.seeds] if a and a != old_leader]
        if old_leader is not None:
            order.append(old_leader)
        answered: list[Server] | None = None
        for addr in dict.fromkeys(order):
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                break
            ask = REFRESH_ASK_TIMEOUT if remaining is None else min(remaining, REFRESH_ASK_TIMEOUT)
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
            view = [Server(s.id, s.rpc_addr, s.is_leader, s.voter) for s in resp.servers]
            if any(s.is_leader for s in view):
                self.update(view)
                return True
            if answered is None:
                answered = view
        if answered is not None:
            self.update(answered)
            return True
        with self._lock:
            self._answered = False
        return False

    # -- picking -----------------------------------------------------------------------

    def pick(self, kind: Kind, avoid: set[str]) -> str | None:
        """The address for the next attempt of a call; `avoid` holds those that failed it.

        None for a write while the members answer but name no leader (an
        election): the caller waits for one. A follower would take the write and
        forward it, but to the leader it still believes in, and a forward that
        fails answers NO_QUORUM (outcome unknown, not retried).
        """
        with self._lock:
            leader = self._leader
            electing = self._answered and leader is None
            everyone = [s.rpc_addr for s in self._servers] or list(self.seeds)
            followers = [
                s.rpc_addr for s in self._servers if not s.is_leader and s.rpc_addr != leader
            ]
            n = next(self._rr)
        if kind == "write" and electing:
            return None
        if kind == "write" or self.read_from == "leader":
            # No leader known and nobody answered the refresh: try every address,
            # and say so (Unreachable) when that fails too.
            candidates = [leader] if leader is not None else everyone
        else:
            candidates = followers or ([leader] if leader is not None else everyone)
        fresh = [a for a in candidates if a not in avoid]
        if not fresh and kind == "read":
            # Every usual target failed this read: any other member, else start over.
            fresh = [a for a in everyone if a not in avoid]
        if not fresh:
            # A write stays with the leader the view names, after a backoff (see above).
            fresh = candidates
        return fresh[n % len(fresh)]


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def backoff_delays() -> Iterable[float]:
    """Full-jitter exponential backoff: the sleep before each retry."""
    step = BACKOFF_FIRST
    while True:
        yield random.uniform(0, step)
        step = min(step * 2, BACKOFF_CAP)


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
    start = time.monotonic()
    budget = UNBOUNDED_RETRY_BUDGET if timeout is None else timeout
    deadline = start + budget
    avoid: set[str] = set()
    tried: list[str] = []
    last: ClientError | None = None
    delays = iter(backoff_delays())
    if router.stale():
        router.refresh(deadline)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        addr = router.pick(kind, avoid)
        if addr is None:
            time.sleep(min(next(delays), remaining))
            router.refresh(deadline)
            continue
        conn = router.conn(addr)
        # With no deadline asked for, an attempt has none either (as the
        # single-server client); only the retries are bounded.
        attempt = None if timeout is None else remaining
        try:
            resp = invoke(conn, attempt)
        except grpc.RpcError as exc:
            err = from_rpc_error(
                exc, addr=addr, connected=conn.reached, timeout=timeout, offset=offset
            )
            if not isinstance(err, Unreachable):
                conn.reached = True
            if not retriable(err, exc, kind):
                raise err from None
            last = err
            avoid.add(addr)
            tried.append(addr)
            hint = err.leader_addr if isinstance(err, Unavailable) else None
            if isinstance(err, Unreachable):
                router.forget_leader(addr)
            if hint and hint != addr and hint not in tried:
                # Straight to the named leader, no sleep: it answered for itself.
                router.hint_leader(hint)
                avoid.discard(hint)
                continue
            pause = min(next(delays), max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            router.refresh(deadline)
            continue
        conn.reached = True
        return resp
    if kind == "write" and router.electing():
        members = ", ".join(s.rpc_addr for s in router.servers)
        raise Unavailable(
            f"no leader in the cluster ({members}) within {budget:g}s",
            code=grpc.StatusCode.UNAVAILABLE,
        )
    raise _gave_up(last, tried, budget)


def _gave_up(last: ClientError | None, tried: list[str], budget: float) -> ClientError:
    if last is None:
        return Unreachable(", ".join(tried) or "the cluster", f"no attempt within {budget:g}s")
    if isinstance(last, Unreachable) and tried:
        # Say every address tried, not only the last one: "the cluster" is down.
        addrs = ", ".join(dict.fromkeys(tried))
        return Unreachable(addrs, f"{last.reason} (retried for {budget:g}s)", code=last.code)
    return last

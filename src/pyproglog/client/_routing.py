"""Where a routed client's calls go, and when a failed one is tried again.

grpcio for Python has no pluggable resolver or picker (the book's chapter 9 wrote
both in Go), so the same job lives here: GetServers gives the members and the
leader, writes go to the leader, reads round-robin over the followers.

This module is the part both clients share, and it does no I/O and never
sleeps: `View` is the cluster as last seen and the picks, `RefreshRound` what
a round of GetServers answers makes of the view, `Attempts` one call's
deadline, backoff and retry rules. The drivers that talk to the servers are
thin loops around them: `_sync_router` (the thread-safe `Client`) and `_aio`
(`AsyncClient`).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, Protocol

import grpc

from pyproglog.client._errors import (
    ClientError,
    DeadlineExceeded,
    Unavailable,
    Unreachable,
    from_rpc_error,
)
from pyproglog.client._types import Server

ReadFrom = Literal["followers", "leader"]
# A sequenced write ("write_idempotent") carries a producer id and a batch number:
# the leader answers a repeat with the first answer, so it may be retried when
# its outcome is unknown.
Kind = Literal["write", "read", "write_idempotent"]

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
# A sequenced write's attempt gets a share of the call's budget (at least the
# floor), so that a frozen leader leaves time to retry on the next one; cutting
# a slow attempt short costs nothing, since the retry is answered as a duplicate.
SEQUENCED_ATTEMPT_SHARE = 0.25
SEQUENCED_ATTEMPT_FLOOR = 2.0

# Reasons that say the server did not take the write: another node, or the same
# one later, may. NO_QUORUM and WRITE_FAILED are left out on purpose: the write
# may still commit, and a retry could append it twice.
_SAFE_WRITE_REASONS = frozenset({"NOT_LEADER", "SHUTTING_DOWN"})
# Outcome unknown, or (DUPLICATE_IN_FLIGHT) known to be on its way: a sequenced
# write's retry is deduplicated by the leader, so these are retried too.
_SEQUENCED_RETRY_REASONS = frozenset({"NO_QUORUM", "DUPLICATE_IN_FLIGHT", "WRITE_FAILED"})


class Reach(Protocol):
    """What the retry rules need of a driver's connection to one server."""

    addr: str
    # Whether the server has answered on this channel: a deadline passing before
    # that means "unreachable", after it "slow".
    reached: bool


def retriable(err: ClientError, exc: grpc.RpcError, kind: Kind) -> bool:
    """Whether another attempt may succeed and cannot do harm.

    A read may be retried after any UNAVAILABLE. A write only when the server
    said it did not take it (NOT_LEADER, SHUTTING_DOWN) or when the request
    never left the client (no connection). A connection lost mid-call, or
    NO_QUORUM, leaves the write's outcome unknown: the caller decides. A
    sequenced write may be repeated whatever happened to the first attempt
    (the leader dedupes it), so it is also retried on those, on
    DUPLICATE_IN_FLIGHT and WRITE_FAILED, and after an attempt's deadline (the
    caller checks that time remains). OUT_OF_ORDER_SEQUENCE never is.
    """
    if kind == "write_idempotent" and isinstance(err, DeadlineExceeded):
        return True
    if not isinstance(err, Unavailable):
        return False
    if kind == "read":
        return True
    reason = err.error_reason
    if reason is not None:
        if reason in _SAFE_WRITE_REASONS:
            return True
        return kind == "write_idempotent" and reason in _SEQUENCED_RETRY_REASONS
    if kind == "write_idempotent":
        # No reason: the transport failed (refused, lost mid-call, no answer).
        return True
    return isinstance(err, Unreachable) and _never_sent(exc)


def _never_sent(exc: grpc.RpcError) -> bool:
    # grpc fails a call at once with this text when it has no connection (refused,
    # unresolvable, or the channel is backing off after such a failure): nothing
    # was sent. "Socket closed", "Connection reset" etc. come after sending.
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    details = exc.details() or ""
    return "failed to connect to all addresses" in details or "DNS resolution failed" in details


def backoff_delays() -> Iterator[float]:
    """Full-jitter exponential backoff: the sleep before each retry."""
    step = BACKOFF_FIRST
    while True:
        yield random.uniform(0, step)
        step = min(step * 2, BACKOFF_CAP)


class View:
    """The cluster as the client last saw it, and the picks made from it.

    Thread-safe (the sync client's threads share it); no I/O. A `pinned` view
    is a direct client's one server: every pick is that address, and it never
    goes stale nor follows a leader hint.
    """

    def __init__(
        self,
        seeds: Sequence[str],
        *,
        read_from: ReadFrom = "followers",
        refresh_interval: float | None = DEFAULT_REFRESH_INTERVAL,
        pinned: bool = False,
    ) -> None:
        if not seeds:
            raise ValueError("a routed client needs at least one bootstrap address")
        self.seeds = list(dict.fromkeys(seeds))
        self.read_from: ReadFrom = read_from
        self.refresh_interval = refresh_interval
        self.pinned = pinned
        self._lock = threading.Lock()
        self._servers: list[Server] = []
        self._leader: str | None = None
        self._rr = itertools.count()
        self._refreshed_at: float | None = None
        # Whether a member answered the last refresh: a view with no leader then
        # means an election, not a cluster that is down.
        self._answered = False

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
        if self.pinned:
            return False
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

    def unanswered(self) -> None:
        """Nobody answered a refresh: keep the last view, but it is no election."""
        with self._lock:
            self._answered = False

    def hint_leader(self, addr: str) -> None:
        """A server named the leader (NOT_LEADER's leader_addr): go there at once."""
        if self.pinned:
            return
        with self._lock:
            self._leader = addr
            if all(s.rpc_addr != addr for s in self._servers):
                self._servers = [*self._servers, Server(addr, addr, True)]

    def forget_leader(self, addr: str) -> None:
        with self._lock:
            if self._leader == addr:
                self._leader = None

    def refresh_round(self, first: str | None = None) -> RefreshRound:
        """A round of GetServers questions: the members, then the seeds."""
        with self._lock:
            known = [s.rpc_addr for s in self._servers]
            old_leader = self._leader
        # The old leader last: when a call just failed there, it is likely gone.
        order = [a for a in [first, *known, *self.seeds] if a and a != old_leader]
        if old_leader is not None:
            order.append(old_leader)
        return RefreshRound(self, list(dict.fromkeys(order)))

    def pick(self, kind: Kind, avoid: Iterable[str] = ()) -> str | None:
        """The address for the next attempt of a call; `avoid` holds those that failed it.

        None for a write while the members answer but name no leader (an
        election): the caller waits for one. A follower would take the write and
        forward it, but to the leader it still believes in, and a forward that
        fails answers NO_QUORUM (outcome unknown, not retried).
        """
        if self.pinned:
            return self.seeds[0]
        avoid = set(avoid)
        with self._lock:
            leader = self._leader
            electing = self._answered and leader is None
            everyone = [s.rpc_addr for s in self._servers] or list(self.seeds)
            followers = [
                s.rpc_addr for s in self._servers if not s.is_leader and s.rpc_addr != leader
            ]
            n = next(self._rr)
        write = kind != "read"
        if write and electing:
            return None
        if write or self.read_from == "leader":
            # No leader known and nobody answered the refresh: try every address,
            # and say so (Unreachable) when that fails too.
            candidates = [leader] if leader is not None else everyone
        else:
            candidates = followers or ([leader] if leader is not None else everyone)
        fresh = [a for a in candidates if a not in avoid]
        if not fresh and not write:
            # Every usual target failed this read: any other member, else start over.
            fresh = [a for a in everyone if a not in avoid]
        if not fresh:
            # A write stays with the leader the view names, after a backoff (see above).
            fresh = candidates
        return fresh[n % len(fresh)]


class RefreshRound:
    """Asking the members (then the seeds) for GetServers until one names a leader.

    The driver asks each address of `order` in turn, giving each question
    `ask_timeout(deadline)`, and hands every answer to `answer` (it stops when
    that returns True); `finish` then sets the view: the answer that named a
    leader, else the first answer, else the last view is kept.
    """

    def __init__(self, view: View, order: list[str]) -> None:
        self.order = order
        self._view = view
        self._first: list[Server] | None = None
        self._done = False

    @staticmethod
    def ask_timeout(deadline: float | None) -> float | None:
        """The timeout of the next question; None when the deadline has passed."""
        if deadline is None:
            return REFRESH_ASK_TIMEOUT
        remaining = deadline - time.monotonic()
        return None if remaining <= 0 else min(remaining, REFRESH_ASK_TIMEOUT)

    def answer(self, servers: list[Server]) -> bool:
        """A member's GetServers answer; True when the round is over."""
        if any(s.is_leader for s in servers):
            self._view.update(servers)
            self._done = True
            return True
        if self._first is None:
            self._first = servers
        return False

    def finish(self) -> bool:
        """Whether anybody answered."""
        if self._done:
            return True
        if self._first is not None:
            self._view.update(self._first)
            return True
        self._view.unanswered()
        return False


class Attempts:
    """One call's retries: its deadline, the addresses that failed it, the backoff.

    The driver's loop: while `remaining() > 0`, `pick()` an address (None: no
    leader yet, sleep `pause()` and refresh), run the call there with
    `attempt_timeout()`; on a grpc error, `failed()` raises the ClientError when
    it may not be retried, else returns how long to sleep before refreshing the
    view and trying again (None: go at once, to the leader a server named). Out
    of time, raise `gave_up()`.
    """

    def __init__(
        self, view: View, kind: Kind, timeout: float | None, *, offset: int | None = None
    ) -> None:
        self.view = view
        self.kind: Kind = kind
        self.timeout = timeout
        self.offset = offset
        self.budget = UNBOUNDED_RETRY_BUDGET if timeout is None else timeout
        self.deadline = time.monotonic() + self.budget
        self.avoid: set[str] = set()
        self.tried: list[str] = []
        self.last: ClientError | None = None
        self._delays = backoff_delays()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def pick(self) -> str | None:
        return self.view.pick(self.kind, self.avoid)

    def attempt_timeout(self) -> float | None:
        remaining = max(0.0, self.remaining())
        if self.kind == "write_idempotent":
            share = max(SEQUENCED_ATTEMPT_FLOOR, self.budget * SEQUENCED_ATTEMPT_SHARE)
            return min(remaining, share)
        # With no deadline asked for, an attempt has none either (as the
        # single-server client); only the retries are bounded.
        return None if self.timeout is None else remaining

    def pause(self) -> float:
        """The sleep before the next attempt: backoff, never past the deadline."""
        return min(next(self._delays), max(0.0, self.remaining()))

    def failed(
        self, conn: Reach, exc: grpc.RpcError, attempt_timeout: float | None
    ) -> float | None:
        """An attempt on `conn` failed with `exc`: raise it, or say when to retry."""
        sequenced = self.kind == "write_idempotent"
        err = from_rpc_error(
            exc,
            addr=conn.addr,
            connected=conn.reached,
            timeout=attempt_timeout if sequenced else self.timeout,
            offset=self.offset,
        )
        if not isinstance(err, Unreachable):
            conn.reached = True
        if not retriable(err, exc, self.kind):
            raise err from None
        addr = conn.addr
        self.last = err
        self.avoid.add(addr)
        self.tried.append(addr)
        hint = err.leader_addr if isinstance(err, Unavailable) else None
        if isinstance(err, Unreachable):
            self.view.forget_leader(addr)
        if hint and hint != addr and hint not in self.tried and not self.view.pinned:
            # Straight to the named leader, no sleep: it answered for itself.
            self.view.hint_leader(hint)
            self.avoid.discard(hint)
            return None
        return self.pause()

    def gave_up(self) -> ClientError:
        """The error for a call out of time."""
        if self.kind != "read" and self.view.electing():
            members = ", ".join(s.rpc_addr for s in self.view.servers)
            return Unavailable(
                f"no leader in the cluster ({members}) within {self.budget:g}s",
                code=grpc.StatusCode.UNAVAILABLE,
            )
        if self.kind == "write_idempotent" and isinstance(self.last, DeadlineExceeded):
            # Time is up with the outcome unknown: what a caller of a sequenced
            # write handles as "unavailable, retry the batch later".
            addrs = ", ".join(dict.fromkeys(self.tried))
            return Unavailable(
                f"no answer from {addrs} (retried for {self.budget:.3g}s)",
                code=grpc.StatusCode.DEADLINE_EXCEEDED,
            )
        if self.last is None and not self.tried:
            # The whole time went to asking who the members are; nobody answered.
            asked = [s.rpc_addr for s in self.view.servers] or self.view.seeds
            return Unreachable(", ".join(asked), f"no answer within {self.budget:g}s")
        return _gave_up(self.last, self.tried, self.budget)


def _gave_up(last: ClientError | None, tried: list[str], budget: float) -> ClientError:
    if last is None:
        return Unreachable(", ".join(tried) or "the cluster", f"no attempt within {budget:g}s")
    if isinstance(last, Unreachable) and tried:
        # Say every address tried, not only the last one: "the cluster" is down.
        addrs = ", ".join(dict.fromkeys(tried))
        return Unreachable(addrs, f"{last.reason} (retried for {budget:.3g}s)", code=last.code)
    return last

"""GossipMembership on real sockets: several kinship nodes in this process on 127.0.0.1.

Nodes bind port 0 and are joined by the address they got (`local.addr`), so
runs never race for ports. `fast=True` is kinship's `local` timing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial

import pytest

from pyproglog.discovery import (
    TAG_ID,
    TAG_RPC_ADDR,
    EventKind,
    GossipMembership,
    MemberEvent,
    MembershipError,
    MemberStatus,
)

# A bound on waits for what gossip does in well under a second (2 busy cores).
DEADLINE = 20.0
KEY = secrets.token_bytes(32)


class Recorder:
    def __init__(self) -> None:
        self.events: list[MemberEvent] = []

    def __call__(self, event: MemberEvent) -> None:
        self.events.append(event)

    def saw(self, kind: EventKind, name: str) -> bool:
        return bool(self.of(kind, name))

    def of(self, kind: EventKind, name: str | None = None) -> list[MemberEvent]:
        return [e for e in self.events if e.kind is kind and name in (None, e.member.name)]


def has_members(m: GossipMembership, n: int) -> bool:
    return len(m.members()) == n


def joined_are(r: Recorder, names: set[str]) -> bool:
    return {e.member.name for e in r.of(EventKind.JOINED)} == names


async def until(check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(DEADLINE):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {DEADLINE} s waiting until {what}") from None


def unused_port() -> int:
    # Not pyproglog.testing.free_port: that package pulls in the agent, and this
    # package must test alone.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def node(
    name: str,
    join: Sequence[str] = (),
    *,
    bind: str = "127.0.0.1:0",
    key: bytes | None = KEY,
    rpc_port: int = 9000,
) -> GossipMembership:
    tags = {TAG_ID: str(abs(hash(name)) % 10**9 + 1), TAG_RPC_ADDR: f"127.0.0.1:{rpc_port}"}
    return GossipMembership(name, bind, tags, list(join), key=key, fast=True)


@pytest.fixture
async def started() -> AsyncIterator[Callable[[GossipMembership], Awaitable[Recorder]]]:
    nodes: list[GossipMembership] = []

    async def start(m: GossipMembership) -> Recorder:
        recorder = Recorder()
        m.subscribe(recorder)  # before start: members learned while joining are reported
        nodes.append(m)
        await m.start()
        return recorder

    yield start
    for m in nodes:
        await m.stop()


async def test_three_nodes_each_joining_one_other_see_each_other(
    started: Callable[..., Awaitable[Recorder]],
) -> None:
    a = node("a", rpc_port=9001)
    ra = await started(a)
    b = node("b", [a.local.addr], rpc_port=9002)
    rb = await started(b)
    c = node("c", [b.local.addr], rpc_port=9003)
    rc = await started(c)

    for m, r, me in [(a, ra, "a"), (b, rb, "b"), (c, rc, "c")]:
        others = {"a", "b", "c"} - {me}
        await until(partial(has_members, m, 3), f"{me} sees three members")
        await until(partial(joined_are, r, others), f"{me} saw two joins")
        assert not r.of(EventKind.LEFT) and not r.of(EventKind.FAILED)
        assert me not in {e.member.name for e in r.events}  # never about oneself

    view = {m.name: m for m in c.members()}
    assert view["a"].rpc_addr == "127.0.0.1:9001"
    assert view["b"].node_id is not None and view["b"].node_id > 0
    assert all(m.status is MemberStatus.ALIVE for m in view.values())
    assert view["a"].addr == a.local.addr
    assert view["a"].epoch > 0


async def test_a_subscriber_added_later_gets_the_current_members(
    started: Callable[..., Awaitable[Recorder]],
) -> None:
    a = node("a")
    await started(a)
    b = node("b", [a.local.addr])
    await started(b)
    await until(lambda: len(a.members()) == 2, "joined")
    late = Recorder()
    a.subscribe(late)
    await until(lambda: bool(late.events), "replayed")
    assert [(e.kind, e.member.name) for e in late.events] == [(EventKind.JOINED, "b")]


async def test_leave_is_seen_as_left(started: Callable[..., Awaitable[Recorder]]) -> None:
    a = node("a")
    ra = await started(a)
    b = node("b", [a.local.addr])
    rb = await started(b)
    c = node("c", [a.local.addr])
    await started(c)
    await until(lambda: len(a.members()) == 3 and len(b.members()) == 3, "joined")

    await c.leave()
    for r in (ra, rb):
        await until(partial(r.saw, EventKind.LEFT, "c"), "c's leave is seen")
        assert not r.of(EventKind.FAILED, "c")
        assert r.of(EventKind.LEFT, "c")[0].member.status is MemberStatus.LEFT
    assert {m.name for m in a.members()} == {"a", "b"}
    assert c.members() == []


async def test_a_node_with_another_key_cannot_join(
    started: Callable[..., Awaitable[Recorder]],
) -> None:
    a = node("a")
    await started(a)
    intruder = node("x", [a.local.addr], key=secrets.token_bytes(32))
    with pytest.raises(MembershipError, match="--cluster-key-file") as exc:
        await intruder.start()
    assert "handshake failed" in str(exc.value)
    assert intruder.members() == []
    # Plaintext against an encrypted cluster is the same mistake.
    with pytest.raises(MembershipError, match="--cluster-key-file"):
        await node("y", [a.local.addr], key=None).start()
    assert len(a.members()) == 1


async def test_no_seed_reachable_fails_start() -> None:
    seed = f"127.0.0.1:{unused_port()}"
    lonely = node("lonely", [seed])
    with pytest.raises(MembershipError, match="no seed answered") as exc:
        await lonely.start()
    assert seed in str(exc.value) and "--start-join-addrs" in str(exc.value)


async def test_a_restart_is_a_rejoin_not_a_leave(
    started: Callable[..., Awaitable[Recorder]],
) -> None:
    a = node("a")
    ra = await started(a)
    b = node("b", [a.local.addr])
    await started(b)
    await until(lambda: bool(ra.of(EventKind.JOINED, "b")), "b joined")
    first = ra.of(EventKind.JOINED, "b")[0].member
    addr = b.local.addr

    # A new process: a new object on the same gossip address, faster than detection.
    await b.stop()
    again = node("b", [a.local.addr], bind=addr)
    await started(again)
    await until(lambda: len(ra.of(EventKind.JOINED, "b")) == 2, "b's new run is seen")
    rejoined = ra.of(EventKind.JOINED, "b")[1].member
    assert rejoined.epoch > first.epoch
    # kinship reports the old run as left; consumers must not take a restart for a leave.
    assert not ra.of(EventKind.LEFT, "b")
    assert {(m.name, m.epoch) for m in a.members()} >= {("b", rejoined.epoch)}


async def test_starting_twice_is_refused(started: Callable[..., Awaitable[Recorder]]) -> None:
    a = node("a")
    await started(a)
    with pytest.raises(MembershipError, match="starts once"):
        await a.start()


async def test_plaintext_gossip_is_logged_loudly(caplog: pytest.LogCaptureFixture) -> None:
    m = node("solo", key=None)
    with caplog.at_level(logging.WARNING, logger="pyproglog.discovery"):
        await m.start()
    try:
        assert "gossip is NOT encrypted" in caplog.text
        assert "--cluster-key-file" in caplog.text
    finally:
        await m.stop()


async def test_bad_settings_are_membership_errors() -> None:
    with pytest.raises(MembershipError, match="--bind-addr"):
        await node("a", bind="nohostport").start()
    with pytest.raises(MembershipError, match="tags"):
        await GossipMembership("a", "127.0.0.1:0", {"x": "y" * 600}, [], key=KEY).start()
    with pytest.raises(MembershipError, match="--advertise-addr"):
        await GossipMembership("a", "127.0.0.1:0", {}, [], advertise_host="10.0.0.1").start()

"""StaticMembership: a fixed peer list, everyone alive, and the Member values themselves."""

from __future__ import annotations

import asyncio
from types import MappingProxyType

import pytest

from pyproglog.discovery import (
    EventKind,
    Member,
    MemberEvent,
    Membership,
    MembershipError,
    MemberStatus,
    StaticMembership,
)


def member(name: str, **tags: str) -> Member:
    return Member(name, f"{name}:8401", MappingProxyType(tags), MemberStatus.DEAD, 0)


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_everyone_is_alive_and_subscribers_get_the_peers() -> None:
    static = StaticMembership(member("a"), [member("b"), member("c")])
    _: Membership = static  # it is a Membership
    before: list[MemberEvent] = []
    static.subscribe(before.append)
    await static.start()
    after: list[MemberEvent] = []
    static.subscribe(after.append)
    await settle()

    assert [m.name for m in static.members()] == ["a", "b", "c"]
    assert all(m.status is MemberStatus.ALIVE for m in static.members())
    for events in (before, after):
        assert [(e.kind, e.member.name) for e in events] == [
            (EventKind.JOINED, "b"),
            (EventKind.JOINED, "c"),
        ]


async def test_leave_is_local_and_ends_events() -> None:
    static = StaticMembership(member("a"), [member("b")])
    await static.start()
    await static.leave()
    events: list[MemberEvent] = []
    static.subscribe(events.append)
    await settle()
    assert events == []
    assert static.members()[0].status is MemberStatus.LEFT
    assert static.members()[1].status is MemberStatus.ALIVE


async def test_refusals() -> None:
    with pytest.raises(MembershipError, match="unique"):
        StaticMembership(member("a"), [member("a")])
    static = StaticMembership(member("a"), [])
    await static.start()
    with pytest.raises(MembershipError, match="already started"):
        await static.start()


@pytest.mark.parametrize(
    ("tags", "node_id", "rpc_addr"),
    [
        ({"id": "7", "rpc_addr": "10.0.0.1:8400"}, 7, "10.0.0.1:8400"),
        ({"id": "0", "rpc_addr": "10.0.0.1"}, None, None),
        ({"id": "-3", "rpc_addr": "host:0"}, None, None),
        ({"id": "x", "rpc_addr": "a b:80"}, None, None),
        ({"id": "٣", "rpc_addr": "[::1]:8400"}, None, "[::1]:8400"),  # only ASCII digits
        ({}, None, None),
    ],
)
def test_tags_are_validated(
    tags: dict[str, str], node_id: int | None, rpc_addr: str | None
) -> None:
    m = member("a", **tags)
    assert m.node_id == node_id
    assert m.rpc_addr == rpc_addr

"""Membership by gossip: SWIM + Lifeguard from `kinship`, kept behind `Membership`.

kinship runs the protocol on its own Rust thread, so a stalled event loop or a
long GIL hold does not make this node look dead. What it does not do for us,
and this module does (docs: /work/shared/spec/cluster.md, "kinship"):
- a startup join that reaches no seed only logs a warning in kinship; here it
  fails `start()` with a MembershipError saying what to check;
- members learned during kinship's start produce no events; here every
  subscriber gets a JOINED for them (subscribe first, then read the view once);
- a restart faster than failure detection arrives as LEFT (old epoch) then
  JOINED (new epoch); here the stale LEFT is dropped, so a consumer never takes
  a restart for a leave;
- a kinship `Cluster` is started at most once (a second start leaks a node):
  one GossipMembership is one run; build a new one to start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Mapping, Sequence

import kinship

from pyproglog.discovery.membership import (
    EventKind,
    Member,
    MemberEvent,
    MembershipError,
    MemberStatus,
)

__all__ = ["CLUSTER_LABEL", "GossipMembership"]

_log = logging.getLogger(__name__)
_Callback = Callable[[MemberEvent], None]

#: kinship's cluster label: gossip from other kinship applications on the same
#: network is ignored (and, with a key, could not be read anyway).
CLUSTER_LABEL = "proglog"
#: How long `leave()` waits for the news to spread (kinship sees it in ms).
LEAVE_TIMEOUT = 5.0
# Seconds a failed join's diagnosis may spend dialling each seed over TCP.
_PROBE_TIMEOUT = 1.0

# kinship's config fields as the user set them.
_FLAGS = {
    "name": "--node-name",
    "bind": "--bind-addr",
    "advertise": "--advertise-addr",
    "seeds": "--start-join-addrs",
    "keys": "--cluster-key-file",
}

_STATUS = {
    kinship.State.ALIVE: MemberStatus.ALIVE,
    kinship.State.SUSPECT: MemberStatus.SUSPECT,
    kinship.State.DEAD: MemberStatus.DEAD,
    kinship.State.LEFT: MemberStatus.LEFT,
}


def _member(m: kinship.Member) -> Member:
    return Member(name=m.name, addr=m.addr, tags=m.meta, status=_STATUS[m.state], epoch=m.epoch)


def _split(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise MembershipError(f"--bind-addr must be HOST:PORT, got {addr!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _ip_of(host: str, flag: str) -> str:
    """kinship binds and advertises IP addresses only; a DNS name is looked up once here."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise MembershipError(f"{flag}: cannot resolve {host!r}: {exc}") from None
    if not infos:
        raise MembershipError(f"{flag}: {host!r} resolves to no address")
    return str(infos[0][4][0])


class GossipMembership:
    """This node in a gossip cluster.

    `tags` travel with the node (at most 512 bytes encoded): the cluster puts its
    Raft id and RPC address there. `join_addrs` are gossip addresses of existing
    members; with none (or only this node's own), the node founds a cluster.
    `key` is the 32-byte cluster key; without one gossip is plaintext, which is
    logged as a warning. With `must_join` (a new node) a join that reaches no
    seed fails `start`; without it (a member restarting) it is a warning.
    `fast` picks kinship's `local` timing (failure seen in about a second, for
    loopback tests); otherwise `lan` (5-6.5 s).
    """

    def __init__(
        self,
        name: str,
        bind_addr: str,
        tags: Mapping[str, str],
        join_addrs: Sequence[str],
        *,
        advertise_host: str | None = None,
        key: bytes | None = None,
        fast: bool = False,
        must_join: bool = True,
    ) -> None:
        if isinstance(join_addrs, str):
            raise TypeError("join_addrs is a sequence of 'host:port' strings, not one string")
        self._name = name
        self._bind_addr = bind_addr
        self._tags = dict(tags)
        self._join_addrs = list(join_addrs)
        self._advertise_host = advertise_host
        self._key = key
        self._fast = fast
        self._must_join = must_join
        self._cluster: kinship.Cluster | None = None
        self._pump: asyncio.Task[None] | None = None
        self._callbacks: list[_Callback] = []
        # Last run (by epoch) seen of each peer, to tell a restart's stale LEFT.
        self._epochs: dict[str, int] = {}
        self._state = "new"

    # -- the Membership protocol ------------------------------------------------

    async def start(self) -> None:
        if self._state != "new":
            raise MembershipError("a GossipMembership starts once; build a new one to rejoin")
        self._state = "starting"
        kinship.log_to_python()
        config, seeds = await self._config()
        cluster = kinship.Cluster(config)
        try:
            await cluster.start()
        except kinship.JoinError as exc:
            # Raised at start only when no seed name resolves.
            raise MembershipError(
                f"cannot join {', '.join(seeds)} (--start-join-addrs): {exc}"
            ) from None
        except OSError as exc:
            raise MembershipError(
                f"cannot listen for gossip on {self._bind_addr} (--bind-addr): "
                f"{exc.strerror or exc}"
            ) from None
        self._cluster = cluster
        try:
            # Subscribe before reading the view: whatever changes in between is
            # both in the view and an event (handlers are idempotent).
            stream = cluster.events()
            if seeds and len(cluster.members()) < 2:
                # kinship's own startup join only warned; one more try, which raises.
                try:
                    await cluster.join()
                except kinship.JoinError:
                    reason = await self._join_failure(seeds)
                    if self._must_join:
                        raise MembershipError(reason) from None
                    # A member restarting while its peers are down: it goes on
                    # alone, kinship keeps trying the seeds, and they find it.
                    _log.warning("%s; starting alone until a peer answers", reason)
            view = self._peers()
        except BaseException:
            self._cluster = None
            self._state = "stopped"
            await cluster.close()
            raise
        for m in view:
            self._epochs[m.name] = m.epoch
        self._pump = asyncio.create_task(self._run(stream), name=f"gossip-events-{self._name}")
        self._state = "running"
        loop = asyncio.get_running_loop()
        for callback in self._callbacks:
            loop.call_soon(self._replay, callback, view)
        _log.info(
            "gossip started as %s on %s, %d other member(s)",
            self._name,
            cluster.local.addr,
            len(view),
        )

    def members(self) -> list[Member]:
        cluster = self._cluster
        if cluster is None:
            return []
        try:
            return [_member(m) for m in cluster.members()]
        except kinship.KinshipClosed:
            return []

    def subscribe(self, callback: _Callback) -> None:
        self._callbacks.append(callback)
        if self._state == "running":
            asyncio.get_running_loop().call_soon(self._replay, callback, self._peers())

    async def update_tags(self, **changes: str | None) -> None:
        cluster = self._cluster
        if cluster is None:
            raise MembershipError("the gossip membership is not running")
        try:
            await cluster.update_meta(**changes)
        except kinship.MetaTooLarge:
            raise MembershipError("gossip tags too large (512 bytes at most)") from None
        self._tags = {k: v for k, v in {**self._tags, **changes}.items() if v is not None}

    async def leave(self) -> None:
        cluster = self._cluster
        if cluster is not None and self._state == "running":
            with contextlib.suppress(kinship.KinshipClosed):
                await cluster.leave(LEAVE_TIMEOUT)
        await self.stop()

    async def stop(self) -> None:
        self._state = "stopped"
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            await cluster.close()

    # -- more for callers that hold the concrete type -----------------------------

    @property
    def local(self) -> Member:
        """This node as the cluster sees it; `local.addr` has the port bound (bind port 0)."""
        if self._cluster is None:
            raise MembershipError("the gossip membership is not running")
        return _member(self._cluster.local)

    # -- internals ----------------------------------------------------------------

    async def _config(self) -> tuple[kinship.Config, list[str]]:
        host, port = _split(self._bind_addr)
        bind = _join(await _ip_of(host, "--bind-addr"), port)
        fields: dict[str, object] = {
            "name": self._name,
            "bind": bind,
            "cluster": CLUSTER_LABEL,
            "meta": self._tags,
        }
        own = {self._bind_addr, bind}
        if self._advertise_host is not None:
            if port == 0:
                raise MembershipError(
                    "--advertise-addr needs a fixed gossip port in --bind-addr, not 0"
                )
            advertise = _join(await _ip_of(self._advertise_host, "--advertise-addr"), port)
            fields["advertise"] = advertise
            own |= {advertise, _join(self._advertise_host, port)}
        # A uniform seed list may name this node too: it is not a seed for itself.
        seeds = [s for s in self._join_addrs if s not in own]
        fields["seeds"] = seeds
        if self._key is not None:
            fields["keys"] = [self._key]
        else:
            fields["insecure_plaintext"] = True
        try:
            preset = kinship.Config.local if self._fast else kinship.Config.lan
            config = preset(**fields)
        except (kinship.MetaTooLarge, kinship.ConfigError) as exc:
            if isinstance(exc, kinship.MetaTooLarge) or getattr(exc, "field", None) == "meta":
                raise MembershipError(f"gossip tags too large: {exc}") from None
            flag = _FLAGS.get(getattr(exc, "field", None) or "", "gossip settings")
            raise MembershipError(f"{flag}: {exc}") from None
        if self._key is None:
            _log.warning(
                "gossip is NOT encrypted: anything that can reach %s can read membership, "
                "join the cluster and forge members. Give every node the same "
                "--cluster-key-file (make one with `proglog certs cluster-key`)",
                bind,
            )
        return config, seeds

    async def _join_failure(self, seeds: list[str]) -> str:
        """Why no seed answered, as far as a TCP dial can tell."""
        reachable = [seed for seed in seeds if await _accepts_tcp(seed)]
        listed = ", ".join(seeds)
        if reachable:
            return (
                f"could not join the cluster: {', '.join(reachable)} accepted a connection but "
                "the gossip handshake failed. Every node needs the same --cluster-key-file "
                "(or none at all), and --start-join-addrs must name other nodes' --bind-addr"
            )
        return (
            f"could not join the cluster: no seed answered ({listed}, from "
            "--start-join-addrs). Is a node running there, and is its --bind-addr port "
            "reachable from here?"
        )

    def _peers(self) -> list[Member]:
        assert self._cluster is not None
        local = self._cluster.local.name
        return [_member(m) for m in self._cluster.members() if m.name != local]

    def _replay(self, callback: _Callback, view: list[Member]) -> None:
        if self._state != "running":
            return
        for m in view:
            self._call(callback, MemberEvent(EventKind.JOINED, m))

    def _emit(self, kind: EventKind, member: Member) -> None:
        event = MemberEvent(kind, member)
        for callback in list(self._callbacks):
            self._call(callback, event)

    @staticmethod
    def _call(callback: _Callback, event: MemberEvent) -> None:
        try:
            callback(event)
        except Exception:
            # One broken consumer must not stop the others, nor the event pump.
            _log.exception("membership event handler failed on %s", event)

    async def _run(self, stream: kinship.EventStream) -> None:
        try:
            async for event in stream:
                self._handle(event)
        except kinship.KinshipClosed:
            if self._state == "running":
                _log.error("gossip stopped on an internal error; membership is frozen")

    def _handle(self, event: kinship.Event) -> None:
        match event:
            case kinship.MemberJoined(member=m):
                self._epochs[m.name] = max(m.epoch, self._epochs.get(m.name, 0))
                self._emit(EventKind.JOINED, _member(m))
            case kinship.MemberLeft(member=m) | kinship.MemberDead(member=m):
                if self._superseded(m):
                    _log.debug("%s restarted (epoch %d): not a departure", m.name, m.epoch)
                    return
                kind = EventKind.LEFT if isinstance(event, kinship.MemberLeft) else EventKind.FAILED
                self._emit(kind, _member(m))
            case kinship.MemberUpdated(member=m):
                self._emit(EventKind.UPDATED, _member(m))
            case kinship.MemberRecovered(member=m):
                self._emit(EventKind.RECOVERED, _member(m))
            case kinship.MemberSuspect(member=m):
                # Not an event of ours: members() shows SUSPECT; FAILED or RECOVERED follows.
                _log.info("member %s (%s) is not answering probes", m.name, m.addr)
            case kinship.NameConflict(member=m, other_addr=other):
                _log.error(
                    "two nodes claim the name %s (%s and %s); the one at %s is ignored. "
                    "Give every node its own --node-name",
                    m.name,
                    m.addr,
                    other,
                    other,
                )
            case kinship.EventsLost(count=n):
                _log.warning("%d membership events were dropped; resyncing from the view", n)
                self._resync()
            case _:
                pass  # user messages: not used

    def _superseded(self, m: kinship.Member) -> bool:
        """A departure of a run older than one already seen or now alive: a restart."""
        if self._epochs.get(m.name, 0) > m.epoch:
            return True
        cluster = self._cluster
        current = cluster.member(m.name) if cluster is not None else None
        return (
            current is not None
            and current.state in (kinship.State.ALIVE, kinship.State.SUSPECT)
            and current.epoch > m.epoch
        )

    def _resync(self) -> None:
        cluster = self._cluster
        if cluster is None:
            return
        view = self._peers()
        alive = {m.name for m in view}
        for m in view:
            self._epochs[m.name] = max(m.epoch, self._epochs.get(m.name, 0))
            self._emit(EventKind.JOINED, m)
        for name in [n for n in self._epochs if n not in alive]:
            gone = cluster.member(name)
            if gone is None:
                continue
            kind = EventKind.LEFT if gone.state is kinship.State.LEFT else EventKind.FAILED
            self._emit(kind, _member(gone))


async def _accepts_tcp(addr: str) -> bool:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return False
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.removeprefix("[").removesuffix("]"), int(port)),
            _PROBE_TIMEOUT,
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True

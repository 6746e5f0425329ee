"""The peer transport over real grpc.aio servers on loopback: ordered delivery,
reconnects, drops, forwarded calls and their errors, TLS and the `replicate` ACL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from pyproglog.api.raft.v1 import raft_pb2, raft_pb2_grpc
from pyproglog.api.v1 import log_pb2
from pyproglog.auth.acl import EXAMPLE_MODEL, Authorizer
from pyproglog.auth.certs import CertPaths, init_dir, make_ca, make_server_cert
from pyproglog.auth.errors import PermissionDenied
from pyproglog.auth.tls import ServerTLS, TLSFiles
from pyproglog.cluster.codec import message_to_proto
from pyproglog.cluster.payload import DataBatch, StoredBatch
from pyproglog.cluster.transport import (
    PeerTransport,
    add_peer_service,
    peer_channel_options,
)
from pyproglog.log import DiskFull, LogWriteError, Write
from pyproglog.raft import ConfState, Entry, EntryKind, Message, MsgType
from pyproglog.server.commitlog import WriteOutcome, Written
from pyproglog.server.errors import (
    InvalidArgument,
    NoQuorum,
    NotLeader,
    ShuttingDown,
    error_status,
    record_too_large,
)
from pyproglog.server.grpc.authz import AuthInterceptor
from pyproglog.testing import free_port

ME, PEER, OTHER = 1, 2, 3
# A generous bound on "eventually", so that a hang fails instead of blocking the run.
PATIENCE = 30


# -- a small runtime on the receiving side -------------------------------------------------


class Recorder:
    """A PeerHandler that keeps what it got; forward/remove answer or raise as told."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.addresses: list[dict[int, tuple[str, str]]] = []
        self.writes: list[list[Write]] = []
        self.removed: list[str] = []
        self.error: BaseException | None = None
        self.next_offset = 0
        self._arrived = asyncio.Event()

    def deliver(self, message: Message, addresses: dict[int, tuple[str, str]]) -> None:
        self.messages.append(message)
        self.addresses.append(addresses)
        self._arrived.set()

    async def forward(self, writes: Sequence[Write]) -> list[WriteOutcome]:
        if self.error is not None:
            raise self.error
        self.writes.append(list(writes))
        out: list[WriteOutcome] = []
        for w in writes:
            out.append(Written(self.next_offset))
            self.next_offset += len(w.records)
        return out

    async def remove_server(self, name: str) -> None:
        if self.error is not None:
            raise self.error
        self.removed.append(name)

    async def wait_for(self, n: int) -> list[Message]:
        async with asyncio.timeout(PATIENCE):
            while len(self.messages) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages


@asynccontextmanager
async def peer_server(
    handler: Recorder,
    port: int = 0,
    *,
    tls: ServerTLS | None = None,
    authorizer: Authorizer | None = None,
) -> AsyncIterator[str]:
    """A gRPC server with the peer service, built as the agent builds its own."""
    interceptors = [AuthInterceptor(authorizer)] if authorizer is not None else []
    server = grpc.aio.server(interceptors=interceptors, options=peer_channel_options())
    add_peer_service(server, handler)
    addr = f"127.0.0.1:{port}"
    if tls is not None:
        bound = server.add_secure_port(addr, tls.grpc_credentials())
    else:
        bound = server.add_insecure_port(addr)
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop(None)


def no_resolve(batch: StoredBatch) -> bytes:
    raise AssertionError(f"nothing stored here: {batch}")


@asynccontextmanager
async def transport(**kwargs: object) -> AsyncIterator[PeerTransport]:
    kwargs.setdefault("resolve", no_resolve)
    t = PeerTransport(ME, **kwargs)  # type: ignore[arg-type]
    try:
        yield t
    finally:
        await t.close()


def heartbeat(commit: int, to: int = PEER) -> Message:
    return Message(MsgType.HEARTBEAT, to=to, frm=ME, term=1, commit=commit)


def records(*values: bytes) -> list[log_pb2.Record]:
    return [log_pb2.Record(value=v) for v in values]


async def unreachable_soon(t: PeerTransport, node: int) -> set[int]:
    """Everything take_unreachable reports until it names `node`."""
    seen: set[int] = set()
    async with asyncio.timeout(PATIENCE):
        while node not in seen:
            seen |= t.take_unreachable()
            await asyncio.sleep(0.01)
    return seen


async def delivered_after_retries(t: PeerTransport, handler: Recorder, base: int) -> None:
    """Keep sending heartbeats (commit = base, base+1, ...) until one arrives:
    messages sent while the stream is down are dropped, as they should be."""
    commit = base
    async with asyncio.timeout(PATIENCE):
        while not any(m.commit >= base for m in handler.messages):
            t.send([heartbeat(commit)])
            commit += 1
            await asyncio.sleep(0.02)


# -- streams --------------------------------------------------------------------------------


async def test_messages_arrive_in_order_with_their_payloads() -> None:
    handler = Recorder()
    recs = records(b"one", b"two")
    stored = records(b"stored")
    data = Entry(7, 1, EntryKind.DATA, 6, DataBatch(records=recs))
    from_log = Entry(8, 1, EntryKind.DATA, 6, StoredBatch(first_offset=2, count=1))
    asked: list[StoredBatch] = []

    def resolve(batch: StoredBatch) -> bytes:
        asked.append(batch)
        return DataBatch(records=stored).encoded

    async with peer_server(handler) as addr, transport(resolve=resolve) as t:
        t.set_address(PEER, addr)
        batch = [heartbeat(i) for i in range(200)]
        batch.append(Message(MsgType.APPEND, PEER, ME, 1, entries=(data, from_log)))
        t.send(batch)
        # Resolved in send, before the log could drop or overwrite the bytes.
        assert asked == [StoredBatch(2, 1)]
        got = await handler.wait_for(201)
    assert [m.commit for m in got[:200]] == list(range(200))
    payloads = [e.payload for e in got[200].entries]
    assert all(isinstance(p, DataBatch) for p in payloads)
    assert [list(p.records) for p in payloads if isinstance(p, DataBatch)] == [recs, stored]
    assert t.take_unreachable() == set()


async def test_streams_to_several_peers_are_independent() -> None:
    a, b = Recorder(), Recorder()
    async with peer_server(a) as addr_a, peer_server(b) as addr_b, transport() as t:
        t.set_address(PEER, addr_a)
        t.set_address(OTHER, addr_b)
        t.send([heartbeat(i, to=PEER if i % 2 else OTHER) for i in range(20)])
        got_a, got_b = await a.wait_for(10), await b.wait_for(10)
    assert [m.commit for m in got_a] == list(range(1, 20, 2))
    assert [m.commit for m in got_b] == list(range(0, 20, 2))
    assert {m.to for m in got_a} == {PEER} and {m.to for m in got_b} == {OTHER}


async def test_addresses_travel_with_a_membership_only() -> None:
    handler = Recorder()
    book = {ME: ("n1", "127.0.0.1:1"), PEER: ("n2", "127.0.0.1:2")}
    config = Entry(3, 1, EntryKind.CONFIG, 0, ConfState(frozenset({ME, PEER})))
    async with peer_server(handler) as addr, transport(address_book=lambda: book) as t:
        t.set_address(PEER, addr)
        t.send([heartbeat(1), Message(MsgType.APPEND, PEER, ME, 1, entries=(config,))])
        await handler.wait_for(2)
    assert handler.addresses == [{}, book]


async def test_a_restarted_peer_is_reached_again() -> None:
    handler = Recorder()
    port = free_port()
    async with transport() as t:
        async with peer_server(handler, port) as addr:
            t.set_address(PEER, addr)
            t.send([heartbeat(0)])
            await handler.wait_for(1)
        # Down: the broken stream is noticed and the peer reported.
        assert PEER in await unreachable_soon(t, PEER)
        restarted = Recorder()
        async with peer_server(restarted, port):
            await delivered_after_retries(t, restarted, 100)
            n = len(restarted.messages)
            t.send([heartbeat(c) for c in range(1000, 1010)])
            got = await restarted.wait_for(n + 10)
    assert [m.commit for m in got[n:]] == list(range(1000, 1010))


async def test_a_new_address_moves_the_stream() -> None:
    old, new = Recorder(), Recorder()
    async with peer_server(old) as addr_old, peer_server(new) as addr_new, transport() as t:
        t.set_address(PEER, addr_old)
        t.send([heartbeat(1)])
        await old.wait_for(1)
        t.set_address(PEER, addr_new)
        t.send([heartbeat(2)])
        await new.wait_for(1)
    assert [m.commit for m in new.messages] == [2]
    assert [m.commit for m in old.messages] == [1]


async def test_a_forgotten_peer_gets_nothing_more() -> None:
    handler = Recorder()
    async with peer_server(handler) as addr, transport() as t:
        t.set_address(PEER, addr)
        t.send([heartbeat(1)])
        await handler.wait_for(1)
        await t.forget(PEER)
        assert t.address(PEER) is None
        t.send([heartbeat(2)])
        assert t.take_unreachable() == {PEER}
    assert [m.commit for m in handler.messages] == [1]


async def test_a_peer_without_an_address_is_unreachable() -> None:
    async with transport() as t:
        t.send([heartbeat(1, to=9)])
        assert t.take_unreachable() == {9}
        assert t.take_unreachable() == set()


async def test_a_peer_that_is_down_is_unreachable() -> None:
    async with transport() as t:
        t.set_address(PEER, f"127.0.0.1:{free_port()}")
        t.send([heartbeat(1)])
        assert PEER in await unreachable_soon(t, PEER)


async def test_a_full_queue_drops_and_reports_the_peer() -> None:
    handler = Recorder()
    one = len(message_to_proto(heartbeat(10), no_resolve, None).SerializeToString())
    async with peer_server(handler) as addr, transport(max_queue_bytes=5 * one) as t:
        t.set_address(PEER, addr)
        # send() runs to its end before the sender can take anything off the queue.
        t.send([heartbeat(c) for c in range(10, 30)])
        assert t.take_unreachable() == {PEER}
        got = await handler.wait_for(5)
        # The queue's worth arrived, in order; the rest was dropped, not delayed.
        t.send([heartbeat(99)])
        got = await handler.wait_for(6)
    assert [m.commit for m in got] == [10, 11, 12, 13, 14, 99]


async def test_a_damaged_message_is_dropped_and_the_stream_goes_on() -> None:
    handler = Recorder()
    entry = Entry(1, 1, EntryKind.DATA, 1, DataBatch(records=records(b"x")))
    damaged = message_to_proto(
        Message(MsgType.APPEND, PEER, ME, 1, entries=(entry,)), no_resolve, None
    )
    damaged.entries[0].crc32c ^= 1
    good = message_to_proto(heartbeat(5), no_resolve, None)
    async with peer_server(handler) as addr, grpc.aio.insecure_channel(addr) as channel:
        summary = await raft_pb2_grpc.RaftStub(channel).Send(iter([damaged, good]))
    assert summary.received == 2
    assert [m.commit for m in handler.messages] == [5]


# -- forward and remove ---------------------------------------------------------------------


async def test_forward_round_trip() -> None:
    handler = Recorder()
    handler.next_offset = 40
    group = [Write(records(b"a", b"b")), Write(records(b"c"), producer_id=7, sequence=0)]
    async with peer_server(handler) as addr, transport() as t:
        t.set_address(PEER, addr)
        assert await t.forward(PEER, group, timeout=PATIENCE) == [Written(40), Written(42)]
        assert await t.forward(PEER, [Write(records(b"d"))], timeout=PATIENCE) == [Written(43)]
    got = handler.writes[0]
    assert [[r.value for r in w.records] for w in got] == [[b"a", b"b"], [b"c"]]
    assert [(w.producer_id, w.sequence) for w in got] == [(0, 0), (7, 0)]


async def test_remove_server_round_trip() -> None:
    handler = Recorder()
    async with peer_server(handler) as addr, transport() as t:
        t.set_address(PEER, addr)
        await t.remove_server(PEER, "n3", timeout=PATIENCE)
    assert handler.removed == ["n3"]


async def test_a_leader_without_an_address_is_not_leader() -> None:
    async with transport() as t:
        with pytest.raises(NotLeader) as caught:
            await t.forward(PEER, [Write(records(b"x"))], timeout=1)
    assert caught.value.leader_addr is None


async def test_not_leader_arrives_with_its_code_reason_and_leader() -> None:
    handler = Recorder()
    handler.error = NotLeader("127.0.0.1:1")
    request = raft_pb2.ForwardRequest()
    async with peer_server(handler) as addr, grpc.aio.insecure_channel(addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raft_pb2_grpc.RaftStub(channel).Forward(request)
    exc = caught.value
    assert exc.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(exc)
    assert info.reason == "NOT_LEADER"
    assert dict(info.metadata) == {"leader_addr": "127.0.0.1:1"}


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info
    raise AssertionError("no ErrorInfo")


LEADER_ERRORS: list[BaseException] = [
    NotLeader("127.0.0.1:1"),
    NotLeader(None),
    record_too_large(2000, 1000, index=3),
    record_too_large(2000, 1000),
    InvalidArgument("a batch needs records"),
    DiskFull("append: no space left on device"),
    LogWriteError("append: I/O error"),
    ShuttingDown(),
    NoQuorum("not committed"),
    PermissionDenied("proglog server", "replicate", "*"),
]


@pytest.mark.parametrize("error", LEADER_ERRORS, ids=lambda e: f"{type(e).__name__}: {e}")
async def test_the_leaders_error_is_raised_again_on_the_follower(error: BaseException) -> None:
    handler = Recorder()
    handler.error = error
    async with peer_server(handler) as addr, transport() as t:
        t.set_address(PEER, addr)
        with pytest.raises(Exception) as forwarded:
            await t.forward(PEER, [Write(records(b"x"))], timeout=PATIENCE)
        with pytest.raises(Exception) as removed:
            await t.remove_server(PEER, "n3", timeout=PATIENCE)
    # The follower answers its client (gRPC or HTTP) just as the leader would have.
    assert type(forwarded.value) is type(error)
    assert error_status(forwarded.value) == error_status(error)
    assert error_status(removed.value) == error_status(error)


async def test_a_bug_on_the_leader_stays_a_grpc_error() -> None:
    handler = Recorder()
    handler.error = RuntimeError("boom")
    async with peer_server(handler) as addr, transport() as t:
        t.set_address(PEER, addr)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await t.forward(PEER, [Write(records(b"x"))], timeout=PATIENCE)
    assert caught.value.code() == grpc.StatusCode.INTERNAL


async def test_a_damaged_forward_is_refused() -> None:
    handler = Recorder()
    request = raft_pb2.ForwardRequest(records=DataBatch(records=records(b"x")).encoded, count=1)
    async with peer_server(handler) as addr, grpc.aio.insecure_channel(addr) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raft_pb2_grpc.RaftStub(channel).Forward(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert handler.writes == []


# -- TLS and the ACL ------------------------------------------------------------------------


@dataclass(frozen=True)
class Peers:
    """The certificates of a secure cluster, made by `proglog certs`' own code."""

    dir: CertPaths
    other_ca_node: tuple[Path, Path]  # a node certificate from another CA
    authorizer: Authorizer
    tls: ServerTLS

    def credentials(
        self, cert: Path | None = None, key: Path | None = None
    ) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.dir.ca.read_bytes(),
            private_key=key.read_bytes() if key else None,
            certificate_chain=cert.read_bytes() if cert else None,
        )

    @property
    def node(self) -> grpc.ChannelCredentials:
        # A node presents its serving certificate (it is also a client certificate).
        return self.credentials(self.dir.server, self.dir.server_key)


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Peers:
    out = tmp_path_factory.mktemp("peer-pki")
    paths = CertPaths(out)
    init_dir(out)
    other = make_ca("another CA")
    make_server_cert(other).write(out / "other.pem", out / "other-key.pem")
    paths.model.write_text(EXAMPLE_MODEL)
    # Nodes (the server certificate's subject) replicate; root only produces and consumes.
    paths.policy.write_text(
        "p, proglog server, *, replicate\np, root, *, produce\np, root, *, consume\n"
    )
    return Peers(
        dir=paths,
        other_ca_node=(out / "other.pem", out / "other-key.pem"),
        authorizer=Authorizer(paths.model, paths.policy),
        tls=ServerTLS(TLSFiles(paths.server, paths.server_key, paths.ca)),
    )


@asynccontextmanager
async def secure_server(peers: Peers, handler: Recorder) -> AsyncIterator[str]:
    async with peer_server(handler, tls=peers.tls, authorizer=peers.authorizer) as addr:
        yield addr


async def test_nodes_replicate_over_mutual_tls(peers: Peers) -> None:
    handler = Recorder()
    async with secure_server(peers, handler) as addr, transport(credentials=peers.node) as t:
        t.set_address(PEER, addr)
        t.send([heartbeat(c) for c in range(3)])
        assert await t.forward(PEER, [Write(records(b"x"))], timeout=PATIENCE) == [Written(0)]
        got = await handler.wait_for(3)
    assert [m.commit for m in got] == [0, 1, 2]


def refusals() -> Iterable[tuple[str, Callable[[Peers], grpc.ChannelCredentials]]]:
    yield "no client certificate", lambda p: p.credentials()
    yield "another CA", lambda p: p.credentials(*p.other_ca_node)


@pytest.mark.parametrize(("who", "creds"), list(refusals()), ids=[w for w, _ in refusals()])
async def test_peers_without_our_certificate_are_refused(
    peers: Peers, who: str, creds: Callable[[Peers], grpc.ChannelCredentials]
) -> None:
    handler = Recorder()
    async with secure_server(peers, handler) as addr, transport(credentials=creds(peers)) as t:
        t.set_address(PEER, addr)
        t.send([heartbeat(1)])
        assert PEER in await unreachable_soon(t, PEER)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await t.forward(PEER, [Write(records(b"x"))], timeout=PATIENCE)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert handler.messages == [] and handler.writes == []


async def test_a_subject_without_replicate_is_denied(peers: Peers) -> None:
    handler = Recorder()
    root = peers.credentials(peers.dir.client("root"), peers.dir.client_key("root"))
    async with secure_server(peers, handler) as addr:
        async with grpc.aio.secure_channel(addr, root) as channel:
            stub = raft_pb2_grpc.RaftStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as sent:
                await stub.Send(iter([message_to_proto(heartbeat(1), no_resolve, None)]))
        async with transport(credentials=root) as t:
            t.set_address(PEER, addr)
            with pytest.raises(PermissionDenied) as forwarded:
                await t.forward(PEER, [Write(records(b"x"))], timeout=PATIENCE)
            t.send([heartbeat(2)])
            assert PEER in await unreachable_soon(t, PEER)
    assert sent.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(sent.value).metadata["action"] == "replicate"
    assert (forwarded.value.subject, forwarded.value.action) == ("root", "replicate")
    assert handler.messages == [] and handler.writes == []

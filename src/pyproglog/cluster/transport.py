"""The peer transport: Raft messages, forwarded writes and removals between nodes.

Served on the node's one gRPC port as `proglog.raft.v1.Raft` (add it with
`add_peer_service`). A sender keeps one long-lived client stream (`Send`) per
peer and writes that peer's messages to it in order; the receiver hands each
message to the runtime as it arrives.

Nothing here is durable, nor needs to be: Raft tolerates lost messages. A
message the transport cannot deliver (no address, a full queue, a broken
stream) is dropped and its peer reported unreachable; the core then probes the
peer again and resends what it still needs. The durability of what messages
stand for is the runtime's: it persists a Ready before it calls `send`.

Errors of a forwarded call: the leader answers with the status its error maps
to (`server.errors.error_status`, an ErrorInfo with reason and metadata); the
follower re-raises the same error (`relayed_error`), so the client gets the
same code, reason, metadata and message on gRPC and HTTP as from the leader
itself. A status without our ErrorInfo (the leader unreachable, a deadline)
is raised as the `grpc.aio.AioRpcError` itself, for the caller to map.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

import grpc
from google.rpc import error_details_pb2, status_pb2

from pyproglog.api.raft.v1 import raft_pb2, raft_pb2_grpc
from pyproglog.auth.errors import PermissionDenied, Unauthenticated
from pyproglog.cluster.codec import (
    CodecError,
    Resolve,
    carries_membership,
    forward_request,
    message_from_proto,
    message_to_proto,
    outcomes_from_proto,
    outcomes_to_proto,
    writes_from_forward,
)
from pyproglog.cluster.payload import DataBatch, now_ms
from pyproglog.limits import DEFAULT_MAX_RECORD_BYTES, max_message_bytes
from pyproglog.log import DiskFull, LogWriteError, ProducerBatch, RecordLike, Write
from pyproglog.raft import Message
from pyproglog.server.commitlog import WriteOutcome, Written
from pyproglog.server.errors import (
    DOMAIN,
    InvalidArgument,
    NoQuorum,
    NotLeader,
    Reason,
    ShuttingDown,
    record_too_large,
)
from pyproglog.server.grpc.status import abort_for

__all__ = [
    "PEER_MAX_MESSAGE_BYTES",
    "PeerHandler",
    "PeerServicer",
    "PeerTransport",
    "add_peer_service",
    "peer_channel_options",
    "peer_max_message_bytes",
    "relayed_error",
]

_log = logging.getLogger("pyproglog.cluster.transport")

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


# The largest peer message: the core's 1 MiB of entries per message plus one
# entry past it, which is a whole group commit (up to a full produce batch,
# twice over when the committer merged batches), plus framing. The gRPC server
# the peer service runs on must accept it too (max_receive_message_length).
def peer_max_message_bytes(max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> int:
    return 2 * max_message_bytes(max_record_bytes) + (1 << 20)


PEER_MAX_MESSAGE_BYTES = peer_max_message_bytes()

_SEND = f"/{raft_pb2.DESCRIPTOR.services_by_name['Raft'].full_name}/Send"

# A broken stream is retried after 50 ms, doubling up to 1 s: a restarted peer
# is back in well under an election timeout, a dead one costs a connect a second.
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 1.0
# How long calls on a channel whose peer moved may still finish.
_CLOSE_GRACE = 5.0


def peer_channel_options(max_message: int = PEER_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        # gRPC's own reconnect backoff (1 s up to 120 s by default) would
        # otherwise keep a restarted peer unreachable long after it is back.
        ("grpc.initial_reconnect_backoff_ms", int(_BACKOFF_MIN * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(_BACKOFF_MIN * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(_BACKOFF_MAX * 1000)),
    ]


# -- the receiving side ---------------------------------------------------------------


class PeerHandler(Protocol):
    """What the runtime does with what peers send (the servicer's other half)."""

    def deliver(self, message: Message, addresses: dict[int, tuple[str, str]]) -> None:
        """One message from a peer, on the event loop, in the order the peer sent them."""

    async def forward(self, writes: Sequence[Write]) -> list[WriteOutcome]:
        """Append the writes a follower forwarded as one entry (leader only); per write
        its outcome, or raise."""

    async def remove_server(self, name: str) -> None:
        """Remove a member from the configuration (leader only), or raise."""


class PeerServicer(raft_pb2_grpc.RaftServicer):
    """`proglog.raft.v1.Raft` over a PeerHandler."""

    def __init__(self, handler: PeerHandler) -> None:
        self._handler = handler

    async def Send(
        self, request_iterator: AsyncIterator[raft_pb2.RaftMessage], context: Context
    ) -> raft_pb2.SendSummary:
        received = 0
        async for pb in request_iterator:
            received += 1
            try:
                message, addresses = message_from_proto(pb)
            except CodecError as exc:
                # Dropped whole: Raft resends what the sender still needs.
                _log.warning("dropped a message from %s: %s", context.peer(), exc)
                continue
            try:
                self._handler.deliver(message, addresses)
            except Exception:
                # A bug in the runtime: one message lost, the stream goes on.
                _log.exception("delivering %s failed", message.type.value)
        return raft_pb2.SendSummary(received=received)

    async def Forward(
        self, request: raft_pb2.ForwardRequest, context: Context
    ) -> raft_pb2.ForwardResponse:
        try:
            writes = writes_from_forward(request)
            outcomes = await self._handler.forward(writes)
        except CodecError as exc:
            await abort_for(context, InvalidArgument(str(exc)))
        except Exception as exc:
            await abort_for(context, exc)
        first = next((o.offset for o in outcomes if isinstance(o, Written)), 0)
        return raft_pb2.ForwardResponse(offset=first, outcomes=outcomes_to_proto(outcomes))

    async def RemoveServer(
        self, request: raft_pb2.RemoveServerRequest, context: Context
    ) -> raft_pb2.RemoveServerResponse:
        try:
            await self._handler.remove_server(request.name)
        except Exception as exc:
            await abort_for(context, exc)
        return raft_pb2.RemoveServerResponse()


def add_peer_service(server: grpc.aio.Server, handler: PeerHandler) -> None:
    raft_pb2_grpc.add_RaftServicer_to_server(PeerServicer(handler), server)


# -- errors from the leader ------------------------------------------------------------


def _error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return info if info.domain == DOMAIN else None
    return None


def relayed_error(exc: grpc.aio.AioRpcError) -> Exception:
    """The error the leader raised, rebuilt from its status; `exc` itself when it
    carries none of ours (the leader unreachable, a deadline, a bug on the leader).

    Rebuilt so that `error_status` maps it to the leader's code, reason,
    metadata and message: the follower answers its client exactly as the
    leader would have.
    """
    as_is: Exception = exc
    info = _error_info(exc)
    if info is None:
        return as_is
    meta = info.metadata
    message = exc.details() or ""
    try:
        match info.reason:
            case Reason.NOT_LEADER:
                return NotLeader(meta.get("leader_addr") or None)
            case Reason.RECORD_TOO_LARGE:
                index = int(meta["index"]) if "index" in meta else None
                return record_too_large(int(meta["size"]), int(meta["limit"]), index)
            case Reason.INVALID_ARGUMENT:
                return InvalidArgument(message)
            case Reason.DISK_FULL:
                return DiskFull(message.removeprefix("cannot append, disk is full: "))
            case Reason.WRITE_FAILED:
                return LogWriteError(message.removeprefix("cannot append: "))
            case Reason.NO_QUORUM:
                return NoQuorum(message)
            case Reason.SHUTTING_DOWN:
                return ShuttingDown()
            case Reason.PERMISSION_DENIED:
                return PermissionDenied(meta["subject"], meta["action"], meta["object"])
            case Reason.UNAUTHENTICATED:
                return Unauthenticated(message)
    except (KeyError, ValueError):
        pass  # metadata from another release: pass the status on as it is
    return as_is


# -- the sending side -----------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    return data


class _Peer:
    """One peer: its address, its queue of encoded messages, its sender task."""

    def __init__(self, node: int) -> None:
        self.node = node
        self.addr: str | None = None
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        # False while the stream is broken and the sender waits to retry: new
        # messages are dropped then instead of piling up stale.
        self.up = True
        self.connected = False
        self.wake = asyncio.Event()
        # Set to cut a retry's backoff short (gossip saw the peer come back).
        self.retry = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.channel: grpc.aio.Channel | None = None
        self.channel_addr: str | None = None

    def clear(self) -> None:
        self.queue.clear()
        self.queued_bytes = 0


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `event` is set (and clear it). asyncio.wait, not
    wait_for: in 3.11 wait_for can swallow a cancellation that lands as it times out."""
    event.clear()
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


class _StreamEnded(Exception):
    """The receiver ended the stream (it is shutting down)."""


def _no_addresses() -> Mapping[int, tuple[str, str]]:
    return {}


class PeerTransport:
    """Sends Raft messages to peers, and forwards calls to the leader.

    `send` is called on the event loop and never blocks nor raises; a peer
    whose messages were dropped shows in `take_unreachable()`.
    """

    def __init__(
        self,
        node_id: int,
        resolve: Resolve,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        max_queue_bytes: int = 64 << 20,
        address_book: Callable[[], Mapping[int, tuple[str, str]]] = _no_addresses,
        max_message_bytes: int = PEER_MAX_MESSAGE_BYTES,
    ) -> None:
        self.node_id = node_id
        self._resolve = resolve
        self._credentials = credentials
        self._max_queue_bytes = max_queue_bytes
        self._address_book = address_book
        self._options = peer_channel_options(max_message_bytes)
        self._peers: dict[int, _Peer] = {}
        self._unreachable: set[int] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- addresses ----------------------------------------------------------------

    def set_address(self, node_id: int, rpc_addr: str) -> None:
        """Where `node_id` listens; the sender reconnects when it changed."""
        peer = self._peer(node_id)
        if peer.addr != rpc_addr:
            peer.addr = rpc_addr
            peer.wake.set()

    def queued_bytes(self) -> dict[int, int]:
        """Bytes waiting to be sent, per peer (bounded by max_queue_bytes each)."""
        return {node: peer.queued_bytes for node, peer in self._peers.items()}

    def address(self, node_id: int) -> str | None:
        peer = self._peers.get(node_id)
        return peer.addr if peer is not None else None

    # -- Raft messages --------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        """Encode and queue each message for its peer; drop (and mark the peer
        unreachable) when the peer has no address, its stream is down, or its
        queue is full. Stored batches are read here, before the log can move on."""
        for m in messages:
            if self._closed or m.to == self.node_id:
                continue
            peer = self._peer(m.to)
            if peer.addr is None or not peer.up or peer.queued_bytes >= self._max_queue_bytes:
                self._unreachable.add(m.to)
                continue
            try:
                book = self._address_book() if carries_membership(m) else None
                data = message_to_proto(m, self._resolve, book).SerializeToString()
            except Exception:
                # A stored batch no longer readable (retention), or a bug: the
                # core probes the peer again and finds another way (a snapshot).
                _log.exception("cannot encode %s to %d", m.type.value, m.to)
                self._unreachable.add(m.to)
                continue
            # One message larger than the whole budget still goes, alone.
            if peer.queue and peer.queued_bytes + len(data) > self._max_queue_bytes:
                self._unreachable.add(m.to)
                continue
            peer.queue.append(data)
            peer.queued_bytes += len(data)
            peer.wake.set()

    def retry_now(self, node_id: int) -> None:
        """Reconnect to `node_id` now if its stream is waiting to retry (it is back)."""
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.retry.set()

    def take_unreachable(self) -> set[int]:
        """Peers that missed a message since the last call."""
        taken, self._unreachable = self._unreachable, set()
        return taken

    # -- calls to the leader ----------------------------------------------------------

    async def forward(
        self, leader: int, writes: Sequence[Write], timeout: float
    ) -> list[WriteOutcome]:
        """Append `writes` on the leader as one entry; per write its outcome. Raises
        the leader's error (`relayed_error`), NotLeader when its address is unknown."""
        stub = self._stub(leader)
        records: list[RecordLike] = []
        spans: list[ProducerBatch] = []
        for w in writes:
            spans.append(ProducerBatch(w.producer_id, w.sequence, len(records), len(w.records)))
            records.extend(w.records)
        batch = DataBatch(records=records, stamp_ms=now_ms())
        try:
            response = await stub.Forward(forward_request(batch, spans), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise relayed_error(exc) from None
        return outcomes_from_proto(response.outcomes, writes)

    async def remove_server(self, leader: int, name: str, timeout: float) -> None:
        stub = self._stub(leader)
        try:
            await stub.RemoveServer(raft_pb2.RemoveServerRequest(name=name), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise relayed_error(exc) from None

    def _stub(self, node: int) -> raft_pb2_grpc.RaftStub:
        if self._closed:
            raise ShuttingDown()
        peer = self._peers.get(node)
        if peer is None or peer.addr is None:
            raise NotLeader(None)
        return raft_pb2_grpc.RaftStub(self._channel(peer, peer.addr))

    # -- lifecycle -------------------------------------------------------------------

    async def forget(self, node_id: int) -> None:
        """Stop sending to a node that left the cluster; its queue is dropped."""
        peer = self._peers.pop(node_id, None)
        if peer is None:
            return
        if peer.task is not None:
            peer.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await peer.task
        if peer.channel is not None:
            await peer.channel.close(grace=_CLOSE_GRACE)

    async def close(self) -> None:
        """Stop every sender and close the channels; queued messages are dropped."""
        self._closed = True
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for peer in self._peers.values():
            peer.clear()
            if peer.channel is not None:
                await peer.channel.close()
                peer.channel = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- internals --------------------------------------------------------------------

    def _peer(self, node: int) -> _Peer:
        peer = self._peers.get(node)
        if peer is None:
            peer = self._peers[node] = _Peer(node)
            if not self._closed:
                peer.task = asyncio.get_running_loop().create_task(
                    self._run(peer), name=f"raft-send-{node}"
                )
        return peer

    def _channel(self, peer: _Peer, addr: str) -> grpc.aio.Channel:
        if peer.channel is not None and peer.channel_addr == addr:
            return peer.channel
        old = peer.channel
        if old is not None:
            # A forward still in flight on the old address gets its grace to finish.
            closing = asyncio.get_running_loop().create_task(old.close(grace=_CLOSE_GRACE))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(addr, self._credentials, options=self._options)
        else:
            channel = grpc.aio.insecure_channel(addr, options=self._options)
        peer.channel, peer.channel_addr = channel, addr
        return channel

    async def _run(self, peer: _Peer) -> None:
        task = asyncio.current_task()
        assert task is not None
        backoff = _BACKOFF_MIN
        while True:
            if peer.addr is None:
                peer.wake.clear()
                await peer.wake.wait()
                continue
            peer.connected = False
            try:
                await self._stream(peer, peer.addr)
                backoff = _BACKOFF_MIN
                continue  # the address changed: connect to the new one
            except asyncio.CancelledError as exc:
                if task.cancelling():
                    raise
                # The call was cancelled under us (its channel closed), not this task.
                self._broken(peer, exc)
            except Exception as exc:
                self._broken(peer, exc)
            if peer.connected:
                backoff = _BACKOFF_MIN
            # What was queued or in flight is lost; Raft resends it.
            peer.clear()
            peer.up = False
            self._unreachable.add(peer.node)
            await _sleep_unless(peer.retry, backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
            peer.up = True

    def _broken(self, peer: _Peer, exc: BaseException) -> None:
        # Said once when a working stream breaks; each failed retry only at debug.
        level = logging.WARNING if peer.connected else logging.DEBUG
        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
        _log.log(level, "stream to peer %d at %s broke: %s", peer.node, peer.addr, detail)

    async def _stream(self, peer: _Peer, addr: str) -> None:
        """Writes the queue to one stream until it breaks (raises) or the address
        changes (returns)."""
        channel = self._channel(peer, addr)
        multicallable = channel.stream_unary(
            _SEND,
            request_serializer=_identity,
            response_deserializer=raft_pb2.SendSummary.FromString,
        )
        call = multicallable()
        call.add_done_callback(lambda _: peer.wake.set())
        try:
            _log.debug("connecting to peer %d at %s", peer.node, addr)
            await call.wait_for_connection()
            _log.debug("connected to peer %d at %s", peer.node, addr)
            peer.connected = True
            while True:
                while peer.queue and not call.done() and peer.addr == addr:
                    data = peer.queue.popleft()
                    peer.queued_bytes -= len(data)
                    # Waits on HTTP/2 flow control: a slow receiver fills the queue.
                    await call.write(data)
                if call.done():
                    await call  # raises the stream's error
                    raise _StreamEnded
                if peer.addr != addr:
                    await call.done_writing()
                    return
                peer.wake.clear()
                await peer.wake.wait()
        finally:
            if not call.done():
                call.cancel()

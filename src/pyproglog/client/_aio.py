"""An asyncio client (grpc.aio) for one Proglog server, or routed over a cluster.

The routing rules are `_routing`'s, as for the sync `Client`; this module is
their asyncio driver: channels, GetServers rounds, the retry loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
import grpc.aio

from pyproglog.api.raft.v1 import raft_pb2, raft_pb2_grpc
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.client._client import DEFAULT_TIMEOUT, RecordInput, Value, _to_bytes, batch_request
from pyproglog.client._errors import ClientClosed, ClientError, Unreachable, from_rpc_error
from pyproglog.client._routing import DEFAULT_REFRESH_INTERVAL, Attempts, Kind, ReadFrom, View
from pyproglog.client._setup import setup
from pyproglog.client._tls import ClientTLS
from pyproglog.client._types import (
    BatchAck,
    FetchResult,
    LogInfo,
    Record,
    Server,
    TimestampOffset,
)
from pyproglog.limits import DEFAULT_MAX_RECORD_BYTES

if TYPE_CHECKING:
    from pyproglog.api.raft.v1.raft_pb2_grpc import RaftAsyncStub
    from pyproglog.api.v1.log_pb2_grpc import LogAsyncStub

_T = TypeVar("_T")

# A producer id is a non-zero 63-bit number (0 means a plain, unsequenced write).
_MAX_PRODUCER_ID = 2**63 - 1
_MAX_SEQUENCE = 2**64 - 1


class AioConn:
    """One server's grpc.aio channel and stubs."""

    def __init__(self, addr: str, channel: grpc.aio.Channel) -> None:
        self.addr = addr
        self.channel = channel
        # grpc ships no type hints, so the stubs' aio overload is not picked by itself.
        self.stub = cast("LogAsyncStub", log_pb2_grpc.LogStub(channel))
        self._raft: RaftAsyncStub | None = None
        # Raw bytes in and out: only whether the server answers matters.
        self.health_check = channel.unary_unary("/grpc.health.v1.Health/Check")
        # Whether the server has answered on this channel (see _routing.Reach).
        self.reached = False

    @property
    def raft(self) -> RaftAsyncStub:
        if self._raft is None:
            self._raft = cast("RaftAsyncStub", raft_pb2_grpc.RaftStub(self.channel))
        return self._raft


class AsyncRouter:
    """The cluster's `View` and a grpc.aio channel per server, made on first use.

    Channels belong to the event loop they were made on, so the router is bound
    to the loop of its first call.
    """

    def __init__(self, view: View, make_channel: Callable[[str], grpc.aio.Channel]) -> None:
        self.view = view
        self._make_channel = make_channel
        self._conns: dict[str, AioConn] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # One GetServers round at a time: calls failing together (a leader gone
        # under several in-flight writes) share it.
        self._refreshing: asyncio.Task[bool] | None = None
        self.closed = False

    def conn(self, addr: str) -> AioConn:
        if self.closed:
            raise ClientClosed()
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("an AsyncClient is used from one event loop only")
        c = self._conns.get(addr)
        if c is None:
            c = self._conns[addr] = AioConn(addr, self._make_channel(addr))
        return c

    @property
    def reached(self) -> bool:
        return any(c.reached for c in self._conns.values())

    def closed_under_call(self) -> bool:
        """Whether a CancelledError out of a grpc call comes from `close()` (grpc.aio
        cancels the calls of a channel it closes) rather than from the caller's
        task being cancelled: only the latter must stay a cancellation."""
        task = asyncio.current_task()
        return self.closed and (task is None or task.cancelling() == 0)

    async def close(self) -> None:
        # A refresh under way is left to end by itself: its questions fail at once
        # on the closed channels (cancelling it would cancel the calls awaiting it).
        self.closed = True
        conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            await c.channel.close()

    async def refresh(self, deadline: float | None, first: str | None = None) -> bool:
        """A round of GetServers (`RefreshRound`), or the one under way; whether
        anybody answered (by `deadline`)."""
        if self.view.pinned:
            return True
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.ensure_future(self._refresh(deadline, first))
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            return False

    async def _refresh(self, deadline: float | None, first: str | None) -> bool:
        round_ = self.view.refresh_round(first)
        for addr in round_.order:
            ask = round_.ask_timeout(deadline)
            if ask is None:
                break
            try:
                conn = self.conn(addr)
                resp = await conn.stub.GetServers(log_pb2.GetServersRequest(), timeout=ask)
            except grpc.RpcError:
                continue
            except (ClientClosed, grpc.aio.UsageError):  # closed under us
                return False
            except asyncio.CancelledError:
                if self.closed_under_call():
                    return False
                raise
            conn.reached = True
            if round_.answer([Server.from_pb(s) for s in resp.servers]):
                break
        return round_.finish()

    async def call(
        self,
        kind: Kind,
        invoke: Callable[[AioConn, float | None], Awaitable[_T]],
        timeout: float | None,
        *,
        offset: int | None = None,
    ) -> _T:
        """Run `invoke(conn, attempt_timeout)` where the rules send it, retrying what
        may be retried within `timeout` (seconds from now)."""
        run = Attempts(self.view, kind, timeout, offset=offset)
        if self.view.stale():
            await self.refresh(run.deadline)
        while run.remaining() > 0:
            addr = run.pick()
            if addr is None:
                await asyncio.sleep(run.pause())
                await self.refresh(run.deadline)
                continue
            conn = self.conn(addr)
            attempt = run.attempt_timeout()
            try:
                resp = await invoke(conn, attempt)
            except grpc.RpcError as exc:
                if self.closed:
                    raise ClientClosed() from None
                pause = run.failed(conn, exc, attempt)
                if pause is not None:
                    await asyncio.sleep(pause)
                    await self.refresh(run.deadline)
                continue
            except grpc.aio.UsageError:  # the channel was closed under the call
                raise ClientClosed() from None
            except asyncio.CancelledError:
                if self.closed_under_call():
                    raise ClientClosed() from None
                raise
            conn.reached = True
            return resp
        raise run.gave_up()


class AsyncClient:
    """The asyncio twin of `Client`: the same options, routing and errors.

    Calls `log.v1.Log` on the server at `addr`, or, given a list of bootstrap
    addresses (or `routing=True`), on the whole cluster: writes to the leader,
    reads round-robin to the followers, retries with backoff and jitter within
    each call's `timeout` (see `Client` for the rules). `produce_sequenced` is
    the idempotent producer's write: retried also when its outcome is unknown,
    since the leader answers a repeat with the first answer.

    Channels are made on first use, so the client may be created outside a
    running loop; it must then be used from one event loop only. `await
    close()` it, or use `async with`.
    """

    def __init__(
        self,
        addr: str | Sequence[str],
        *,
        tls: ClientTLS | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        options: Iterable[tuple[str, Any]] = (),
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        routing: bool | None = None,
        read_from: ReadFrom = "followers",
        linearizable: bool = False,
        refresh_interval: float | None = DEFAULT_REFRESH_INTERVAL,
    ) -> None:
        s = setup(
            "AsyncClient",
            addr,
            tls=tls,
            options=options,
            max_record_bytes=max_record_bytes,
            routing=routing,
            read_from=read_from,
        )
        seeds, routed, opts, creds = s.seeds, s.routed, s.channel_options, s.credentials
        self.addr = ",".join(seeds)
        self.timeout = timeout
        self.linearizable = linearizable

        def make_channel(target: str) -> grpc.aio.Channel:
            if creds is None:
                return grpc.aio.insecure_channel(target, options=opts)
            return grpc.aio.secure_channel(target, creds, options=opts)

        view = View(
            seeds, read_from=read_from, refresh_interval=refresh_interval, pinned=not routed
        )
        self._router = AsyncRouter(view, make_channel)

    # -- lifecycle ----------------------------------------------------------------

    async def close(self) -> None:
        await self._router.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.addr!r})"

    @property
    def routing(self) -> bool:
        """Whether calls are routed over the cluster."""
        return not self._router.view.pinned

    @property
    def reached(self) -> bool:
        """Whether a server has answered this client at least once."""
        return self._router.reached

    @property
    def known_servers(self) -> list[Server]:
        """A routed client's last view of the cluster (empty before the first call,
        and for a direct client)."""
        return self._router.view.servers

    @property
    def leader_addr(self) -> str | None:
        """The leader a routed client sends writes to; None when not known."""
        return None if self._router.view.pinned else self._router.view.leader

    # -- routing ------------------------------------------------------------------

    def _deadline(self, timeout: float | None, extra: float = 0.0) -> float | None:
        t = self.timeout if timeout is None else timeout
        return None if t is None else t + extra

    def _check_open(self) -> None:
        if self._router.closed:
            raise ClientClosed()

    async def refresh(self) -> None:
        """Ask the cluster for its members and leader now (nothing for a direct client)."""
        self._check_open()
        t = self.timeout
        await self._router.refresh(None if t is None else time.monotonic() + t)

    async def read_node(self, avoid: Collection[str] = ()) -> str:
        """The address the next read goes to: a follower, round-robin (the leader
        when there are none, or with read_from="leader"), not one of `avoid` when
        another will do. A direct client's one address."""
        self._check_open()
        view = self._router.view
        if view.stale():
            await self.refresh()
        addr = view.pick("read", avoid)
        assert addr is not None  # only a write waits for a leader
        return addr

    async def _call(
        self,
        kind: Kind,
        invoke: Callable[[AioConn, float | None], Awaitable[_T]],
        timeout: float | None,
        *,
        offset: int | None = None,
    ) -> _T:
        self._check_open()
        if self.routing or kind == "write_idempotent":
            # A direct client retries a sequenced write too, on its one server.
            return await self._router.call(kind, invoke, timeout, offset=offset)
        conn = self._router.conn(self._router.view.seeds[0])
        try:
            resp = await invoke(conn, timeout)
        except grpc.RpcError as exc:
            if self._router.closed:
                raise ClientClosed() from None
            err = from_rpc_error(
                exc, addr=conn.addr, connected=conn.reached, timeout=timeout, offset=offset
            )
            if not isinstance(err, Unreachable):
                conn.reached = True
            raise err from None
        except grpc.aio.UsageError:
            raise ClientClosed() from None
        except asyncio.CancelledError:
            if self._router.closed_under_call():
                raise ClientClosed() from None
            raise
        conn.reached = True
        return resp

    def _linearizable(self, linearizable: bool | None) -> bool:
        return self.linearizable if linearizable is None else linearizable

    # -- writes -------------------------------------------------------------------

    async def produce(
        self, value: Value, *, timestamp_ms: int = 0, timeout: float | None = None
    ) -> int:
        """Append one record; its offset (committed, on a cluster on a majority)."""
        req = log_pb2.ProduceRequest(
            record=log_pb2.Record(value=_to_bytes(value), timestamp_ms=timestamp_ms)
        )
        resp = await self._call(
            "write", lambda c, t: c.stub.Produce(req, timeout=t), self._deadline(timeout)
        )
        return int(resp.offset)

    async def produce_batch(
        self, records: Iterable[RecordInput], *, timeout: float | None = None
    ) -> int:
        """Append records atomically at contiguous offsets; the first one's offset."""
        req = batch_request(records)
        resp = await self._call(
            "write", lambda c, t: c.stub.ProduceBatch(req, timeout=t), self._deadline(timeout)
        )
        return int(resp.base_offset)

    async def produce_sequenced(
        self,
        records: Sequence[RecordInput],
        producer_id: int,
        sequence: int,
        *,
        timeout: float | None = None,
    ) -> BatchAck:
        """Append batch `sequence` of producer `producer_id` (a non-zero 63-bit id),
        at most once.

        The leader appends it only after batch `sequence - 1` of the producer
        (`OutOfOrderSequence` otherwise, raised at once), and answers a batch it
        already holds with its first offsets and `duplicate=True`. So the call is
        retried within `timeout` even when an attempt's outcome is unknown
        (NO_QUORUM, connection lost mid-call, no answer in time); out of time it
        raises `Unavailable` (`Unreachable` when no server answered). Each
        attempt gets a quarter of the time (at least 2 s), so that a leader gone
        silent leaves time to retry on the next one.
        """
        if not 0 < producer_id <= _MAX_PRODUCER_ID:
            raise ValueError(f"producer_id must be in 1..2**63-1, got {producer_id}")
        if not 0 <= sequence <= _MAX_SEQUENCE:
            raise ValueError(f"sequence must be in 0..2**64-1, got {sequence}")
        req = batch_request(records, producer_id, sequence)
        resp = await self._call(
            "write_idempotent",
            lambda c, t: c.stub.ProduceBatch(req, timeout=t),
            self._deadline(timeout),
        )
        return BatchAck(base_offset=resp.base_offset, count=resp.count, duplicate=resp.duplicate)

    async def remove_server(self, name: str, *, timeout: float | None = None) -> None:
        """Remove the member `name` from the cluster for good (see `Client.remove_server`)."""
        req = raft_pb2.RemoveServerRequest(name=name)
        await self._call(
            "write", lambda c, t: c.raft.RemoveServer(req, timeout=t), self._deadline(timeout)
        )

    # -- reads --------------------------------------------------------------------

    async def consume(
        self, offset: int, *, linearizable: bool | None = None, timeout: float | None = None
    ) -> Record:
        """The record at `offset`; OffsetOutOfRange when it is not in the log."""
        req = log_pb2.ConsumeRequest(offset=offset, linearizable=self._linearizable(linearizable))
        resp = await self._call(
            "read",
            lambda c, t: c.stub.Consume(req, timeout=t),
            self._deadline(timeout),
            offset=offset,
        )
        return Record.from_pb(resp.record)

    async def fetch(
        self,
        offset: int,
        max_records: int = 0,
        max_bytes: int = 0,
        max_wait_ms: int = 0,
        *,
        linearizable: bool | None = None,
        timeout: float | None = None,
    ) -> FetchResult:
        """Up to `max_records`/about `max_bytes` from `offset`, waiting up to
        `max_wait_ms` for the first at the end of the log (as `Client.fetch`)."""
        req = log_pb2.FetchRequest(
            offset=offset,
            max_records=max_records,
            max_bytes=max_bytes,
            max_wait_ms=max_wait_ms,
            linearizable=self._linearizable(linearizable),
        )
        resp = await self._call(
            "read",
            lambda c, t: c.stub.Fetch(req, timeout=t),
            self._deadline(timeout, max_wait_ms / 1000),
            offset=offset,
        )
        return FetchResult.from_pb(resp)

    async def info(self, *, timeout: float | None = None) -> LogInfo:
        """Offsets and size of the answering node's log, and its place in the cluster."""
        resp = await self._call(
            "read",
            lambda c, t: c.stub.GetLogInfo(log_pb2.GetLogInfoRequest(), timeout=t),
            self._deadline(timeout),
        )
        return LogInfo.from_pb(resp)

    async def servers(self, *, timeout: float | None = None) -> list[Server]:
        """Every server in the cluster (GetServers); a routed client takes the
        answer as its new view."""
        resp = await self._call(
            "read",
            lambda c, t: c.stub.GetServers(log_pb2.GetServersRequest(), timeout=t),
            self._deadline(timeout),
        )
        servers = [Server.from_pb(s) for s in resp.servers]
        if self.routing:
            self._router.view.update(servers)
        return servers

    async def offset_for_timestamp(
        self, timestamp_ms: int, *, timeout: float | None = None
    ) -> TimestampOffset:
        """The first offset whose record was stamped at or after `timestamp_ms`."""
        req = log_pb2.GetOffsetForTimestampRequest(timestamp_ms=timestamp_ms)
        resp = await self._call(
            "read",
            lambda c, t: c.stub.GetOffsetForTimestamp(req, timeout=t),
            self._deadline(timeout),
        )
        return TimestampOffset(offset=resp.offset, found=resp.found)

    async def tail_batches(
        self, offset: int, *, node: str | None = None, max_records: int = 0, max_bytes: int = 0
    ) -> AsyncGenerator[FetchResult, None]:
        """`node`'s ConsumeBatchStream from `offset` (default node: `read_node()`):
        every message as a FetchResult, waiting for new records forever.

        Raises ClientErrors: Unreachable/Unavailable when the node cannot be
        reached, goes away or shuts down, OffsetOutOfRange, ... It does not move
        to another node: resuming is the Consumer's job. `aclose()` (or
        `contextlib.aclosing`) cancels the stream.
        """
        self._check_open()
        addr = node if node is not None else await self.read_node()
        conn = self._router.conn(addr)
        if not conn.reached and self.timeout is not None:
            await self._probe(conn)
        req = log_pb2.ConsumeBatchStreamRequest(
            offset=offset, max_records=max_records, max_bytes=max_bytes
        )
        call = conn.stub.ConsumeBatchStream(req)
        try:
            async for resp in call:
                conn.reached = True
                yield FetchResult.from_pb(resp)
        except grpc.RpcError as exc:
            if self._router.closed:
                raise ClientClosed() from None
            raise from_rpc_error(
                exc, addr=conn.addr, connected=conn.reached, timeout=self.timeout, offset=offset
            ) from None
        except grpc.aio.UsageError:
            raise ClientClosed() from None
        except asyncio.CancelledError:
            if self._router.closed_under_call():
                raise ClientClosed() from None
            raise
        finally:
            call.cancel()

    async def _probe(self, conn: AioConn) -> None:
        # A stream has no deadline, and one at the end of the log gets no
        # message, so an unreachable node would make the tail hang silently. A
        # health check with the client's deadline settles it; any answer, even
        # an error status, proves the connection.
        try:
            await conn.health_check(b"", timeout=self.timeout)
        except grpc.RpcError as exc:
            err: ClientError = from_rpc_error(
                exc, addr=conn.addr, connected=conn.reached, timeout=self.timeout
            )
            if isinstance(err, Unreachable):
                raise err from None
        conn.reached = True

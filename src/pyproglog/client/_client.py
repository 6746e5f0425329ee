"""A synchronous client for one Proglog server."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Any, TypeVar

import grpc

from pyproglog.api.raft.v1 import raft_pb2, raft_pb2_grpc
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.client._errors import ClientClosed, ClientError, Unreachable, from_rpc_error
from pyproglog.client._tls import ClientTLS
from pyproglog.client._types import (
    FetchResult,
    LogInfo,
    Record,
    ReplicaState,
    Server,
    TimestampOffset,
)
from pyproglog.limits import DEFAULT_MAX_RECORD_BYTES, max_message_bytes

Value = bytes | str
RecordInput = bytes | str | Record

_T = TypeVar("_T")

DEFAULT_TIMEOUT = 10.0


def _to_bytes(value: Value) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _to_pb(item: RecordInput) -> log_pb2.Record:
    if isinstance(item, Record):
        return log_pb2.Record(
            value=item.value, timestamp_ms=item.timestamp_ms, term=item.term, type=item.type
        )
    return log_pb2.Record(value=_to_bytes(item))


class Client:
    """Calls the `log.v1.Log` service of the server at `addr` ("host:port").

    `timeout` is the deadline of each unary call in seconds (None: none); for
    `tail` it bounds only the wait for a connection, since a tail never ends by
    itself. `max_record_bytes` is the server's record size limit, when raised
    above the default: it sizes the largest message the client accepts.
    Failures raise `ClientError` subclasses, never `grpc.RpcError`.
    The client is thread-safe; `close()` it, or use it as a context manager.
    """

    def __init__(
        self,
        addr: str,
        *,
        tls: ClientTLS | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        options: Iterable[tuple[str, Any]] = (),
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.addr = addr
        self.timeout = timeout
        # Fetch and batch-stream messages are as large as the node's own budget;
        # grpc's 4 MiB default would reject them.
        budget = max_message_bytes(max_record_bytes)
        opts: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", budget),
            ("grpc.max_send_message_length", budget),
        ]
        if tls is not None:
            opts += tls.channel_options()
        opts += list(options)
        if tls is None:
            self._channel = grpc.insecure_channel(addr, options=opts)
        else:
            self._channel = grpc.secure_channel(addr, tls.credentials(), options=opts)
        self._stub = log_pb2_grpc.LogStub(self._channel)
        # The peer service's stub, made on first use (only `remove_server` needs it).
        self._raft: raft_pb2_grpc.RaftStub | None = None
        # Raw bytes in and out: only whether the server answers matters.
        self._health_check = self._channel.unary_unary("/grpc.health.v1.Health/Check")
        # Whether the server has answered at least once: a deadline passing
        # before that means "unreachable", after it "slow". (Not tracked with
        # grpc's connectivity watcher: its polling thread raises when the
        # channel is closed under it.)
        self._reached = False
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        self._closed = True
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.addr!r})"

    @property
    def reached(self) -> bool:
        """Whether the server has answered this client at least once."""
        return self._reached

    # -- calls --------------------------------------------------------------------

    def _deadline(self, timeout: float | None, extra: float = 0.0) -> float | None:
        t = self.timeout if timeout is None else timeout
        return None if t is None else t + extra

    def _error(
        self, exc: grpc.RpcError, timeout: float | None, offset: int | None = None
    ) -> ClientError:
        return from_rpc_error(
            exc, addr=self.addr, connected=self._reached, timeout=timeout, offset=offset
        )

    def _unary(
        self,
        method: Callable[..., _T],
        request: object,
        timeout: float | None,
        *,
        offset: int | None = None,
    ) -> _T:
        if self._closed:  # grpc would raise a bare ValueError
            raise ClientClosed()
        try:
            resp = method(request, timeout=timeout)
        except grpc.RpcError as exc:
            err = self._error(exc, timeout, offset)
            if not isinstance(err, Unreachable):
                self._reached = True
            raise err from None
        self._reached = True
        return resp

    def produce(self, value: Value, *, timestamp_ms: int = 0, timeout: float | None = None) -> int:
        """Append one record; its offset."""
        req = log_pb2.ProduceRequest(
            record=log_pb2.Record(value=_to_bytes(value), timestamp_ms=timestamp_ms)
        )
        resp: log_pb2.ProduceResponse = self._unary(
            self._stub.Produce, req, self._deadline(timeout)
        )
        return resp.offset

    def produce_batch(self, records: Iterable[RecordInput], *, timeout: float | None = None) -> int:
        """Append records atomically at contiguous offsets; the first one's offset.

        Record i of the batch is at the returned offset + i.
        """
        req = log_pb2.ProduceBatchRequest(records=[_to_pb(r) for r in records])
        resp: log_pb2.ProduceBatchResponse = self._unary(
            self._stub.ProduceBatch, req, self._deadline(timeout)
        )
        return resp.base_offset

    def consume(self, offset: int, *, timeout: float | None = None) -> Record:
        """The record at `offset`; OffsetOutOfRange when it is not in the log."""
        req = log_pb2.ConsumeRequest(offset=offset)
        resp: log_pb2.ConsumeResponse = self._unary(
            self._stub.Consume, req, self._deadline(timeout), offset=offset
        )
        return Record.from_pb(resp.record)

    def fetch(
        self,
        offset: int,
        max_records: int = 0,
        max_bytes: int = 0,
        max_wait_ms: int = 0,
        *,
        timeout: float | None = None,
    ) -> FetchResult:
        """Up to `max_records`/about `max_bytes` from `offset` (0: server defaults).

        At the end of the log, waits up to `max_wait_ms` for a record and may
        return none; the deadline is the timeout plus that wait.
        """
        req = log_pb2.FetchRequest(
            offset=offset, max_records=max_records, max_bytes=max_bytes, max_wait_ms=max_wait_ms
        )
        resp: log_pb2.FetchResponse = self._unary(
            self._stub.Fetch, req, self._deadline(timeout, max_wait_ms / 1000), offset=offset
        )
        return FetchResult(
            records=tuple(Record.from_pb(r) for r in resp.records),
            next_offset=resp.next_offset,
            high_watermark=resp.high_watermark,
        )

    def tail(
        self, offset: int, *, max_records: int = 0, max_bytes: int = 0
    ) -> Generator[Record, None, None]:
        """Every record from `offset` on, waiting for new ones forever.

        The call starts on the first `next()`; `close()` on the iterator cancels
        it (as does dropping the last reference to it). Ends with Unavailable
        when the server shuts down.
        """
        req = log_pb2.ConsumeBatchStreamRequest(
            offset=offset, max_records=max_records, max_bytes=max_bytes
        )
        if self._closed:
            raise ClientClosed()
        if not self._reached and self.timeout is not None:
            self._probe()
        call = self._stub.ConsumeBatchStream(req)
        try:
            for resp in call:
                self._reached = True
                for pb in resp.records:
                    yield Record.from_pb(pb)
        except grpc.RpcError as exc:
            raise self._error(exc, self.timeout, offset) from None
        finally:
            call.cancel()

    def _probe(self) -> None:
        # A stream has no deadline, and a tail at the end of the log gets no
        # message, so an unreachable server would make tail() hang silently.
        # A health check with the client's deadline settles it; any answer
        # from the server, even an error, proves the connection.
        try:
            self._health_check(b"", timeout=self.timeout)
        except grpc.RpcError as exc:
            err = self._error(exc, self.timeout)
            if isinstance(err, Unreachable):
                raise err from None
        self._reached = True

    def get_servers(self, *, timeout: float | None = None) -> list[Server]:
        """Every server in the cluster, with its client-facing RPC address."""
        resp: log_pb2.GetServersResponse = self._unary(
            self._stub.GetServers, log_pb2.GetServersRequest(), self._deadline(timeout)
        )
        return [Server(s.id, s.rpc_addr, s.is_leader, s.voter) for s in resp.servers]

    def remove_server(self, name: str, *, timeout: float | None = None) -> None:
        """Remove the member `name` from the cluster for good (a node that died
        with its disk; a node that only stopped rejoins as it was, and needs no
        removal). Any member takes the call and passes it to the leader. With
        ACLs on, the caller needs the `admin` action.
        """
        if self._raft is None:
            self._raft = raft_pb2_grpc.RaftStub(self._channel)
        self._unary(
            self._raft.RemoveServer,
            raft_pb2.RemoveServerRequest(name=name),
            self._deadline(timeout),
        )

    def info(self, *, timeout: float | None = None) -> LogInfo:
        """Offsets and size of the server's log, and its place in the cluster."""
        r: log_pb2.GetLogInfoResponse = self._unary(
            self._stub.GetLogInfo, log_pb2.GetLogInfoRequest(), self._deadline(timeout)
        )
        return LogInfo(
            lowest_offset=r.lowest_offset,
            highest_offset=None if r.empty else r.highest_offset,
            next_offset=r.next_offset,
            empty=r.empty,
            segment_count=r.segment_count,
            size_bytes=r.size_bytes,
            commit_offset=None if r.empty else r.commit_offset,
            # A server older than these fields sends no role: it is a single node.
            role=r.role or "standalone",
            term=r.term,
            leader_id=r.leader_id or None,
            leader_addr=r.leader_addr or None,
            replicas=tuple(
                ReplicaState(p.id, p.rpc_addr, p.voter, p.match_index, p.lag_entries)
                for p in r.replicas
            ),
        )

    def offset_for_timestamp(
        self, timestamp_ms: int, *, timeout: float | None = None
    ) -> TimestampOffset:
        """The first offset whose record was stamped at or after `timestamp_ms`."""
        req = log_pb2.GetOffsetForTimestampRequest(timestamp_ms=timestamp_ms)
        r: log_pb2.GetOffsetForTimestampResponse = self._unary(
            self._stub.GetOffsetForTimestamp, req, self._deadline(timeout)
        )
        return TimestampOffset(offset=r.offset, found=r.found)

"""The `log.v1.Log` gRPC service (grpc.aio) over a LogService: translation only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import grpc

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.log import Record
from pyproglog.server.core import EncodedFetch, LogService
from pyproglog.server.errors import ShuttingDown
from pyproglog.server.grpc.handlers import MalformedRequest
from pyproglog.server.grpc.status import abort_for
from pyproglog.server.results import STANDALONE
from pyproglog.server.servers import ServerLister

__all__ = ["LogServicer", "to_pb"]

# Produce requests of one stream in flight at once.
_STREAM_WINDOW = 1024
# ConsumeStream sends one record per message but reads them in batches; a
# stream whose client stops reading holds its current batch, so batches are
# kept small (at least one record, whatever its size): 500 idle streams then
# hold tens of MB, not a GB.
_CONSUME_STREAM_READ_BYTES = 64 * 1024


def to_pb(rec: Record) -> log_pb2.Record:
    return log_pb2.Record(
        value=rec.value,
        offset=rec.offset,
        term=rec.term,
        type=rec.type,
        timestamp_ms=rec.timestamp_ms,
    )


def _encoded_fetch_response(fetched: EncodedFetch) -> bytes:
    """A FetchResponse, encoded: the stored records, then next_offset and high_watermark."""
    tail = log_pb2.FetchResponse(
        next_offset=fetched.next_offset, high_watermark=fetched.high_watermark
    ).SerializeToString()
    return fetched.data + tail


def consume_responses(data: bytes) -> Iterator[bytes]:
    """Each record of an encoded `records` field (`0x0a varint(len) Record`, field 1)
    re-tagged as an encoded ConsumeResponse, whose `record` is field 2 (`0x12`)."""
    pos, end = 0, len(data)
    while pos < end:
        i, length, shift = pos + 1, 0, 0
        while True:
            byte = data[i]
            i += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        yield b"\x12" + data[pos + 1 : i + length]
        pos = i + length


class _InFlight:
    """Counts calls in progress so a drain can wait for them with the port still open."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Unary = Callable[["LogServicer", _Req, grpc.aio.ServicerContext], Awaitable[_Resp]]
_Streaming = Callable[["LogServicer", _Req, grpc.aio.ServicerContext], AsyncIterator[_Resp]]


def _rpc(method: _Unary[_Req, _Resp]) -> _Unary[_Req, _Resp]:
    """Count the call as in flight and turn any error into its gRPC status."""

    @functools.wraps(method)
    async def wrapper(self: LogServicer, request: _Req, context: grpc.aio.ServicerContext) -> _Resp:
        self.in_flight.enter()
        try:
            if isinstance(request, MalformedRequest):
                raise request.error()
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_for(context, exc)
        finally:
            self.in_flight.leave()

    return wrapper


def _rpc_stream(method: _Streaming[_Req, _Resp]) -> _Streaming[_Req, _Resp]:
    """`_rpc` for methods that answer with a stream."""

    @functools.wraps(method)
    async def wrapper(
        self: LogServicer, request: _Req, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[_Resp]:
        self.in_flight.enter()
        try:
            if isinstance(request, MalformedRequest):
                raise request.error()
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_for(context, exc)
        finally:
            self.in_flight.leave()
            if self._on_stream_end is not None:
                with contextlib.suppress(RuntimeError):  # finalized with the loop gone
                    self._on_stream_end()

    return wrapper


class LogServicer(log_pb2_grpc.LogServicer):
    def __init__(
        self,
        service: LogService,
        servers: ServerLister,
        on_stream_end: Callable[[], None] | None = None,
    ) -> None:
        self._service = service
        self._servers = servers
        # Called on the loop when a streaming call ends (the agent returns memory).
        self._on_stream_end = on_stream_end
        self.in_flight = _InFlight()
        # Answer queues of open ProduceStreams: a drain ends idle ones at once.
        self._produce_streams: set[asyncio.Queue[asyncio.Future[int] | None]] = set()

    def begin_drain(self) -> None:
        """End idle ProduceStreams (their next record would be refused anyway)."""
        for answers in self._produce_streams:
            with contextlib.suppress(asyncio.QueueFull):
                answers.put_nowait(None)

    @_rpc
    async def Produce(
        self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceResponse:
        appended = await self._service.produce([request.record])
        return log_pb2.ProduceResponse(offset=appended.first)

    @_rpc
    async def Consume(
        self, request: log_pb2.ConsumeRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ConsumeResponse:
        if request.linearizable:
            await self._service.read_barrier()
        return log_pb2.ConsumeResponse(record=to_pb(self._service.read(request.offset)))

    @_rpc_stream
    async def ConsumeStream(  # type: ignore[override]  # encoded ConsumeResponses
        self, request: log_pb2.ConsumeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for batch in self._service.tail_encoded(
            request.offset, max_bytes=_CONSUME_STREAM_READ_BYTES
        ):
            for response in consume_responses(batch.data):
                yield response

    @_rpc_stream
    async def ProduceStream(
        self,
        request_iterator: AsyncIterator[log_pb2.ProduceRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[log_pb2.ProduceResponse]:
        # Requests are submitted as they arrive, without waiting for the previous
        # answer, so a pipelining client's records share group commits. The
        # bounded queue is the flow control: a client that does not read its
        # answers stops being read from.
        answers: asyncio.Queue[asyncio.Future[int] | None] = asyncio.Queue(_STREAM_WINDOW)

        async def first_offset(record: log_pb2.Record) -> int:
            return (await self._service.produce([record])).first

        async def submit() -> None:
            try:
                async for request in request_iterator:
                    if isinstance(request, MalformedRequest):
                        raise request.error()  # surfaces through `await reader`
                    await answers.put(asyncio.ensure_future(first_offset(request.record)))
            finally:
                await answers.put(None)

        reader = asyncio.create_task(submit())
        self._produce_streams.add(answers)
        try:
            while (answer := await answers.get()) is not None:
                yield log_pb2.ProduceResponse(offset=await answer)
            if self._service.closing:
                raise ShuttingDown()
            await reader  # surfaces an error of the request stream itself
        finally:
            self._produce_streams.discard(answers)
            reader.cancel()
            while not answers.empty():
                pending = answers.get_nowait()
                if pending is not None and not pending.done():
                    pending.cancel()

    @_rpc
    async def GetServers(
        self, request: log_pb2.GetServersRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetServersResponse:
        return log_pb2.GetServersResponse(
            servers=[
                log_pb2.Server(id=s.id, rpc_addr=s.rpc_addr, is_leader=s.is_leader, voter=s.voter)
                for s in self._servers()
            ]
        )

    @_rpc
    async def ProduceBatch(
        self, request: log_pb2.ProduceBatchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceBatchResponse:
        a = await self._service.produce(
            request.records, producer_id=request.producer_id, sequence=request.sequence
        )
        return log_pb2.ProduceBatchResponse(
            base_offset=a.first, last_offset=a.last, count=a.count, duplicate=a.duplicate
        )

    # Fetch and ConsumeBatchStream answer the stored bytes as they are: the
    # records' encoding is the `records` field of a FetchResponse, and the
    # other two fields are appended (protobuf fields may come in any order).
    # `add_log_service` sends bytes through unchanged.

    @_rpc
    async def Fetch(  # type: ignore[override]  # an encoded FetchResponse
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        if request.linearizable:
            await self._service.read_barrier()
        fetched = await self._service.fetch_encoded(
            request.offset, request.max_records, request.max_bytes, request.max_wait_ms
        )
        return _encoded_fetch_response(fetched)

    @_rpc_stream
    async def ConsumeBatchStream(  # type: ignore[override]  # encoded FetchResponses
        self, request: log_pb2.ConsumeBatchStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for batch in self._service.tail_encoded(
            request.offset, request.max_records, request.max_bytes
        ):
            yield _encoded_fetch_response(batch)

    @_rpc
    async def GetLogInfo(
        self, request: log_pb2.GetLogInfoRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetLogInfoResponse:
        info = self._service.info()
        rep = info.replication or STANDALONE
        # proto3 has no null: an empty log says so in `empty`, its offsets read 0;
        # an unknown leader is "".
        return log_pb2.GetLogInfoResponse(
            lowest_offset=info.lowest_offset,
            highest_offset=info.highest_offset or 0,
            next_offset=info.next_offset,
            empty=info.empty,
            segment_count=info.segment_count,
            size_bytes=info.size_bytes,
            commit_offset=info.commit_offset or 0,
            role=rep.role,
            term=rep.term,
            leader_id=rep.leader_id or "",
            leader_addr=rep.leader_addr or "",
            # Field for field: the same names on the wire as in the result.
            replicas=[log_pb2.ReplicaState(**dataclasses.asdict(r)) for r in rep.replicas],
        )

    @_rpc
    async def GetOffsetForTimestamp(
        self, request: log_pb2.GetOffsetForTimestampRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetOffsetForTimestampResponse:
        found = self._service.offset_for_timestamp(request.timestamp_ms)
        return log_pb2.GetOffsetForTimestampResponse(offset=found.offset, found=found.found)

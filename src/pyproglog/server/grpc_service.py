"""The `log.v1.Log` gRPC service (grpc.aio) over a LogService."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.log import Record
from pyproglog.server.core import InvalidRecord, LogService, ShuttingDown
from pyproglog.server.status import error_status

_log = logging.getLogger("pyproglog.server")

SERVICE_NAME = "log.v1.Log"
# Produce requests of one stream in flight at once.
_STREAM_WINDOW = 1024
# ConsumeStream sends one record per message but reads them in batches; a
# stream whose client stops reading holds its current batch, so batches are
# kept small (at least one record, whatever its size): 500 idle streams then
# hold tens of MB, not a GB.
_CONSUME_STREAM_READ_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerInfo:
    id: str
    rpc_addr: str
    is_leader: bool


# GetServers is answered from here; the cluster plugs in its membership view.
ServerLister = Callable[[], Sequence[ServerInfo]]


class MalformedRequest:
    """What a request that does not parse becomes, so the handler can answer for it.

    A deserializer that raises makes grpc answer UNKNOWN and log an error with
    a traceback; garbage from a client is the client's error, INVALID_ARGUMENT.
    """

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidRecord:
        return InvalidRecord(f"malformed request: not a valid {self.type_name}")


def _safe_deserializer(
    parse: Callable[[bytes], object], type_name: str
) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError:
            return MalformedRequest(type_name)

    return deserialize


class _HandlerCapture:
    """Stands in for the server to collect the generated method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers = handlers


_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_log_service(servicer: LogServicer, server: grpc.aio.Server) -> None:
    """`add_LogServicer_to_server`, with request parsing that cannot fail the call."""
    capture = _HandlerCapture()
    log_pb2_grpc.add_LogServicer_to_server(servicer, capture)
    # Regenerated code that registers differently must fail here, not serve nothing.
    assert capture.handlers, "log_pb2_grpc no longer calls add_registered_method_handlers"
    methods = log_pb2.DESCRIPTOR.services_by_name["Log"].methods_by_name
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for name, h in capture.handlers.items():
        streaming = (bool(h.request_streaming), bool(h.response_streaming))
        behavior = (h.unary_unary, h.unary_stream, h.stream_unary, h.stream_stream)[
            2 * streaming[0] + streaming[1]
        ]
        handlers[name] = _FACTORIES[streaming](
            behavior,
            request_deserializer=_safe_deserializer(
                h.request_deserializer, methods[name].input_type.full_name
            ),
            response_serializer=h.response_serializer,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def to_pb(rec: Record) -> log_pb2.Record:
    return log_pb2.Record(
        value=rec.value,
        offset=rec.offset,
        term=rec.term,
        type=rec.type,
        timestamp_ms=rec.timestamp_ms,
    )


def _fill(records: Sequence[Record], out: object) -> None:
    add = out.add  # type: ignore[attr-defined]
    for rec in records:
        add(
            value=rec.value,
            offset=rec.offset,
            term=rec.term,
            type=rec.type,
            timestamp_ms=rec.timestamp_ms,
        )


async def abort_for(
    context: grpc.aio.ServicerContext[object, object], exc: BaseException
) -> NoReturn:
    """Abort the call with the status that `exc` maps to (INTERNAL for bugs)."""
    st = error_status(exc)
    if st is None:
        _log.exception("internal error", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.LocalizedMessage(locale="en-US", message=st.message))
    status = status_pb2.Status(
        code=getattr(code_pb2, st.grpc_code.name), message=st.message, details=[detail]
    )
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")


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
        return log_pb2.ProduceResponse(offset=await self._service.produce([request.record]))

    @_rpc
    async def Consume(
        self, request: log_pb2.ConsumeRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ConsumeResponse:
        return log_pb2.ConsumeResponse(record=to_pb(self._service.read(request.offset)))

    @_rpc_stream
    async def ConsumeStream(
        self, request: log_pb2.ConsumeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[log_pb2.ConsumeResponse]:
        async for batch in self._service.tail(request.offset, max_bytes=_CONSUME_STREAM_READ_BYTES):
            for rec in batch:
                yield log_pb2.ConsumeResponse(record=to_pb(rec))

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

        async def submit() -> None:
            try:
                async for request in request_iterator:
                    if isinstance(request, MalformedRequest):
                        raise request.error()  # surfaces through `await reader`
                    await answers.put(
                        asyncio.ensure_future(self._service.produce([request.record]))
                    )
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
                log_pb2.Server(id=s.id, rpc_addr=s.rpc_addr, is_leader=s.is_leader)
                for s in self._servers()
            ]
        )

    @_rpc
    async def ProduceBatch(
        self, request: log_pb2.ProduceBatchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceBatchResponse:
        first = await self._service.produce(request.records)
        n = len(request.records)
        return log_pb2.ProduceBatchResponse(base_offset=first, last_offset=first + n - 1, count=n)

    def _fetch_response(self, records: Sequence[Record], offset: int) -> log_pb2.FetchResponse:
        resp = log_pb2.FetchResponse(
            next_offset=records[-1].offset + 1 if records else offset,
            high_watermark=self._service.next_offset,
        )
        _fill(records, resp.records)
        return resp

    @_rpc
    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        records = await self._service.fetch(
            request.offset, request.max_records, request.max_bytes, request.max_wait_ms
        )
        return self._fetch_response(records, request.offset)

    @_rpc_stream
    async def ConsumeBatchStream(
        self, request: log_pb2.ConsumeBatchStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[log_pb2.FetchResponse]:
        async for batch in self._service.tail(
            request.offset, request.max_records, request.max_bytes
        ):
            yield self._fetch_response(batch, request.offset)

    @_rpc
    async def GetLogInfo(
        self, request: log_pb2.GetLogInfoRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetLogInfoResponse:
        info = self._service.info()
        return log_pb2.GetLogInfoResponse(
            lowest_offset=info.lowest_offset,
            highest_offset=max(info.highest_offset, 0),
            next_offset=info.next_offset,
            empty=info.empty,
            segment_count=info.segment_count,
            size_bytes=info.size_bytes,
            # Single node: everything appended is committed; the cluster reports its own.
            commit_offset=max(info.highest_offset, 0),
        )

    @_rpc
    async def GetOffsetForTimestamp(
        self, request: log_pb2.GetOffsetForTimestampRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetOffsetForTimestampResponse:
        offset = self._service.offset_for_timestamp(request.timestamp_ms)
        if offset is None:
            return log_pb2.GetOffsetForTimestampResponse(
                offset=self._service.next_offset, found=False
            )
        return log_pb2.GetOffsetForTimestampResponse(offset=offset, found=True)

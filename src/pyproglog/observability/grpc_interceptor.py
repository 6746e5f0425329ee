"""One gRPC aio server interceptor for metrics, the RPC span and the request log.

Why not opentelemetry-instrumentation-grpc's aio interceptor: it wraps every
streaming handler as an async generator, which breaks handlers written in the
reader/writer style (the health service's Watch), and it learns the status
only from `context.abort()`, missing `abort_with_status()` (how our service
reports errors) — spans would say OK for failed calls. It would also be a
second wrapper per call. This one wraps each method's handler once (cached),
keeps the handler's own style, and reads the final status from the context.

It goes first in the interceptor list, outside authorization, so that denied
calls are counted, traced and logged like any other.

Per call, with metrics on and tracing off: two clock reads, one counter, one
histogram observation and a gauge for streams. Status: `context.code()` after
the handler (set by abort/set_code), CANCELLED when the task was cancelled
(client went away, deadline), UNKNOWN for an exception grpc will turn into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from pyproglog.observability.metrics import UNKNOWN_METHOD, NodeMetrics
from pyproglog.observability.tracing import end_rpc_span, span_ids, start_rpc_span

REQUEST_LOGGER = "pyproglog.request"
_req_log = logging.getLogger(REQUEST_LOGGER)

# Handlers are cached by method name; names come from registered services, but
# the cap keeps a flood of distinct names from growing the cache anyway.
_CACHE_LIMIT = 256

Handler = Any  # grpc.RpcMethodHandler: untyped in grpc's stubs
_Tokens = tuple[Mapping[str, Token[Any]], Token[Any] | None]


@dataclass(slots=True)
class _Method:
    """Per-method state, prepared once so that a call does no label lookups."""

    service: str
    name: str
    streaming: bool
    label: str
    metrics: NodeMetrics | None
    duration: Any = None
    active: Any = None
    counts: dict[grpc.StatusCode, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metrics is not None:
            self.duration = self.metrics.rpc_duration.labels(self.label)
            if self.streaming:
                self.active = self.metrics.rpc_active_streams.labels(self.label)

    def count(self, code: grpc.StatusCode) -> None:
        child = self.counts.get(code)
        if child is None:
            assert self.metrics is not None
            child = self.counts[code] = self.metrics.rpc_requests.labels(self.label, code.name)
        child.inc()


def _split(full_method: str) -> tuple[str, str]:
    service, _, name = full_method.lstrip("/").rpartition("/")
    return service, name


def _status(
    context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None
) -> grpc.StatusCode:
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    try:
        code = context.code()
    except Exception:  # a context without code(): still count the call
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


def _subject(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    try:
        names = context.auth_context().get("x509_common_name")
    except Exception:
        return None
    return names[0].decode(errors="replace") if names else None


def _offset(message: object, *fields: str) -> int | None:
    for name in fields:
        value = getattr(message, name, None)
        if isinstance(value, int):
            return value
    return None


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts, times, traces and logs every call of the server it is installed on."""

    def __init__(
        self,
        metrics: NodeMetrics | None = None,
        tracer: trace.Tracer | None = None,
        request_log_level: int = logging.DEBUG,
    ) -> None:
        self._metrics = metrics
        self._tracer = tracer
        self._log_level = request_log_level
        self._cache: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None:
            if self._metrics is not None:
                self._metrics.rpc_requests.labels(UNKNOWN_METHOD, "UNIMPLEMENTED").inc()
            return None
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        if len(self._cache) < _CACHE_LIMIT or method in self._cache:
            self._cache[method] = (handler, wrapped)
        return wrapped

    # -- wrapping ---------------------------------------------------------------------

    def _wrap(self, full_method: str, handler: Handler) -> Handler:
        service, name = _split(full_method)
        streaming = bool(handler.request_streaming or handler.response_streaming)
        label = self._metrics.method_label(name) if self._metrics is not None else name
        m = _Method(service, name, streaming, label, self._metrics)
        if handler.request_streaming and handler.response_streaming:
            behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        # grpc picks the calling convention by the function's kind; keep it.
        if inspect.isasyncgenfunction(behavior):
            new = self._wrap_stream(m, behavior)
        elif inspect.iscoroutinefunction(behavior):
            new = self._wrap_call(m, behavior)
        else:  # a sync handler runs in grpc's thread pool; we serve none
            return handler
        return factory(
            new,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_call(self, m: _Method, behavior: Callable[..., Awaitable[Any]]) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            span = self._start(m, context)
            tokens = self._enter(m, span)
            response = error = None
            try:
                response = await behavior(request, context)
                return response
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finish(m, context, started, span, error, request, response)
                self._leave(tokens)

        return call

    def _wrap_stream(self, m: _Method, behavior: Callable[..., AsyncGenerator[Any, None]]) -> Any:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            span = self._start(m, context)
            error = None
            # Read now: when the client leaves mid-send, the generator is
            # finalized after grpc has freed the call, and asking the context
            # for its peer then crashes the process (SIGSEGV in cygrpc).
            who = self._who(context) if _req_log.isEnabledFor(self._log_level) else None
            responses = behavior(request, context)
            try:
                while True:
                    # The call's context is current only while the handler runs,
                    # never across our own `yield`: if the client goes away while
                    # a message is being sent, this generator is finalized by
                    # another task, and a context variable must be reset in the
                    # context where it was set.
                    tokens = self._enter(m, span)
                    try:
                        response = await responses.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        self._leave(tokens)
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                with contextlib.suppress(Exception):
                    await responses.aclose()
                self._finish(m, context, started, span, error, request, None, who)

        return stream

    # -- per call ---------------------------------------------------------------------

    def _start(self, m: _Method, context: grpc.aio.ServicerContext[Any, Any]) -> trace.Span | None:
        if m.active is not None:
            m.active.inc()
        if self._tracer is None:
            return None
        return start_rpc_span(self._tracer, m.service, m.name, context.invocation_metadata())

    def _enter(self, m: _Method, span: trace.Span | None) -> _Tokens:
        # Every log line the handler writes names the method (and the trace).
        bound = structlog.contextvars.bind_contextvars(method=m.name)
        if span is None:
            return bound, None
        return bound, otel_context.attach(trace.set_span_in_context(span))

    def _leave(self, tokens: _Tokens) -> None:
        bound, attached = tokens
        if attached is not None:
            otel_context.detach(attached)
        structlog.contextvars.reset_contextvars(**bound)

    def _finish(
        self,
        m: _Method,
        context: grpc.aio.ServicerContext[Any, Any],
        started: float,
        span: trace.Span | None,
        error: BaseException | None,
        request: Any,
        response: Any,
        who: dict[str, object] | None = None,
    ) -> None:
        seconds = time.perf_counter() - started
        code = _status(context, error)
        if m.metrics is not None:
            m.count(code)
            m.duration.observe(seconds)
            if m.active is not None:
                m.active.dec()
        if span is not None:
            end_rpc_span(span, code, error)
        if _req_log.isEnabledFor(self._log_level):
            if who is None:
                who = self._who(context)
            self._log_request(m, who, code, seconds, span, request, response)

    @staticmethod
    def _who(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, object]:
        """The request log's peer and subject fields."""
        fields: dict[str, object] = {}
        with contextlib.suppress(Exception):
            fields["peer"] = context.peer()
        subject = _subject(context)
        if subject is not None:
            fields["subject"] = subject
        return fields

    def _log_request(
        self,
        m: _Method,
        who: dict[str, object],
        code: grpc.StatusCode,
        seconds: float,
        span: trace.Span | None,
        request: Any,
        response: Any,
    ) -> None:
        fields: dict[str, object] = {
            "method": m.name,
            "code": code.name,
            "duration_ms": round(seconds * 1000, 3),
            **who,
        }
        # Consume/Fetch name an offset in the request; Produce(Batch) get one back.
        offset = _offset(request, "offset")
        if offset is None and response is not None:
            offset = _offset(response, "offset", "base_offset")
        if offset is not None:
            fields["offset"] = offset
        if span is not None:
            fields["trace_id"], fields["span_id"] = span_ids(span)
        _req_log.log(self._log_level, "rpc", extra=fields)

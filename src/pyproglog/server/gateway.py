"""HTTP/JSON gateway over the LogService (FastAPI, served by uvicorn in the node's loop).

Why it exists: the book's first prototype was a JSON-over-HTTP log for curl
users (`POST /` to produce, `GET /` with a JSON body to consume); we keep those
two routes as they were and add resource-style routes under `/v1` that mirror
the gRPC extensions (batch produce, long-poll fetch, log info, offset for a
timestamp, servers).

How it is built: the gateway is a thin translation layer. Every route calls the
same LogService the gRPC front end calls, and every service error is mapped by
`status.error_status()`, so a failure has the same meaning (gRPC code name and
message) on both transports. All errors are JSON:
`{"error": {"code": "OUT_OF_RANGE", "message": "offset out of range: 42"}}`,
including malformed requests (400, not FastAPI's 422), unknown routes and bugs.
Record values travel as standard base64 (`format: byte`), as in the proto3 JSON
mapping, and the pydantic models carry the bounds of what is accepted (no
negative offsets, uint32 types and sizes, timestamps the log can store) so the
OpenAPI document (/openapi.json) is exact and clients can be generated from it.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures,
# whose Query(...) descriptions use the service's limits from create_app's scope.
import base64
import binascii
import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyproglog.log import LogError
from pyproglog.log import Record as LogRecord
from pyproglog.server.core import LogService, ServiceError, ServiceLimits
from pyproglog.server.grpc_service import ServerLister
from pyproglog.server.status import PermissionDenied, Unauthenticated, error_status

_log = logging.getLogger("pyproglog.server")

U32_MAX = 2**32 - 1

# Standard base64 with padding: exactly what `b64decode(validate=True)` accepts.
_BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"

# -- wire types -------------------------------------------------------------------


def _decode_base64(value: object) -> bytes:
    if isinstance(value, bytes):  # built in Python, not parsed from JSON
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("base64_type", "must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PydanticCustomError(
            "base64", "invalid base64 ({reason})", {"reason": str(exc)}
        ) from None


def _encode_base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


Base64Bytes = Annotated[
    bytes,
    PlainValidator(_decode_base64),
    PlainSerializer(_encode_base64, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "byte",
            "pattern": _BASE64_PATTERN,
            "description": "The record's bytes, standard base64 with padding (RFC 4648 §4).",
        }
    ),
]


def _json_integer(value: object) -> object:
    """JSON Schema's integer: `1` or `1.0`, but not `true` or `"1"` (pydantic's lax mode
    takes those; its strict mode refuses `1.0`)."""
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


_JSON_INT = BeforeValidator(_json_integer)
Uint32 = Annotated[int, Field(ge=0, le=U32_MAX), _JSON_INT]
# No maximum: FastAPI renders schema bounds as floats, and 2**64 - 1 is not one.
# An offset past the end is answered 404 whatever its size.
Uint64 = Annotated[int, Field(ge=0), _JSON_INT]
# Stored as int64; produced timestamps are bounded to a date (9999-12-31) that
# is exact as a float, so the document says precisely what is accepted.
MAX_TIMESTAMP_MS = 253_402_300_799_999
NewTimestampMs = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP_MS), _JSON_INT]


class NewRecord(BaseModel):
    """A record to append. Any `offset` or `term` sent is ignored: the log assigns them."""

    value: Base64Bytes
    type: Uint32 = Field(default=0, description="Application-defined record type.")
    timestamp_ms: NewTimestampMs = Field(
        default=0, description="Milliseconds since the Unix epoch; 0 means the append time."
    )


class Record(BaseModel):
    """A record as stored in the log."""

    value: Base64Bytes
    offset: Uint64
    term: Uint64
    type: Uint32
    # Any int64: gRPC clients may store timestamps before 1970.
    timestamp_ms: int = Field(description="Milliseconds since the Unix epoch.")


class ProduceRequest(BaseModel):
    record: NewRecord


class ProduceResponse(BaseModel):
    offset: Uint64


class ConsumeRequest(BaseModel):
    offset: Uint64


class ConsumeResponse(BaseModel):
    record: Record


class ProduceBatchRequest(BaseModel):
    records: list[NewRecord] = Field(
        min_length=1, description="Appended atomically at contiguous offsets."
    )


class ProduceBatchResponse(BaseModel):
    base_offset: Uint64 = Field(description="Offset of the first record.")
    last_offset: Uint64 = Field(description="Offset of the last record.")
    count: Uint32
    offsets: list[Uint64] = Field(description="The offset of each record, in request order.")


class FetchResponse(BaseModel):
    records: list[Record]
    next_offset: Uint64 = Field(description="Where to fetch next.")
    high_watermark: Uint64 = Field(description="The log's highest offset + 1 when answering.")


class LogInfoResponse(BaseModel):
    lowest_offset: Uint64
    # null, not 0, when empty: 0 is also the offset of a first record (same as
    # the Python client and the CLI; gRPC has `empty` since proto3 has no null).
    highest_offset: Uint64 | None = Field(
        description="Offset of the last record; null when the log is empty."
    )
    next_offset: Uint64 = Field(description="The offset the next produced record will get.")
    empty: bool
    segment_count: Uint32
    size_bytes: Uint64
    commit_offset: Uint64 | None = Field(
        description="Highest offset replicated to a quorum (a single node: highest_offset); "
        "null when the log is empty."
    )


class OffsetForTimestampResponse(BaseModel):
    offset: Uint64 = Field(
        description="First offset with timestamp >= the one asked for; when `found` is false, "
        "where the next record will go."
    )
    found: bool


class Server(BaseModel):
    id: str
    rpc_addr: str = Field(description="The client-facing gRPC address.")
    is_leader: bool


class ServersResponse(BaseModel):
    servers: list[Server]


class Error(BaseModel):
    code: str = Field(
        description="The gRPC status code name for the same failure (OUT_OF_RANGE, "
        "INVALID_ARGUMENT, UNAVAILABLE, RESOURCE_EXHAUSTED, ...), or the HTTP status name "
        "for routing errors (NOT_FOUND, METHOD_NOT_ALLOWED).",
        examples=["OUT_OF_RANGE"],
    )
    message: str = Field(examples=["offset out of range: 42"])


class ErrorResponse(BaseModel):
    error: Error


def to_record(rec: LogRecord) -> Record:
    return Record(
        value=rec.value,
        offset=rec.offset,
        term=rec.term,
        type=rec.type,
        timestamp_ms=rec.timestamp_ms,
    )


def to_log_record(rec: NewRecord) -> LogRecord:
    return LogRecord(value=rec.value, type=rec.type, timestamp_ms=rec.timestamp_ms)


# -- errors -----------------------------------------------------------------------

_ERROR_DOCS = {
    400: "Malformed request: invalid JSON, a missing, mistyped or out-of-range field, "
    "or invalid base64.",
    401: "No verified client certificate, on a node that enforces an ACL.",
    403: "The ACL does not permit the client's certificate subject this action.",
    404: "The offset is not in the log (past the end, or below the lowest retained offset).",
    413: "A record value is larger than the record size limit, or the request body is "
    "larger than the gateway reads; nothing was written.",
    500: "Stored data failed its checksum (DATA_LOSS).",
    503: "The node is shutting down, cannot write now, or is reading as many request "
    "bodies as it holds at once (then with Retry-After); retry (elsewhere).",
    507: "The disk is full; nothing was written.",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer.

    Every route can answer 401 and 403: the agent puts its ACL in front of the gateway.
    """
    return {
        s: {"model": ErrorResponse, "description": _ERROR_DOCS[s]}
        for s in sorted({401, 403, *statuses})
    }


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=Error(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _service_error(request: Request, exc: Exception) -> JSONResponse:
    st = error_status(exc)
    if st is None:
        _log.error("%s %s: internal error", request.method, request.url.path, exc_info=exc)
        return _internal_error(request, exc)
    if st.http_status == 500:
        _log.error("%s %s: %s", request.method, request.url.path, st.message)
    return error_response(st.http_status, st.grpc_code.name, st.message)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after sending this, and uvicorn logs the traceback.
    return error_response(500, "INTERNAL", "internal error")


def _where(loc: Sequence[int | str]) -> str:
    """("body", "records", 0, "value") -> "body.records[0].value"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_MAX_REPORTED_ERRORS = 5


def validation_message(errors: Sequence[Any]) -> str:
    """What is wrong with a request, from FastAPI/pydantic validation errors."""
    parts: list[str] = []
    for err in errors[:_MAX_REPORTED_ERRORS]:
        loc = tuple(err.get("loc", ()))
        kind = err.get("type", "")
        if kind == "json_invalid":
            reason = err.get("ctx", {}).get("error", "invalid JSON")
            parts.append(f"body is not valid JSON: {reason}")
        elif loc == ("body",) and isinstance(err.get("input"), bytes | str):
            parts.append("body must be a JSON object")
        else:
            parts.append(f"{_where(loc)}: {err.get('msg', 'invalid')}")
    if len(errors) > _MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_REPORTED_ERRORS} more errors")
    return "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "INVALID_ARGUMENT", validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Raised by the framework: 404 unknown route, 405 wrong method, 400 unreadable body.
        status = exc.status_code
        if status == 400:
            # Bodies of our routes are parsed (and their faults named) by _JsonBodyRoute.
            code, message = "INVALID_ARGUMENT", "the request body could not be read"
        else:
            code = HTTPStatus(status).name
            message = f"{exc.detail}: {request.method} {request.url.path}"
        return error_response(status, code, message, dict(exc.headers or {}))

    for cls in (LogError, ServiceError, PermissionDenied, Unauthenticated):
        app.add_exception_handler(cls, _service_error)
    # Anything else is a bug: a JSON 500, logged with its traceback.
    app.add_exception_handler(Exception, _internal_error)


# -- app ------------------------------------------------------------------------

# Mirrors the gRPC server's message limit: a produce batch of up to 32 MiB.
_MAX_BATCH_BYTES = 32 * 1024 * 1024
_JSON_SLACK = 8 * 1024 * 1024  # field names and offsets around the values


def max_body_bytes(limits: ServiceLimits) -> int:
    """The largest request body read: a 32 MiB batch or one maximal record, as base64 JSON."""
    payload = max(limits.max_record_bytes, _MAX_BATCH_BYTES)
    return 4 * ((payload + 2) // 3) + _JSON_SLACK


class BodyBudget:
    """Request body bytes in flight across all requests, against a total.

    A body is parsed into several copies (bytes, JSON text, decoded values), so
    the gateway's memory follows what is in flight: without a total, 16
    concurrent 50 MB bodies took a node from 94 MB to 1.6 GB.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give_back(self, n: int) -> None:
        self.used -= n


_RETRY_AFTER_SECONDS = "1"


def limit_body(app: ASGIApp, max_bytes: int, max_total_bytes: int | None = None) -> ASGIApp:
    """Answer a JSON 413 to a request body over `max_bytes`, before the routes see it,
    and a JSON 503 (Retry-After) while bodies in flight would pass `max_total_bytes`.

    (FastAPI's own `max_body_size` answers in plain text when the oversize body
    is declared.) The routes read whole bodies anyway, so it is read here, up
    to the limit, and handed on. A declared Content-Length is refused or
    reserved before a byte is read; a chunked body is counted as it arrives.
    """
    budget = BodyBudget(max_total_bytes if max_total_bytes is not None else 2 * max_bytes)

    async def too_large(scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than {max_bytes} bytes"
        await error_response(413, "INVALID_ARGUMENT", message)(scope, receive, send)

    async def busy(scope: Scope, receive: Receive, send: Send) -> None:
        message = (
            f"the gateway is reading {budget.used} bytes of other request bodies "
            f"(at most {budget.total} at once); retry"
        )
        headers = {"Retry-After": _RETRY_AFTER_SECONDS}
        await error_response(503, "UNAVAILABLE", message, headers)(scope, receive, send)

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            await too_large(scope, receive, send)
            return
        held = int(declared) if declared.isdigit() else 0
        if not budget.take(held):
            await busy(scope, receive, send)
            return
        try:
            await read_and_call(scope, receive, send, held)
        finally:
            budget.give_back(held)

    async def read_and_call(scope: Scope, receive: Receive, send: Send, reserved: int) -> None:
        held = reserved
        chunks: list[bytes] = []
        size, more = 0, True
        try:
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    await too_large(scope, receive, send)
                    return
                if size > held:  # chunked, or more than declared
                    if not budget.take(size - held):
                        await busy(scope, receive, send)
                        return
                    held = size
                chunks.append(chunk)
                more = message.get("more_body", False)
            body: Message | None = {"type": "http.request", "body": b"".join(chunks)}
            chunks.clear()

            async def replay() -> Message:
                nonlocal body
                if body is None:
                    return await receive()  # e.g. to notice a disconnect
                message, body = body, None
                return message

            await app(scope, replay, send)
        finally:
            budget.give_back(held - reserved)

    return limited


class _Gateway(FastAPI):
    """FastAPI whose OpenAPI document has our 400 instead of its 422 validation response."""

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                operation.get("responses", {}).pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        _integral_bounds(schemas)
        return schema


def _integral_bounds(node: object) -> None:
    """`"minimum": 0.0` -> `0`: FastAPI turns the models' integer bounds into floats."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                node[key] = int(value)
            else:
                _integral_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _integral_bounds(value)


_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})


class _JsonBodyRoute(APIRoute):
    """Reads the body as JSON whatever its Content-Type, on every route: one rule.

    The book's curl examples (`curl -X POST localhost:8080 -d '{"record": ...}'`)
    send JSON labelled as form data, and so does any `curl -d` to /v1/records.
    The body is parsed here, once, so that what makes it unreadable is said
    precisely (FastAPI reports anything but a syntax error as "error parsing
    the body"); the parsed value is what FastAPI then validates.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def json_body_handler(request: Request) -> Response:
            MutableHeaders(scope=request.scope)["content-type"] = "application/json"
            body = await request.body()
            if body:
                try:
                    parsed = json.loads(body)
                except RecursionError:
                    return error_response(
                        400, "INVALID_ARGUMENT", "malformed JSON: nesting too deep"
                    )
                except UnicodeDecodeError:
                    return error_response(
                        400, "INVALID_ARGUMENT", "body is not valid JSON: it must be UTF-8"
                    )
                except json.JSONDecodeError as exc:
                    message = f"body is not valid JSON: {exc.msg} at position {exc.pos}"
                    return error_response(400, "INVALID_ARGUMENT", message)
                # Starlette's cache of request.json(): FastAPI reads it from there.
                request._json = parsed
            return await handler(request)

        return json_body_handler


def create_app(service: LogService, servers: ServerLister) -> FastAPI:
    limits = service.limits
    app = _Gateway(
        title="Proglog",
        version="1",
        description="A commit log: append records, read them back by offset. "
        'Errors are JSON: `{"error": {"code": ..., "message": ...}}`.',
    )
    app.add_middleware(limit_body, max_bytes=max_body_bytes(limits))
    _install_error_handlers(app)
    too_large = f"Values of at most {limits.max_record_bytes} bytes (decoded)."

    # -- the book's prototype --------------------------------------------------

    book = APIRouter(route_class=_JsonBodyRoute, tags=["book"])

    @book.post(
        "/",
        summary="Produce a record (the book's prototype)",
        description=f"Append one record; its offset. {too_large}",
        responses=_errors(400, 413, 503, 507),
    )
    async def produce(body: Annotated[ProduceRequest, Body()]) -> ProduceResponse:
        offset = await service.produce([to_log_record(body.record)])
        return ProduceResponse(offset=offset)

    @book.get(
        "/",
        summary="Consume a record (the book's prototype)",
        description="The record at the offset given in the JSON request body "
        "(`curl -X GET localhost:8080 -d '{\"offset\": 0}'`).",
        responses=_errors(400, 404, 500, 503),
    )
    async def consume(body: Annotated[ConsumeRequest, Body()]) -> ConsumeResponse:
        return ConsumeResponse(record=to_record(service.read(body.offset)))

    app.include_router(book)

    # -- resource-style routes ---------------------------------------------------

    v1 = APIRouter(prefix="/v1", tags=["v1"], route_class=_JsonBodyRoute)

    @v1.post(
        "/records",
        status_code=201,
        summary="Produce records",
        description=f"Append one or more records atomically at contiguous offsets. {too_large} "
        f"At most {limits.max_batch_records} records per request.",
        responses={
            201: {
                "headers": {
                    "Location": {
                        "description": "The first record's URL.",
                        "schema": {"type": "string"},
                    }
                }
            },
            **_errors(400, 413, 503, 507),
        },
    )
    async def produce_batch(
        body: Annotated[ProduceBatchRequest, Body()], response: Response
    ) -> ProduceBatchResponse:
        n = len(body.records)
        first = await service.produce([to_log_record(r) for r in body.records])
        response.headers["Location"] = f"/v1/records/{first}"
        return ProduceBatchResponse(
            base_offset=first,
            last_offset=first + n - 1,
            count=n,
            offsets=list(range(first, first + n)),
        )

    @v1.get(
        "/records/{offset}",
        summary="Read a record",
        responses=_errors(400, 404, 500, 503),
    )
    async def read(offset: Annotated[int, Path(ge=0)]) -> Record:
        return to_record(service.read(offset))

    @v1.get(
        "/records",
        summary="Fetch records (long-poll)",
        description="Records from `offset` on. When `offset` is the end of the log, waits up "
        "to `wait_ms` for the first record to be produced, then answers (possibly with no "
        "records). At least one record is returned when one is available.",
        responses=_errors(400, 404, 500, 503),
    )
    async def fetch(
        offset: Annotated[int, Query(ge=0, description="The first offset to read.")],
        max_records: Annotated[
            int,
            Query(
                ge=0,
                le=U32_MAX,
                description=f"0 means {limits.default_fetch_records}; "
                f"at most {limits.max_fetch_records} are returned.",
            ),
        ] = 0,
        max_bytes: Annotated[
            int,
            Query(
                ge=0,
                le=U32_MAX,
                description=f"About how many value bytes to return; 0 means "
                f"{limits.default_fetch_bytes}, at most {limits.max_fetch_bytes}.",
            ),
        ] = 0,
        wait_ms: Annotated[
            int,
            Query(
                ge=0,
                le=U32_MAX,
                description=f"How long to wait for a record at the end of the log; "
                f"0 answers at once, at most {limits.max_wait_ms} is waited.",
            ),
        ] = 0,
    ) -> FetchResponse:
        records = await service.fetch(offset, max_records, max_bytes, wait_ms)
        return FetchResponse(
            records=[to_record(r) for r in records],
            next_offset=records[-1].offset + 1 if records else offset,
            high_watermark=service.log.next_offset,
        )

    @v1.get("/info", summary="Log info", responses=_errors(503))
    async def info() -> LogInfoResponse:
        i = service.info()
        highest = None if i.empty else i.highest_offset
        return LogInfoResponse(
            lowest_offset=i.lowest_offset,
            highest_offset=highest,
            next_offset=i.next_offset,
            empty=i.empty,
            segment_count=i.segment_count,
            size_bytes=i.size_bytes,
            commit_offset=highest,
        )

    @v1.get(
        "/offsets",
        summary="Offset for a timestamp",
        description="The first offset whose record's timestamp is at or after `timestamp_ms`.",
        responses=_errors(400, 500, 503),
    )
    async def offset_for_timestamp(
        timestamp_ms: Annotated[int, Query(ge=0, description="Milliseconds since the Unix epoch.")],
    ) -> OffsetForTimestampResponse:
        offset = service.offset_for_timestamp(timestamp_ms)
        if offset is None:
            return OffsetForTimestampResponse(offset=service.log.next_offset, found=False)
        return OffsetForTimestampResponse(offset=offset, found=True)

    @v1.get("/servers", summary="Servers in the cluster", responses=_errors())
    async def list_servers() -> ServersResponse:
        return ServersResponse(
            servers=[Server(id=s.id, rpc_addr=s.rpc_addr, is_leader=s.is_leader) for s in servers()]
        )

    app.include_router(v1)
    return app

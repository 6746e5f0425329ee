"""HTTP/JSON gateway over the LogService (FastAPI, served by uvicorn in the node's loop).

Why it exists: the book's first prototype was a JSON-over-HTTP log for curl
users (`POST /` to produce, `GET /` with a JSON body to consume); we keep those
two routes as they were and add resource-style routes under `/v1` that mirror
the gRPC extensions (batch produce, long-poll fetch, log info, offset for a
timestamp, servers).

How it is built: the gateway is a thin translation layer. Every route calls the
same LogService the gRPC front end calls and translates what it answers; every
error is mapped by `server.errors.error_status()` (see `http/errors.py`), so a
failure has the same meaning (code, reason, metadata, message) on both
transports.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures,
# whose Query(...) descriptions use the service's limits from create_app's scope.
import dataclasses
import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query, Request, Response
from fastapi.routing import APIRoute, APIRouter
from starlette.datastructures import MutableHeaders

from pyproglog.server.core import LogService
from pyproglog.server.http.body import limit_body, max_body_bytes
from pyproglog.server.http.errors import error_responses, install_error_handlers, invalid_argument
from pyproglog.server.http.models import (
    U32_MAX,
    ConsumeRequest,
    ConsumeResponse,
    FetchResponse,
    LogInfoResponse,
    OffsetForTimestampResponse,
    ProduceBatchRequest,
    ProduceBatchResponse,
    ProduceRequest,
    ProduceResponse,
    Record,
    ReplicaState,
    Server,
    ServersResponse,
    to_log_record,
    to_record,
)
from pyproglog.server.results import STANDALONE
from pyproglog.server.servers import ServerLister


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


# On a cluster node: read only once this node has applied everything the leader had
# committed when asked (ReadIndex), never older than a write acknowledged before.
LinearizableQuery = Annotated[
    bool,
    Query(
        description="Never older than a write acknowledged before the request (a round "
        "trip to the cluster's leader); a single node ignores it."
    ),
]


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
                    return invalid_argument("malformed JSON: nesting too deep")
                except UnicodeDecodeError:
                    return invalid_argument("body is not valid JSON: it must be UTF-8")
                except json.JSONDecodeError as exc:
                    message = f"body is not valid JSON: {exc.msg} at position {exc.pos}"
                    return invalid_argument(message)
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
        'Errors are JSON: `{"error": {"code": ..., "reason": ..., "message": ..., '
        '"metadata": {...}}}`.',
    )
    app.add_middleware(limit_body, max_bytes=max_body_bytes(service.max_record_bytes))
    install_error_handlers(app)
    too_large = f"Values of at most {service.max_record_bytes} bytes (decoded)."

    # -- the book's prototype --------------------------------------------------

    book = APIRouter(route_class=_JsonBodyRoute, tags=["book"])

    @book.post(
        "/",
        summary="Produce a record (the book's prototype)",
        description=f"Append one record; its offset. {too_large}",
        responses=error_responses(400, 413, 503, 507),
    )
    async def produce(body: Annotated[ProduceRequest, Body()]) -> ProduceResponse:
        appended = await service.produce([to_log_record(body.record)])
        return ProduceResponse(offset=appended.first)

    @book.get(
        "/",
        summary="Consume a record (the book's prototype)",
        description="The record at the offset given in the JSON request body "
        "(`curl -X GET localhost:8080 -d '{\"offset\": 0}'`).",
        responses=error_responses(400, 404, 500, 503),
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
            **error_responses(400, 409, 413, 503, 507),
        },
    )
    async def produce_batch(
        body: Annotated[ProduceBatchRequest, Body()], response: Response
    ) -> ProduceBatchResponse:
        a = await service.produce(
            [to_log_record(r) for r in body.records],
            producer_id=body.producer_id,
            sequence=body.sequence,
        )
        response.headers["Location"] = f"/v1/records/{a.first}"
        return ProduceBatchResponse(
            base_offset=a.first,
            last_offset=a.last,
            count=a.count,
            offsets=list(a.offsets),
            duplicate=a.duplicate,
        )

    @v1.get(
        "/records/{offset}",
        summary="Read a record",
        responses=error_responses(400, 404, 500, 503),
    )
    async def read(
        offset: Annotated[int, Path(ge=0)], linearizable: LinearizableQuery = False
    ) -> Record:
        if linearizable:
            await service.read_barrier()
        return to_record(service.read(offset))

    @v1.get(
        "/records",
        summary="Fetch records (long-poll)",
        description="Records from `offset` on. When `offset` is the end of the log, waits up "
        "to `wait_ms` for the first record to be produced, then answers (possibly with no "
        "records). At least one record is returned when one is available.",
        responses=error_responses(400, 404, 500, 503),
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
        linearizable: LinearizableQuery = False,
    ) -> FetchResponse:
        if linearizable:
            await service.read_barrier()
        fetched = await service.fetch(offset, max_records, max_bytes, wait_ms)
        return FetchResponse(
            records=[to_record(r) for r in fetched.records],
            next_offset=fetched.next_offset,
            high_watermark=fetched.high_watermark,
        )

    @v1.get("/info", summary="Log info", responses=error_responses(503))
    async def info() -> LogInfoResponse:
        i = service.info()
        rep = i.replication or STANDALONE
        return LogInfoResponse(
            lowest_offset=i.lowest_offset,
            highest_offset=i.highest_offset,
            next_offset=i.next_offset,
            empty=i.empty,
            segment_count=i.segment_count,
            size_bytes=i.size_bytes,
            commit_offset=i.commit_offset,
            role=rep.role,
            term=rep.term,
            leader_id=rep.leader_id,
            leader_addr=rep.leader_addr,
            # Field for field: the same names on the wire as in the result.
            replicas=[ReplicaState(**dataclasses.asdict(r)) for r in rep.replicas],
        )

    @v1.get(
        "/offsets",
        summary="Offset for a timestamp",
        description="The first offset whose record's timestamp is at or after `timestamp_ms`.",
        responses=error_responses(400, 500, 503),
    )
    async def offset_for_timestamp(
        timestamp_ms: Annotated[int, Query(ge=0, description="Milliseconds since the Unix epoch.")],
    ) -> OffsetForTimestampResponse:
        found = service.offset_for_timestamp(timestamp_ms)
        return OffsetForTimestampResponse(offset=found.offset, found=found.found)

    @v1.get("/servers", summary="Servers in the cluster", responses=error_responses())
    async def list_servers() -> ServersResponse:
        return ServersResponse(
            servers=[
                Server(id=s.id, rpc_addr=s.rpc_addr, is_leader=s.is_leader, voter=s.voter)
                for s in servers()
            ]
        )

    app.include_router(v1)
    return app

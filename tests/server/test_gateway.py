"""The HTTP/JSON gateway over real sockets: the book's routes, /v1, errors, OpenAPI.

Most tests use the in-process `agent` fixture; the schemathesis run drives a
`proglog serve` subprocess, since schemathesis calls the API synchronously.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pyproglog.agent import Agent
from pyproglog.limits import DEFAULT_MAX_RECORD_BYTES
from pyproglog.log import DiskFull
from pyproglog.server.http.body import limit_body, max_body_bytes
from pyproglog.testing import ServerProcess

MAX_RECORD_BYTES = DEFAULT_MAX_RECORD_BYTES  # the fixtures run with the default


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error_body(resp: httpx.Response, status: int, code: str, reason: str) -> dict[str, Any]:
    """The `error` object of a JSON error response with this status, code and reason."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "reason", "message", "metadata"}
    assert (error["code"], error["reason"]) == (code, reason)
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in error["message"]
    assert all(isinstance(v, str) for v in error["metadata"].values())
    return error


def error_of(resp: httpx.Response, status: int, code: str, reason: str | None = None) -> str:
    """The message of a JSON error response with this status and code (and reason)."""
    message: str = error_body(resp, status, code, reason or resp.json()["error"]["reason"])[
        "message"
    ]
    return message


@pytest.fixture
async def http(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=agent.http_url, timeout=30) as client:
        yield client


async def next_offset(http: httpx.AsyncClient) -> int:
    resp = await http.get("/v1/info")
    assert resp.status_code == 200
    value = resp.json()["next_offset"]
    assert isinstance(value, int)
    return value


# -- the book's prototype -------------------------------------------------------


async def test_book_routes_round_trip(http: httpx.AsyncClient) -> None:
    # As the book's curl examples send them: JSON labelled as form data (`curl -d`).
    form = {"content-type": "application/x-www-form-urlencoded"}
    for i, value in enumerate([b"Let's Go #1\n", b"Let's Go #2\n"]):
        body = f'{{"record": {{"value": "{b64(value)}"}}}}'
        resp = await http.post("/", content=body, headers=form)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"offset": i}
    # A JSON client, with an offset in the record that the log ignores.
    resp = await http.post("/", json={"record": {"value": b64(b"three"), "offset": 99}})
    assert resp.json() == {"offset": 2}

    resp = await http.request("GET", "/", content='{"offset": 1}', headers=form)
    assert resp.status_code == 200, resp.text
    record = resp.json()["record"]
    assert base64.b64decode(record["value"]) == b"Let's Go #2\n"
    assert record["offset"] == 1
    assert record["term"] == 0 and record["type"] == 0
    assert record["timestamp_ms"] > 0  # stamped with the append time
    resp = await http.request("GET", "/", json={"offset": 2})
    assert resp.json()["record"]["value"] == b64(b"three")


async def test_book_consume_past_the_end_is_404(http: httpx.AsyncClient) -> None:
    resp = await http.request("GET", "/", json={"offset": 0})
    assert error_of(resp, 404, "OUT_OF_RANGE") == "offset out of range: 0"
    await http.post("/", json={"record": {"value": b64(b"x")}})
    resp = await http.request("GET", "/", json={"offset": 1})
    error = error_body(resp, 404, "OUT_OF_RANGE", "OFFSET_OUT_OF_RANGE")
    assert error["message"] == "offset out of range: 1"
    # Where a reader can go on, without parsing the message.
    assert error["metadata"] == {"offset": "1", "lowest": "0", "next": "1"}


async def test_every_json_route_takes_curls_default_content_type(http: httpx.AsyncClient) -> None:
    # One rule for all routes with a JSON body: the body must parse as JSON,
    # whatever the Content-Type says (`curl -d` sends form-urlencoded).
    form = {"content-type": "application/x-www-form-urlencoded"}
    body = json.dumps({"records": [{"value": b64(b"a")}, {"value": b64(b"b")}]})
    resp = await http.post("/v1/records", content=body, headers=form)
    assert resp.status_code == 201, resp.text
    assert resp.json()["offsets"] == [0, 1]
    resp = await http.post("/", content=json.dumps({"record": {"value": b64(b"c")}}))
    assert resp.json() == {"offset": 2}  # no Content-Type at all
    resp = await http.post("/v1/records", content=body, headers={"content-type": "text/plain"})
    assert resp.status_code == 201, resp.text


# -- /v1 --------------------------------------------------------------------------


async def test_produce_batch_then_read_each(http: httpx.AsyncClient) -> None:
    await http.post("/", json={"record": {"value": b64(b"first")}})
    records = [
        {"value": b64(b"a"), "type": 7, "timestamp_ms": 1_000},
        {"value": b64(b"")},
        {"value": b64(bytes(range(256)))},
    ]
    resp = await http.post("/v1/records", json={"records": records})
    assert resp.status_code == 201, resp.text
    assert resp.json() == {
        "base_offset": 1,
        "last_offset": 3,
        "count": 3,
        "offsets": [1, 2, 3],
        "duplicate": False,
    }
    assert resp.headers["location"] == "/v1/records/1"

    resp = await http.get(resp.headers["location"])
    assert resp.status_code == 200
    assert resp.json() == {
        "value": b64(b"a"),
        "offset": 1,
        "term": 0,
        "type": 7,
        "timestamp_ms": 1_000,
    }
    resp = await http.get("/v1/records/2")
    assert resp.json()["value"] == "" and resp.json()["type"] == 0
    resp = await http.get("/v1/records/3")
    assert base64.b64decode(resp.json()["value"]) == bytes(range(256))

    resp = await http.get("/v1/records/4")
    assert error_of(resp, 404, "OUT_OF_RANGE") == "offset out of range: 4"


async def test_fetch_a_range(http: httpx.AsyncClient) -> None:
    values = [f"r{i}".encode() for i in range(5)]
    resp = await http.post("/v1/records", json={"records": [{"value": b64(v)} for v in values]})
    assert resp.status_code == 201

    resp = await http.get("/v1/records", params={"offset": 1, "max_records": 2})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [base64.b64decode(r["value"]) for r in body["records"]] == values[1:3]
    assert [r["offset"] for r in body["records"]] == [1, 2]
    assert body["next_offset"] == 3 and body["high_watermark"] == 5

    resp = await http.get("/v1/records", params={"offset": 3})
    body = resp.json()
    assert [r["offset"] for r in body["records"]] == [3, 4]
    assert body["next_offset"] == 5

    # At the end without waiting: nothing, and where to ask next.
    resp = await http.get("/v1/records", params={"offset": 5})
    assert resp.json() == {"records": [], "next_offset": 5, "high_watermark": 5}
    # Past the end.
    resp = await http.get("/v1/records", params={"offset": 6})
    assert error_of(resp, 404, "OUT_OF_RANGE") == "offset out of range: 6"


async def test_fetch_long_polls_for_a_record_produced_while_waiting(
    agent: Agent, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert agent.service is not None
    service = agent.service
    waiting = asyncio.Event()
    wait_for_offset = service.wait_for_offset

    async def spy(offset: int, timeout: float | None) -> bool:
        waiting.set()  # the fetch reached the service and found nothing yet
        return await wait_for_offset(offset, timeout)

    monkeypatch.setattr(service, "wait_for_offset", spy)
    fetch = asyncio.create_task(http.get("/v1/records", params={"offset": 0, "wait_ms": 20_000}))
    await asyncio.wait_for(waiting.wait(), 10)
    assert not fetch.done()

    resp = await http.post("/v1/records", json={"records": [{"value": b64(b"late")}]})
    assert resp.status_code == 201

    resp = await asyncio.wait_for(fetch, 10)  # well before wait_ms
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [base64.b64decode(r["value"]) for r in body["records"]] == [b"late"]
    assert body["next_offset"] == 1 and body["high_watermark"] == 1


async def test_fetch_wait_times_out_empty(http: httpx.AsyncClient) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    resp = await http.get("/v1/records", params={"offset": 0, "wait_ms": 100})
    assert loop.time() - start >= 0.09
    assert resp.json() == {"records": [], "next_offset": 0, "high_watermark": 0}


async def test_info_offsets_and_servers(agent: Agent, http: httpx.AsyncClient) -> None:
    resp = await http.get("/v1/info")
    assert resp.status_code == 200
    info = resp.json()
    assert info["empty"] is True
    assert info["lowest_offset"] == 0 and info["next_offset"] == 0
    # Not 0, which is a first record's offset: null, as the client and the CLI say.
    assert info["highest_offset"] is None and info["commit_offset"] is None
    assert info["segment_count"] >= 1

    resp = await http.get("/v1/offsets", params={"timestamp_ms": 0})
    assert resp.json() == {"offset": 0, "found": False}

    records = [{"value": b64(b"x"), "timestamp_ms": ts} for ts in (1_000, 2_000, 3_000)]
    await http.post("/v1/records", json={"records": records})
    info = (await http.get("/v1/info")).json()
    assert info["empty"] is False
    assert (info["lowest_offset"], info["highest_offset"], info["next_offset"]) == (0, 2, 3)
    assert info["commit_offset"] == 2
    assert info["size_bytes"] > 0

    for ts, expected in [(0, 0), (1_000, 0), (1_500, 1), (3_000, 2)]:
        resp = await http.get("/v1/offsets", params={"timestamp_ms": ts})
        assert resp.json() == {"offset": expected, "found": True}, ts
    resp = await http.get("/v1/offsets", params={"timestamp_ms": 3_001})
    assert resp.json() == {"offset": 3, "found": False}

    resp = await http.get("/v1/servers")
    assert resp.status_code == 200
    assert resp.json() == {
        "servers": [
            {
                "id": agent.settings.node_name,
                "rpc_addr": agent.rpc_addr,
                "is_leader": True,
                "voter": True,
            }
        ]
    }


# -- errors -----------------------------------------------------------------------

GOOD = b64(b"ok")


@pytest.mark.parametrize(
    ("method", "path", "request_kwargs", "expected"),
    [
        (
            "POST",
            "/",
            {"json": {"record": {"value": "not base64!"}}},
            "record.value: invalid base64",
        ),
        ("POST", "/", {"json": {"record": {"value": "YQ"}}}, "record.value: invalid base64"),
        ("POST", "/", {"json": {"record": {}}}, "body.record.value: Field required"),
        ("POST", "/", {"json": {"value": GOOD}}, "body.record: Field required"),
        ("POST", "/", {"json": {"record": {"value": 5}}}, "must be a base64 string"),
        ("POST", "/", {"json": {"record": {"value": GOOD, "type": "x"}}}, "record.type"),
        ("POST", "/", {"json": {"record": {"value": GOOD, "type": True}}}, "record.type"),
        ("POST", "/", {"json": {"record": {"value": GOOD, "type": "1"}}}, "record.type"),
        ("POST", "/", {"json": {"record": {"value": GOOD, "type": 1.5}}}, "record.type"),
        ("POST", "/", {"json": {"record": {"value": GOOD, "type": -1}}}, "record.type"),
        ("POST", "/", {"json": {"record": {"value": GOOD, "type": 2**32}}}, "record.type"),
        ("POST", "/", {"json": {"record": {"value": GOOD, "timestamp_ms": -1}}}, "timestamp_ms"),
        ("POST", "/", {"json": {"record": {"value": GOOD, "timestamp_ms": 2**63}}}, "timestamp"),
        ("POST", "/", {"content": '{"record": '}, "body is not valid JSON"),
        ("POST", "/", {}, "body: Field required"),
        ("GET", "/", {}, "body: Field required"),
        ("GET", "/", {"json": {"offset": -1}}, "body.offset"),
        ("GET", "/", {"json": {"offset": "one"}}, "body.offset"),
        ("GET", "/", {"json": {"offset": "0"}}, "body.offset"),
        ("GET", "/", {"json": {"offset": False}}, "body.offset"),
        ("POST", "/v1/records", {"json": {"records": []}}, "body.records"),
        ("POST", "/v1/records", {"json": {"records": {"value": GOOD}}}, "body.records"),
        (
            "POST",
            "/v1/records",
            {"json": {"records": [{"value": GOOD}, {"value": "@@@="}]}},
            "body.records[1].value: invalid base64",
        ),
        ("POST", "/v1/records", {"content": b"records=1"}, "body is not valid JSON"),
        ("POST", "/v1/records", {"content": b'"records"'}, "body must be a JSON object"),
        ("POST", "/", {"content": b'{"record": \xff}'}, "body is not valid JSON: it must be UTF-8"),
        ("POST", "/v1/records", {"content": b"[" * 100_000}, "malformed JSON: nesting too deep"),
        ("GET", "/", {"content": b'{"offset": ' * 100_000}, "malformed JSON: nesting too deep"),
        ("POST", "/v1/records", {"json": {"records": [{"value": [[[[[]]]]]}]}}, "base64 string"),
        ("GET", "/v1/records", {}, "query.offset: Field required"),
        ("GET", "/v1/records", {"params": {"offset": "abc"}}, "query.offset"),
        ("GET", "/v1/records", {"params": {"offset": 0, "wait_ms": -5}}, "query.wait_ms"),
        ("GET", "/v1/records/-1", {}, "path.offset"),
        ("GET", "/v1/records/x", {}, "path.offset"),
        ("GET", "/v1/offsets", {}, "query.timestamp_ms: Field required"),
    ],
)
async def test_malformed_requests_are_400(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    request_kwargs: dict[str, Any],
    expected: str,
) -> None:
    resp = await http.request(method, path, **request_kwargs)
    assert expected in error_of(resp, 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert await next_offset(http) == 0  # nothing written


async def test_too_large_is_413_and_nothing_written(http: httpx.AsyncClient) -> None:
    await http.post("/", json={"record": {"value": b64(b"before")}})
    info = (await http.get("/v1/info")).json()
    big = b64(b"x" * (MAX_RECORD_BYTES + 1))

    resp = await http.post("/", json={"record": {"value": big}})
    error = error_body(resp, 413, "INVALID_ARGUMENT", "RECORD_TOO_LARGE")
    message = error["message"]
    assert f"{MAX_RECORD_BYTES + 1} bytes exceeds the limit of {MAX_RECORD_BYTES}" in message
    size, limit = str(MAX_RECORD_BYTES + 1), str(MAX_RECORD_BYTES)
    assert error["metadata"] == {"size": size, "limit": limit}
    # Batches are all or nothing: the small record is not written either.
    resp = await http.post("/v1/records", json={"records": [{"value": GOOD}, {"value": big}]})
    error = error_body(resp, 413, "INVALID_ARGUMENT", "RECORD_TOO_LARGE")
    assert "record 1 of" in error["message"]
    assert error["metadata"] == {"size": size, "limit": limit, "index": "1"}
    assert (await http.get("/v1/info")).json() == info

    # The limit itself is fine.
    resp = await http.post("/", json={"record": {"value": b64(b"x" * MAX_RECORD_BYTES)}})
    assert resp.json() == {"offset": 1}


async def test_body_over_the_limit_is_413(agent: Agent) -> None:
    # Declared, not sent: the gateway refuses before reading a byte of it.
    assert agent.service is not None
    limit = max_body_bytes(agent.service.max_record_bytes)
    host, port = agent.http_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST /v1/records HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {limit + 1}\r\n\r\n".encode()
        )
        await writer.drain()
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        status, *header_lines = head.strip().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in header_lines)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    finally:
        writer.close()
    assert status.startswith("HTTP/1.1 413 ")
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "error": {
            "code": "INVALID_ARGUMENT",
            "reason": "REQUEST_TOO_LARGE",
            "message": f"request body is larger than {limit} bytes",
            "metadata": {"limit": str(limit)},
        }
    }


async def test_body_limit_counts_undeclared_bodies() -> None:
    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        body = (await receive())["body"]
        await Response(body, media_type="text/plain")(scope, receive, send)

    async def chunked(size: int) -> AsyncIterator[bytes]:
        for _ in range(size):
            yield b"x"

    transport = httpx.ASGITransport(app=limit_body(echo, max_bytes=10))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        resp = await client.post("/", content=chunked(10))
        assert resp.text == "x" * 10
        resp = await client.post("/", content=chunked(11))
        assert error_of(resp, 413, "INVALID_ARGUMENT") == "request body is larger than 10 bytes"


async def test_unknown_routes_and_methods_are_json(http: httpx.AsyncClient) -> None:
    resp = await http.get("/no/such/route")
    assert error_of(resp, 404, "NOT_FOUND", "NOT_FOUND") == "Not Found: GET /no/such/route"
    resp = await http.delete("/v1/info")
    message = error_of(resp, 405, "METHOD_NOT_ALLOWED", "METHOD_NOT_ALLOWED")
    assert message == "Method Not Allowed: DELETE /v1/info"
    assert resp.headers["allow"] == "GET"


async def test_shutting_down_is_503(agent: Agent, http: httpx.AsyncClient) -> None:
    assert agent.service is not None
    agent.service.begin_shutdown()
    resp = await http.post("/", json={"record": {"value": GOOD}})
    assert error_of(resp, 503, "UNAVAILABLE", "SHUTTING_DOWN") == "server is shutting down"
    resp = await http.post("/v1/records", json={"records": [{"value": GOOD}]})
    assert error_of(resp, 503, "UNAVAILABLE") == "server is shutting down"


async def test_disk_full_is_507(
    agent: Agent, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert agent.log is not None

    def disk_full(*args: object, **kwargs: object) -> int:
        raise DiskFull("append: no space left on device")

    monkeypatch.setattr(agent.log, "append_batch", disk_full)
    resp = await http.post("/v1/records", json={"records": [{"value": GOOD}]})
    assert "disk is full" in error_of(resp, 507, "RESOURCE_EXHAUSTED", "DISK_FULL")


async def test_a_bug_is_a_json_500_without_details(
    agent: Agent, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert agent.service is not None

    def broken(offset: int) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(agent.service, "read", broken)
    resp = await http.get("/v1/records/0")
    assert error_of(resp, 500, "INTERNAL", "INTERNAL") == "internal error"


# -- the OpenAPI document -----------------------------------------------------------

ROUTES = {
    ("POST", "/"),
    ("GET", "/"),
    ("POST", "/v1/records"),
    ("GET", "/v1/records"),
    ("GET", "/v1/records/{offset}"),
    ("GET", "/v1/info"),
    ("GET", "/v1/offsets"),
    ("GET", "/v1/servers"),
}


async def test_openapi_document(http: httpx.AsyncClient) -> None:
    resp = await http.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI 3.1 meta-schema

    assert {(m.upper(), p) for p, item in doc["paths"].items() for m in item} == ROUTES
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            responses = op["responses"]
            assert "422" not in responses, (method, path)
            assert {"401", "403"} <= set(responses), (method, path)  # the agent's ACL
            if op.get("parameters") or "requestBody" in op:
                assert "400" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == error_ref
    for method, path in [("post", "/"), ("post", "/v1/records")]:
        assert {"400", "413", "503", "507"} <= set(doc["paths"][path][method]["responses"])
    for method, path in [("get", "/"), ("get", "/v1/records"), ("get", "/v1/records/{offset}")]:
        assert "404" in doc["paths"][path][method]["responses"]

    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for name in ("NewRecord", "Record"):
        value = schemas[name]["properties"]["value"]
        assert value["type"] == "string" and value["format"] == "byte"
    record = schemas["Record"]["properties"]
    for field in ("offset", "term", "type"):
        assert record[field]["type"] == "integer" and record[field]["minimum"] == 0
    new_type = schemas["NewRecord"]["properties"]["type"]
    assert (new_type["minimum"], new_type["maximum"]) == (0, 2**32 - 1)
    assert isinstance(new_type["maximum"], int)  # not FastAPI's 4294967295.0


# -- schemathesis: the app against its own document ----------------------------------
#
# Driven with plain Hypothesis over `APIOperation.as_strategy()`: the lazy
# `schemathesis.pytest.from_fixture` loader (needed to load the document from a
# node started by a fixture) fails under pytest 9.2 ("'Function' object has no
# attribute '_nodeid'"), and a document loaded at import time would need a node
# running at collection.

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]


@pytest.fixture(scope="module")
def gateway_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    with ServerProcess(data) as node:
        yield node


@pytest.fixture(scope="module")
def api_schema(gateway_node: ServerProcess) -> Any:
    schema = schemathesis.openapi.from_url(f"{gateway_node.http_url}/openapi.json")

    @schema.hook
    def map_query(ctx: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
        # Keep long-polls short; a value in range stays in range (and valid).
        wait = (query or {}).get("wait_ms")
        if query is not None and isinstance(wait, int) and 0 <= wait < 2**32:
            query["wait_ms"] = min(wait, 20)
        return query

    return schema


# Routes without parameters or a body have no invalid requests to generate.
NO_INPUT = {("GET", "/v1/info"), ("GET", "/v1/servers")}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
        for method, path in sorted(ROUTES)
        for mode in GenerationMode
        if mode.is_positive or (method, path) not in NO_INPUT
    ],
)
def test_api_conforms_to_its_openapi_document(
    api_schema: Any, gateway_node: ServerProcess, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    def check(case: Any) -> None:
        case.call_and_validate(base_url=gateway_node.http_url, checks=CHECKS, timeout=30)

    check()

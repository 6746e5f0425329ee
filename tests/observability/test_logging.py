"""Structured logs: JSON lines from a real `proglog serve`, and the pipeline in-process."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.observability import configure_logging
from pyproglog.testing import ServerProcess


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """Every line that is a JSON object; the readiness lines are plain text by design."""
    out = []
    for line in lines:
        if line.startswith("{"):
            out.append(json.loads(line))  # a line that starts like JSON must be JSON
    return out


def test_node_logs_one_json_object_per_line(tmp_path: Path) -> None:
    args = ["--log-format", "json", "--node-name", "obs-1", "--request-log-level", "info"]
    with ServerProcess(tmp_path / "data", args) as node:
        with grpc.insecure_channel(node.rpc_addr) as channel:
            stub = log_pb2_grpc.LogStub(channel)
            stub.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"hello")))
        assert node.stop() == 0  # the output is complete once the process is gone

    text = [line for line in node.output if line.strip()]
    assert any(line.startswith("proglog serving: grpc=") for line in text)
    lines = json_lines(text)
    assert lines, text
    for line in lines:
        assert {"level", "timestamp", "event", "node"} <= line.keys(), line
        assert line["node"] == "obs-1"
        assert datetime.fromisoformat(line["timestamp"]).tzinfo is not None

    [plaintext] = [x for x in lines if "gRPC serves plaintext" in x["event"]]
    assert plaintext["level"] == "warning"
    assert plaintext["logger"] == "pyproglog.agent"

    [produce] = [x for x in lines if x["event"] == "rpc" and x.get("method") == "Produce"]
    assert produce["level"] == "info"
    assert produce["code"] == "OK"
    assert produce["offset"] == 0
    assert produce["duration_ms"] >= 0
    assert produce["peer"].startswith(("ipv4:", "ipv6:"))
    assert "trace_id" not in produce  # tracing is off by default


# -- the pipeline in-process ------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
        structlog.reset_defaults()


def configured(fmt: str, node: str | None = "n1", level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, node, stream=stream)
    return stream


@pytest.mark.usefixtures("restore_logging")
def test_library_loggers_share_the_json_pipeline() -> None:
    out = configured("auto")  # not a terminal: JSON
    logging.getLogger("uvicorn.error").info("Uvicorn running", extra={"color_message": "x"})
    logging.getLogger("grpc._cython.cygrpc").warning("grpc says %s", "hi")
    logging.getLogger("pyproglog.server").info("produced", extra={"offset": 42})
    logging.getLogger("pyproglog.server").debug("below the level")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["logger"], x["event"], x["level"]) for x in lines] == [
        ("uvicorn.error", "Uvicorn running", "info"),
        ("grpc._cython.cygrpc", "grpc says hi", "warning"),
        ("pyproglog.server", "produced", "info"),
    ]
    assert all(x["node"] == "n1" for x in lines)
    assert "color_message" not in lines[0]  # uvicorn's ANSI copy of the message
    assert lines[2]["offset"] == 42


@pytest.mark.usefixtures("restore_logging")
def test_structlog_loggers_and_bound_context_reach_the_same_handler() -> None:
    out = configured("json")
    structlog.contextvars.bind_contextvars(method="Fetch")
    try:
        structlog.get_logger("pyproglog.test").info("fetched", records=3)
    finally:
        structlog.contextvars.unbind_contextvars("method")
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "fetched"
    assert line["records"] == 3
    assert line["method"] == "Fetch"
    assert line["node"] == "n1"
    assert line["level"] == "info"


@pytest.mark.usefixtures("restore_logging")
def test_exceptions_are_one_json_line() -> None:
    out = configured("json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("pyproglog.server").exception("internal error")
    [line] = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["level"] == "error"
    assert "RuntimeError: boom" in line["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_lines_inside_a_trace_carry_its_ids() -> None:
    out = configured("json")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("pyproglog.server").info("inside")
    logging.getLogger("pyproglog.server").info("outside")
    inside, outside = (json.loads(x) for x in out.getvalue().splitlines())
    ctx = span.get_span_context()
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert "trace_id" not in outside


@pytest.mark.usefixtures("restore_logging")
def test_console_format_is_for_people() -> None:
    out = configured("console")
    logging.getLogger("pyproglog.agent").warning("gRPC serves plaintext: no TLS configured")
    text = out.getvalue()
    assert "gRPC serves plaintext" in text
    assert "warning" in text and "node=n1" in text
    assert not text.lstrip().startswith("{")


@pytest.mark.usefixtures("restore_logging")
def test_configuring_twice_replaces_our_handler_only() -> None:
    root = logging.getLogger()
    others = [h for h in root.handlers]
    configured("json")
    second = configured("json")
    assert len(root.handlers) == len(others) + 1
    logging.getLogger("x").warning("once")
    assert len(second.getvalue().splitlines()) == 1

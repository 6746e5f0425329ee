"""Helpers for the observability tests: in-process nodes, /metrics scrapes, the request log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyproglog.agent import Agent
from pyproglog.observability import Tracing
from pyproglog.observability.grpc_interceptor import REQUEST_LOGGER
from pyproglog.testing import started_agent


@asynccontextmanager
async def running_agent(
    tmp_path: Path, tracing: Tracing | None = None, **overrides: Any
) -> AsyncIterator[Agent]:
    """A node in the test's loop on free ports; tracing off unless given."""
    settings = {"data_dir": tmp_path / "data", "rpc_port": 0, "http_addr": "127.0.0.1:0"}
    async with started_agent(
        {**settings, **overrides}, tracing=tracing if tracing is not None else Tracing()
    ) as node:
        yield node


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http_url: str) -> Samples:
    """GET /metrics over HTTP and parse it with prometheus_client's parser."""
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{http_url}/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not exported yet (a counter never incremented)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class RequestLog(logging.Handler):
    """Collects request log records; lets a test wait until a call has been fully accounted.

    The interceptor writes the request line after it counted and traced the
    call, so once the line is here the metrics and spans are final: no sleeping.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def find(self, method: str, code: str) -> logging.LogRecord | None:
        for rec in self.records:
            if getattr(rec, "method", None) == method and getattr(rec, "code", None) == code:
                return rec
        return None

    async def wait_for(self, method: str, code: str) -> logging.LogRecord:
        async def wait() -> logging.LogRecord:
            while (rec := self.find(method, code)) is None:
                self._changed.clear()
                await self._changed.wait()
            return rec

        # The timeout only bounds a failing test; passing never depends on it.
        return await asyncio.wait_for(wait(), 30)


@pytest.fixture
def request_log() -> Iterator[RequestLog]:
    logger = logging.getLogger(REQUEST_LOGGER)
    old_level = logger.level
    handler = RequestLog()
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

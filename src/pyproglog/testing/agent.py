"""A node in the caller's event loop: fast, and its internals are at hand."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from pyproglog.agent import Agent
from pyproglog.config import Settings
from pyproglog.observability import Tracing


@asynccontextmanager
async def started_agent(
    settings: Mapping[str, Any], *, tracing: Tracing | None = None
) -> AsyncIterator[Agent]:
    """A started node from settings as `Settings.load` takes them; stopped (drained) on exit."""
    node = Agent(Settings.load(dict(settings)), tracing=tracing)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()

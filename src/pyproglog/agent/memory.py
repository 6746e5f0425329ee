"""Giving freed memory back to the system after streams end.

What a stream held (records read for it, the messages grpc had not sent) is
freed when the stream ends, but glibc keeps freed heap memory for reuse: after
hundreds of abandoned streams the node would stay at its peak RSS until the
process restarts. `malloc_trim(0)` returns the free pages; it is asked for at
most once per `interval` seconds, a while after streams ended, off the loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

_log = logging.getLogger("pyproglog.agent")


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryReleaser:
    """Calls `malloc_trim(0)` a little after streams end, at most once per `interval`."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._trim = _load_malloc_trim()
        self._scheduled: asyncio.TimerHandle | None = None
        self._running: asyncio.Task[None] | None = None

    def stream_ended(self) -> None:
        """From the loop: a stream ended; schedule a trim unless one is pending."""
        if self._trim is None or self._scheduled is not None:
            return
        loop = asyncio.get_running_loop()
        self._scheduled = loop.call_later(self.interval, self._start)

    def _start(self) -> None:
        self._scheduled = None
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        trim = self._trim
        assert trim is not None
        await asyncio.to_thread(trim, 0)

    async def close(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._running is not None:
            await self._running

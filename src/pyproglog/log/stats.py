"""Counters the log keeps about itself, read by the metrics layer at scrape time.

The log imports nothing above it, so instead of calling a metrics library it
counts here; observability turns these into Prometheus metrics. The optional
`sync_hook` lets a tracer wrap each fsync in a span without the log knowing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field


def _no_hook() -> AbstractContextManager[None]:
    return contextlib.nullcontext()


@dataclass(slots=True)
class LogStats:
    syncs: int = 0
    # Durations of recent syncs, drained by the metrics layer into a histogram.
    recent_sync_seconds: list[float] = field(default_factory=list)
    sync_hook: Callable[[], AbstractContextManager[None]] = _no_hook

    def record_sync(self, seconds: float) -> None:
        self.syncs += 1
        if len(self.recent_sync_seconds) < 10_000:
            self.recent_sync_seconds.append(seconds)

    def drain_sync_durations(self) -> list[float]:
        out, self.recent_sync_seconds = self.recent_sync_seconds, []
        return out

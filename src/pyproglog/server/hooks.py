"""What the service reports as it works, told to hooks it is given (metrics, tracing).

Declared here, by their consumer: observability implements them and the
service imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["AppendTracer", "ServiceObserver"]


class ServiceObserver(Protocol):
    """What the service reports for metrics; observability implements it, core imports none."""

    def on_produced(self, records: int, nbytes: int) -> None: ...
    def on_consumed(self, records: int, nbytes: int) -> None: ...
    def on_append_batch(self, records: int) -> None: ...


class AppendTracer(Protocol):
    """Tracing of group commits, without core knowing the tracing library.

    `capture()` runs in each producer's context and returns an opaque handle
    (its current span); `append_scope` wraps the one log append that commits
    those producers.
    """

    def capture(self) -> object: ...
    def append_scope(
        self, records: int, origins: Sequence[object]
    ) -> AbstractContextManager[object]: ...

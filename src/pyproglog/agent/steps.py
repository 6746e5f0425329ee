"""Ordered start and stop: the book's agent `New` / `Shutdown` shape.

A node is a list of named steps. `start` runs them in order; `stop` tears the
started ones down in reverse, in two passes: first every `drain` (quick
announcements that stop new work coming in: health NOT_SERVING, refuse
produces, end tailing streams; they must not wait), then every `stop` (which
may wait, within the shutdown grace). Splitting the passes lets a front end
wait for its in-flight calls after the core below it has already ended its
tailing streams, whatever the order of the steps.

A step that fails to start is stopped too, so each `stop` must tolerate a
partial start; then the ones before it, in reverse, and the error propagates.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

_log = logging.getLogger("pyproglog.agent")

Hook = Callable[[], Awaitable[None]]


async def nothing() -> None:
    return None


@dataclass(frozen=True)
class Step:
    name: str
    start: Hook
    stop: Hook = nothing
    drain: Hook = nothing


class Steps:
    """Runs steps in order and tears down, in reverse, the ones that started."""

    def __init__(self, steps: Sequence[Step]) -> None:
        names = [step.name for step in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names repeat: {names}")
        self.steps = tuple(steps)
        # Steps whose start was called (the failed one included), in start order.
        self.started: list[Step] = []

    async def start(self) -> None:
        """Start every step in order; on a failure, stop what started and re-raise."""
        for step in self.steps:
            self.started.append(step)
            _log.debug("start step: %s", step.name)
            try:
                await step.start()
            except BaseException:
                # The start error is the one to report; stop logs its own failures.
                with contextlib.suppress(Exception):
                    await self.stop()
                raise

    async def stop(self) -> None:
        """Drain, then stop, the started steps in reverse. Idempotent."""
        started, self.started = self.started, []
        failure: Exception | None = None
        passes = [[(f"drain {s.name}", s.drain) for s in reversed(started)]]
        passes.append([(f"stop {s.name}", s.stop) for s in reversed(started)])
        for what, hook in itertools.chain.from_iterable(passes):
            _log.debug("%s", what)
            try:
                await hook()
            except Exception as exc:  # the steps below still release what they hold
                _log.error("%s failed: %s", what, exc)
                failure = failure or exc
        if failure is not None:
            raise failure

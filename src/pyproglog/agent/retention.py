"""Retention on a clock: the log applies retention when it rolls, an idle log never rolls."""

from __future__ import annotations

import asyncio
import logging

from pyproglog.log import Log, LogError

_log = logging.getLogger("pyproglog.agent")

_PERIOD_SECONDS = 60.0


async def apply_retention_periodically(log: Log) -> None:
    """Until cancelled: every period, drop the segments past the retention limits."""
    while True:
        await asyncio.sleep(_PERIOD_SECONDS)
        try:
            removed = await asyncio.to_thread(log.apply_retention)
        except LogError as exc:
            _log.error("retention pass failed: %s", exc)
            continue
        if removed:
            _log.info("retention removed %d segment(s)", removed)

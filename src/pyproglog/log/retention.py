"""Retention: whole sealed segments go, oldest first, past the configured limits."""

from __future__ import annotations

import logging
import os

from pyproglog.log.config import LogConfig
from pyproglog.log.segment import Segment

_log = logging.getLogger("pyproglog.log")


def remove_oldest(segments: list[Segment], bases: list[int]) -> None:
    """Remove the oldest segment (store file first: a crash part-way leaves no
    store behind to bring it back). Never the active one: callers keep two."""
    seg = segments.pop(0)
    bases.pop(0)
    seg.remove()


def apply(segments: list[Segment], bases: list[int], config: LogConfig, now_ms: int) -> int:
    """Delete old sealed segments past `retention_bytes` / `retention_ms`; how many went.

    The first remaining segment's store header still knows the (consensus
    index, term) of the entry before its first record.
    """
    removed = 0
    if config.retention_bytes is not None:
        total = sum(s.size for s in segments)
        while len(segments) > 1 and total > config.retention_bytes:
            total -= segments[0].size
            remove_oldest(segments, bases)
            removed += 1
    if config.retention_ms is not None:
        horizon = now_ms - config.retention_ms
        while len(segments) > 1 and segments[0].watermark_ms() < horizon:
            remove_oldest(segments, bases)
            removed += 1
    return removed


def configured(config: LogConfig) -> bool:
    return config.retention_bytes is not None or config.retention_ms is not None


def free_space(segments: list[Segment], bases: list[int], config: LogConfig, now_ms: int) -> bool:
    """Retention now, because an append hit a full disk; whether a segment went."""
    if not configured(config):
        return False
    removed = apply(segments, bases, config, now_ms)
    _log.warning(
        "disk full in %s: retention removed %d segment(s)%s",
        os.path.dirname(segments[-1].store.path),
        removed,
        ", retrying the append" if removed else "",
    )
    return removed > 0

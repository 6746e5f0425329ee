"""Opening a log directory: which files are segments, which are sealed, what is lost.

Never deletes or shrinks a segment, and never touches a file the log did not
write (see docs/storage.md, "Recovery on open").
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable

from pyproglog.log.config import LogConfig, SyncPolicy
from pyproglog.log.errors import DiskFull, MissingRecords
from pyproglog.log.files import sync_directory
from pyproglog.log.format import INDEX_ENTRY_WIDTH, STORE_HEADER_SIZE
from pyproglog.log.segment import STORE_SUFFIX, Segment, segment_paths

_log = logging.getLogger("pyproglog.log")

# The only names the log takes for its files (see segment_paths).
_SEGMENT_FILE = re.compile(r"(\d{20})\.(store|index|timeindex)")
_SEGMENT_SUFFIXES = (STORE_SUFFIX, ".index", ".timeindex")


def last_entry(seg: Segment) -> tuple[int, int]:
    """(consensus index, term) of the last entry up to the end of `seg`."""
    if seg.is_empty:
        return seg.entry_before
    return seg.last_consensus_index, seg.last_term


def open_segments(
    directory: str, config: LogConfig, new_segment: Callable[[int, tuple[int, int]], Segment]
) -> list[Segment]:
    """Open every segment in `directory` (a new one at initial_offset if none).

    Only files named `<20 digits>.store` are segments. Anything else that
    looks like one (`x.store`, `0.store`, a `.store.bak` copy) is left as it
    is, with a warning. A store file that holds nothing (no frames, no index
    entries) is the active segment when it follows the last one, and is
    otherwise ignored the same way: it is not a segment the log wrote.
    Every segment but the last is sealed at the base of the next, so damage
    in one never changes where another begins; offsets no segment holds
    (a store file that went missing, a damaged tail) read as lost.
    """
    bases: list[int] = []
    for name in sorted(os.listdir(directory)):
        m = _SEGMENT_FILE.fullmatch(name)
        if m is not None:
            if m.group(2) == "store":
                bases.append(int(m.group(1)))
        elif any(suffix in name for suffix in _SEGMENT_SUFFIXES):
            _log.warning(
                "ignoring %s in %s: not a segment file name (<20 digits>.store); left as it is",
                name,
                directory,
            )
    holding = [b for b in bases if not _holds_nothing(directory, b)]
    for orphan in orphan_bases(directory):
        if orphan > max(bases, default=-1):
            # Not reopened: truncate_after removes a dropped segment store
            # first, and a crash after that leaves the same files.
            _log.warning(
                "%s has no store file: if that was the active segment's and "
                "it was lost, its offsets will be handed out again",
                segment_paths(directory, orphan)[1],
            )
    # After a roll and a clean close the active segment is empty and the one
    # before it ends exactly at its base: that one is sealed too (opened
    # without growing its index), when its clean index says so.
    empty_active = bases[-1] if bases and bases[-1] not in holding else None
    segments: list[Segment] = []
    before = (0, 0)  # only for a store file whose header a crash cut short
    try:
        for i, base in enumerate(holding):
            if i + 1 < len(holding):
                sealed_end: int | None = holding[i + 1]
            elif empty_active is not None and _indexed(directory, base) == empty_active - base:
                sealed_end = empty_active
            else:
                sealed_end = None
            segments.append(Segment(directory, base, config, sealed_end, before))
            before = last_entry(segments[-1])
        for base in bases:
            if base in holding:
                continue
            end = segments[-1].next_offset if segments else None
            if base == bases[-1] and (end is None or base == end):
                # The empty active segment of the last roll (or of a new log).
                segments.append(Segment(directory, base, config, None, before))
            else:
                _log.warning(
                    "ignoring %s: an empty store file that does not follow the log "
                    "(next offset %s); left as it is",
                    segment_paths(directory, base)[0],
                    end,
                )
        # Only the active segment keeps room allocated past its frames (a
        # crash during a roll can leave a sealed one long): cut the others.
        for seg in segments[:-1]:
            seg.seal()
        if not segments:
            segments.append(new_segment(config.initial_offset, (0, 0)))
    except BaseException:
        for seg in segments:
            seg.close()
        raise
    return segments


def _indexed(directory: str, base: int) -> int:
    """Entries in a cleanly closed index file (its size says so); -1 otherwise."""
    try:
        size = os.path.getsize(segment_paths(directory, base)[1])
    except FileNotFoundError:
        return -1
    if size % INDEX_ENTRY_WIDTH:
        return -1
    return size // INDEX_ENTRY_WIDTH


def _holds_nothing(directory: str, base: int) -> bool:
    store, index, _ = segment_paths(directory, base)
    try:
        if os.path.getsize(store) > STORE_HEADER_SIZE:
            return False
        return os.path.getsize(index) == 0
    except FileNotFoundError:
        return True


def orphan_bases(directory: str) -> list[int]:
    """Bases of index files without their store file (a store that went missing)."""
    out = []
    for name in os.listdir(directory):
        m = _SEGMENT_FILE.fullmatch(name)
        if m is not None and m.group(2) == "index":
            base = int(m.group(1))
            if not os.path.exists(segment_paths(directory, base)[0]):
                out.append(base)
    return sorted(out)


def gap_error(directory: str, orphans: list[int], seg: Segment, nxt: Segment) -> MissingRecords:
    """The offsets between a sealed segment's last record and the next segment's base."""
    first, last = seg.next_offset, nxt.base_offset - 1
    missing = [base for base in orphans if seg.base_offset < base < nxt.base_offset]
    if missing:
        why = f"store file {segment_paths(directory, missing[0])[0]} is missing"
    else:
        why = f"segment {seg.base_offset} ({seg.store.path}) ends before them"
    return MissingRecords(seg.store.path, first, last, why)


def disk_full(exc: DiskFull, config: LogConfig) -> DiskFull:
    """`exc` with what a new segment needs and which settings lower it."""
    if "max_store_bytes" in str(exc):
        return exc
    return DiskFull(
        f"{exc}; a new segment needs {config.max_store_bytes + config.max_index_bytes} bytes "
        f"free (max_store_bytes={config.max_store_bytes} + max_index_bytes="
        f"{config.max_index_bytes}; `proglog serve --segment-max-store-bytes` / "
        f"`--segment-max-index-bytes` lower them, `--retention-bytes` / "
        f"`--retention-ms` let old segments go)",
        exc.errno,
    )


def new_segment(
    directory: str, config: LogConfig, base: int, entry_before: tuple[int, int]
) -> Segment:
    """Create the segment at `base`, its store pre-allocated (DiskFull here, never
    SIGBUS later) and, unless the policy is never, synced with its directory entry."""
    paths = segment_paths(directory, base)
    existed = [os.path.exists(path) for path in paths]
    seg: Segment | None = None
    try:
        seg = Segment(directory, base, config, None, entry_before)
        seg.activate()
        if config.sync_policy is not SyncPolicy.NEVER:
            seg.sync()
            sync_directory(directory)
    except BaseException as exc:
        # Leave nothing behind (e.g. when the disk is full): a stray store
        # file would be taken for a segment by the next open. Only what
        # this call created goes: a file that was there is not ours to delete.
        if seg is not None:
            with contextlib.suppress(Exception):  # the original error is the one to raise
                seg.close()
        for path, was in zip(paths, existed, strict=True):
            if not was:
                with contextlib.suppress(OSError):
                    os.remove(path)
        if isinstance(exc, DiskFull):
            raise disk_full(exc, config) from exc
        raise
    return seg

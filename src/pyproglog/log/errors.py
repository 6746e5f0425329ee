"""Typed errors of the storage engine. Nothing else escapes from `pyproglog.log`."""

from __future__ import annotations

import errno as _errno


class LogError(Exception):
    """Base class of every error the storage engine raises."""


class InvalidConfig(LogError, ValueError):
    """A configuration that cannot work, refused before anything is opened."""


class OffsetOutOfRange(LogError):
    """The offset is not in the log: past the end, or below the lowest retained offset."""

    def __init__(self, offset: int, lowest: int, next_offset: int) -> None:
        super().__init__(f"offset out of range: {offset}")
        self.offset = offset
        self.lowest = lowest
        self.next_offset = next_offset


class RecordTooLarge(LogError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class SegmentFull(LogError):
    """A segment was asked to take records it has no room for (the log rolls before this)."""

    def __init__(self, base_offset: int) -> None:
        super().__init__(f"segment {base_offset} is full")
        self.base_offset = base_offset


class LogClosed(LogError):
    def __init__(self) -> None:
        super().__init__("log is closed")


class CorruptSegment(LogError):
    """Bytes on disk that fail their checksum or do not describe the expected record."""

    def __init__(self, path: str, position: int, reason: str) -> None:
        super().__init__(f"corrupt data in {path} at byte {position}: {reason}")
        self.path = path
        self.position = position
        self.reason = reason


class MissingRecords(CorruptSegment):
    """Offsets inside the log that no segment holds any more (a store file went missing).

    A CorruptSegment, so callers that map "was here and is lost" (DATA_LOSS) need
    not tell the two apart.
    """

    def __init__(self, path: str, first: int, last: int, reason: str) -> None:
        what = f"offset {first} is" if first == last else f"offsets {first}..{last} are"
        LogError.__init__(self, f"{what} lost: {reason}")
        self.path = path
        self.position = 0
        self.reason = reason
        self.first = first
        self.last = last


class LogWriteError(LogError):
    """A write or sync failed; the append had no effect and the log still serves reads."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class DiskFull(LogWriteError):
    """No space left (ENOSPC/EDQUOT). Appends succeed again once space is freed."""


def write_error_from(exc: OSError, what: str) -> LogWriteError:
    if exc.errno in (_errno.ENOSPC, _errno.EDQUOT):
        return DiskFull(f"{what}: no space left on device", exc.errno)
    return LogWriteError(f"{what}: {exc.strerror or exc}", exc.errno)


class OutOfOrderSequence(LogError):
    """An idempotent producer's batch that does not follow the last one the log holds
    from it: appending it would reorder the producer's records. Nothing was written;
    the producer sends `expected` (and what follows) first."""

    def __init__(self, producer_id: int, sequence: int, expected: int) -> None:
        super().__init__(
            f"producer {producer_id:#x} sent batch {sequence}, but the log expects batch "
            f"{expected} from it next"
        )
        self.producer_id = producer_id
        self.sequence = sequence
        self.expected = expected


class DuplicateInFlight(LogError):
    """A retried batch whose first attempt is in the log but not committed yet: its
    offsets are not final, so they cannot be answered; retry shortly."""

    def __init__(self, producer_id: int, sequence: int) -> None:
        super().__init__(
            f"batch {sequence} of producer {producer_id:#x} is already being replicated; "
            "retry it to learn its offsets"
        )
        self.producer_id = producer_id
        self.sequence = sequence

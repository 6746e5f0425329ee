"""The storage engine: a crash-safe segmented commit log.

Imports nothing from the rest of pyproglog; everything above builds on it.
"""

from pyproglog.log.config import LogConfig, SyncPolicy
from pyproglog.log.errors import (
    CorruptSegment,
    DiskFull,
    InvalidConfig,
    LogClosed,
    LogError,
    LogWriteError,
    OffsetOutOfRange,
    RecordTooLarge,
)
from pyproglog.log.format import Record, RecordLike, decode_frames
from pyproglog.log.log import Log, LogInfo

__all__ = [
    "CorruptSegment",
    "DiskFull",
    "InvalidConfig",
    "Log",
    "LogClosed",
    "LogConfig",
    "LogError",
    "LogInfo",
    "LogWriteError",
    "OffsetOutOfRange",
    "Record",
    "RecordLike",
    "RecordTooLarge",
    "SyncPolicy",
    "decode_frames",
]

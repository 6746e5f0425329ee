"""The storage engine: a crash-safe segmented commit log.

Imports nothing from the rest of pyproglog; everything above builds on it.
"""

from pyproglog.log.config import LogConfig, SyncPolicy
from pyproglog.log.errors import (
    CorruptSegment,
    DiskFull,
    DuplicateInFlight,
    InvalidConfig,
    LogClosed,
    LogError,
    LogWriteError,
    MissingRecords,
    OffsetOutOfRange,
    OutOfOrderSequence,
    RecordTooLarge,
)
from pyproglog.log.format import Record, RecordLike
from pyproglog.log.log import Log, LogInfo
from pyproglog.log.producers import AppendPlan, Duplicate, ProducerBatch, Write
from pyproglog.log.ranges import EncodedRange

__all__ = [
    "AppendPlan",
    "CorruptSegment",
    "DiskFull",
    "Duplicate",
    "DuplicateInFlight",
    "EncodedRange",
    "InvalidConfig",
    "Log",
    "LogClosed",
    "LogConfig",
    "LogError",
    "LogInfo",
    "LogWriteError",
    "MissingRecords",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "ProducerBatch",
    "Record",
    "RecordLike",
    "RecordTooLarge",
    "SyncPolicy",
    "Write",
]

"""What can go wrong for a client, and how each failure reads on either transport.

One table (`error_status`) decides, for every error we expect, the gRPC code,
the HTTP status, the message and the structured part: a stable `reason` and
string metadata, sent as a `google.rpc.ErrorInfo` on gRPC and as
`error.reason` / `error.metadata` in HTTP bodies, so clients never parse
message text. The table names codes by their gRPC name (a string): this module
imports neither transport, and both front ends translate from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pyproglog.auth.errors import PermissionDenied, Unauthenticated
from pyproglog.log import (
    CorruptSegment,
    DiskFull,
    DuplicateInFlight,
    LogClosed,
    LogWriteError,
    MissingRecords,
    OffsetOutOfRange,
    OutOfOrderSequence,
    RecordTooLarge,
)

__all__ = [
    "DOMAIN",
    "INTERNAL",
    "Busy",
    "ErrorStatus",
    "InvalidArgument",
    "NoQuorum",
    "NotLeader",
    "PermissionDenied",
    "Reason",
    "RecordTooLarge",
    "ServiceError",
    "ShuttingDown",
    "Unauthenticated",
    "error_status",
    "record_too_large",
]

# ErrorInfo.domain: who defines the reasons below.
DOMAIN = "proglog.dev"


class Reason(StrEnum):
    """Stable machine-readable causes (ErrorInfo.reason); docs/api.md lists them."""

    OFFSET_OUT_OF_RANGE = "OFFSET_OUT_OF_RANGE"
    RECORD_TOO_LARGE = "RECORD_TOO_LARGE"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    DISK_FULL = "DISK_FULL"
    WRITE_FAILED = "WRITE_FAILED"
    DATA_LOSS = "DATA_LOSS"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    BUSY = "BUSY"
    NOT_LEADER = "NOT_LEADER"
    NO_QUORUM = "NO_QUORUM"
    OUT_OF_ORDER_SEQUENCE = "OUT_OF_ORDER_SEQUENCE"
    DUPLICATE_IN_FLIGHT = "DUPLICATE_IN_FLIGHT"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    INTERNAL = "INTERNAL"


class ServiceError(Exception):
    """Errors a client caused or must react to; each front end maps them to its status."""


class InvalidArgument(ServiceError):
    """Malformed input: nothing was written."""


class ShuttingDown(ServiceError):
    def __init__(self) -> None:
        super().__init__("server is shutting down")


class NotLeader(ServiceError):
    """This node cannot take writes; `leader_addr` is where to send them, when known."""

    def __init__(self, leader_addr: str | None = None) -> None:
        where = f"; the leader is {leader_addr}" if leader_addr else "; no leader is known"
        super().__init__(f"this node is not the leader{where}")
        self.leader_addr = leader_addr


class Busy(ServiceError):
    """The node cannot take this now but will soon (another membership change is
    being made): retry."""


class NoQuorum(ServiceError):
    """A cluster write that was not (or not known to be) committed: retry it.

    Its outcome may be unknown (the entry may still commit): a retry can then
    duplicate the records, which an idempotent producer prevents.
    """


def record_too_large(size: int, limit: int, index: int | None = None) -> RecordTooLarge:
    """The storage engine's RecordTooLarge (the one such error), naming the record of a batch.

    The engine checks the same limit again on append; the service checks first
    so that the error can say which record of a batch it was.
    """
    exc = RecordTooLarge(size, limit)
    if index is not None:
        exc.args = (f"record {index} of {size} bytes exceeds the limit of {limit} bytes",)
        exc.index = index  # type: ignore[attr-defined]
    return exc


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    code: str  # the gRPC status code's name, e.g. "OUT_OF_RANGE"
    http_status: int
    message: str
    reason: Reason
    metadata: dict[str, str] = field(default_factory=dict)


# A bug: nothing more is said to the client; the server logs the traceback.
INTERNAL = ErrorStatus("INTERNAL", 500, "internal error", Reason.INTERNAL)


def error_status(exc: BaseException) -> ErrorStatus | None:
    """The status for an error we expect; None for a bug (reported as INTERNAL)."""
    msg = str(exc)
    match exc:
        case OffsetOutOfRange():
            meta = {
                "offset": str(exc.offset),
                "lowest": str(exc.lowest),
                "next": str(exc.next_offset),
            }
            return ErrorStatus("OUT_OF_RANGE", 404, msg, Reason.OFFSET_OUT_OF_RANGE, meta)
        case RecordTooLarge():
            meta = {"size": str(exc.size), "limit": str(exc.limit)}
            index = getattr(exc, "index", None)
            if index is not None:
                meta["index"] = str(index)
            return ErrorStatus("INVALID_ARGUMENT", 413, msg, Reason.RECORD_TOO_LARGE, meta)
        case InvalidArgument():
            return ErrorStatus("INVALID_ARGUMENT", 400, msg, Reason.INVALID_ARGUMENT)
        case DiskFull():
            message = f"cannot append, disk is full: {msg}"
            return ErrorStatus("RESOURCE_EXHAUSTED", 507, message, Reason.DISK_FULL)
        case LogWriteError():
            return ErrorStatus("UNAVAILABLE", 503, f"cannot append: {msg}", Reason.WRITE_FAILED)
        case ShuttingDown() | LogClosed():
            message = "server is shutting down"
            return ErrorStatus("UNAVAILABLE", 503, message, Reason.SHUTTING_DOWN)
        case NotLeader():
            meta = {"leader_addr": exc.leader_addr} if exc.leader_addr else {}
            return ErrorStatus("UNAVAILABLE", 503, msg, Reason.NOT_LEADER, meta)
        case NoQuorum():
            return ErrorStatus("UNAVAILABLE", 503, msg, Reason.NO_QUORUM)
        case Busy():
            return ErrorStatus("UNAVAILABLE", 503, msg, Reason.BUSY)
        case OutOfOrderSequence():
            meta = {
                "producer_id": str(exc.producer_id),
                "sequence": str(exc.sequence),
                "expected_sequence": str(exc.expected),
            }
            return ErrorStatus("FAILED_PRECONDITION", 409, msg, Reason.OUT_OF_ORDER_SEQUENCE, meta)
        case DuplicateInFlight():
            meta = {"producer_id": str(exc.producer_id), "sequence": str(exc.sequence)}
            return ErrorStatus("UNAVAILABLE", 503, msg, Reason.DUPLICATE_IN_FLIGHT, meta)
        case MissingRecords():
            meta = {"first": str(exc.first), "last": str(exc.last)}
            return ErrorStatus("DATA_LOSS", 500, msg, Reason.DATA_LOSS, meta)
        case CorruptSegment():
            return ErrorStatus("DATA_LOSS", 500, msg, Reason.DATA_LOSS)
        case PermissionDenied():
            meta = {"subject": exc.subject, "action": exc.action, "object": exc.object}
            return ErrorStatus("PERMISSION_DENIED", 403, msg, Reason.PERMISSION_DENIED, meta)
        case Unauthenticated():
            return ErrorStatus("UNAUTHENTICATED", 401, msg, Reason.UNAUTHENTICATED)
    return None

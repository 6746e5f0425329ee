"""How service and storage errors appear on the wire: gRPC codes and HTTP statuses."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from pyproglog.auth.errors import PermissionDenied, Unauthenticated
from pyproglog.log import CorruptSegment, DiskFull, LogClosed, LogWriteError, OffsetOutOfRange
from pyproglog.server.core import InvalidRecord, RecordTooLarge, ShuttingDown

__all__ = ["ErrorStatus", "PermissionDenied", "Unauthenticated", "error_status"]


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    grpc_code: grpc.StatusCode
    http_status: int
    message: str


def error_status(exc: BaseException) -> ErrorStatus | None:
    """The status for an error we expect; None for a bug (reported as INTERNAL)."""
    msg = str(exc)
    match exc:
        case OffsetOutOfRange():
            return ErrorStatus(grpc.StatusCode.OUT_OF_RANGE, 404, msg)
        case RecordTooLarge():
            return ErrorStatus(grpc.StatusCode.INVALID_ARGUMENT, 413, msg)
        case InvalidRecord():
            return ErrorStatus(grpc.StatusCode.INVALID_ARGUMENT, 400, msg)
        case DiskFull():
            return ErrorStatus(
                grpc.StatusCode.RESOURCE_EXHAUSTED, 507, f"cannot append, disk is full: {msg}"
            )
        case LogWriteError():
            return ErrorStatus(grpc.StatusCode.UNAVAILABLE, 503, f"cannot append: {msg}")
        case ShuttingDown() | LogClosed():
            return ErrorStatus(grpc.StatusCode.UNAVAILABLE, 503, "server is shutting down")
        case CorruptSegment():
            return ErrorStatus(grpc.StatusCode.DATA_LOSS, 500, msg)
        case PermissionDenied():
            return ErrorStatus(grpc.StatusCode.PERMISSION_DENIED, 403, msg)
        case Unauthenticated():
            return ErrorStatus(grpc.StatusCode.UNAUTHENTICATED, 401, msg)
    return None

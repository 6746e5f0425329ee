"""A typed, synchronous client for one Proglog server, or routed over a cluster.

from pyproglog.client import Client

with Client("127.0.0.1:8400") as log:
    offset = log.produce(b"hello")
    print(log.consume(offset).value)

with Client(["10.0.0.1:8400", "10.0.0.2:8400"]) as log:  # writes to the leader,
    log.produce(b"hello")                                 # reads to the followers
"""

from pyproglog.client._client import DEFAULT_TIMEOUT, Client, RecordInput, Value
from pyproglog.client._errors import (
    Cancelled,
    ClientClosed,
    ClientError,
    DataLoss,
    DeadlineExceeded,
    InvalidArgument,
    OffsetOutOfRange,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    TLSConfigError,
    TLSProblem,
    Unauthenticated,
    Unavailable,
    Unreachable,
)
from pyproglog.client._tls import ClientTLS
from pyproglog.client._types import (
    FetchResult,
    LogInfo,
    Record,
    ReplicaState,
    Server,
    TimestampOffset,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "Cancelled",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientTLS",
    "DataLoss",
    "DeadlineExceeded",
    "FetchResult",
    "InvalidArgument",
    "LogInfo",
    "OffsetOutOfRange",
    "PermissionDenied",
    "Record",
    "RecordInput",
    "ReplicaState",
    "ResourceExhausted",
    "Server",
    "ServerError",
    "TLSConfigError",
    "TLSProblem",
    "TimestampOffset",
    "Unauthenticated",
    "Unavailable",
    "Unreachable",
    "Value",
]

"""A typed, synchronous client for one Proglog server, or routed over a cluster.

from pyproglog.client import Client

with Client("127.0.0.1:8400") as log:
    offset = log.produce(b"hello")
    print(log.consume(offset).value)

with Client(["10.0.0.1:8400", "10.0.0.2:8400"]) as log:  # writes to the leader,
    log.produce(b"hello")                                 # reads to the followers
"""

from pyproglog.client._aio import AsyncClient
from pyproglog.client._client import DEFAULT_TIMEOUT, Client, RecordInput, Value
from pyproglog.client._consumer import Consumer
from pyproglog.client._errors import (
    BufferFull,
    Cancelled,
    ClientClosed,
    ClientError,
    DataLoss,
    DeadlineExceeded,
    InvalidArgument,
    OffsetOutOfRange,
    OutOfOrderSequence,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    TLSConfigError,
    TLSProblem,
    Unauthenticated,
    Unavailable,
    Unreachable,
)
from pyproglog.client._producer import Producer
from pyproglog.client._tls import ClientTLS
from pyproglog.client._types import (
    BatchAck,
    FetchResult,
    LogInfo,
    Record,
    ReplicaState,
    Server,
    TimestampOffset,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "BatchAck",
    "BufferFull",
    "Cancelled",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientTLS",
    "Consumer",
    "DataLoss",
    "DeadlineExceeded",
    "FetchResult",
    "InvalidArgument",
    "LogInfo",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "PermissionDenied",
    "Producer",
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

"""The gateway's JSON wire types (pydantic): exact bounds, so the OpenAPI document is exact.

Record values travel as standard base64 (`format: byte`), as in the proto3 JSON
mapping, and the models carry the bounds of what is accepted (no negative
offsets, uint32 types and sizes, timestamps the log can store) so that clients
can be generated from /openapi.json.
"""

# No `from __future__ import annotations`: pydantic reads these annotations.
import base64
import binascii
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from pyproglog.log import Record as LogRecord

U32_MAX = 2**32 - 1

# Standard base64 with padding: exactly what `b64decode(validate=True)` accepts.
_BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _decode_base64(value: object) -> bytes:
    if isinstance(value, bytes):  # built in Python, not parsed from JSON
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("base64_type", "must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PydanticCustomError(
            "base64", "invalid base64 ({reason})", {"reason": str(exc)}
        ) from None


def _encode_base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


Base64Bytes = Annotated[
    bytes,
    PlainValidator(_decode_base64),
    PlainSerializer(_encode_base64, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "format": "byte",
            "pattern": _BASE64_PATTERN,
            "description": "The record's bytes, standard base64 with padding (RFC 4648 §4).",
        }
    ),
]


def _json_integer(value: object) -> object:
    """JSON Schema's integer: `1` or `1.0`, but not `true` or `"1"` (pydantic's lax mode
    takes those; its strict mode refuses `1.0`)."""
    if isinstance(value, bool | str | bytes):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


_JSON_INT = BeforeValidator(_json_integer)
Uint32 = Annotated[int, Field(ge=0, le=U32_MAX), _JSON_INT]
# No maximum: FastAPI renders schema bounds as floats, and 2**64 - 1 is not one.
# An offset past the end is answered 404 whatever its size.
Uint64 = Annotated[int, Field(ge=0), _JSON_INT]
# Stored as int64; produced timestamps are bounded to a date (9999-12-31) that
# is exact as a float, so the document says precisely what is accepted.
MAX_TIMESTAMP_MS = 253_402_300_799_999
NewTimestampMs = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP_MS), _JSON_INT]


class NewRecord(BaseModel):
    """A record to append. Any `offset` or `term` sent is ignored: the log assigns them."""

    value: Base64Bytes
    type: Uint32 = Field(default=0, description="Application-defined record type.")
    timestamp_ms: NewTimestampMs = Field(
        default=0, description="Milliseconds since the Unix epoch; 0 means the append time."
    )


class Record(BaseModel):
    """A record as stored in the log."""

    value: Base64Bytes
    offset: Uint64
    term: Uint64
    type: Uint32
    # Any int64: gRPC clients may store timestamps before 1970.
    timestamp_ms: int = Field(description="Milliseconds since the Unix epoch.")


class ProduceRequest(BaseModel):
    record: NewRecord


class ProduceResponse(BaseModel):
    offset: Uint64


class ConsumeRequest(BaseModel):
    offset: Uint64


class ConsumeResponse(BaseModel):
    record: Record


class ProduceBatchRequest(BaseModel):
    records: list[NewRecord] = Field(
        min_length=1, description="Appended atomically at contiguous offsets."
    )
    producer_id: Uint64 = Field(
        default=0,
        description="An idempotent producer's id (random, non-zero); 0: a plain write.",
    )
    sequence: Uint64 = Field(
        default=0, description="The producer's batch number: 0, 1, 2, ... (see docs/api.md)."
    )


class ProduceBatchResponse(BaseModel):
    base_offset: Uint64 = Field(description="Offset of the first record.")
    last_offset: Uint64 = Field(description="Offset of the last record.")
    count: Uint32
    offsets: list[Uint64] = Field(description="The offset of each record, in request order.")
    duplicate: bool = Field(
        default=False,
        description="The producer's batch was already in the log: these are its offsets.",
    )


class FetchResponse(BaseModel):
    records: list[Record]
    next_offset: Uint64 = Field(description="Where to fetch next.")
    high_watermark: Uint64 = Field(description="The log's highest offset + 1 when answering.")


class ReplicaState(BaseModel):
    id: str = Field(description="The member's node name.")
    rpc_addr: str = Field(description="Its client gRPC address (empty when not known yet).")
    voter: bool = Field(description="False for a learner, a new member still catching up.")
    match_index: Uint64 = Field(
        description="The highest Raft index known to be on the member; 0 when not known yet."
    )
    lag_entries: Uint64 = Field(
        description="Raft entries it is behind the leader (one entry per group-commit batch)."
    )


class LogInfoResponse(BaseModel):
    lowest_offset: Uint64
    # null, not 0, when empty: 0 is also the offset of a first record (same as
    # the Python client and the CLI; gRPC has `empty` since proto3 has no null).
    highest_offset: Uint64 | None = Field(
        description="Offset of the last record; null when the log is empty."
    )
    next_offset: Uint64 = Field(description="The offset the next produced record will get.")
    empty: bool
    segment_count: Uint32
    size_bytes: Uint64
    commit_offset: Uint64 | None = Field(
        description="Highest offset replicated to a quorum (a single node: highest_offset); "
        "null when the log is empty."
    )
    role: str = Field(
        description='This node\'s role: "leader", "follower", "candidate", "pre-candidate", '
        '"learner" (a non-voting member catching up), or "standalone" (a single node).',
        examples=["leader"],
    )
    term: Uint64 = Field(description="The node's current Raft term (0 when standalone).")
    leader_id: str | None = Field(
        description="The leader's node name; null when no leader is known (or standalone)."
    )
    leader_addr: str | None = Field(
        description="The leader's client gRPC address; null when not known."
    )
    replicas: list[ReplicaState] = Field(
        description="On the leader, every member (itself included) and how far behind it is; "
        "empty on any other node."
    )


class OffsetForTimestampResponse(BaseModel):
    offset: Uint64 = Field(
        description="First offset with timestamp >= the one asked for; when `found` is false, "
        "where the next record will go."
    )
    found: bool


class Server(BaseModel):
    id: str
    rpc_addr: str = Field(description="The client-facing gRPC address.")
    is_leader: bool
    voter: bool = Field(description="False for a learner, a new member still catching up.")


class ServersResponse(BaseModel):
    servers: list[Server]


class Error(BaseModel):
    code: str = Field(
        description="The gRPC status code name for the same failure (OUT_OF_RANGE, "
        "INVALID_ARGUMENT, UNAVAILABLE, RESOURCE_EXHAUSTED, ...), or the HTTP status name "
        "for routing errors (NOT_FOUND, METHOD_NOT_ALLOWED).",
        examples=["OUT_OF_RANGE"],
    )
    reason: str = Field(
        description="Why, as a stable name a program can test (the gRPC ErrorInfo reason; "
        "docs/api.md lists them).",
        examples=["OFFSET_OUT_OF_RANGE"],
    )
    message: str = Field(examples=["offset out of range: 42"])
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Facts a program needs, as strings (the gRPC ErrorInfo metadata), "
        "e.g. `offset`, `lowest`, `next` for OFFSET_OUT_OF_RANGE.",
        examples=[{"offset": "42", "lowest": "0", "next": "42"}],
    )


class ErrorResponse(BaseModel):
    error: Error


def to_record(rec: LogRecord) -> Record:
    return Record(
        value=rec.value,
        offset=rec.offset,
        term=rec.term,
        type=rec.type,
        timestamp_ms=rec.timestamp_ms,
    )


def to_log_record(rec: NewRecord) -> LogRecord:
    return LogRecord(value=rec.value, type=rec.type, timestamp_ms=rec.timestamp_ms)

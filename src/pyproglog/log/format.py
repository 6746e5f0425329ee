"""On-disk formats (see docs/storage.md). Pure functions over bytes; no I/O here.

Store file:  8-byte header `PLSTORE` + version byte, then frames back to back.
Frame:       u32 length | u32 crc32c | body            (little-endian)
Body:        u64 offset | u64 term | i64 timestamp_ms | u64 consensus_index | u32 type | value
`length` counts the body; the CRC-32C covers the body, so a torn or flipped
frame — header fields included — never decodes as a record.

Index file:      12-byte entries: u32 offset relative to the segment base | u64 store position.
Time index file: 12-byte entries: i64 max timestamp so far | u32 relative offset.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from crc32c import crc32c

STORE_MAGIC = b"PLSTORE\x01"
STORE_HEADER_SIZE = len(STORE_MAGIC)

FRAME_PREFIX = struct.Struct("<II")  # length, crc
BODY_HEADER = struct.Struct("<QQqQI")  # offset, term, timestamp_ms, consensus_index, type
FRAME_PREFIX_SIZE = FRAME_PREFIX.size
FRAME_OVERHEAD = FRAME_PREFIX.size + BODY_HEADER.size
MAX_BODY = 2**32 - 1

INDEX_ENTRY = struct.Struct("<IQ")
INDEX_ENTRY_WIDTH = INDEX_ENTRY.size
TIME_ENTRY = struct.Struct("<qI")
TIME_ENTRY_WIDTH = TIME_ENTRY.size

U64_MAX = 2**64 - 1


class RecordLike(Protocol):
    """What append accepts: our `Record`, or a `log.v1` protobuf Record as it is."""

    @property
    def value(self) -> bytes: ...
    @property
    def term(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def timestamp_ms(self) -> int: ...


@dataclass(slots=True)
class Record:
    value: bytes
    offset: int = 0
    term: int = 0
    type: int = 0
    # Milliseconds since the epoch; 0 on append means "now".
    timestamp_ms: int = 0


@dataclass(slots=True, frozen=True)
class EncodedBatch:
    data: bytearray
    positions: list[int]  # store position of each frame
    max_timestamp_ms: int


def encode_batch(
    records: Sequence[RecordLike],
    first_offset: int,
    start_position: int,
    now_ms: int,
    consensus_index: int,
) -> EncodedBatch:
    """Frames for `records` at consecutive offsets, as one buffer for one write.

    This loop is the append hot path: it keeps to a few C calls per record.
    """
    buf = bytearray()
    positions: list[int] = []
    pack_body = BODY_HEADER.pack
    pack_prefix = FRAME_PREFIX.pack
    body_size = BODY_HEADER.size
    overhead = FRAME_OVERHEAD
    pos = start_position
    offset = first_offset
    max_ts = -(2**63)
    for rec in records:
        value = rec.value
        ts = rec.timestamp_ms or now_ms
        if ts > max_ts:
            max_ts = ts
        body = pack_body(offset, rec.term, ts, consensus_index, rec.type)
        buf += pack_prefix(body_size + len(value), crc32c(value, crc32c(body)))
        buf += body
        buf += value
        positions.append(pos)
        pos += overhead + len(value)
        offset += 1
    return EncodedBatch(buf, positions, max_ts)


class FrameError(Exception):
    """Raised by the decoders; callers turn it into CorruptSegment or a torn-tail cut."""


def frame_length(prefix: bytes | memoryview) -> tuple[int, int]:
    """(body length, crc) from the 8-byte frame prefix."""
    length, crc = FRAME_PREFIX.unpack(prefix)
    if length < BODY_HEADER.size:
        raise FrameError(f"frame length {length} is shorter than the record header")
    return length, crc


def decode_body(body: bytes | memoryview, crc: int) -> tuple[Record, int]:
    """(record, consensus_index) from a frame body whose checksum must equal `crc`."""
    if crc32c(body) != crc:
        raise FrameError("checksum mismatch")
    offset, term, ts, cidx, rtype = BODY_HEADER.unpack_from(body)
    return Record(bytes(body[BODY_HEADER.size :]), offset, term, rtype, ts), cidx


def decode_frames(
    buf: bytes | memoryview, expected_offset: int | None = None
) -> tuple[list[Record], int]:
    """Every whole, valid frame at the start of `buf`: (records, bytes consumed).

    Stops at the first frame that is incomplete, fails its checksum or (when
    `expected_offset` is given) does not carry the next expected offset.
    """
    view = memoryview(buf)
    records: list[Record] = []
    pos = 0
    end = len(view)
    unpack_prefix = FRAME_PREFIX.unpack_from
    unpack_body = BODY_HEADER.unpack_from
    hdr = BODY_HEADER.size
    prefix = FRAME_PREFIX_SIZE
    while pos + prefix <= end:
        length, crc = unpack_prefix(view, pos)
        stop = pos + prefix + length
        if length < hdr or stop > end:
            break
        body = view[pos + prefix : stop]
        if crc32c(body) != crc:
            break
        offset, term, ts, _cidx, rtype = unpack_body(body)
        if expected_offset is not None:
            if offset != expected_offset:
                break
            expected_offset += 1
        records.append(Record(bytes(body[hdr:]), offset, term, rtype, ts))
        pos = stop
    return records, pos

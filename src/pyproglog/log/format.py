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

import functools
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

# Runs of index entries are packed and unpacked with one struct call each.
INDEX_RUN = 1024


@functools.lru_cache(maxsize=16)
def index_run(n: int) -> struct.Struct:
    """A struct for `n` consecutive index entries (n <= INDEX_RUN)."""
    return struct.Struct("<" + "IQ" * n)


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

    This loop is the append hot path: it keeps to a few C calls per record
    (header + value joined once, so one CRC call over the whole body).
    """
    buf = bytearray()
    positions: list[int] = []
    add_position = positions.append
    pack_body = BODY_HEADER.pack
    pack_prefix = FRAME_PREFIX.pack
    prefix_size = FRAME_PREFIX_SIZE
    pos = start_position
    offset = first_offset
    max_ts = -(2**63)
    for rec in records:
        ts = rec.timestamp_ms or now_ms
        if ts > max_ts:
            max_ts = ts
        body = pack_body(offset, rec.term, ts, consensus_index, rec.type) + rec.value
        size = len(body)
        buf += pack_prefix(size, crc32c(body))
        buf += body
        add_position(pos)
        pos += prefix_size + size
        offset += 1
    return EncodedBatch(buf, positions, max_ts)


def encode_frame_header(
    value: bytes, offset: int, term: int, timestamp_ms: int, consensus_index: int, rtype: int
) -> bytes:
    """The FRAME_OVERHEAD bytes that precede `value` in its frame (prefix + body header).

    For big values, which are then written as they are, not copied into a frame.
    """
    header = BODY_HEADER.pack(offset, term, timestamp_ms, consensus_index, rtype)
    return FRAME_PREFIX.pack(BODY_HEADER.size + len(value), crc32c(value, crc32c(header))) + header


class FrameError(Exception):
    """Raised by `decode_frame`; the segment turns it into CorruptSegment."""


def decode_frame(frame: bytes, expected_offset: int) -> Record:
    """The record in `frame`, which must be exactly one whole, valid frame for
    `expected_offset` (the random-read path: the index gives both ends)."""
    if len(frame) < FRAME_OVERHEAD:
        raise FrameError("frame shorter than a frame header")
    length, crc = FRAME_PREFIX.unpack_from(frame)
    if length < BODY_HEADER.size or len(frame) != FRAME_PREFIX_SIZE + length:
        raise FrameError("frame length does not match its index entries")
    # Small frames: slicing a copy is cheaper than making a view.
    body = frame[FRAME_PREFIX_SIZE:] if length <= 4096 else memoryview(frame)[FRAME_PREFIX_SIZE:]
    if crc32c(body) != crc:
        raise FrameError("checksum mismatch")
    offset, term, ts, _cidx, rtype = BODY_HEADER.unpack_from(frame, FRAME_PREFIX_SIZE)
    if offset != expected_offset:
        raise FrameError(f"frame holds offset {offset}, not {expected_offset}")
    return Record(frame[FRAME_OVERHEAD:], offset, term, rtype, ts)


def decode_frames(
    buf: bytes | memoryview, expected_offset: int | None = None
) -> tuple[list[Record], int]:
    """Every whole, valid frame at the start of `buf`: (records, bytes consumed).

    Stops at the first frame that is incomplete, fails its checksum or (when
    `expected_offset` is given) does not carry the next expected offset.
    """
    view = memoryview(buf)
    # From bytes, a slice is the value itself (one copy, no view objects), and
    # small bodies are checksummed from a slice too, which is cheaper than a view.
    as_bytes = type(buf) is bytes
    records: list[Record] = []
    add = records.append
    pos = 0
    end = len(view)
    unpack_prefix = FRAME_PREFIX.unpack_from
    unpack_body = BODY_HEADER.unpack_from
    hdr = BODY_HEADER.size
    prefix = FRAME_PREFIX_SIZE
    while pos + prefix <= end:
        length, crc = unpack_prefix(view, pos)
        start = pos + prefix
        stop = start + length
        if length < hdr or stop > end:
            break
        if crc32c(buf[start:stop] if as_bytes and length <= 4096 else view[start:stop]) != crc:
            break
        offset, term, ts, _cidx, rtype = unpack_body(view, start)
        if expected_offset is not None:
            if offset != expected_offset:
                break
            expected_offset += 1
        value = buf[start + hdr : stop] if as_bytes else bytes(view[start + hdr : stop])
        add(Record(value, offset, term, rtype, ts))  # type: ignore[arg-type]  # bytes: as_bytes
        pos = stop
    return records, pos

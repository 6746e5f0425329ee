"""On-disk formats, store format v2 (see docs/storage.md). Pure functions over bytes; no I/O.

Store file:  24-byte header: `PLSTORE` + version byte 0x02 | u64 consensus index | u64 term
             of the last entry before the segment's first record; then frames back to back.
Frame:       u32 length | u32 crc32c | body                                (little-endian)
Body:        engine header (44 bytes, fixed, little-endian):
                 u64 offset | u64 consensus_index | i64 timestamp_ms | u64 term | u32 type
                 | u32 records before this one in its entry | u32 records after it (0 ends it)
             then the record as a `repeated Record records = 1` field of a batch message:
                 0x0a len5 (0x10 off10 0x18 term10 0x20 type5 0x28 ts10 0x0a len5 value)
             `lenN`/`xxxN` are protobuf varints written at a fixed width of N bytes (a
             non-minimal encoding that protobuf parsers accept: varints may take up to 10
             bytes), and the value comes last (fields may come in any order). So every
             frame is FRAME_OVERHEAD + len(value) bytes, everything before the value is
             one struct, the value ends the frame, and the bytes from ENCODED_AT to the
             frame's end can be served as they are: concatenated, they are a
             `FetchResponse` holding the records.
`length` counts the body; the CRC-32C covers the body, so a torn or flipped
frame -- header fields included -- never decodes as a record.

Index file:      12-byte entries: u32 offset relative to the segment base | u64 store position.
Time index file: 12-byte entries: i64 max timestamp so far | u32 relative offset.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from crc32c import crc32c

STORE_MAGIC = b"PLSTORE\x02"
STORE_HEADER = struct.Struct("<8sQQ")  # magic, consensus index, term of the entry before
STORE_HEADER_SIZE = STORE_HEADER.size

FRAME_PREFIX = struct.Struct("<II")  # length, crc
FRAME_PREFIX_SIZE = FRAME_PREFIX.size
# offset, consensus_index, timestamp_ms, term, type, entry_pos, entry_more
ENGINE_HEADER = struct.Struct("<QQqQIII")
ENGINE_HEADER_SIZE = ENGINE_HEADER.size
# Everything before the value: the engine header, then the Record field's tag and
# length, offset (1 + 10), term (1 + 10), type (1 + 5), timestamp (1 + 10) and
# the value's tag and length.
_FRAME_HEAD = struct.Struct("<QQqQIII6sBB37s6s")
# Where the served bytes (`0x0a len5 Record`) begin in a frame, and where the value does.
ENCODED_AT = FRAME_PREFIX_SIZE + ENGINE_HEADER_SIZE
VALUE_AT = FRAME_PREFIX_SIZE + _FRAME_HEAD.size
PB_OVERHEAD = VALUE_AT - ENCODED_AT  # what the served bytes add to a value
FRAME_OVERHEAD = VALUE_AT
BODY_OVERHEAD = FRAME_OVERHEAD - FRAME_PREFIX_SIZE
MAX_BODY = 2**32 - 1

INDEX_ENTRY = struct.Struct("<IQ")
INDEX_ENTRY_WIDTH = INDEX_ENTRY.size
TIME_ENTRY = struct.Struct("<qI")
TIME_ENTRY_WIDTH = TIME_ENTRY.size

U64_MAX = 2**64 - 1

# Runs of index entries are packed and unpacked with one struct call each.
INDEX_RUN = 1024
# A batch is handed to the store in pieces of about this size (see encode_batch).
WRITE_PIECE = 1024 * 1024
# Values from this size on are handed over as they are (no copy into a frame buffer).
BIG_VALUE = 8 * 1024


@functools.lru_cache(maxsize=16)
def index_run(n: int) -> struct.Struct:
    """A struct for `n` consecutive index entries (n <= INDEX_RUN)."""
    return struct.Struct("<" + "IQ" * n)


# -- fixed-width protobuf varints ------------------------------------------------


def varint5(n: int) -> bytes:
    """`n` (< 2**35) as a 5-byte varint."""
    return bytes(
        (
            n & 0x7F | 0x80,
            n >> 7 & 0x7F | 0x80,
            n >> 14 & 0x7F | 0x80,
            n >> 21 & 0x7F | 0x80,
            n >> 28,
        )
    )


def varint10(n: int) -> bytes:
    """`n` as a 10-byte varint; negative numbers as their 64-bit two's complement (int64)."""
    n &= U64_MAX
    return bytes(
        (
            n & 0x7F | 0x80,
            n >> 7 & 0x7F | 0x80,
            n >> 14 & 0x7F | 0x80,
            n >> 21 & 0x7F | 0x80,
            n >> 28 & 0x7F | 0x80,
            n >> 35 & 0x7F | 0x80,
            n >> 42 & 0x7F | 0x80,
            n >> 49 & 0x7F | 0x80,
            n >> 56 & 0x7F | 0x80,
            n >> 63,
        )
    )


@functools.lru_cache(maxsize=64)
def _high9(h: int) -> bytes:
    """Bytes 2..10 of the 10-byte varint of any n with n >> 7 == h."""
    return varint10(h << 7)[1:]


@functools.lru_cache(maxsize=4096)
def _lengths(vlen: int) -> tuple[bytes, bytes]:
    """The Record field's tag and length, and the value's, for a value of `vlen` bytes."""
    return b"\x0a" + varint5(vlen + PB_OVERHEAD - 6), b"\x0a" + varint5(vlen)


@functools.lru_cache(maxsize=256)
def _fields(term: int, rtype: int, timestamp_ms: int) -> bytes:
    """The term, type and timestamp fields (28 bytes): they change rarely."""
    return b"\x18" + varint10(term) + b"\x20" + varint5(rtype) + b"\x28" + varint10(timestamp_ms)


def _high_tail(high: int, term: int, rtype: int, timestamp_ms: int) -> bytes:
    """Bytes 2..10 of the offset's varint (any offset with offset >> 7 == high),
    then the term, type and timestamp fields."""
    return _high9(high) + _fields(term, rtype, timestamp_ms)


# -- records ---------------------------------------------------------------------


class RecordLike(Protocol):
    """What append accepts: our `Record`, or a `log.v1` protobuf Record as it is.

    Its `term` and `offset` are never stored: the log assigns the offset and the
    caller of `append_batch` stamps the term.
    """

    @property
    def value(self) -> bytes: ...
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


@dataclass(slots=True)
class EncodedBatch:
    """Filled in by `encode_batch` as its pieces are taken."""

    positions: list[int] = field(default_factory=list)  # store position of each frame
    max_timestamp_ms: int = -(2**63)


_pack_head = _FRAME_HEAD.pack
_pack_prefix = FRAME_PREFIX.pack


def encode_body(
    value: bytes, offset: int, consensus_index: int, timestamp_ms: int, term: int, rtype: int
) -> bytes:
    """The body of one frame: an entry of one record (what `Segment.append_one`
    writes, inlined, and the CRC-32C of the frame prefix covers)."""
    pre, post = one_parts(len(value), offset >> 7, term, rtype, timestamp_ms)
    head = pack_one_head(
        offset, consensus_index, timestamp_ms, term, rtype, pre, offset & 0x7F | 0x80, post
    )
    return head + value


# The same bytes as _FRAME_HEAD for an entry of one record (its position and
# count of records after it are zeros), from fewer, coarser parts: the Record
# field's tag and length with the offset's tag, the offset's first varint byte,
# and everything from the offset's second varint byte to the value.
_ONE_HEAD = struct.Struct("<QQqQI8x7sB43s")
assert _ONE_HEAD.size == _FRAME_HEAD.size
pack_one_head = _ONE_HEAD.pack


def one_parts(
    vlen: int, high: int, term: int, rtype: int, timestamp_ms: int
) -> tuple[bytes, bytes]:
    """The two byte strings `pack_one_head` takes for a value of `vlen` bytes at an
    offset with offset >> 7 == `high`: they change rarely, and callers keep the last."""
    record_len, value_len = _lengths(vlen)
    return record_len + b"\x10", _high_tail(high, term, rtype, timestamp_ms) + value_len


def encode_batch(
    records: Sequence[RecordLike],
    first_offset: int,
    start_position: int,
    now_ms: int,
    consensus_index: int,
    term: int,
    out: EncodedBatch,
) -> Iterator[bytes | bytearray]:
    """The frames of `records` at consecutive offsets, one entry, its frames
    numbered within it, as pieces to copy into the store in order; fills `out`.

    This loop is the append hot path: a few C calls per record (one pack, one
    concatenation, one CRC); the varint parts change rarely and are looked up
    when they do. Small frames are gathered into pieces of about WRITE_PIECE
    bytes, each handed over before the next is made (one buffer's memory,
    reused); a big value is a piece of its own, as it is (copied once, into
    the store).
    """
    buf = bytearray()
    positions = out.positions
    add_position = positions.append
    pack_head = _pack_head
    pack_prefix = _pack_prefix
    piece_size = WRITE_PIECE
    big = BIG_VALUE
    overhead = FRAME_OVERHEAD
    body_overhead = BODY_OVERHEAD
    pos = start_position
    offset = first_offset
    last = first_offset + len(records) - 1
    max_ts = -(2**63)
    last_ts = last_type = last_high = last_vlen = -1
    high_tail = record_len = value_len = b""
    for rec in records:
        ts = rec.timestamp_ms or now_ms
        rtype = rec.type
        if ts != last_ts or rtype != last_type or offset >> 7 != last_high:
            last_ts, last_type, last_high = ts, rtype, offset >> 7
            high_tail = _high_tail(last_high, term, rtype, ts)
            if ts > max_ts:
                max_ts = ts
        value = rec.value
        vlen = len(value)
        if vlen != last_vlen:
            record_len, value_len = _lengths(vlen)
            last_vlen = vlen
        head = pack_head(
            offset, consensus_index, ts, term, rtype, offset - first_offset, last - offset,
            record_len, 0x10, offset & 0x7F | 0x80, high_tail, value_len,
        )  # fmt: skip
        if vlen < big:
            body = head + value
            buf += pack_prefix(body_overhead + vlen, crc32c(body))
            buf += body
            if len(buf) >= piece_size:
                yield buf
                buf = bytearray()
        else:
            buf += pack_prefix(body_overhead + vlen, crc32c(value, crc32c(head)))
            buf += head
            yield buf
            yield value
            buf = bytearray()
        add_position(pos)
        pos += overhead + vlen
        offset += 1
    if buf:
        yield buf
    out.max_timestamp_ms = max_ts


# -- decoding --------------------------------------------------------------------


class FrameError(Exception):
    """Raised by `decode_frame`; the segment turns it into CorruptSegment."""


def decode_frame(frame: bytes, expected_offset: int) -> Record:
    """The record in `frame`, which must be exactly one whole, valid frame for
    `expected_offset` (the random-read path: the index gives both ends)."""
    if len(frame) < FRAME_OVERHEAD:
        raise FrameError("frame shorter than a frame header")
    length, crc = FRAME_PREFIX.unpack_from(frame)
    if length < BODY_OVERHEAD or len(frame) != FRAME_PREFIX_SIZE + length:
        raise FrameError("frame length does not match its index entries")
    # Small frames: slicing a copy is cheaper than making a view.
    body = frame[FRAME_PREFIX_SIZE:] if length <= 4096 else memoryview(frame)[FRAME_PREFIX_SIZE:]
    if crc32c(body) != crc:
        raise FrameError("checksum mismatch")
    offset, _cidx, ts, term, rtype, _seq, _more = ENGINE_HEADER.unpack_from(
        frame, FRAME_PREFIX_SIZE
    )
    if offset != expected_offset:
        raise FrameError(f"frame holds offset {offset}, not {expected_offset}")
    return Record(frame[VALUE_AT:], offset, term, rtype, ts)


@dataclass(slots=True, frozen=True)
class FrameInfo:
    """What recovery needs of a frame: where it ends and the entry it belongs to."""

    end: int
    offset: int
    consensus_index: int
    term: int
    entry_pos: int
    entry_more: int


def check_frame(buf: bytes | memoryview, pos: int, limit: int) -> FrameInfo | None:
    """The whole, valid frame at `pos` of `buf` (ending by `limit`), or None."""
    if pos + FRAME_OVERHEAD > limit:
        return None
    length, crc = FRAME_PREFIX.unpack_from(buf, pos)
    end = pos + FRAME_PREFIX_SIZE + length
    if length < BODY_OVERHEAD or end > limit:
        return None
    if crc32c(buf[pos + FRAME_PREFIX_SIZE : end]) != crc:
        return None
    offset, cidx, _ts, term, _rtype, seq, more = ENGINE_HEADER.unpack_from(
        buf, pos + FRAME_PREFIX_SIZE
    )
    return FrameInfo(end, offset, cidx, term, seq, more)


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
    unpack_header = ENGINE_HEADER.unpack_from
    prefix = FRAME_PREFIX_SIZE
    least = BODY_OVERHEAD
    value_at = VALUE_AT
    while pos + prefix <= end:
        length, crc = unpack_prefix(view, pos)
        start = pos + prefix
        stop = start + length
        if length < least or stop > end:
            break
        if crc32c(buf[start:stop] if as_bytes and length <= 4096 else view[start:stop]) != crc:
            break
        offset, _cidx, ts, term, rtype, _seq, _more = unpack_header(view, start)
        if expected_offset is not None:
            if offset != expected_offset:
                break
            expected_offset += 1
        value = buf[pos + value_at : stop] if as_bytes else bytes(view[pos + value_at : stop])
        add(Record(value, offset, term, rtype, ts))  # type: ignore[arg-type]  # bytes: as_bytes
        pos = stop
    return records, pos


def served_parts(
    buf: bytes | memoryview,
    positions: Sequence[int],
    shift: int,
    first_offset: int,
    parts: list[memoryview],
) -> int:
    """Add to `parts` the served encoding (`0x0a len Record`) of the frames of
    `buf` that start at `positions[:-1]` (store positions; `buf` begins at store
    position `shift`; the last item is where the last frame ends); how many
    frames were whole and valid.

    Stops at the first frame that fails its checksum or holds another offset.
    No Python object per record but a view of the stored bytes: the caller
    joins them once (one copy).
    """
    add = parts.append
    view = memoryview(buf)
    unpack_prefix = FRAME_PREFIX.unpack_from
    unpack_offset = _U64.unpack_from
    prefix = FRAME_PREFIX_SIZE
    encoded_at = ENCODED_AT
    overhead = FRAME_OVERHEAD
    expected = first_offset
    pos = positions[0] - shift
    for stop in positions[1:]:
        stop -= shift
        if stop - pos < overhead:
            break
        length, crc = unpack_prefix(view, pos)
        if pos + prefix + length != stop or crc32c(view[pos + prefix : stop]) != crc:
            break
        if unpack_offset(view, pos + prefix)[0] != expected:
            break
        add(view[pos + encoded_at : stop])
        expected += 1
        pos = stop
    return expected - first_offset


_U64 = struct.Struct("<Q")

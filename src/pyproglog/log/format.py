"""On-disk formats, store format v2 (see docs/storage.md). Pure functions over bytes; no I/O.

Store file:  24-byte header: `PLSTORE` + version byte 0x02 | u64 consensus index | u64 term
             of the last entry before the segment's first record; then frames back to back.
Frame:       u32 length | u32 crc32c | body                                (little-endian)
Body:        engine header (44 bytes, fixed, little-endian):
                 u64 offset | u32 records before this one in its entry
                 | u32 records after it (0 ends the entry) | u64 consensus_index
                 | i64 timestamp_ms | u64 term | u32 type
             then the record as a `repeated Record records = 1` field of a batch message:
                 0x0a len5 (0x10 off10 0x18 term10 0x20 type5 0x28 ts10 0x0a len5 value)
             `lenN`/`xxxN` are protobuf varints written at a fixed width of N bytes (a
             non-minimal encoding that protobuf parsers accept: varints may take up to 10
             bytes), and the value comes last (fields may come in any order). So every
             frame is FRAME_OVERHEAD + len(value) bytes, everything before the value is
             one struct (packed from a few cached strings: see `parts`), the value ends
             the frame, and the bytes from ENCODED_AT to the
             frame's end can be served as they are: concatenated, they are a
             `FetchResponse` holding the records.
`length` counts the body; the CRC-32C covers the body, so a torn or flipped
frame -- header fields included -- never decodes as a record.

Index file:      12-byte entries: u32 offset relative to the segment base | u64 store position.
Time index file: 12-byte entries: i64 max timestamp so far | u32 relative offset.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import operator
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
# offset, entry_pos, entry_more, consensus_index, timestamp_ms, term, type: what
# changes from one frame of an entry to the next comes first, so that the rest is
# one cached string on the append paths (see _parts).
ENGINE_HEADER = struct.Struct("<QIIQqQI")
ENGINE_HEADER_SIZE = ENGINE_HEADER.size
# Everything before the value: the engine header, then the Record field's tag and
# length, offset (1 + 10), term (1 + 10), type (1 + 5), timestamp (1 + 10) and
# the value's tag and length.
_FRAME_HEAD = struct.Struct("<QIIQqQI6sBB37s6s")
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
_value_of = operator.attrgetter("value")

# The same bytes as _FRAME_HEAD, from coarser parts (`parts`): the offset, the
# frame's place in its entry, then the rest of the engine header with the
# Record field's tag and length and the offset's tag (35 bytes); the offset's
# first varint byte; everything from its second varint byte to the value (43
# bytes). On both append paths the strings change rarely, so that a frame's
# head is one `pack` of six arguments.
_HEAD = struct.Struct("<QQ35sB43s")  # entry_pos | entry_more << 32 as one u64
_ENGINE_REST = struct.Struct("<QqQI")  # consensus_index, timestamp_ms, term, type
assert _HEAD.size == _FRAME_HEAD.size
pack_head = _HEAD.pack


def parts(
    vlen: int, high: int, consensus_index: int, term: int, rtype: int, timestamp_ms: int
) -> tuple[bytes, bytes]:
    """The two byte strings `pack_head` takes for a value of `vlen` bytes at an
    offset with offset >> 7 == `high`."""
    record_len, value_len = _lengths(vlen)
    return (
        _ENGINE_REST.pack(consensus_index, timestamp_ms, term, rtype) + record_len + b"\x10",
        _high_tail(high, term, rtype, timestamp_ms) + value_len,
    )


# An entry of one record (`Log.append`): its place in the entry is zeros, and the
# consensus index, which changes with every entry, is packed, not cached.
_ONE_HEAD = struct.Struct("<Q8xQ27sB43s")
_ONE_REST = struct.Struct("<qQI")  # timestamp_ms, term, type
assert _ONE_HEAD.size == _FRAME_HEAD.size
pack_one_head = _ONE_HEAD.pack


def one_parts(
    vlen: int, high: int, term: int, rtype: int, timestamp_ms: int
) -> tuple[bytes, bytes]:
    """The two byte strings `pack_one_head` takes (27 and 43 bytes; see `parts`)."""
    record_len, value_len = _lengths(vlen)
    return (
        _ONE_REST.pack(timestamp_ms, term, rtype) + record_len + b"\x10",
        _high_tail(high, term, rtype, timestamp_ms) + value_len,
    )


def encode_body(
    value: bytes, offset: int, consensus_index: int, timestamp_ms: int, term: int, rtype: int
) -> bytes:
    """The body of one frame: an entry of one record (what `Segment.append_one`
    writes, inlined, and the CRC-32C of the frame prefix covers)."""
    pre, post = one_parts(len(value), offset >> 7, term, rtype, timestamp_ms)
    return pack_one_head(offset, consensus_index, pre, offset & 0x7F | 0x80, post) + value


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

    Pieces are about WRITE_PIECE bytes, each made when the one before was
    taken (one piece's memory at a time). When every value is small, a piece is
    made by `_encode_small`; otherwise a big value is a piece of its own, as it
    is (copied once, into the store), and the frames around it go one by one.
    """
    n = len(records)
    values = list(map(_value_of, records))
    lens = list(map(len, values))
    if not n:
        return
    # Store positions, with where the last frame ends, at C speed.
    if lens.count(lens[0]) == n:  # the usual batch: one size
        step = FRAME_OVERHEAD + lens[0]
        positions = list(range(start_position, start_position + step * n + 1, step))
    else:
        sizes = map(operator.add, lens, itertools.repeat(FRAME_OVERHEAD))
        positions = list(itertools.accumulate(sizes, initial=start_position))
    if max(lens) < BIG_VALUE:
        # One size, one type, one timestamp (the usual batch): whole runs of frames
        # are made by C loops (`_encode_uniform`), no bytecode per record.
        uniform = None
        if lens.count(lens[0]) == n:
            types = list(map(_type_of, records))
            if types.count(types[0]) == n:
                stamps = list(map(_timestamp_of, records))
                if stamps.count(stamps[0]) == n:
                    uniform = (lens[0], types[0], stamps[0] or now_ms)
        it = iter(records)
        i = 0
        while i < n:
            j = bisect.bisect_left(positions, positions[i] + WRITE_PIECE, i + 1, n)
            first, stop = first_offset + i, first_offset + j
            if uniform is not None:
                yield _encode_uniform(
                    values[i:j], first, stop, i, n - 1, consensus_index, term, uniform
                )
            else:
                yield _encode_small(it, first, stop, i, n - 1, now_ms, consensus_index, term, out)
            i = j
        if uniform is not None:
            out.max_timestamp_ms = max(out.max_timestamp_ms, uniform[2])
        del positions[-1]
        out.positions = positions
        return
    del positions[-1]
    out.positions = positions
    buf = bytearray()
    pack_prefix = _pack_prefix
    body_overhead = BODY_OVERHEAD
    offset = first_offset
    more = n - 1
    max_ts = out.max_timestamp_ms
    for pos, rec in enumerate(records):
        ts = rec.timestamp_ms or now_ms
        if ts > max_ts:
            max_ts = ts
        value = rec.value
        vlen = len(value)
        pre, post = parts(vlen, offset >> 7, consensus_index, term, rec.type, ts)
        head = pack_head(offset, pos | more << 32, pre, offset & 0x7F | 0x80, post)
        if vlen < BIG_VALUE:
            body = head + value
            buf += pack_prefix(body_overhead + vlen, crc32c(body))
            buf += body
            if len(buf) >= WRITE_PIECE:
                yield buf
                buf = bytearray()
        else:
            buf += pack_prefix(body_overhead + vlen, crc32c(value, crc32c(head)))
            buf += head
            yield buf
            yield value
            buf = bytearray()
        offset += 1
        more -= 1
    if buf:
        yield buf
    out.max_timestamp_ms = max_ts


_PLACE_STEP = 1 - (1 << 32)  # one more record before, one fewer after
_type_of = operator.attrgetter("type")
_timestamp_of = operator.attrgetter("timestamp_ms")


def _encode_uniform(
    values: list[bytes],
    offset: int,
    stop: int,
    pos: int,
    last: int,
    consensus_index: int,
    term: int,
    uniform: tuple[int, int, int],
) -> bytes:
    """`_encode_small` for the records of `values`, of one (size, type, timestamp)
    = `uniform`.

    The same frames, made a stage at a time by `map` over all of them (heads,
    bodies, CRCs, prefixes), then interleaved and joined: the C loops of
    `map` instead of a Python loop per record.
    """
    vlen, rtype, ts = uniform
    heads: list[bytes] = []
    while offset < stop:
        high = offset >> 7
        run_end = min(stop, (high + 1) << 7)
        k = run_end - offset
        pre, post = parts(vlen, high, consensus_index, term, rtype, ts)
        place = pos | (last - pos) << 32
        heads += map(
            pack_head,
            range(offset, run_end),
            range(place, place + k * _PLACE_STEP, _PLACE_STEP),
            itertools.repeat(pre, k),
            range(offset & 0x7F | 0x80, 0x100),
            itertools.repeat(post, k),
        )
        offset = run_end
        pos += k
    bodies = list(map(operator.add, heads, values))
    frames: list[bytes] = [b""] * (2 * len(bodies))
    frames[0::2] = map(_pack_prefix, itertools.repeat(BODY_OVERHEAD + vlen), map(crc32c, bodies))
    frames[1::2] = bodies
    return b"".join(frames)


def _encode_small(
    records: Iterator[RecordLike],
    offset: int,
    stop: int,
    pos: int,
    last: int,
    now_ms: int,
    consensus_index: int,
    term: int,
    out: EncodedBatch,
) -> bytes:
    """The frames of the next stop - offset `records` (values below BIG_VALUE) at
    offsets [offset, stop), the first `pos` in an entry whose last frame is
    `last`: one join.

    This loop is the batch append hot path, a few C calls per record: one
    `pack` (the offset, its place in the entry and its varint's first byte
    come from ranges, in step: no arithmetic per record), one concatenation,
    one CRC, two list appends.
    Its parts change rarely (another timestamp, type or size, every 128
    offsets: the loop runs by runs of offsets with one `offset >> 7`).
    """
    frames: list[bytes] = []
    add = frames.append
    pack = pack_head
    pack_prefix = _pack_prefix
    body_overhead = BODY_OVERHEAD
    max_ts = out.max_timestamp_ms
    while offset < stop:
        high = offset >> 7
        run_end = min(stop, (high + 1) << 7)
        k = run_end - offset
        last_ts = last_type = last_vlen = -1
        pre = post = b""
        # A frame's place in its entry, entry_pos | entry_more << 32, steps by this.
        place = pos | (last - pos) << 32
        for off, at, low, rec in zip(
            range(offset, run_end),
            range(place, place + k * _PLACE_STEP, _PLACE_STEP),
            range(offset & 0x7F | 0x80, 0x100),
            itertools.islice(records, k),
            strict=False,  # the varint byte's range may run past the run's end
        ):
            ts = rec.timestamp_ms or now_ms
            rtype = rec.type
            value = rec.value
            vlen = len(value)
            if ts != last_ts or rtype != last_type or vlen != last_vlen:
                last_ts, last_type, last_vlen = ts, rtype, vlen
                pre, post = parts(vlen, high, consensus_index, term, rtype, ts)
                if ts > max_ts:
                    max_ts = ts
            body = pack(off, at, pre, low, post) + value
            add(pack_prefix(body_overhead + vlen, crc32c(body)))
            add(body)
        offset = run_end
        pos += k
    out.max_timestamp_ms = max_ts
    return b"".join(frames)


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
    offset, _seq, _more, _cidx, ts, term, rtype = ENGINE_HEADER.unpack_from(
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
    offset, seq, more, cidx, _ts, term, _rtype = ENGINE_HEADER.unpack_from(
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
        offset, _seq, _more, _cidx, ts, term, rtype = unpack_header(view, start)
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
    verified_to: int = 0,
) -> int:
    """Add to `parts` the served encoding (`0x0a len Record`) of the frames of
    `buf` that start at `positions[:-1]` (store positions; `buf` begins at store
    position `shift`; the last item is where the last frame ends); how many
    frames were whole and valid.

    Stops at the first frame that fails its checksum or holds another offset.
    Frames ending at or below store position `verified_to` passed their
    checksum before (since the segment was opened) and are not summed again.
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
    verified = verified_to - shift
    for stop in positions[1:]:
        stop -= shift
        if stop - pos < overhead:
            break
        length, crc = unpack_prefix(view, pos)
        if pos + prefix + length != stop:
            break
        if stop > verified and crc32c(view[pos + prefix : stop]) != crc:
            break
        if unpack_offset(view, pos + prefix)[0] != expected:
            break
        add(view[pos + encoded_at : stop])
        expected += 1
        pos = stop
    return expected - first_offset


_U64 = struct.Struct("<Q")

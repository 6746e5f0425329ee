"""Store format v2: entries, the served encoding, lookup by consensus index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from crc32c import crc32c

from pyproglog.api.v1 import log_pb2
from pyproglog.log import CorruptSegment, Log, LogConfig, OffsetOutOfRange, Record
from pyproglog.log.format import (
    ENCODED_AT,
    FRAME_OVERHEAD,
    FRAME_PREFIX,
    INDEX_ENTRY_WIDTH,
    STORE_HEADER_SIZE,
    U64_MAX,
    EncodedBatch,
    decode_frame,
    encode_batch,
    encode_body,
)

SMALL = LogConfig(
    max_store_bytes=STORE_HEADER_SIZE + 4 * (FRAME_OVERHEAD + 10),
    max_index_bytes=INDEX_ENTRY_WIDTH * 64,
    max_record_bytes=64,
)


def store_path(directory: Path, base: int = 0) -> Path:
    return directory / f"{base:020d}.store"


def records(first: int, n: int) -> list[Record]:
    return [Record(f"v{first + i:08d}".encode()) for i in range(n)]  # 10 bytes each


# -- the encoding ----------------------------------------------------------------------


def encode_frame(value: bytes, offset: int, cidx: int, ts: int, term: int, rtype: int) -> bytes:
    """A whole frame, framed as Store.append_body frames a body."""
    body = encode_body(value, offset, cidx, ts, term, rtype)
    return FRAME_PREFIX.pack(len(body), crc32c(body)) + body


@pytest.mark.parametrize(
    ("value", "offset", "term", "rtype", "ts"),
    [
        (b"", 0, 0, 0, 0),
        (b"x", 1, 1, 1, 1),
        (b"hello" * 100, 127, 128, 2**32 - 1, 1_700_000_000_000),
        (bytes(range(256)), U64_MAX, U64_MAX, 7, 2**63 - 1),
        (b"\x00" * 70_000, 2**35, 2**21, 0, 16383),
        (b"neg", 5, 5, 5, -1),
    ],
)
def test_frames_carry_the_records_own_protobuf_encoding(value, offset, term, rtype, ts):
    frame = encode_frame(value, offset, 9, ts, term, rtype)
    assert len(frame) == FRAME_OVERHEAD + len(value)
    served = frame[ENCODED_AT:]
    got = log_pb2.FetchResponse.FromString(served).records
    assert len(got) == 1
    rec = got[0]
    assert (rec.value, rec.offset, rec.term, rec.type, rec.timestamp_ms) == (
        value,
        offset,
        term,
        rtype,
        ts,
    )
    back = decode_frame(frame, offset)
    assert (back.value, back.offset, back.term, back.type, back.timestamp_ms) == (
        value,
        offset,
        term,
        rtype,
        ts,
    )


def test_a_batch_is_one_entry_with_its_frames_numbered():
    # Small and big values (a big one is handed to the store as it is, not copied).
    recs = [Record(b"a" * n, type=n, timestamp_ms=100 + n) for n in (0, 5, 9000, 3, 20_000)]
    enc = EncodedBatch()
    pieces = encode_batch(recs, 1000, STORE_HEADER_SIZE, 555, 42, 3, enc)
    data = b"".join(bytes(p) for p in pieces)
    assert len(data) == sum(FRAME_OVERHEAD + len(r.value) for r in recs)
    assert enc.max_timestamp_ms == 100 + 20_000
    ends = [p - STORE_HEADER_SIZE for p in enc.positions[1:]] + [len(data)]
    start = 0
    for i, (rec, end) in enumerate(zip(recs, ends, strict=True)):
        got = decode_frame(data[start:end], 1000 + i)
        want = (rec.value, 1000 + i, 3, rec.type, rec.timestamp_ms)
        assert (got.value, got.offset, got.term, got.type, got.timestamp_ms) == want
        start = end


# -- read_encoded ----------------------------------------------------------------------


def test_read_encoded_serves_the_stored_bytes_as_a_fetch_response(tmp_path):
    with Log(tmp_path, SMALL) as log:
        for k in range(6):
            log.append_batch(records(log.next_offset, 3), term=k + 1, consensus_index=k + 1)
        r = log.read_encoded(2, max_records=10, max_bytes=1 << 20)
        assert (r.first, r.count, r.next_offset) == (2, 10, 12)
        tail = log_pb2.FetchResponse(next_offset=r.next_offset, high_watermark=18)
        resp = log_pb2.FetchResponse.FromString(r.data + tail.SerializeToString())
        assert [rec.offset for rec in resp.records] == list(range(2, 12))
        assert [rec.value for rec in resp.records] == [r.value for r in records(2, 10)]
        assert [rec.term for rec in resp.records] == [(o // 3) + 1 for o in range(2, 12)]
        assert all(rec.timestamp_ms > 0 for rec in resp.records)
        assert (resp.next_offset, resp.high_watermark) == (12, 18)
        # Same records as read_range, across segments.
        assert [(x.offset, x.value, x.term, x.timestamp_ms) for x in resp.records] == [
            (x.offset, x.value, x.term, x.timestamp_ms) for x in log.read_range(2, 10)
        ]


def test_read_encoded_stops_at_the_committed_end_and_the_limits(tmp_path):
    with Log(tmp_path, SMALL) as log:
        log.append_batch(records(0, 12))
        assert log.read_encoded(0, end=5).count == 5
        assert log.read_encoded(3, max_records=2).count == 2
        one = FRAME_OVERHEAD - ENCODED_AT + 10
        assert log.read_encoded(0, max_bytes=3 * one).count == 3
        assert log.read_encoded(0, max_bytes=1).count == 1  # never less than one
        with pytest.raises(OffsetOutOfRange):
            log.read_encoded(5, end=5)
        with pytest.raises(OffsetOutOfRange):
            log.read_encoded(12)


def test_read_encoded_returns_the_intact_prefix_before_damage(tmp_path):
    with Log(tmp_path, LogConfig()) as log:
        log.append_batch(records(0, 6))
    path = store_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[STORE_HEADER_SIZE + 3 * (FRAME_OVERHEAD + 10) + FRAME_OVERHEAD] ^= 0xFF  # offset 3
    path.write_bytes(bytes(data))
    with Log(tmp_path, LogConfig()) as log:
        r = log.read_encoded(0)
        assert r.count == 3
        assert [x.offset for x in log_pb2.FetchResponse.FromString(r.data).records] == [0, 1, 2]
        with pytest.raises(CorruptSegment):
            log.read_encoded(3)
        assert log.read_encoded(4).count == 2


# -- entries after a crash ---------------------------------------------------------------


@pytest.mark.parametrize("written", [1, 2, 3, 4])
def test_a_torn_trailing_entry_is_cut_whole(tmp_path, written):
    """What a kill during the copy of a 5-record batch leaves: the frames written
    so far, whole and valid, and no index entries for them."""
    cfg = LogConfig(max_index_bytes=INDEX_ENTRY_WIDTH * 64)
    with Log(tmp_path, cfg) as log:
        log.append_batch(records(0, 3))
        index_size = 3 * INDEX_ENTRY_WIDTH
        log.append_batch(records(3, 5))
    path = store_path(tmp_path)
    data = path.read_bytes()
    cut = STORE_HEADER_SIZE + (3 + written) * (FRAME_OVERHEAD + 10)
    path.write_bytes(data[:cut] + bytes(len(data) - cut))
    os.truncate(tmp_path / f"{0:020d}.index", index_size)
    with Log(tmp_path, cfg) as log:
        assert log.next_offset == 3
        assert [r.value for r in log.iter_records()] == [r.value for r in records(0, 3)]
        assert log.append(b"next") == 3
    with Log(tmp_path, cfg) as log:
        assert log.read(3).value == b"next"


def test_truncate_after_inside_an_entry_keeps_the_rest_after_a_reopen(tmp_path):
    cfg = LogConfig(max_index_bytes=INDEX_ENTRY_WIDTH * 5)  # a full index looks crash-left
    with Log(tmp_path, cfg) as log:
        log.append_batch(records(0, 8))
        log.truncate_after(4)
    with Log(tmp_path, cfg) as log:
        assert log.next_offset == 5


def test_a_batch_never_spans_two_segments(tmp_path):
    with Log(tmp_path, SMALL) as log:
        log.append_batch(records(0, 3))
        log.append_batch(records(3, 2))  # does not fit after 3: a new segment
        log.append_batch(records(5, 9))  # larger than a segment: one of its own
        assert [s.base_offset for s in log._segments] == [0, 3, 5, 14]
    with Log(tmp_path, SMALL) as log:
        assert [r.value for r in log.iter_records()] == [r.value for r in records(0, 14)]


# -- consensus index ---------------------------------------------------------------------


def test_lookup_by_consensus_index_and_truncate_after_entry(tmp_path):
    with Log(tmp_path, SMALL) as log:
        first = {}
        for cidx in range(1, 9):
            first[cidx] = log.append_batch(
                records(log.next_offset, cidx % 3 + 1), term=1, consensus_index=cidx * 2
            )
        for cidx, offset in first.items():
            assert log.first_offset_of_entry(cidx * 2) == offset
            assert log.first_offset_of_entry(cidx * 2 + 1) is None
        assert log.first_offset_of_entry(0) is None
        assert log.first_offset_of_entry(100) is None
        log.truncate_after_entry(9)  # entries 2..8 stay: cidx 2, 4, 6, 8
        assert log.next_offset == first[5]
        assert log.last_consensus_index == 8
        assert log.first_offset_of_entry(10) is None
        log.truncate_after_entry(0)
        assert log.info().empty


def test_the_entry_before_the_first_survives_retention_and_reopen(tmp_path):
    cfg = LogConfig(
        max_store_bytes=SMALL.max_store_bytes,
        max_index_bytes=SMALL.max_index_bytes,
        max_record_bytes=64,
        retention_bytes=3 * SMALL.max_store_bytes,
    )
    with Log(tmp_path, cfg) as log:
        assert log.entry_before_first() == (0, 0)
        for cidx in range(1, 30):
            log.append_batch(records(log.next_offset, 2), term=cidx // 10 + 1, consensus_index=cidx)
        lowest = log.lowest_offset
        assert lowest > 0  # retention removed segments
        assert log.first_offset_of_entry(lowest // 2 + 1) == lowest
        want = (lowest // 2, (lowest // 2) // 10 + 1)
        assert log.entry_before_first() == want
    with Log(tmp_path, cfg) as log:
        assert log.entry_before_first() == want
        log.truncate_after(log.lowest_offset - 1)  # empty: the log still knows it
        assert log.last_consensus_index == want[0]
        assert log.last_entry() == want


def test_entry_span_and_the_offset_after_an_entry(tmp_path):
    with Log(tmp_path, SMALL) as log:
        spans = {}
        for cidx in range(1, 9):
            n = cidx % 3 + 1
            first = log.append_batch(
                records(log.next_offset, n), term=cidx, consensus_index=cidx * 2
            )
            spans[cidx * 2] = (first, first + n, cidx, n * (FRAME_OVERHEAD + 9))  # 9-byte values
        for cidx, span in spans.items():
            assert log.entry_span(cidx) == span  # across segments: never spans two
            assert log.entry_span(cidx + 1) is None
            assert log.offset_after_entry(cidx) == span[1]
            assert log.offset_after_entry(cidx + 1) == span[1]
        assert log.entry_span(0) is None
        assert log.offset_after_entry(0) == 0
        assert log.offset_after_entry(100) == log.next_offset


def test_reset_at_an_offset_starts_after_the_given_entry(tmp_path):
    with Log(tmp_path, SMALL) as log:
        log.append_batch(records(0, 2), term=1, consensus_index=1)
        log.reset(entry_before=(40, 3), at_offset=500)
        assert (log.lowest_offset, log.next_offset) == (500, 500)
        assert log.entry_before_first() == (40, 3)
        assert log.append_batch(records(500, 1), term=3, consensus_index=41) == 500
    with Log(tmp_path, SMALL) as log:
        assert log.lowest_offset == 500
        assert log.entry_span(41) == (500, 501, 3, FRAME_OVERHEAD + 9)
        assert log.entry_before_first() == (40, 3)

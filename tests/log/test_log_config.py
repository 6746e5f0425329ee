"""Configuration: every limit either works or is refused up front with a clear message."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyproglog.log import (
    InvalidConfig,
    Log,
    LogConfig,
    Record,
    RecordTooLarge,
    SyncPolicy,
)
from pyproglog.log.format import FRAME_OVERHEAD, INDEX_ENTRY_WIDTH, STORE_HEADER_SIZE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_index_bytes": 13}, "multiple of the index entry width"),
        ({"max_index_bytes": INDEX_ENTRY_WIDTH * 10 + 1}, "multiple of the index entry width"),
        ({"max_index_bytes": 11}, "multiple of the index entry width"),
        ({"max_index_bytes": 0}, "multiple of the index entry width"),
        ({"max_index_bytes": -INDEX_ENTRY_WIDTH}, "multiple of the index entry width"),
        ({"max_store_bytes": 0}, "cannot hold one record"),
        ({"max_store_bytes": 100, "max_record_bytes": 100}, "cannot hold one record"),
        ({"max_store_bytes": 64 * 1024}, "cannot hold one record"),  # default record limit 1 MiB
        ({"max_record_bytes": 0}, "max_record_bytes must be at least 1"),
        ({"initial_offset": -1}, "initial_offset must not be negative"),
        ({"initial_offset": 2**64}, "initial_offset must fit in 64 bits"),
        (
            {"max_record_bytes": 2**32, "max_store_bytes": 2**33},
            "max_record_bytes must be at most",
        ),
        ({"sync_policy": "always"}, "sync_policy must be a SyncPolicy"),
        (
            {"sync_policy": SyncPolicy.INTERVAL, "sync_interval_ms": 0},
            "sync_interval_ms must be at least 1",
        ),
        ({"retention_bytes": 0}, "retention_bytes must be positive"),
        ({"retention_ms": -5}, "retention_ms must be positive"),
        ({"time_index_interval_bytes": 0}, "time_index_interval_bytes must be positive"),
    ],
)
def test_unworkable_config_is_refused_at_construction(tmp_path, kwargs, message):
    with pytest.raises(InvalidConfig, match=message) as info:
        LogConfig(**kwargs)
    assert isinstance(info.value, ValueError)
    # Refused before anything touched the disk.
    assert os.listdir(tmp_path) == []


def test_message_names_the_bad_value():
    with pytest.raises(InvalidConfig) as info:
        LogConfig(max_index_bytes=100)
    assert "100" in str(info.value)
    assert str(INDEX_ENTRY_WIDTH) in str(info.value)
    with pytest.raises(InvalidConfig) as info:
        LogConfig(max_store_bytes=500, max_record_bytes=1000)
    assert "500" in str(info.value)
    assert str(STORE_HEADER_SIZE + FRAME_OVERHEAD + 1000) in str(info.value)


def test_smallest_limits_work(tmp_path):
    # One entry per index and a store that holds exactly one largest record.
    cfg = LogConfig(
        max_store_bytes=STORE_HEADER_SIZE + FRAME_OVERHEAD + 64,
        max_index_bytes=INDEX_ENTRY_WIDTH,
        max_record_bytes=64,
    )
    log = Log(tmp_path, cfg)
    values = [bytes([i]) * (64 if i % 2 else i % 7) for i in range(25)]
    for i, v in enumerate(values):
        assert log.append(v) == i
    assert log.append_batch([Record(v) for v in values]) == 25
    # One segment per single record; the batch is one entry, in a segment of
    # its own that grew to hold it; then the empty active segment.
    assert log.info().segment_count == 27
    log.close()
    assert os.path.getsize(tmp_path / f"{25:020d}.index") == 25 * INDEX_ENTRY_WIDTH
    assert os.path.exists(tmp_path / f"{50:020d}.store")
    log = Log(tmp_path, cfg)
    assert [r.value for r in log.iter_records()] == values + values
    log.close()


def test_record_too_large_writes_nothing(tmp_path):
    cfg = LogConfig(max_record_bytes=100, max_store_bytes=4096)
    log = Log(tmp_path, cfg)
    log.append(b"a" * 100)  # exactly the limit is fine
    sizes = {n: os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path)}
    with pytest.raises(RecordTooLarge, match="101 bytes exceeds the limit of 100") as info:
        log.append(b"b" * 101)
    assert (info.value.size, info.value.limit) == (101, 100)
    # One record too large refuses the whole batch.
    with pytest.raises(RecordTooLarge):
        log.append_batch([Record(b"ok"), Record(b"c" * 1000), Record(b"ok")])
    assert log.next_offset == 1
    assert {n: os.path.getsize(tmp_path / n) for n in os.listdir(tmp_path)} == sizes
    assert log.append(b"next") == 1
    log.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    max_store_bytes=st.integers(0, 600),
    index_entries=st.integers(0, 6),
    index_extra=st.sampled_from([0, 0, 0, 1, 5, 11]),
    max_record_bytes=st.integers(0, 300),
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=25),
)
def test_any_limits_either_work_or_are_refused(
    max_store_bytes, index_entries, index_extra, max_record_bytes, sizes
):
    try:
        cfg = LogConfig(
            max_store_bytes=max_store_bytes,
            max_index_bytes=index_entries * INDEX_ENTRY_WIDTH + index_extra,
            max_record_bytes=max_record_bytes,
        )
    except InvalidConfig:
        return
    # Accepted: then it never stops accepting records within the limit.
    directory = tempfile.mkdtemp(prefix="cfg-")
    try:
        values = [bytes([i % 256]) * min(s, max_record_bytes) for i, s in enumerate(sizes)]
        log = Log(directory, cfg)
        for i, v in enumerate(values):
            assert log.append(v) == i
        log.close()
        log = Log(directory, cfg)
        assert [r.value for r in log.iter_records()] == values
        log.close()
    finally:
        shutil.rmtree(directory)

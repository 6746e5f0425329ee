"""A real node restarted on damaged files keeps every intact record (issue 8).

Each test runs `proglog serve` as a subprocess with four records per segment,
produces over gRPC, stops it, damages the real files on disk, starts it again on
the same directory and checks what clients see: intact records served, damaged
ones DATA_LOSS naming the offset, appends going on at new offsets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.log.format import FRAME_OVERHEAD, INDEX_ENTRY_WIDTH
from pyproglog.testing import ServerProcess
from tests.log.test_log_corruption import flip, frames, store_path

# Four records per segment: twelve make sealed segments 0, 4, 8 and an empty active 12.
ARGS = ["--segment-max-index-bytes", str(4 * INDEX_ENTRY_WIDTH)]


def val(i: int) -> bytes:
    return b"record-%03d" % i


def produce(data: Path, n: int, start: int = 0) -> None:
    with ServerProcess(data, ARGS) as node, grpc.insecure_channel(node.rpc_addr) as ch:
        stub = log_pb2_grpc.LogStub(ch)
        for i in range(start, start + n):
            req = log_pb2.ProduceRequest(record=log_pb2.Record(value=val(i)))
            assert stub.Produce(req).offset == i
        assert node.stop() == 0


def consume(stub: log_pb2_grpc.LogStub, offset: int) -> bytes:
    return bytes(stub.Consume(log_pb2.ConsumeRequest(offset=offset)).record.value)


def data_loss(stub: log_pb2_grpc.LogStub, offset: int) -> str:
    with pytest.raises(grpc.RpcError) as info:
        consume(stub, offset)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS, info.value
    return str(info.value.details())


def check(node: ServerProcess, lost: set[int], n: int) -> log_pb2_grpc.LogStub:
    """Offsets 0..n-1: the lost ones DATA_LOSS naming them, the rest intact; the next
    produce gets n."""
    ch = grpc.insecure_channel(node.rpc_addr)
    stub = log_pb2_grpc.LogStub(ch)
    for off in range(n):
        if off in lost:
            details = data_loss(stub, off)
            assert f"offset {off}" in details or "offsets" in details, details
        else:
            assert consume(stub, off) == val(off)
    req = log_pb2.ProduceRequest(record=log_pb2.Record(value=val(n)))
    assert stub.Produce(req).offset == n
    return stub


def test_damaged_last_record_of_a_sealed_segment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    produce(data, 12)
    pos, _ = frames(store_path(data, 4))[-1]
    flip(store_path(data, 4), pos + FRAME_OVERHEAD + 2)  # offset 7, in its value
    with ServerProcess(data, ARGS) as node:
        stub = check(node, {7}, 12)
        # Batch reads deliver up to the damage; the consumer skips it with offset + 1.
        got = stub.Fetch(log_pb2.FetchRequest(offset=0))
        assert [bytes(r.value) for r in got.records] == [val(i) for i in range(7)]
        with pytest.raises(grpc.RpcError) as info:
            stub.Fetch(log_pb2.FetchRequest(offset=7))
        assert info.value.code() == grpc.StatusCode.DATA_LOSS
        got = stub.Fetch(log_pb2.FetchRequest(offset=8))
        assert [r.offset for r in got.records] == [8, 9, 10, 11, 12]
        stream = stub.ConsumeBatchStream(log_pb2.ConsumeBatchStreamRequest(offset=0), timeout=30)
        seen: list[int] = []
        with pytest.raises(grpc.RpcError) as info:
            for batch in stream:
                seen += [r.offset for r in batch.records]
        assert info.value.code() == grpc.StatusCode.DATA_LOSS
        assert seen == list(range(7))
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyproglog",
                "consume",
                "--offset",
                "0",
                "--addr",
                node.rpc_addr,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode != 0
        assert [line.split("\t")[0] for line in cli.stdout.splitlines()] == [
            str(i) for i in range(7)
        ]
        assert "offset 7" in cli.stderr and "Traceback" not in cli.stderr
        offsets = stub.GetOffsetForTimestamp(log_pb2.GetOffsetForTimestampRequest(timestamp_ms=0))
        assert offsets.found and offsets.offset == 0
        if node.http_url:
            with urllib.request.urlopen(f"{node.http_url}/v1/offsets?timestamp_ms=0") as resp:
                assert json.loads(resp.read())["offset"] in (0, "0")
        assert node.stop() == 0
    # Nothing was cut: the later segments are all there after the restart too.
    for base in (0, 4, 8, 12):
        assert store_path(data, base).exists()


def test_missing_middle_store_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    produce(data, 12)
    os.remove(store_path(data, 4))
    with ServerProcess(data, ARGS) as node:
        stub = check(node, {4, 5, 6, 7}, 12)
        assert "offsets 4..7 are lost" in data_loss(stub, 6)
        assert node.stop() == 0
    out = "".join(node.output)
    assert "offsets 4..7 are lost" in out
    assert "Traceback" not in out


def test_damaged_record_in_the_active_segment_keeps_the_node_writable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    produce(data, 15)
    pos, _ = frames(store_path(data, 12))[1]
    flip(store_path(data, 12), pos + FRAME_OVERHEAD + 1)  # offset 13
    for n in (15, 16):  # and across one more restart
        with ServerProcess(data, ARGS) as node:
            check(node, {13}, n)
            assert node.stop() == 0


def test_active_segment_cut_to_a_few_bytes_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "data"
    produce(data, 15)
    os.truncate(store_path(data, 12), 4)
    with ServerProcess(data, ARGS) as node:
        check(node, {12, 13, 14}, 15)
        assert node.stop() == 0
    assert "offsets 12..14 are damaged or missing" in "".join(node.output)


def test_stray_segment_like_files_are_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    produce(data, 12)
    strays = {"00000000000000009999.store": b"", "x.store": b"x", "0.store": b"PLSTORE\x01"}
    for name, content in strays.items():
        (data / name).write_bytes(content)
    with ServerProcess(data, ARGS) as node:
        check(node, set(), 12)
        assert node.stop() == 0
    out = "".join(node.output)
    for name, content in strays.items():
        assert (data / name).read_bytes() == content
        assert name in out


def test_http_time_lookup_skips_a_damaged_record(tmp_path: Path) -> None:
    """`/v1/offsets` once failed whole when the scan met one damaged record."""
    data = tmp_path / "data"
    with ServerProcess(data, ARGS) as node, grpc.insecure_channel(node.rpc_addr) as ch:
        stub = log_pb2_grpc.LogStub(ch)
        for i in range(6):
            rec = log_pb2.Record(value=val(i), timestamp_ms=1000 + i)
            stub.Produce(log_pb2.ProduceRequest(record=rec))
        assert node.stop() == 0
    pos, _ = frames(store_path(data, 4))[0]
    flip(store_path(data, 4), pos + FRAME_OVERHEAD)  # offset 4
    with ServerProcess(data, ARGS) as node:
        with urllib.request.urlopen(f"{node.http_url}/v1/offsets?timestamp_ms=1004") as resp:
            body = json.loads(resp.read())
        assert body["found"] is True and int(body["offset"]) == 5
        req = urllib.request.Request(
            f"{node.http_url}/",
            data=json.dumps({"offset": 4}).encode(),
            method="GET",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req)
        assert info.value.code == 500
        assert "offset 4" in info.value.read().decode()
        assert node.stop() == 0

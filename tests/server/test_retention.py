"""A node applies time-based retention on a clock, not only when its log rolls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

import pyproglog.agent.retention as retention_module
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import started_agent


async def test_idle_node_drops_segments_past_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention_module, "_PERIOD_SECONDS", 0.05)
    settings = {
        "data_dir": tmp_path / "data",
        "rpc_port": 0,
        "http_addr": "",
        # Room for about two 100-byte records per segment.
        "segment_max_store_bytes": 400,
        "max_record_bytes": 200,
        # Long enough that no segment is old yet when the log rolls.
        "retention_ms": 1_500,
    }
    async with (
        started_agent(settings) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        for _ in range(11):
            await stub.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"v" * 100)))
        before = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
        assert before.segment_count > 2
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            info = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
            if info.segment_count == 1 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        # Nobody produced since: only the clock can have removed the sealed ones.
        assert info.segment_count == 1, info
        assert info.lowest_offset > 0 and info.next_offset == before.next_offset
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Consume(log_pb2.ConsumeRequest(offset=0))
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE

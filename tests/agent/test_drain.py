"""Stopping in two passes: every front end still answers while gRPC waits for its calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import started_agent

STEP = 30.0  # bounds a failing wait only
VALUE = b"v" * (512 * 1024)


async def test_http_answers_while_grpc_waits_for_a_stuck_stream(tmp_path: Path) -> None:
    settings = {
        "data_dir": tmp_path / "data",
        "rpc_port": 0,
        "http_addr": "127.0.0.1:0",
        "shutdown_grace_seconds": 120,
    }
    async with (
        started_agent(settings) as node,
        grpc.aio.insecure_channel(node.rpc_addr) as channel,
        httpx.AsyncClient(base_url=node.http_url, timeout=STEP) as http,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        # Far more than HTTP/2 flow control lets through to a reader that stops.
        for _ in range(64):
            await stub.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=VALUE)))
        stream = stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0))
        assert (await stream.read()).record.offset == 0  # in flight, then never read again
        stop = asyncio.create_task(node.stop())
        assert node.service is not None
        async with asyncio.timeout(STEP):
            while not node.service.closing:
                await asyncio.sleep(0.01)
        # Drained (the service refuses writes) but gRPC still waits for the stream,
        # and HTTP, stopped after gRPC, still answers: for as long as we ask (a
        # stopping uvicorn would close its listener within a tick, 0.1 s).
        for _ in range(10):
            resp = await http.get("/v1/info")
            assert resp.status_code == 200, resp.text
            assert resp.json()["next_offset"] == 64
            await asyncio.sleep(0.1)
        assert not stop.done()
        stream.cancel()
        await asyncio.wait_for(stop, STEP)

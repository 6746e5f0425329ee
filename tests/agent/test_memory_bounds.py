"""What a node holds in memory for requests and streams, measured from /proc.

Each test runs a `proglog serve` subprocess and reads its VmRSS / VmHWM. The
bounds are generous (several times what the node needs now, well below what it
took before the bounds existed), and no test depends on timing.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.server.http.body import limit_body
from pyproglog.testing import ServerProcess

MiB = 1024 * 1024
STEP = 30.0
BIG_MESSAGES = [
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", 64 * MiB),
]


def memory(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for {pid}")


def test_concurrent_large_http_bodies_stay_within_a_total(tmp_path: Path) -> None:
    """16 clients post a ~50 MB body each at once (36 records of 1 MiB).

    Unbounded, the node grew by 2.7 GB; with the in-flight budget it reads a
    couple of bodies at a time and answers the others 503 with Retry-After.
    """
    value = base64.b64encode(os.urandom(MiB - 16)).decode()
    body = json.dumps({"records": [{"value": value}] * 36}).encode()
    answers: list[tuple[int, str | None, dict[str, dict[str, str]]]] = []
    with ServerProcess(tmp_path / "data") as node:
        url = urlsplit(node.http_url)
        assert url.hostname is not None and url.port is not None
        host, port = url.hostname, url.port
        baseline = memory(node.pid, "VmRSS")

        def post() -> None:
            conn = http.client.HTTPConnection(host, port, timeout=120)
            try:
                conn.request(
                    "POST", "/v1/records", body=body, headers={"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                answers.append(
                    (resp.status, resp.getheader("Retry-After"), json.loads(resp.read()))
                )
            finally:
                conn.close()

        threads = [threading.Thread(target=post) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        growth = memory(node.pid, "VmHWM") - baseline

        assert len(answers) == 16
        accepted = [a for a in answers if a[0] == 201]
        refused = [a for a in answers if a[0] != 201]
        assert accepted, answers
        for status, retry_after, payload in refused:
            assert status == 503 and retry_after == "1"
            assert payload["error"]["code"] == "UNAVAILABLE"
            assert "retry" in payload["error"]["message"]
        assert growth < 1024 * MiB, f"the node grew by {growth // MiB} MiB"

        # What was accepted is all there, at contiguous offsets.
        conn = http.client.HTTPConnection(host, port, timeout=STEP)
        conn.request("GET", "/v1/info")
        info = json.loads(conn.getresponse().read())
        conn.close()
        assert info["next_offset"] == 36 * len(accepted)
        assert node.stop() == 0


def test_abandoned_streams_hold_little_and_give_it_back(tmp_path: Path) -> None:
    """300 ConsumeStreams that read one record of a 16 MiB backlog and stop reading.

    Each used to hold a 1 MiB read-ahead batch (and the node kept the memory
    after they were cancelled); now each holds about one record, and once they
    are gone the node returns the memory to the system.
    """
    streams_count, channels_count = 300, 30
    with ServerProcess(tmp_path / "data", http=False) as node:
        with grpc.insecure_channel(node.rpc_addr, options=BIG_MESSAGES) as channel:
            stub = log_pb2_grpc.LogStub(channel)
            value = os.urandom(64 * 1024)
            for _ in range(4):
                stub.ProduceBatch(
                    log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=value)] * 64)
                )
        baseline = memory(node.pid, "VmRSS")
        channels = [
            grpc.insecure_channel(node.rpc_addr, options=BIG_MESSAGES)
            for _ in range(channels_count)
        ]
        try:
            streams = []
            for i in range(streams_count):
                stub = log_pb2_grpc.LogStub(channels[i % channels_count])
                stream = stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0))
                assert next(stream).record.offset == 0
                streams.append(stream)
            held = memory(node.pid, "VmRSS") - baseline
            # About 1.1 MiB per stream before (330 MiB here), about 0.3 now.
            assert held < 200 * MiB, f"{streams_count} idle streams hold {held // MiB} MiB"
            for stream in streams:
                stream.cancel()
            deadline = time.monotonic() + STEP
            while (left := memory(node.pid, "VmRSS") - baseline) > held // 2:
                assert time.monotonic() < deadline, (
                    f"the node still holds {left // MiB} of {held // MiB} MiB "
                    "after its streams were cancelled"
                )
                time.sleep(0.2)
        finally:
            for ch in channels:
                ch.close()
        assert node.stop() == 0


async def test_body_budget_counts_declared_and_chunked_bodies_and_gives_them_back() -> None:
    """The gateway's body limits on their own, with small numbers: 1000 bytes per
    body, 1500 in flight (the node's are 53 MB and twice that)."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        if scope["path"] == "/hold":
            entered.set()
            await release.wait()
        await JSONResponse({"size": len(message["body"])})(scope, receive, send)

    async def chunks(n: int, size: int = 100) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"b" * size

    limited = limit_body(app, max_bytes=1000, max_total_bytes=1500)
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        held = asyncio.create_task(client.post("/hold", content=b"a" * 1000))
        await entered.wait()
        # 1000 of 1500 are taken: a chunked body is refused once it passes 500.
        busy = await client.post("/x", content=chunks(6))
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["code"] == "UNAVAILABLE"
        # A declared length that fits beside the held body is read.
        assert (await client.post("/x", content=b"c" * 400)).json() == {"size": 400}
        release.set()
        assert (await held).json() == {"size": 1000}
        # Everything was given back: the same chunked body now goes through.
        assert (await client.post("/x", content=chunks(6))).json() == {"size": 600}
        # Over the per-body limit: 413, declared or chunked.
        assert (await client.post("/x", content=b"d" * 1001)).status_code == 413
        assert (await client.post("/x", content=chunks(11))).status_code == 413
        assert (await client.post("/x", content=chunks(10))).json() == {"size": 1000}

"""Service benchmark: a real `proglog serve` process driven over gRPC (grpc.aio).

For each record size (100 B and 4 KiB by default), on a fresh server:

  produce  unary Produce with 1 and 32 calls in flight; ProduceStream pipelined
           (a window of 256 unanswered messages); ProduceBatch with 100 and 1000
           records per call (4 calls in flight)
  consume  unary Consume with 1 and 32 in flight; ConsumeStream; Fetch (1000
           records per call, read sequentially); ConsumeBatchStream (1000 per message)

Each workload runs for --duration seconds (reads stop early at the end of the
log). Reported: records/s, MB/s (record values only) and p50/p99 latency per
call; for the streams, per message: ProduceStream from send to answer,
ConsumeStream / ConsumeBatchStream the gap between messages.

Prints a table and, as the last line, one JSON object with every figure.
Run with `make bench-service`; a full run takes about two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

if not __package__:  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import Rates, percentile, value_of
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import ServerProcess

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
FETCH_RECORDS = 1000
FETCH_BYTES = 8 * 1024 * 1024
STREAM_WINDOW = 256
BATCH_IN_FLIGHT = 4
# What the service should reach at 100 B (records/s).
TARGETS = {"batched_produce": 100_000, "batched_consume": 200_000}
BATCHED_PRODUCE = ("produce_batch_100", "produce_batch_1000")
BATCHED_CONSUME = ("fetch_1000", "consume_batch_stream")


@dataclass
class Result(Rates):
    workload: str
    size: int
    calls: int = 0
    records: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    def percentile_ms(self, q: float) -> float:
        return percentile(sorted(self.latencies), q) * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "size": self.size,
            "calls": self.calls,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 2),
            "p50_ms": round(self.percentile_ms(0.50), 3),
            "p99_ms": round(self.percentile_ms(0.99), 3),
        }


# -- the server ------------------------------------------------------------------------


class Server:
    """`python -m pyproglog serve` on a free port with its own data dir (pyproglog.testing)."""

    def __init__(self, args: list[str] | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="proglog-bench-")
        self._proc = ServerProcess(Path(self._tmp.name) / "data", args or [], http=False)

    def __enter__(self) -> Server:
        self._proc.start()
        return self

    @property
    def rpc_addr(self) -> str:
        return self._proc.rpc_addr

    def __exit__(self, *exc: object) -> None:
        try:
            self._proc.stop(timeout=30)
        finally:
            self._proc.kill()
            self._tmp.cleanup()


# -- workload drivers --------------------------------------------------------------------


async def run_workers(
    result: Result,
    in_flight: int,
    duration: float,
    call: Callable[[], Awaitable[int]],
) -> Result:
    """`in_flight` loops of `call()` (which answers its record count) for `duration`."""
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        lat = result.latencies
        while True:
            start = time.perf_counter()
            if start >= deadline:
                return
            n = await call()
            lat.append(time.perf_counter() - start)
            result.calls += 1
            result.records += n

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    result.seconds = time.perf_counter() - started
    return result


async def produce_unary(
    stub: log_pb2_grpc.LogStub, size: int, in_flight: int, duration: float
) -> Result:
    req = log_pb2.ProduceRequest(record=log_pb2.Record(value=value_of(size)))

    async def call() -> int:
        await stub.Produce(req)
        return 1

    return await run_workers(Result(f"produce_unary_{in_flight}", size), in_flight, duration, call)


async def produce_stream(stub: log_pb2_grpc.LogStub, size: int, duration: float) -> Result:
    req = log_pb2.ProduceRequest(record=log_pb2.Record(value=value_of(size)))
    result = Result("produce_stream", size)
    stream = stub.ProduceStream()
    window = asyncio.Semaphore(STREAM_WINDOW)
    sent: collections.deque[float] = collections.deque()
    started = time.perf_counter()
    deadline = started + duration

    async def writer() -> None:
        while time.perf_counter() < deadline:
            await window.acquire()
            sent.append(time.perf_counter())
            await stream.write(req)
        await stream.done_writing()

    async def reader() -> None:
        while True:
            resp = await stream.read()
            if resp is grpc.aio.EOF:
                return
            result.latencies.append(time.perf_counter() - sent.popleft())
            result.calls += 1
            result.records += 1
            window.release()

    await asyncio.gather(writer(), reader())
    result.seconds = time.perf_counter() - started
    return result


async def produce_batch(
    stub: log_pb2_grpc.LogStub, size: int, per_call: int, duration: float
) -> Result:
    value = value_of(size)
    req = log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=value)] * per_call)

    async def call() -> int:
        resp = await stub.ProduceBatch(req)
        return int(resp.count)

    return await run_workers(
        Result(f"produce_batch_{per_call}", size), BATCH_IN_FLIGHT, duration, call
    )


async def consume_unary(
    stub: log_pb2_grpc.LogStub, size: int, in_flight: int, duration: float, end: int
) -> Result:
    offsets = itertools.cycle(range(end))

    async def call() -> int:
        resp = await stub.Consume(log_pb2.ConsumeRequest(offset=next(offsets)))
        assert len(resp.record.value) == size
        return 1

    return await run_workers(Result(f"consume_unary_{in_flight}", size), in_flight, duration, call)


async def read_stream(
    result: Result, stream: Any, batched: bool, duration: float, end: int
) -> Result:
    """Read a consume stream from offset 0 to `end` (or for `duration`), gaps as latencies.

    Each message holds one record (`msg.record`) or, `batched`, several (`msg.records`).
    """
    started = last = time.perf_counter()
    deadline = started + duration
    try:
        while result.records < end:
            msg = await stream.read()
            assert msg is not grpc.aio.EOF
            first, count = (msg.records[0], len(msg.records)) if batched else (msg.record, 1)
            assert first.offset == result.records
            now = time.perf_counter()
            result.latencies.append(now - last)
            last = now
            result.calls += 1
            result.records += count
            if now >= deadline:
                break
    finally:
        stream.cancel()
    result.seconds = last - started
    return result


async def consume_stream(
    stub: log_pb2_grpc.LogStub, size: int, duration: float, end: int
) -> Result:
    stream = stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0))
    return await read_stream(Result("consume_stream", size), stream, False, duration, end)


async def fetch(stub: log_pb2_grpc.LogStub, size: int, duration: float, end: int) -> Result:
    result = Result(f"fetch_{FETCH_RECORDS}", size)
    offset = 0
    req = log_pb2.FetchRequest(max_records=FETCH_RECORDS, max_bytes=FETCH_BYTES)
    started = time.perf_counter()
    deadline = started + duration
    while offset < end:
        req.offset = offset
        t0 = time.perf_counter()
        resp = await stub.Fetch(req)
        now = time.perf_counter()
        result.latencies.append(now - t0)
        result.calls += 1
        result.records += len(resp.records)
        offset = resp.next_offset
        if now >= deadline:
            break
    result.seconds = time.perf_counter() - started
    return result


async def consume_batch_stream(
    stub: log_pb2_grpc.LogStub, size: int, duration: float, end: int
) -> Result:
    stream = stub.ConsumeBatchStream(
        log_pb2.ConsumeBatchStreamRequest(
            offset=0, max_records=FETCH_RECORDS, max_bytes=FETCH_BYTES
        )
    )
    return await read_stream(Result("consume_batch_stream", size), stream, True, duration, end)


async def run_size(addr: str, size: int, duration: float) -> list[Result]:
    results: list[Result] = []

    def done(r: Result) -> None:
        results.append(r)
        print(f"  {r.workload:<22} {r.records_per_s:>12,.0f} rec/s", file=sys.stderr, flush=True)

    async with grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        await channel.channel_ready()
        # Warm up the connection and the server's code paths.
        await produce_unary(stub, size, 8, 0.2)
        await produce_batch(stub, size, 100, 0.2)

        done(await produce_unary(stub, size, 1, duration))
        done(await produce_unary(stub, size, 32, duration))
        done(await produce_stream(stub, size, duration))
        done(await produce_batch(stub, size, 100, duration))
        done(await produce_batch(stub, size, 1000, duration))

        info = await stub.GetLogInfo(log_pb2.GetLogInfoRequest())
        end = int(info.next_offset)
        done(await consume_unary(stub, size, 1, duration, end))
        done(await consume_unary(stub, size, 32, duration, end))
        done(await consume_stream(stub, size, duration, end))
        done(await fetch(stub, size, duration, end))
        done(await consume_batch_stream(stub, size, duration, end))
    return results


def bench_size(size: int, duration: float) -> list[Result]:
    with Server() as server:
        print(f"size {size} B: server at {server.rpc_addr}", file=sys.stderr, flush=True)
        return asyncio.run(run_size(server.rpc_addr, size, duration))


# -- report ------------------------------------------------------------------------------------


def best(results: list[Result], size: int, workloads: tuple[str, ...]) -> float:
    rates = [r.records_per_s for r in results if r.size == size and r.workload in workloads]
    return max(rates, default=0.0)


def targets(results: list[Result]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, workloads in (
        ("batched_produce", BATCHED_PRODUCE),
        ("batched_consume", BATCHED_CONSUME),
    ):
        got = best(results, 100, workloads)
        out[name] = {
            "size": 100,
            "workloads": list(workloads),
            "records_per_s": round(got, 1),
            "target": TARGETS[name],
            "met": got >= TARGETS[name],
        }
    return out


def table(results: list[Result]) -> str:
    head = (
        f"{'workload':<22} {'size':>5} {'calls':>8} {'records':>9} {'rec/s':>11} "
        f"{'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.workload:<22} {r.size:>5} {r.calls:>8} {r.records:>9} "
            f"{r.records_per_s:>11,.0f} {r.mb_per_s:>8.1f} "
            f"{r.percentile_ms(0.5):>8.3f} {r.percentile_ms(0.99):>8.3f}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        # Other work on the machine skews every figure: judge the run by this.
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per workload")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 4096])
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    results: list[Result] = []
    for size in args.sizes:
        results.extend(bench_size(size, args.duration))
    met = targets(results)

    print(table(results))
    print()
    print("stream rows: latency is per message (ProduceStream: send to answer;")
    print(
        f"consume streams: gap between messages). ProduceBatch: {BATCH_IN_FLIGHT} calls in flight."
    )
    print(f"load average (1 min) before/after: {load_before} / {os.getloadavg()[0]:.2f}")
    for name, t in met.items():
        verdict = "MET" if t["met"] else "MISSED"
        print(
            f"target {name} at 100 B: {t['records_per_s']:,.0f} rec/s "
            f"(best of {', '.join(t['workloads'])}) vs >= {t['target']:,} -> {verdict}"
        )
    print(
        json.dumps(
            {
                "bench": "service",
                "duration_s": args.duration,
                "elapsed_s": round(time.perf_counter() - started, 1),
                "machine": {**machine(), "loadavg_1m_before": load_before},
                "results": [r.as_dict() for r in results],
                "targets": met,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Our service against peers on this machine, in one run: Redis Streams and NATS JetStream.

Each peer runs only when its server binary is on PATH (`redis-server`,
`nats-server`) and its Python client is importable (`redis`, `nats-py`); it is
skipped with a message otherwise. With neither, this prints that they are
absent and exits 0. Nothing here is needed by the tests or by CI.

The same workload for everyone, records of 100 B and 4 KiB, --duration seconds
each, all clients in Python on one connection:

  produce_ack_each   one record per request, wait for its ack (1 in flight)
                     ours: Produce; Redis: XADD; NATS: JetStream publish
  produce_batched    ours: ProduceBatch of 1000 (4 calls in flight); Redis: XADD
                     pipelined 1000 per round trip; NATS: publish_async pipelined
  consume_batched    ours: Fetch 1000 per call; Redis: XRANGE 1000 per call;
                     NATS: pull consumer, fetch(batch=1000) per request
  consume_stream     ours: ConsumeBatchStream; Redis: XREAD COUNT 1000;
                     NATS: ordered push consumer with a message callback

Peers keep data on local disk without an fsync per message (Redis: AOF with
fsync every second; NATS: file storage), as we do with the default sync policy.
Prints a table with our throughput as a ratio of theirs and, as the last line,
one JSON object.

`--r3` instead compares replicated produce: our 3-node cluster (ProduceBatch to
the leader, `interval` sync, bench/cluster.py) against NATS JetStream with 3
servers and a stream with 3 replicas (bench/_nats_cluster.py), pipelined
`publish_async` with at most --nats-window unacknowledged publishes.
bench/cluster.py runs the same NATS R3 workload in its own run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

if not __package__:  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import bench_module, value_of

WORKLOADS = ("produce_ack_each", "produce_batched", "consume_batched", "consume_stream")
BATCH = 1000
READY_TIMEOUT = 15.0

Rates = dict[str, float]  # workload -> records/s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(ready: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready in {timeout:.0f}s")
        time.sleep(0.05)


class Peer:
    """A peer's server process on a free port with its own data dir."""

    def __init__(self, cmd: Callable[[int, str], list[str]]) -> None:
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="proglog-peer-")
        self._proc = subprocess.Popen(
            cmd(self.port, self._tmp.name),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def port_open(self) -> bool:
        if self._proc.poll() is not None:
            raise RuntimeError(f"peer exited with {self._proc.returncode}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._tmp.cleanup()


# -- ours --------------------------------------------------------------------------------------


def service_module() -> ModuleType:
    return bench_module("service")


def bench_ours(size: int, duration: float) -> Rates:
    svc = service_module()
    import grpc

    from pyproglog.api.v1 import log_pb2, log_pb2_grpc

    async def run(addr: str) -> Rates:
        async with grpc.aio.insecure_channel(addr, options=svc.CHANNEL_OPTIONS) as channel:
            stub = log_pb2_grpc.LogStub(channel)
            await channel.channel_ready()
            ack = await svc.produce_unary(stub, size, 1, duration)
            batched = await svc.produce_batch(stub, size, BATCH, duration)
            end = int((await stub.GetLogInfo(log_pb2.GetLogInfoRequest())).next_offset)
            fetched = await svc.fetch(stub, size, duration, end)
            streamed = await svc.consume_batch_stream(stub, size, duration, end)
        return {
            "produce_ack_each": ack.records_per_s,
            "produce_batched": batched.records_per_s,
            "consume_batched": fetched.records_per_s,
            "consume_stream": streamed.records_per_s,
        }

    with svc.Server() as server:
        rates: Rates = asyncio.run(run(server.rpc_addr))
        return rates


# -- Redis Streams ---------------------------------------------------------------------------


def bench_redis(redis: ModuleType, size: int, duration: float) -> Rates:
    peer = Peer(
        lambda port, data: [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            data,
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ]
    )
    try:
        wait_until(peer.port_open, "redis-server")
        r = redis.Redis(host="127.0.0.1", port=peer.port)
        wait_until(lambda: bool(r.ping()), "redis-server")
        value = value_of(size)
        rates: Rates = {}

        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            r.xadd("bench", {"v": value})
            n += 1
        rates["produce_ack_each"] = n / (time.perf_counter() - start)

        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.xadd("bench", {"v": value})
            pipe.execute()
            n += BATCH
        rates["produce_batched"] = n / (time.perf_counter() - start)

        total = int(r.xlen("bench"))
        n, last, start = 0, "-", time.perf_counter()
        while n < total and time.perf_counter() - start < duration:
            got = r.xrange("bench", min=last, max="+", count=BATCH)
            n += len(got)
            last = "(" + got[-1][0].decode()
        rates["consume_batched"] = n / (time.perf_counter() - start)

        n, last, start = 0, "0-0", time.perf_counter()
        while n < total and time.perf_counter() - start < duration:
            reply = r.xread({"bench": last}, count=BATCH)
            entries = reply[0][1]
            n += len(entries)
            last = entries[-1][0].decode()
        rates["consume_stream"] = n / (time.perf_counter() - start)
        r.close()
        return rates
    finally:
        peer.close()


# -- NATS JetStream ----------------------------------------------------------------------------


def bench_nats(nats: ModuleType, size: int, duration: float) -> Rates:
    peer = Peer(
        lambda port, data: ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", data]
    )
    try:
        wait_until(peer.port_open, "nats-server")
        rates: Rates = asyncio.run(_nats_run(nats, peer.port, size, duration))
        return rates
    finally:
        peer.close()


async def _nats_run(nats: ModuleType, port: int, size: int, duration: float) -> Rates:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    try:
        js = nc.jetstream()
        await js.add_stream(name="BENCH", subjects=["bench"], storage="file")
        value = value_of(size)
        rates: Rates = {}

        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            await js.publish("bench", value)
            n += 1
        rates["produce_ack_each"] = n / (time.perf_counter() - start)

        futures: list[asyncio.Future[Any]] = []
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            futures.append(await js.publish_async("bench", value))
        await asyncio.gather(*futures)
        rates["produce_batched"] = len(futures) / (time.perf_counter() - start)

        total = int((await js.stream_info("BENCH")).state.messages)
        rates["consume_batched"] = await _nats_pull(nats, js, total, duration)
        rates["consume_stream"] = await _nats_push(js, total, duration)
        return rates
    finally:
        await nc.close()


async def _nats_pull(nats: ModuleType, js: Any, total: int, duration: float) -> float:
    """Batched reads, like for like with our Fetch and Redis XRANGE: a pull consumer
    fetching BATCH messages per request (no acks: a reader, not a work queue)."""
    api = importlib.import_module("nats.js.api")
    config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE)
    psub = await js.pull_subscribe("bench", config=config)
    n, start = 0, time.perf_counter()
    try:
        while n < total and time.perf_counter() - start < duration:
            n += len(await psub.fetch(batch=BATCH, timeout=5))
    finally:
        await psub.unsubscribe()
    return n / (time.perf_counter() - start)


async def _nats_push(js: Any, total: int, duration: float) -> float:
    """The tailing stream: an ordered push consumer with a callback (nats-py's fast
    path; its async iterator of messages is several times slower)."""
    n = 0
    done = asyncio.Event()

    async def on_message(_: Any) -> None:
        nonlocal n
        n += 1
        if n >= total:
            done.set()

    start = time.perf_counter()
    sub = await js.subscribe("bench", cb=on_message, ordered_consumer=True)
    with contextlib.suppress(TimeoutError):  # not all delivered in time: count what was
        await asyncio.wait_for(done.wait(), duration)
    rate = n / (time.perf_counter() - start)
    await sub.unsubscribe()
    return rate


# -- NATS JetStream, 3 servers, replicas=3 ----------------------------------------------------

NATS_R3_WINDOW = 1000  # unacknowledged publishes; 1000-2000 was best here (anchors.md)


def nats_client() -> ModuleType | None:
    """The `nats` module when both it and `nats-server` are usable; None (and why) otherwise."""
    binary, module, package, _ = PEERS["nats"]
    if shutil.which(binary) is None:
        print(f"nats: `{binary}` is not on PATH; skipped")
        return None
    if importlib.util.find_spec(module) is None:
        print(f"nats: the Python client `{package}` is not importable; skipped")
        return None
    return importlib.import_module(module)


def bench_nats_r3(
    nats: ModuleType, size: int, duration: float, window: int = NATS_R3_WINDOW
) -> dict[str, float]:
    """Pipelined publish with acks to a 3-replica stream on a fresh 3-server cluster."""
    helper = bench_module("_nats_cluster")
    with helper.NatsCluster(3) as cluster:
        rates: dict[str, float] = asyncio.run(
            helper.publish_pipelined(nats, cluster.urls, size, duration, window)
        )
        return rates


def main_r3(args: argparse.Namespace) -> int:
    nats = nats_client()
    if nats is None:
        print(json.dumps({"bench": "compare_r3", "peers": [], "results": []}))
        return 0
    cluster_bench = bench_module("cluster")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="proglog-compare-r3-") as tmp:
        cluster = cluster_bench.start_cluster(Path(tmp), "interval")
        try:
            for size in args.sizes:
                leader = cluster.leader()
                ours = asyncio.run(
                    cluster_bench.produce_batches(
                        leader.addr, size, "interval", args.duration, BATCH, 4
                    )
                )
                results.append({"size": size, "ours": round(ours.records_per_s, 1)})
        finally:
            cluster.close()
    for row in results:
        theirs = bench_nats_r3(nats, row["size"], args.duration, args.nats_window)
        row["nats_r3"] = round(theirs["records_per_s"], 1)
        row["ours/nats_r3"] = round(row["ours"] / theirs["records_per_s"], 2)
    print(f"{'replicated produce':<20} {'size':>5} {'ours rec/s':>12} {'nats R3':>12} {'ratio':>7}")
    for row in results:
        print(
            f"{'3 nodes':<20} {row['size']:>5} {row['ours']:>12,.0f} "
            f"{row['nats_r3']:>12,.0f} {row['ours/nats_r3']:>7.2f}"
        )
    load = round(os.getloadavg()[0], 2)
    print(f"load average (1 min): {load}")
    print(
        json.dumps(
            {
                "bench": "compare_r3",
                "peers": ["nats_r3"],
                "nats_window": args.nats_window,
                "loadavg_1m": load,
                "results": results,
            }
        )
    )
    return 0


# -- driver ------------------------------------------------------------------------------------

PEERS: dict[str, tuple[str, str, str, Callable[[ModuleType, int, float], Rates]]] = {
    # name: (server binary, Python module, pip package, bench)
    "redis": ("redis-server", "redis", "redis", bench_redis),
    "nats": ("nats-server", "nats", "nats-py", bench_nats),
}


def available_peers() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for name, (binary, module, package, _) in PEERS.items():
        if shutil.which(binary) is None:
            print(f"{name}: `{binary}` is not on PATH; skipped")
            continue
        if importlib.util.find_spec(module) is None:
            print(f"{name}: the Python client `{package}` is not importable; skipped")
            continue
        found[name] = importlib.import_module(module)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per workload")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 4096])
    parser.add_argument(
        "--r3", action="store_true", help="replicated produce: our 3 nodes vs NATS R3"
    )
    parser.add_argument("--nats-window", type=int, default=NATS_R3_WINDOW)
    args = parser.parse_args(argv)
    if args.r3:
        return main_r3(args)

    peers = available_peers()
    if not peers:
        print("no peer to compare with (neither redis-server nor nats-server is usable)")
        print(json.dumps({"bench": "compare", "peers": [], "results": []}))
        return 0

    results: list[dict[str, Any]] = []
    for size in args.sizes:
        rates: dict[str, Rates] = {"ours": bench_ours(size, args.duration)}
        for name, module in peers.items():
            try:
                rates[name] = PEERS[name][3](module, size, args.duration)
            except Exception as exc:  # a broken peer must not hide the others
                print(f"{name}: failed at {size} B: {exc!r}")
        for workload in WORKLOADS:
            row: dict[str, Any] = {"size": size, "workload": workload}
            for name, r in rates.items():
                row[name] = round(r.get(workload, 0.0), 1)
                if name != "ours" and r.get(workload):
                    row[f"ours/{name}"] = round(rates["ours"][workload] / r[workload], 2)
            results.append(row)

    names = ["ours", *peers]
    head = f"{'workload':<18} {'size':>5}" + "".join(f" {n + ' rec/s':>13}" for n in names)
    head += "".join(f" {'ours/' + n:>11}" for n in peers)
    print(head)
    print("-" * len(head))
    for row in results:
        line = f"{row['workload']:<18} {row['size']:>5}"
        line += "".join(f" {row.get(n, 0.0):>13,.0f}" for n in names)
        line += "".join(
            f" {row[f'ours/{n}']:>11.2f}" if f"ours/{n}" in row else f" {'-':>11}" for n in peers
        )
        print(line)
    load = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    print(f"load average (1 min): {load}")
    print(
        json.dumps(
            {"bench": "compare", "peers": list(peers), "loadavg_1m": load, "results": results}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

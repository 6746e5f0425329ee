"""Client library benchmark: our Producer and Consumer against nats-py (`make bench-client`).

Records of --size bytes (100 B), per-record APIs on both sides, one asyncio loop,
one connection per server. For each topology (1 node, 3 nodes), NATS then ours:

  produce    max throughput with auto-batching: a loop of one call per record
             for --duration s, then wait for every ack; records/s counts acks.
             ours: `await producer.submit(v)` per record (Producer defaults:
             idempotent, linger 5 ms, 4 batches in flight), then `flush()`.
             NATS: `await js.publish_async(subject, v)` per record (at most
             --nats-window unacknowledged, nats-py's `publish_async_max_pending`),
             then `publish_async_completed()`. Neither call suspends while it
             has room, so the loop runs on until ours has 32 MiB buffered
             (`buffer_bytes`) or NATS its window unacknowledged; --yield-every
             makes both loops let the event loop run more often. Ours also
             checks that the log holds exactly the records acknowledged.
  latency    the same call paced at half of that system's own max rate for
             --latency-duration s (open loop: records are sent when due, not
             when the last ack came); submit -> ack latency p50/p99/p999. Ours
             also at NATS's half-max rate: both under the same load. A run
             whose loop could not keep the rate is marked NOT SUSTAINED.
  consume    per-record delivery to user code of the first --consume-records
             records of the log (topped up first if the produce phases wrote
             fewer). ours: `async for record in Consumer(client, offset=0)`; on
             3 nodes it reads from a follower (the client's routing). NATS: an
             ordered push consumer with a message callback (nats-py's fast path).

1 node: one `proglog serve` (sync policy `interval`, fsync every 200 ms) against
one `nats-server -js` (file storage, no fsync per message). 3 nodes: our cluster
(pyproglog.testing.Cluster, `interval`) through the routing client against 3
`nats-server`s with a stream of 3 replicas (bench/_nats_cluster.py).

The issue's targets, printed beside each throughput ratio: ours >= 3x NATS on 1
node, >= 2x NATS R3 on 3 nodes. NATS is skipped (with a note) when `nats-server`
or nats-py is missing. `--quick` is a smoke run of well under a minute.
Prints a table and, as the last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

if not __package__:  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import Rates, bench_module, percentile, value_of
from pyproglog.client import AsyncClient, Consumer, Producer
from pyproglog.testing import ServerProcess

TARGETS = {1: 3.0, 3: 2.0}  # ours/NATS throughput, by node count (issue 12)
NODE_ARGS = ("--sync-policy", "interval", "--log-level", "warning")
ACK_TIMEOUT = 120.0  # s for every outstanding ack after a loop ends
NATS_SUBJECT = "bench"
NATS_STREAM = "BENCH"
# Unacknowledged publish_async (nats-py's default: 4000). A sweep of 250..64000 here
# put the best at 1000-2000 on both topologies, 4000 ~15-30% lower, 64000 ~40% lower.
NATS_WINDOW = {1: 1000, 3: 2000}

# The per-record publish call both systems are driven through: it answers the
# record's future (an offset or a PubAck) once it has room for the record.
Publish = Callable[[bytes], Awaitable["asyncio.Future[Any]"]]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Row(Rates):
    """A throughput figure: `records` delivered (acked or consumed) in `seconds`."""

    system: str  # "ours" | "nats"
    nodes: int
    workload: str  # "produce" | "consume"
    size: int
    records: int = 0
    seconds: float = 0.0
    errors: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "system": self.system,
            "nodes": self.nodes,
            "workload": self.workload,
            "size": self.size,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 2),
            "errors": self.errors,
        }
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Latency:
    """Submit -> ack latencies of a paced run at `target_rate` records/s."""

    system: str
    nodes: int
    target_rate: float
    basis: str  # how target_rate was chosen
    sent: int = 0
    seconds: float = 0.0
    errors: int = 0
    samples: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.samples)
        achieved = self.sent / self.seconds if self.seconds else 0.0
        return {
            "system": self.system,
            "nodes": self.nodes,
            "basis": self.basis,
            "target_rate": round(self.target_rate, 1),
            "achieved_rate": round(achieved, 1),
            # The loop could not send at the rate asked (the client is the bottleneck):
            # its latencies then include the backlog.
            "sustained": achieved >= 0.95 * self.target_rate,
            "acked": len(ordered),
            "errors": self.errors,
            "p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
            "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
            "p999_ms": round(percentile(ordered, 0.999) * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3) if ordered else 0.0,
        }


# -- the shared drivers: a max-rate loop and a paced loop over one publish call ---------------


class Acks:
    """Counts the futures a loop hands out as they resolve, without keeping them; with
    `samples`, also each one's latency from the time given to `watch`.

    One done-callback per future: each costs the event loop a handle, on both systems."""

    def __init__(self, samples: list[float] | None = None) -> None:
        self.samples = samples
        self.ok = 0
        self.errors = 0
        self.first_error = ""
        self.pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def watch(self, fut: asyncio.Future[Any], sent: float = 0.0) -> None:
        self.pending += 1
        self._idle.clear()
        fut.add_done_callback(self._done if not sent else lambda f: self._done(f, sent))

    def _done(self, fut: asyncio.Future[Any], sent: float = 0.0) -> None:
        self.pending -= 1
        if fut.cancelled() or fut.exception() is not None:
            self.errors += 1
            if not self.first_error:
                self.first_error = "cancelled" if fut.cancelled() else repr(fut.exception())
        else:
            self.ok += 1
            if sent and self.samples is not None:
                self.samples.append(time.perf_counter() - sent)
        if not self.pending:
            self._idle.set()

    async def wait(self, timeout: float) -> None:
        await asyncio.wait_for(self._idle.wait(), timeout)


async def publish_max(
    publish: Publish,
    drain: Callable[[], Awaitable[None]],
    value: bytes,
    *,
    duration: float = 0.0,
    count: int = 0,
    yield_every: int = 0,
) -> tuple[int, int, float, str]:
    """One `publish` per record for `duration` s (or `count` records), then `drain()` and
    every ack: (acked, errors, seconds, first error). With `yield_every`, the loop lets
    the event loop run every that many records (a publish call that has room never does)."""
    acks = Acks()
    start = time.perf_counter()
    if count:
        for _ in range(count):
            acks.watch(await publish(value))
    else:
        deadline = start + duration
        step = yield_every or 64
        # The clock is read once per step: a per-record read is a visible cost here.
        while time.perf_counter() < deadline:
            for _ in range(step):
                acks.watch(await publish(value))
            if yield_every:
                await asyncio.sleep(0)
    # A server that stopped answering is a failed phase, not a hung bench.
    await asyncio.wait_for(drain(), ACK_TIMEOUT)
    await acks.wait(ACK_TIMEOUT)
    seconds = time.perf_counter() - start
    return acks.ok, acks.errors, seconds, acks.first_error


async def publish_paced(
    publish: Publish, value: bytes, rate: float, duration: float, lat: Latency
) -> None:
    """Open loop: record i is due at start + i/rate; whatever is due is sent at once, then
    the loop sleeps until the next one is due. Latency runs from just before the publish
    call (so a wait for room counts) to the ack's callback."""
    total = max(1, int(rate * duration))
    acks = Acks(lat.samples)
    now = time.perf_counter
    start = now()
    i = 0
    while i < total:
        due = min(total, int((now() - start) * rate) + 1)
        while i < due:
            t = now()
            acks.watch(await publish(value), t)
            i += 1
        await asyncio.sleep(max(0.0, start + i / rate - now()))
    lat.seconds = now() - start
    lat.sent = total
    await acks.wait(ACK_TIMEOUT)
    lat.errors = acks.errors


HALF_OWN = "50% of its max"
HALF_NATS = "NATS's 50% rate"


def paced_rate(row: Row | None) -> float:
    return max(100.0, row.records_per_s / 2) if row else 0.0


# -- ours -------------------------------------------------------------------------------------


@dataclass
class Config:
    size: int
    duration: float
    latency_duration: float
    consume_records: int
    linger_ms: float
    max_in_flight: int
    nats_window: dict[int, int]
    profile: Path | None
    yield_every: int = 0


async def ours_run(
    addrs: list[str],
    nodes: int,
    cfg: Config,
    wait_replicated: Callable[[int], None] | None,
    peer_rate: float,
) -> tuple[list[Row], list[Latency]]:
    """Produce max, paced latency, top-up, consume on the servers at `addrs` (a list: routed).
    With a `peer_rate` (NATS's half max), a second paced run at that rate: the same load."""
    value = value_of(cfg.size)
    rows: list[Row] = []
    target: str | list[str] = addrs[0] if nodes == 1 else addrs
    async with AsyncClient(target) as client:
        producer = Producer(client, linger_ms=cfg.linger_ms, max_in_flight=cfg.max_in_flight)
        try:
            # Warm-up: the connection, the leader's address, both ends' code paths.
            await producer.send(value)
            acked_total = 1
            profiler = cProfile.Profile() if cfg.profile else None
            if profiler:
                profiler.enable()
            acked, errors, seconds, first = await publish_max(
                producer.submit,
                producer.flush,
                value,
                duration=cfg.duration,
                yield_every=cfg.yield_every,
            )
            if profiler:
                profiler.disable()
                dump_profile(profiler, cfg.profile, f"ours_produce_{nodes}")
            acked_total += acked
            row = Row("ours", nodes, "produce", cfg.size, acked, seconds, errors, first)
            rows.append(row)
            log(f"  ours {nodes}n produce {row.records_per_s:>12,.0f} rec/s ({errors} errors)")

            lats = [Latency("ours", nodes, paced_rate(row), HALF_OWN)]
            if peer_rate:
                lats.append(Latency("ours", nodes, peer_rate, HALF_NATS))
            for lat in lats:
                await publish_paced(
                    producer.submit, value, lat.target_rate, cfg.latency_duration, lat
                )
                acked_total += len(lat.samples)
                log(f"  ours {nodes}n latency: {lat.as_dict()}")

            info = await client.info()
            short = cfg.consume_records - (info.next_offset - info.lowest_offset)
            if short > 0:
                topped = await publish_max(producer.submit, producer.flush, value, count=short)
                acked_total += topped[0]
        finally:
            await producer.close()
        lowest = (await client.info()).lowest_offset
        if wait_replicated is not None:
            # Read what every node has committed: not the follower's replication lag.
            await asyncio.to_thread(wait_replicated, lowest + acked_total - 1)
        info = await client.info()
        end = info.next_offset
        # The idempotent producer's promise, checked: every ack is one record in the log.
        if end - lowest != acked_total:
            held = f"log holds {end - lowest} records for {acked_total} acknowledged"
            row.note = f"{row.note}; {held}" if row.note else held
            row.errors += abs(end - lowest - acked_total)
        count = min(cfg.consume_records, end - info.lowest_offset)
        consumed = Row("ours", nodes, "consume", cfg.size)
        profiler = cProfile.Profile() if cfg.profile else None
        async with Consumer(client, offset=info.lowest_offset) as consumer:
            expected = info.lowest_offset
            if profiler:
                profiler.enable()
            start = time.perf_counter()
            async for record in consumer:
                if record.offset != expected:
                    raise RuntimeError(f"consumer gave offset {record.offset}, not {expected}")
                expected += 1
                if expected - info.lowest_offset >= count:
                    break
            consumed.seconds = time.perf_counter() - start
            if profiler:
                profiler.disable()
                dump_profile(profiler, cfg.profile, f"ours_consume_{nodes}")
            consumed.records = expected - info.lowest_offset
            node = consumer.node
        role = "the LEADER" if node == client.leader_addr else "a follower"
        consumed.note = f"read from {'the node' if nodes == 1 else role}, {node}"
        rows.append(consumed)
        log(f"  ours {nodes}n consume {consumed.records_per_s:>12,.0f} rec/s ({node})")
    return rows, lats


def dump_profile(profiler: cProfile.Profile, where: Path | None, name: str) -> None:
    if where is None:
        return
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.prof"
    profiler.dump_stats(str(path))
    with open(where / f"{name}.txt", "w") as f:
        pstats.Stats(profiler, stream=f).sort_stats("tottime").print_stats(40)
    log(f"  profile: {path} (top 40 by own time in {path.with_suffix('.txt')})")


def ours_one_node(cfg: Config, peer_rate: float) -> tuple[list[Row], list[Latency]]:
    with tempfile.TemporaryDirectory(prefix="proglog-bench-client-") as tmp:
        server = ServerProcess(Path(tmp) / "data", list(NODE_ARGS), http=False)
        server.start()
        try:
            return asyncio.run(ours_run([server.rpc_addr], 1, cfg, None, peer_rate))
        finally:
            try:
                server.stop(timeout=30)
            finally:
                server.kill()


def ours_three_nodes(cfg: Config, peer_rate: float) -> tuple[list[Row], list[Latency]]:
    cluster_bench = bench_module("cluster")
    with tempfile.TemporaryDirectory(prefix="proglog-bench-client-") as tmp:
        cluster = cluster_bench.start_cluster(Path(tmp), "interval", "client")
        try:
            addrs = [n.addr for n in cluster.nodes.values()]

            def replicated(offset: int) -> None:
                for follower in cluster.followers(cluster.leader()):
                    cluster.wait_committed(offset, follower.name, timeout=120)

            result: tuple[list[Row], list[Latency]] = asyncio.run(
                ours_run(addrs, 3, cfg, replicated, peer_rate)
            )
            return result
        finally:
            cluster.close()


# -- NATS JetStream ---------------------------------------------------------------------------


async def nats_run(
    nats: ModuleType, urls: list[str], nodes: int, cfg: Config
) -> tuple[list[Row], list[Latency]]:
    """The same phases on a JetStream stream (`nodes` replicas) at `urls`."""
    helper = bench_module("_nats_cluster")
    value = value_of(cfg.size)
    rows: list[Row] = []
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream(publish_async_max_pending=cfg.nats_window[nodes])
        await helper.add_replicated_stream(js, NATS_STREAM, NATS_SUBJECT, replicas=nodes)

        def publish(v: bytes) -> Awaitable[asyncio.Future[Any]]:
            return js.publish_async(NATS_SUBJECT, v)  # type: ignore[no-any-return]

        # Warm-up: the stream's own Raft group (R3) may still be settling its leader.
        for _ in range(100):
            await js.publish(NATS_SUBJECT, value, timeout=10)
        acked, errors, seconds, first = await publish_max(
            publish,
            js.publish_async_completed,
            value,
            duration=cfg.duration,
            yield_every=cfg.yield_every,
        )
        row = Row("nats", nodes, "produce", cfg.size, acked, seconds, errors, first)
        row.note = f"publish_async_max_pending={cfg.nats_window[nodes]}"
        rows.append(row)
        log(f"  nats {nodes}n produce {row.records_per_s:>12,.0f} rec/s ({errors} errors)")

        lat = Latency("nats", nodes, paced_rate(row), HALF_OWN)
        await publish_paced(publish, value, lat.target_rate, cfg.latency_duration, lat)
        log(f"  nats {nodes}n latency: {lat.as_dict()}")

        held = int((await js.stream_info(NATS_STREAM)).state.messages)
        if held < cfg.consume_records:
            await publish_max(
                publish, js.publish_async_completed, value, count=cfg.consume_records - held
            )
            held = int((await js.stream_info(NATS_STREAM)).state.messages)
        rows.append(await nats_consume(js, min(cfg.consume_records, held), nodes, cfg.size))
        return rows, [lat]
    finally:
        await nc.close()


async def nats_consume(js: Any, count: int, nodes: int, size: int) -> Row:
    """An ordered push consumer with a callback from the stream's start, until `count`."""
    row = Row("nats", nodes, "consume", size, note="ordered consumer, callback")
    done = asyncio.Event()
    n = 0
    finished = 0.0

    async def on_message(msg: Any) -> None:
        nonlocal n, finished
        n += 1
        if n == count:
            # The callbacks go on until the unsubscribe: the clock stops here.
            finished = time.perf_counter()
            done.set()

    start = time.perf_counter()
    sub = await js.subscribe(NATS_SUBJECT, cb=on_message, ordered_consumer=True)
    with contextlib.suppress(TimeoutError):  # a stalled consumer: report what came
        await asyncio.wait_for(done.wait(), 300)
    row.seconds = (finished or time.perf_counter()) - start
    row.records = min(n, count)
    if n < count:
        row.errors = count - n
        row.note += f"; stalled after {n} of {count}"
    await sub.unsubscribe()
    log(f"  nats {nodes}n consume {row.records_per_s:>12,.0f} rec/s")
    return row


def nats_one_node(nats: ModuleType, cfg: Config) -> tuple[list[Row], list[Latency]]:
    compare = bench_module("compare")
    peer = compare.Peer(
        lambda port, data: ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", data]
    )
    try:
        compare.wait_until(peer.port_open, "nats-server")
        url = f"nats://127.0.0.1:{peer.port}"
        result: tuple[list[Row], list[Latency]] = asyncio.run(nats_run(nats, [url], 1, cfg))
        return result
    finally:
        peer.close()


def nats_three_nodes(nats: ModuleType, cfg: Config) -> tuple[list[Row], list[Latency]]:
    helper = bench_module("_nats_cluster")
    with helper.NatsCluster(3) as cluster:
        result: tuple[list[Row], list[Latency]] = asyncio.run(nats_run(nats, cluster.urls, 3, cfg))
        return result


# -- report -----------------------------------------------------------------------------------


def find(rows: list[Row], system: str, nodes: int, workload: str) -> Row | None:
    for r in rows:
        if (r.system, r.nodes, r.workload) == (system, nodes, workload):
            return r
    return None


def ratios(rows: list[Row]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for nodes in (1, 3):
        for workload in ("produce", "consume"):
            ours = find(rows, "ours", nodes, workload)
            theirs = find(rows, "nats", nodes, workload)
            if not ours or not theirs or not theirs.records_per_s:
                continue
            ratio = ours.records_per_s / theirs.records_per_s
            out[f"{workload}_{nodes}n"] = {
                "ours/nats": round(ratio, 2),
                "target": TARGETS[nodes],
                "met": ratio >= TARGETS[nodes],
            }
    return out


def table(rows: list[Row], rat: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'workload':<9} {'nodes':>5} {'system':<6} {'records':>9} {'rec/s':>11} "
        f"{'MB/s':>7} {'errors':>6} {'ours/nats':>9} {'target':>7}  note"
    )
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r.nodes, r.workload != "produce", r.system != "ours")):
        ratio, target = "", ""
        key = f"{r.workload}_{r.nodes}n"
        if r.system == "ours" and key in rat:
            ratio = f"{rat[key]['ours/nats']:.2f}"
            target = f">={rat[key]['target']:.0f}x " + ("MET" if rat[key]["met"] else "MISSED")
        lines.append(
            f"{r.workload:<9} {r.nodes:>5} {r.system:<6} {r.records:>9} "
            f"{r.records_per_s:>11,.0f} {r.mb_per_s:>7.1f} {r.errors:>6} {ratio:>9} "
            f"{target:>7}  {r.note}"
        )
    return "\n".join(lines)


def latency_table(lats: list[Latency]) -> str:
    head = (
        f"{'submit->ack latency':<20} {'paced at':<16} {'rate/s':>8} {'achieved':>8} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8} {'max ms':>8} {'errors':>6}"
    )
    lines = [head, "-" * len(head)]
    for lat in sorted(lats, key=lambda x: (x.nodes, x.target_rate, x.system == "ours")):
        d = lat.as_dict()
        lines.append(
            f"{lat.system + ' ' + str(lat.nodes) + ' node(s)':<20} {lat.basis:<16} "
            f"{d['target_rate']:>8,.0f} {d['achieved_rate']:>8,.0f} {d['p50_ms']:>8.2f} "
            f"{d['p99_ms']:>8.2f} {d['p999_ms']:>8.2f} {d['max_ms']:>8.2f} {d['errors']:>6}"
            + ("" if d["sustained"] else "  NOT SUSTAINED: the client fell behind")
        )
    return "\n".join(lines)


def nats_module() -> tuple[ModuleType | None, str]:
    """nats-py when it and `nats-server` are usable; None and why otherwise."""
    helper = bench_module("_nats_cluster")
    if not helper.available():
        return None, "`nats-server` is not on PATH: NATS skipped"
    try:
        return importlib.import_module("nats"), ""
    except ImportError:
        return None, "the Python client nats-py is not importable: NATS skipped"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run, well under a minute")
    parser.add_argument("--size", type=int, default=100, help="record size in bytes")
    parser.add_argument("--duration", type=float, help="seconds of max-rate produce (5, quick 1)")
    parser.add_argument(
        "--latency-duration", type=float, help="seconds of paced produce (5, quick 1.5)"
    )
    parser.add_argument(
        "--consume-records", type=int, help="records consumed (500000, quick 50000)"
    )
    parser.add_argument("--nodes", type=int, nargs="+", choices=(1, 3), default=[1, 3])
    parser.add_argument("--systems", nargs="+", choices=("ours", "nats"), default=["ours", "nats"])
    parser.add_argument("--linger-ms", type=float, default=5.0, help="our Producer's linger_ms")
    parser.add_argument("--max-in-flight", type=int, default=4, help="our Producer's batches")
    parser.add_argument(
        "--nats-window",
        type=int,
        help=f"NATS publish_async_max_pending (default {NATS_WINDOW[1]} on 1 node, "
        f"{NATS_WINDOW[3]} on 3)",
    )
    parser.add_argument(
        "--yield-every",
        type=int,
        default=0,
        help="max-rate loops (both systems) let the event loop run every N records; 0: never",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="cProfile our max-rate produce and our consume; stats into this directory",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    cfg = Config(
        size=args.size,
        duration=args.duration or (1.0 if quick else 5.0),
        latency_duration=args.latency_duration or (1.5 if quick else 5.0),
        consume_records=args.consume_records or (50_000 if quick else 500_000),
        linger_ms=args.linger_ms,
        max_in_flight=args.max_in_flight,
        nats_window={n: args.nats_window or NATS_WINDOW[n] for n in (1, 3)},
        profile=args.profile,
        yield_every=args.yield_every,
    )

    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    nats, skipped = (None, "not asked for")
    if "nats" in args.systems:
        nats, skipped = nats_module()
        if nats is None:
            log(skipped)
    rows: list[Row] = []
    lats: list[Latency] = []
    failed: dict[str, str] = {}

    def attempt(name: str, fn: Callable[..., tuple[list[Row], list[Latency]]], *a: Any) -> None:
        log(f"phase {name}")
        try:
            got, got_lats = fn(*a)
        except Exception as exc:  # one broken phase must not hide the others' figures
            failed[name] = f"{type(exc).__name__}: {exc}"[:1500]
            log(f"  phase {name} FAILED: {failed[name]}")
            return
        rows.extend(got)
        lats.extend(got_lats)

    for nodes in args.nodes:
        # NATS first: ours is also paced at NATS's rate, for latencies under the same load.
        if nats is not None:
            fn = nats_one_node if nodes == 1 else nats_three_nodes
            attempt(f"nats {nodes} node(s)", fn, nats, cfg)
        if "ours" in args.systems:
            peer_rate = paced_rate(find(rows, "nats", nodes, "produce"))
            ours_fn = ours_one_node if nodes == 1 else ours_three_nodes
            attempt(f"ours {nodes} node(s)", ours_fn, cfg, peer_rate)

    rat = ratios(rows)
    print(table(rows, rat))
    print()
    if lats:
        print(latency_table(lats))
        print()
    print(
        f"{cfg.size} B records; produce {cfg.duration} s, paced {cfg.latency_duration} s, "
        f"consume {cfg.consume_records} records; our Producer linger {cfg.linger_ms} ms, "
        f"{cfg.max_in_flight} in flight"
    )
    if nats is None:
        print(f"NATS: {skipped}")
    load_after = round(os.getloadavg()[0], 2)
    print(f"load average (1 min) before/after: {load_before} / {load_after}")
    for k, v in failed.items():
        print(f"FAILED {k}: {v.splitlines()[0] if v else ''}")
    report = {
        "bench": "client",
        "quick": quick,
        "size": cfg.size,
        "duration_s": cfg.duration,
        "latency_duration_s": cfg.latency_duration,
        "consume_records": cfg.consume_records,
        "producer": {"linger_ms": cfg.linger_ms, "max_in_flight": cfg.max_in_flight},
        "nats_window": cfg.nats_window,
        "nats_skipped": skipped if nats is None else None,
        "throughput": [r.as_dict() for r in rows],
        "latency": [lat.as_dict() for lat in lats],
        "ratios": rat,
        "failed": failed,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "cpus": os.cpu_count(),
            # Other work on the machine skews every figure: judge the run by this.
            "loadavg_1m_before": load_before,
            "loadavg_1m_after": load_after,
        },
    }
    print(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

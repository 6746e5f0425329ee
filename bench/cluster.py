"""Cluster benchmark: three `proglog serve` nodes on this machine (`make bench-cluster`).

Phases (each on a fresh 3-node cluster from pyproglog.testing.Cluster, gossip
profile `local`, Raft tick 50 ms x 10 election ticks):

  produce    replicated ProduceBatch (--batch records per call, --in-flight calls
             in flight, grpc.aio) to the leader, at 100 B and 4 KiB, with
             `--sync-policy interval` and `always`: records/s, MB/s, p50/p99 per
             batch. Then, per size, a Fetch loop over the same records on a
             follower (consume from a follower): records/s.
  failover   a writer thread produces continuously (unary Produce, 100 B; on any
             error it asks GetServers of the live nodes for the leader and goes
             on there); the leader is SIGKILLed --kills times. Figure: SIGKILL
             sent -> first acknowledged produce of a request sent after the
             process was dead. The killed node is restarted each time and the
             next kill waits until it has caught up. At the end every
             acknowledged record is checked at its offset on the leader.
  graceful   the same writer; the leader gets SIGTERM (it hands leadership over
             before it stops): unavailability = the longest gap between two
             acknowledgments from the SIGTERM until the writer's first
             acknowledged request sent after the process exited.
  catchup    a follower is stopped, --catchup-mb MB of 4 KiB records are
             produced, the follower is restarted: time until its GetLogInfo
             highest_offset and commit_offset match the leader's, MB/s
             ("restarted": it replays what it missed). Then the same again with
             the follower wiped before its restart ("wiped": the whole log).
             No progress for 60 s fails the round.
  nats       NATS JetStream, 3 servers, a stream with 3 replicas, pipelined
             publish_async with acks (bench/compare.py --r3), 100 B and 4 KiB,
             in the same run: our replicated produce as a ratio of it.

`--quick` is a smoke run (short durations, 3 kills, 2 restarts, 20 MB catch-up).
Prints a table and, as the last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

if not __package__:  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import Rates, bench_module, percentile, value_of
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import Cluster, ClusterError

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.use_local_subchannel_pool", 1),
]
FETCH_RECORDS = 1000
FETCH_BYTES = 8 * 1024 * 1024
PHASES = ("produce", "failover", "graceful", "catchup", "nats")
WRITER_SIZE = 100
STALL_S = 60.0  # catch-up: no progress for this long is a failure
WRITER_TIMEOUT = 2.0
# A node's log lines go into memory (pyproglog.testing keeps them for failures).
NODE_ARGS = ("--log-level", "warning")


@dataclass
class Result(Rates):
    workload: str
    size: int
    policy: str
    calls: int = 0
    records: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "size": self.size,
            "sync_policy": self.policy,
            "calls": self.calls,
            "records": self.records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 2),
            "p50_ms": round(percentile(sorted(self.latencies), 0.50) * 1000, 3),
            "p99_ms": round(percentile(sorted(self.latencies), 0.99) * 1000, 3),
        }


def start_cluster(root: Path, policy: str, name: str = "") -> Cluster:
    """A fresh 3-node cluster under root/name with `--sync-policy policy`, leader elected."""
    cluster = Cluster(root / (name or policy), 3, args=["--sync-policy", policy, *NODE_ARGS])
    t0 = time.perf_counter()
    cluster.start()
    leader = cluster.leader(timeout=30)
    # Joiners come in as learners: measure only once all three are members and current.
    cluster.wait(
        "three servers", lambda: True if len(cluster.servers(leader.name)) == 3 else None, 30
    )
    for follower in cluster.followers(leader):
        wait_caught_up(cluster, follower.name, 30)
    took = time.perf_counter() - t0
    log(f"cluster {name or policy} ({policy}) up in {took:.1f} s, leader {leader.name}")
    return cluster


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- replicated produce, consume from a follower -----------------------------------------------


async def produce_batches(
    addr: str,
    size: int,
    policy: str,
    duration: float,
    batch: int,
    in_flight: int,
    *,
    min_bytes: int = 0,
) -> Result:
    """`in_flight` loops of ProduceBatch(`batch` records) to `addr` for `duration`
    (or, with `min_bytes`, until that many value bytes are acknowledged)."""
    result = Result(f"produce_batch_{batch}", size, policy)
    req = log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=value_of(size))] * batch)
    async with grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        await asyncio.wait_for(channel.channel_ready(), 10)
        await stub.ProduceBatch(req, timeout=30)  # warm-up: connection, server code paths
        started = time.perf_counter()
        deadline = started + duration

        def more() -> bool:
            if min_bytes:
                return result.records * size < min_bytes
            return time.perf_counter() < deadline

        async def worker() -> None:
            while more():
                t0 = time.perf_counter()
                resp = await stub.ProduceBatch(req, timeout=60)
                result.latencies.append(time.perf_counter() - t0)
                result.calls += 1
                result.records += int(resp.count)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
        result.seconds = time.perf_counter() - started
    return result


async def fetch_range(addr: str, size: int, policy: str, start: int, end: int) -> Result:
    """Fetch loop over [start, end) on `addr`."""
    result = Result(f"fetch_{FETCH_RECORDS}_follower", size, policy)
    async with grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        req = log_pb2.FetchRequest(max_records=FETCH_RECORDS, max_bytes=FETCH_BYTES)
        offset = start
        started = time.perf_counter()
        while offset < end:
            req.offset = offset
            t0 = time.perf_counter()
            resp = await stub.Fetch(req, timeout=30)
            result.latencies.append(time.perf_counter() - t0)
            result.calls += 1
            result.records += sum(1 for r in resp.records if r.offset < end)
            if resp.next_offset <= offset:
                raise RuntimeError(f"fetch from {addr} stuck at {offset} (end {end})")
            offset = int(resp.next_offset)
        result.seconds = time.perf_counter() - started
    return result


def phase_produce(
    root: Path, policies: Sequence[str], sizes: Sequence[int], args: argparse.Namespace
) -> list[Result]:
    results: list[Result] = []
    for policy in policies:
        cluster = start_cluster(root, policy)
        try:
            for size in sizes:
                leader = cluster.leader()
                begin = cluster.info(leader.name).next_offset
                r = asyncio.run(
                    produce_batches(
                        leader.addr, size, policy, args.duration, args.batch, args.in_flight
                    )
                )
                results.append(r)
                log(f"  produce {size:>5} B {policy:<8} {r.records_per_s:>12,.0f} rec/s")
                end = cluster.info(leader.name).next_offset
                # The warm-up batch sits before what the workload wrote: skip it.
                begin += args.batch
                follower = cluster.followers(leader)[0]
                cluster.wait_committed(end - 1, follower.name, timeout=120)
                c = asyncio.run(fetch_range(follower.addr, size, policy, begin, end))
                results.append(c)
                log(f"  fetch   {size:>5} B {policy:<8} {c.records_per_s:>12,.0f} rec/s")
        finally:
            cluster.close()
    return results


# -- a continuous writer and leader faults ----------------------------------------------------


class Writer(threading.Thread):
    """Unary Produce in a loop, to whichever node it believes leads; records every ack.

    Each attempt carries a new sequence number in its value, so an acknowledged
    record can be found again; an attempt that failed may or may not be in the log.
    """

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.target = cluster.leader().name
        self.acks: list[tuple[float, float]] = []  # (sent, acknowledged), perf_counter
        self.acked: list[tuple[int, int]] = []  # (sequence number, offset)
        self.errors = 0
        self.last_error = ""
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._stubs: dict[str, log_pb2_grpc.LogStub] = {}

    def stub(self, name: str) -> log_pb2_grpc.LogStub:
        if name not in self._stubs:
            self._stubs[name] = self.cluster[name].stub()
        return self._stubs[name]

    def find_leader(self) -> str:
        """The leader a live node names; any live node when none does (it forwards)."""
        live = [n.name for n in self.cluster.nodes.values() if n.alive]
        for name in live:
            try:
                resp = self.stub(name).GetServers(log_pb2.GetServersRequest(), timeout=0.5)
            except grpc.RpcError:
                continue
            for s in resp.servers:
                if s.is_leader and s.id in live:
                    return str(s.id)
        return live[0] if live else self.target

    def run(self) -> None:
        seq = 0
        pad = value_of(WRITER_SIZE - 8)
        while not self._halt.is_set():
            seq += 1
            req = log_pb2.ProduceRequest(record=log_pb2.Record(value=struct.pack(">Q", seq) + pad))
            sent = time.perf_counter()
            try:
                resp = self.stub(self.target).Produce(req, timeout=WRITER_TIMEOUT)
            except grpc.RpcError as e:
                self.errors += 1
                self.last_error = f"{self.target}: {e.code().name} {e.details()}"
                self.target = self.find_leader()
                time.sleep(0.005)
                continue
            with self._lock:
                self.acks.append((sent, time.perf_counter()))
                self.acked.append((seq, int(resp.offset)))

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def first_ack_sent_after(self, t: float, timeout: float) -> float:
        """When the first request sent after `t` was acknowledged (waits up to `timeout`)."""
        deadline = time.perf_counter() + timeout
        while True:
            later: list[float] = []
            with self._lock:
                for sent, acked in reversed(self.acks):
                    if sent < t:
                        break
                    later.append(acked)
            if later:
                return min(later)
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"no produce acknowledged within {timeout} s; writer target "
                    f"{self.target}, {self.errors} errors (last: {self.last_error}); "
                    f"{views(self.cluster)}"
                )
            time.sleep(0.005)

    def wait_progress(self, n: int = 50, timeout: float = 30.0) -> None:
        start = len(self.acks)
        deadline = time.perf_counter() + timeout
        while len(self.acks) < start + n:
            if time.perf_counter() > deadline:
                raise RuntimeError("the writer makes no progress")
            time.sleep(0.01)

    def longest_gap(self, t_from: float, t_to: float) -> float:
        """Longest time without an ack over [t_from, t_to] (the ack before t_from counts)."""
        with self._lock:
            times = sorted(a for _, a in self.acks)
        before = [a for a in times if a < t_from]
        inside = [a for a in times if t_from <= a <= t_to]
        points = ([before[-1]] if before else [t_from]) + inside
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def views(cluster: Cluster) -> str:
    """Who each live node names as leader, for an error message."""
    said = []
    for node in cluster.live():
        try:
            servers = cluster.servers(node.name, 1.0)
            lead = [s.id for s in servers if s.is_leader]
            said.append(f"{node.name}: leader={lead} of {[s.id for s in servers]}")
        except grpc.RpcError as e:
            said.append(f"{node.name}: {e.code().name} {e.details()}")
    return "; ".join(said)


def wait_caught_up(cluster: Cluster, name: str, timeout: float = 120.0) -> float:
    """Wait until `name` has committed what the leader had committed when this was called."""
    t0 = time.perf_counter()
    leader = cluster.leader(timeout=30)
    target = cluster.committed_end(leader.name)
    cluster.wait(
        f"{name} to catch up to {target}",
        lambda: True if cluster.committed_end(name, 1.0) >= target else None,
        timeout,
    )
    return time.perf_counter() - t0


def check_acked(cluster: Cluster, writer: Writer) -> dict[str, int]:
    """Every acknowledged record at its offset on the leader, exactly once."""
    leader = cluster.leader()
    stub = leader.stub()
    by_offset: dict[int, int] = {}
    info = cluster.info(leader.name)
    offset = int(info.lowest_offset)
    end = cluster.committed_end(leader.name)
    while offset < end:
        req = log_pb2.FetchRequest(offset=offset, max_records=FETCH_RECORDS, max_bytes=FETCH_BYTES)
        resp = stub.Fetch(req, timeout=30)
        for r in resp.records:
            if len(r.value) == WRITER_SIZE:
                by_offset[int(r.offset)] = struct.unpack(">Q", r.value[:8])[0]
        if resp.next_offset <= offset:
            break
        offset = int(resp.next_offset)
    seen: dict[int, int] = {}
    for seq in by_offset.values():
        seen[seq] = seen.get(seq, 0) + 1
    lost = sum(1 for seq, off in writer.acked if by_offset.get(off) != seq)
    dup = sum(1 for seq, _ in writer.acked if seen.get(seq, 0) > 1)
    return {"acked": len(writer.acked), "lost": lost, "duplicated": dup}


def error_text(exc: BaseException) -> str:
    """The start of an error; a long one (ClusterError carries every node's output) is
    kept whole in a file that outlives the run's temporary directory."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) <= 1500:
        return text
    fd, path = tempfile.mkstemp(prefix="proglog-bench-cluster-error-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return f"{text[:1500]} ... [whole text in {path}]"


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median_s": round(statistics.median(values), 3) if values else None,
        "max_s": round(max(values), 3) if values else None,
        "min_s": round(min(values), 3) if values else None,
        "samples_s": [round(v, 3) for v in values],
    }


def phase_faults(root: Path, args: argparse.Namespace, phases: set[str]) -> dict[str, Any]:
    """Kills, then SIGTERMs, under one writer; what was measured survives a failure."""
    out: dict[str, Any] = {}
    failover: list[float] = []
    rejoin: list[float] = []
    gaps: list[float] = []
    stops: list[float] = []
    hung: list[str] = []  # SIGTERMed nodes that had to be killed
    cluster = start_cluster(root, "interval", "faults")
    writer = Writer(cluster)
    writer.start()
    try:
        for i in range(args.kills if "failover" in phases else 0):
            leader = cluster.leader(timeout=30)
            writer.wait_progress()
            t_kill = time.perf_counter()
            cluster.kill(leader.name)  # SIGKILL, then reaped: dead when this returns
            t_dead = time.perf_counter()
            acked = writer.first_ack_sent_after(t_dead, timeout=60)
            failover.append(acked - t_kill)
            t0 = time.perf_counter()
            cluster.restart(leader.name)
            wait_caught_up(cluster, leader.name)
            rejoin.append(time.perf_counter() - t0)
            log(
                f"  kill {i + 1}/{args.kills}: {leader.name} -> first ack after "
                f"{failover[-1] * 1000:.0f} ms; restarted + caught up in {rejoin[-1]:.1f} s"
            )
        for i in range(args.restarts if "graceful" in phases else 0):
            leader = cluster.leader(timeout=30)
            writer.wait_progress()
            t_term = time.perf_counter()
            try:
                cluster.stop(leader.name, args.stop_timeout)  # SIGTERM: hand over, then exit
            except ClusterError:  # it was SIGKILLed after the timeout: a finding, go on
                hung.append(leader.name)
                log(f"  {leader.name} did not exit within {args.stop_timeout} s of SIGTERM")
            t_exit = time.perf_counter()
            t_back = writer.first_ack_sent_after(t_exit, timeout=60)
            gaps.append(writer.longest_gap(t_term, t_back))
            stops.append(t_exit - t_term)
            cluster.restart(leader.name)
            wait_caught_up(cluster, leader.name)
            log(
                f"  SIGTERM {i + 1}/{args.restarts}: {leader.name} exited in "
                f"{stops[-1]:.2f} s; longest gap without an ack {gaps[-1] * 1000:.0f} ms"
            )
    except Exception as exc:  # keep the samples taken so far
        out["error"] = error_text(exc)
        log(f"  faults phase stopped early: {out['error'][:500]}")
    finally:
        writer.stop()
        if failover:
            out["failover"] = {**summary(failover), "restart_caught_up": summary(rejoin)}
        if gaps:
            out["graceful"] = {
                **summary(gaps),
                "sigterm_to_exit": summary(stops),
                "killed_after_stop_timeout": hung,
            }
        try:
            out["writer"] = {**check_acked(cluster, writer), "errors": writer.errors}
        except Exception as exc:
            out["writer"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        finally:
            cluster.close()
    return out


# -- catch-up of a wiped follower ---------------------------------------------------------------


def restart_and_catch_up(cluster: Cluster, name: str, *, wipe: bool) -> dict[str, Any]:
    """Restart the stopped node `name` (`wipe`: with no data) and time until its
    GetLogInfo highest and commit offsets reach what the leader holds now."""
    leader = cluster.leader()
    if wipe:
        cluster.wipe(name)
    target = cluster.info(leader.name)
    t0 = time.perf_counter()
    cluster.restart(name)
    t_ready = time.perf_counter()
    # A stalled catch-up is a finding, not a hang: give up after STALL_S without progress.
    at, moved = (-2, -2), time.perf_counter()
    while True:
        try:
            info = cluster.info(name, 1.0)
            now_at = (0, 0) if info.empty else (int(info.highest_offset), int(info.commit_offset))
        except grpc.RpcError:
            now_at = (-1, -1)
        now = time.perf_counter()
        if now_at[0] >= target.highest_offset and now_at[1] >= target.commit_offset:
            break
        if now_at != at:
            at, moved = now_at, now
        elif now - moved > STALL_S:
            raise RuntimeError(
                f"catch-up stalled ({'wiped' if wipe else 'restarted'}): {name} at "
                f"highest/commit {now_at} for {STALL_S:.0f} s; leader at "
                f"{target.highest_offset}/{target.commit_offset}"
            )
        time.sleep(0.1)
    done = time.perf_counter()
    return {"target": target, "seconds": done - t0, "start_s": t_ready - t0}


def phase_catchup(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Two rounds on one follower: restarted with its data after missing --catchup-mb
    (Raft log replay from where it stopped), then stopped, wiped and restarted (the
    whole log from nothing, as the spec's figure asks)."""
    out: dict[str, Any] = {}
    cluster = start_cluster(root, "interval", "catchup")
    try:
        leader = cluster.leader()
        follower = cluster.followers(leader)[0]
        size = 4096
        for wipe in (False, True):
            cluster.stop(follower.name)
            begin = cluster.info(leader.name).size_bytes
            r = asyncio.run(
                produce_batches(
                    leader.addr,
                    size,
                    "interval",
                    0,
                    args.catchup_batch,
                    args.in_flight,
                    min_bytes=int(args.catchup_mb * 1e6),
                )
            )
            log(f"  produced {r.records * size / 1e6:.0f} MB with {follower.name} down")
            key = "wiped" if wipe else "restarted"
            try:
                got = restart_and_catch_up(cluster, follower.name, wipe=wipe)
            except Exception as exc:  # keep the other round's figure
                out[f"{key}_error"] = error_text(exc)
                log(f"  catch-up ({key}) failed: {out[f'{key}_error'][:300]}")
                if not follower.alive:
                    cluster.restart(follower.name)
                continue
            target = got["target"]
            # What the follower had to fetch: everything (wiped) or what it missed.
            mb = (target.size_bytes - (0 if wipe else begin)) / 1e6
            out[key] = {
                "mb": round(mb, 1),
                "leader_log_mb": round(target.size_bytes / 1e6, 1),
                "start_s": round(got["start_s"], 3),
                "seconds": round(got["seconds"], 3),
                "mb_per_s": round(mb / got["seconds"], 1),
            }
            log(f"  catch-up ({key}): {mb:.0f} MB in {got['seconds']:.1f} s")
    finally:
        cluster.close()
    if "wiped_error" in out and "restarted" not in out:
        raise RuntimeError(out["wiped_error"])
    return out


# -- NATS JetStream R3 --------------------------------------------------------------------------


def phase_nats(sizes: Sequence[int], args: argparse.Namespace) -> dict[str, Any] | None:
    compare = bench_module("compare")
    nats = compare.nats_client()
    if nats is None:
        return None
    out: dict[str, Any] = {}
    for size in sizes:
        try:
            rates = compare.bench_nats_r3(nats, size, args.duration, args.nats_window)
        except Exception as exc:  # a broken peer must not lose our figures
            log(f"  nats R3 failed at {size} B: {exc!r}")
            continue
        out[str(size)] = {k: round(v, 2) for k, v in rates.items()}
        log(f"  nats R3 {size:>5} B {rates['records_per_s']:>12,.0f} rec/s")
    return out


# -- report ---------------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    head = (
        f"{'workload':<24} {'size':>5} {'sync':>8} {'calls':>7} {'records':>9} "
        f"{'rec/s':>11} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        d = r.as_dict()
        lines.append(
            f"{r.workload:<24} {r.size:>5} {r.policy:>8} {r.calls:>7} {r.records:>9} "
            f"{r.records_per_s:>11,.0f} {r.mb_per_s:>8.1f} {d['p50_ms']:>8.2f} {d['p99_ms']:>8.2f}"
        )
    return "\n".join(lines)


def ratios(results: list[Result], nats: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in results:
        if not r.workload.startswith("produce") or nats is None or str(r.size) not in nats:
            continue
        theirs = nats[str(r.size)]["records_per_s"]
        if theirs:
            out[f"produce_{r.size}_{r.policy}/nats_r3"] = round(r.records_per_s / theirs, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--duration", type=float, help="seconds per produce workload")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 4096])
    parser.add_argument("--policies", nargs="+", default=["interval", "always"])
    parser.add_argument("--batch", type=int, default=1000, help="records per ProduceBatch")
    parser.add_argument("--in-flight", type=int, default=4, help="ProduceBatch calls in flight")
    parser.add_argument("--kills", type=int, help="leader SIGKILLs (default 10, quick 3)")
    parser.add_argument("--restarts", type=int, help="leader SIGTERMs (default 5, quick 2)")
    parser.add_argument(
        "--stop-timeout", type=float, default=15.0, help="SIGTERM -> exit before a SIGKILL"
    )
    parser.add_argument("--catchup-mb", type=float, help="MB for catch-up (default 128, quick 20)")
    parser.add_argument("--catchup-batch", type=int, default=250, help="4 KiB records per call")
    parser.add_argument("--nats-window", type=int, default=1000, help="NATS unacked publishes")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (1.0 if quick else 3.0)
    args.kills = args.kills if args.kills is not None else (3 if quick else 10)
    args.restarts = args.restarts if args.restarts is not None else (2 if quick else 5)
    args.catchup_mb = args.catchup_mb or (20.0 if quick else 128.0)
    phases = set(args.phases)

    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    report: dict[str, Any] = {"bench": "cluster", "quick": quick, "duration_s": args.duration}
    failed: dict[str, str] = {}
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="proglog-bench-cluster-") as tmp:
        root = Path(tmp)

        def attempt(name: str, fn: Any, *a: Any) -> Any:
            log(f"phase {name}")
            try:
                return fn(*a)
            except Exception as exc:  # report what ran; one broken phase must not hide the rest
                failed[name] = error_text(exc)
                log(f"  phase {name} FAILED: {failed[name]}")
                return None

        if "produce" in phases:
            results = attempt("produce", phase_produce, root, args.policies, args.sizes, args) or []
        if phases & {"failover", "graceful"}:
            faults = attempt("failover/graceful", phase_faults, root, args, phases) or {}
            if "error" in faults:
                failed["failover/graceful"] = faults.pop("error")
            report.update(faults)
        if "catchup" in phases:
            report["catchup"] = attempt("catchup", phase_catchup, root, args)
            for key, value in (report["catchup"] or {}).items():
                if key.endswith("_error"):
                    failed[f"catchup ({key.removesuffix('_error')})"] = value
        nats = attempt("nats", phase_nats, args.sizes, args) if "nats" in phases else None

    report["produce"] = [r.as_dict() for r in results if r.workload.startswith("produce")]
    report["consume_follower"] = [r.as_dict() for r in results if r.workload.startswith("fetch")]
    report["nats_r3"] = nats
    report["ratios"] = ratios(results, nats)
    report["failed"] = failed
    report["elapsed_s"] = round(time.perf_counter() - started, 1)
    report["machine"] = {
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "cpus": os.cpu_count(),
        "loadavg_1m_before": load_before,
        # Other work on the machine skews every figure: judge the run by this.
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }

    if results:
        print(table(results))
        print(f"ProduceBatch: {args.batch} records per call, {args.in_flight} calls in flight")
    for key, title in (("failover", "kill -9 leader -> first ack"), ("graceful", "SIGTERM gap")):
        if key in report:
            f = report[key]
            print(f"{title}: median {f['median_s']} s, max {f['max_s']} s over {f['n']}")
            if f.get("killed_after_stop_timeout"):
                hung = f["killed_after_stop_timeout"]
                print(f"  SIGTERM did not stop {len(hung)} of them in time (SIGKILLed): {hung}")
    if "writer" in report:
        w = report["writer"]
        if "error" in w:
            print(f"writer: acknowledged records not checked: {w['error'][:300]}")
        else:
            print(f"writer: {w['acked']} acknowledged, {w['lost']} lost, {w['duplicated']} dup")
    for key, c in (report.get("catchup") or {}).items():
        if key.endswith("_error"):
            print(f"catch-up {key}: {c[:300]}")
        else:
            print(f"catch-up ({key}): {c['mb']} MB in {c['seconds']} s = {c['mb_per_s']} MB/s")
    if nats:
        for size, n in nats.items():
            print(f"NATS JetStream R3 {size} B: {n['records_per_s']:,.0f} rec/s")
    for k, v in report["ratios"].items():
        print(f"ratio {k}: {v}")
    for k, v in failed.items():
        print(f"FAILED {k}: {v.splitlines()[0] if v else ''}")
    print(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

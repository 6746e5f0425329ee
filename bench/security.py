"""Security benchmark: what mutual TLS and the ACL cost, plaintext vs mTLS + ACL in one run.

Starts two `proglog serve` processes side by side: one plaintext, one with
mutual TLS and the example ACL (certificates made by `pyproglog.auth.certs` in a
temporary directory; the client is `root`). On each, alternately, for --repeats
rounds of --duration seconds per workload:

  produce_batch_1000  ProduceBatch of 1000 x 100 B records, 4 calls in flight
  fetch_1000          Fetch of 1000 records per call, read sequentially from 0
  produce_unary       Produce of one 100 B record, 1 in flight: the per-call cost
                      of TLS and the ACL check, with no batch to spread it over

The servers take turns within each workload and round (and which goes first
alternates), so load from elsewhere on a shared machine falls on both alike.
Reported per workload and server: the median records/s over the rounds, and
records per CPU-second (CPU of the server process plus this client, read from
/proc) — the CPU figure barely moves with outside load, so its ratio is the
steadier measure of what security costs. Both as ratios secure / plaintext.
Target (from the issue): batched produce with mTLS + ACL >= 0.8 of plaintext
(records/s). Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.auth.certs import CertPaths, init_dir
from pyproglog.testing import ServerProcess

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
SIZE = 100
BATCH = 1000
BATCH_IN_FLIGHT = 4
FETCH_BYTES = 8 * 1024 * 1024
TARGET_PRODUCE_RATIO = 0.8
MODES = ("plaintext", "mtls_acl")


class Node:
    """A `proglog serve` subprocess (pyproglog.testing) with its own data directory."""

    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self._proc = ServerProcess(data_dir, args, http=False)

    def __enter__(self) -> Node:
        self._proc.start()
        return self

    @property
    def rpc_addr(self) -> str:
        return self._proc.rpc_addr

    @property
    def pid(self) -> int:
        assert self._proc.proc is not None
        return self._proc.proc.pid

    def __exit__(self, *exc: object) -> None:
        try:
            self._proc.stop(timeout=30)
        finally:
            self._proc.kill()


def secure_args(certs: CertPaths) -> list[str]:
    return [
        "--server-tls-cert-file",
        str(certs.server),
        "--server-tls-key-file",
        str(certs.server_key),
        "--server-tls-ca-file",
        str(certs.ca),
        "--acl-model-file",
        str(certs.model),
        "--acl-policy-file",
        str(certs.policy),
    ]


def root_credentials(certs: CertPaths) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client_key("root").read_bytes(),
        certificate_chain=certs.client("root").read_bytes(),
    )


@dataclass
class Tally:
    """One workload on one server over all rounds."""

    rates: list[float] = field(default_factory=list)  # records/s of each round
    records: int = 0
    cpu_seconds: float = 0.0  # server process + this client process

    @property
    def records_per_cpu_second(self) -> float:
        return self.records / self.cpu_seconds if self.cpu_seconds else 0.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed(
    duration: float, in_flight: int, call: Callable[[], Awaitable[int]]
) -> tuple[int, float]:
    """Records and seconds of `in_flight` loops of `call()` (answering its record count)."""
    deadline = time.perf_counter() + duration
    records = 0

    async def worker() -> None:
        nonlocal records
        while time.perf_counter() < deadline:
            records += await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return records, time.perf_counter() - started


async def produce_batch(stub: log_pb2_grpc.LogStub, duration: float) -> tuple[int, float]:
    request = log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=b"x" * SIZE)] * BATCH)

    async def call() -> int:
        return int((await stub.ProduceBatch(request)).count)

    return await timed(duration, BATCH_IN_FLIGHT, call)


async def produce_unary(stub: log_pb2_grpc.LogStub, duration: float) -> tuple[int, float]:
    request = log_pb2.ProduceRequest(record=log_pb2.Record(value=b"x" * SIZE))

    async def call() -> int:
        await stub.Produce(request)
        return 1

    return await timed(duration, 1, call)


async def fetch(stub: log_pb2_grpc.LogStub, duration: float) -> tuple[int, float]:
    """Sequential Fetch from 0 until the end of the log or the duration."""
    end = (await stub.GetLogInfo(log_pb2.GetLogInfoRequest())).next_offset
    request = log_pb2.FetchRequest(offset=0, max_records=BATCH, max_bytes=FETCH_BYTES)
    records = 0
    started = time.perf_counter()
    deadline = started + duration
    while request.offset < end and time.perf_counter() < deadline:
        answer = await stub.Fetch(request)
        records += len(answer.records)
        request.offset = answer.next_offset
    return records, time.perf_counter() - started


Workload = Callable[[log_pb2_grpc.LogStub, float], Awaitable[tuple[int, float]]]
WORKLOADS: dict[str, Workload] = {
    "produce_batch_1000": produce_batch,
    "fetch_1000": fetch,
    "produce_unary": produce_unary,
}


async def measure(
    targets: dict[str, tuple[grpc.aio.Channel, int]], repeats: int, duration: float
) -> dict[str, dict[str, Tally]]:
    """Each workload on each server, alternately, `repeats` times.

    The two servers take turns within each workload and round, and which goes
    first alternates, so load from elsewhere on the machine falls on both alike.
    """
    tallies = {w: {m: Tally() for m in MODES} for w in WORKLOADS}
    stubs = {mode: (log_pb2_grpc.LogStub(ch), pid) for mode, (ch, pid) in targets.items()}
    for round_ in range(repeats):
        order = MODES if round_ % 2 == 0 else MODES[::-1]
        for name, workload in WORKLOADS.items():
            for mode in order:
                stub, pid = stubs[mode]
                cpu0 = process_cpu_seconds(pid) + time.process_time()
                records, seconds = await workload(stub, duration)
                cpu = process_cpu_seconds(pid) + time.process_time() - cpu0
                tally = tallies[name][mode]
                tally.rates.append(records / seconds)
                tally.records += records
                tally.cpu_seconds += cpu
    return tallies


async def run(
    plain: Node, secure: Node, certs: CertPaths, repeats: int, duration: float
) -> dict[str, dict[str, Tally]]:
    async with (
        grpc.aio.insecure_channel(plain.rpc_addr, options=CHANNEL_OPTIONS) as plain_channel,
        grpc.aio.secure_channel(
            secure.rpc_addr, root_credentials(certs), options=CHANNEL_OPTIONS
        ) as secure_channel,
    ):
        # Warm both: connections (the TLS handshake) are not what is measured.
        for channel in (plain_channel, secure_channel):
            await log_pb2_grpc.LogStub(channel).GetLogInfo(log_pb2.GetLogInfoRequest())
        targets = {
            "plaintext": (plain_channel, plain.pid),
            "mtls_acl": (secure_channel, secure.pid),
        }
        return await measure(targets, repeats, duration)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per workload")
    parser.add_argument("--repeats", type=int, default=8, help="rounds (median)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="proglog-bench-security-") as tmp:
        root = Path(tmp)
        certs = CertPaths(root / "certs")
        init_dir(certs.dir)
        with (
            Node(root / "plain", []) as plain,
            Node(root / "secure", secure_args(certs)) as secure,
        ):
            tallies = asyncio.run(run(plain, secure, certs, args.repeats, args.duration))

    rate = {w: {m: statistics.median(t.rates) for m, t in by.items()} for w, by in tallies.items()}
    per_cpu = {w: {m: t.records_per_cpu_second for m, t in by.items()} for w, by in tallies.items()}
    ratio = {w: by["mtls_acl"] / by["plaintext"] for w, by in rate.items()}
    cpu_ratio = {w: by["mtls_acl"] / by["plaintext"] for w, by in per_cpu.items()}
    met = ratio["produce_batch_1000"] >= TARGET_PRODUCE_RATIO

    print(
        f"{'workload':<20}{'plaintext rec/s':>17}{'mTLS+ACL rec/s':>16}{'ratio':>7}"
        f"{'plain rec/cpu-s':>17}{'mTLS rec/cpu-s':>16}{'ratio':>7}"
    )
    for w in WORKLOADS:
        print(
            f"{w:<20}{rate[w]['plaintext']:>17,.0f}{rate[w]['mtls_acl']:>16,.0f}{ratio[w]:>7.2f}"
            f"{per_cpu[w]['plaintext']:>17,.0f}{per_cpu[w]['mtls_acl']:>16,.0f}"
            f"{cpu_ratio[w]:>7.2f}"
        )
    print(
        f"target: produce_batch_1000 ratio >= {TARGET_PRODUCE_RATIO}: "
        f"{'ok' if met else 'MISSED'}  ({time.perf_counter() - t0:.0f} s)"
    )
    out = {
        "benchmark": "security",
        "python": sys.version.split()[0],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "record_bytes": SIZE,
        "repeats": args.repeats,
        "duration_s": args.duration,
        "statistic": "median",
        "records_per_s": {w: {m: round(v) for m, v in by.items()} for w, by in rate.items()},
        "records_per_cpu_second": {
            w: {m: round(v) for m, v in by.items()} for w, by in per_cpu.items()
        },
        "ratio": {w: round(r, 3) for w, r in ratio.items()},
        "cpu_efficiency_ratio": {w: round(r, 3) for w, r in cpu_ratio.items()},
        "target": {"produce_batch_1000_ratio": TARGET_PRODUCE_RATIO},
        "targets_met": {"produce_batch_1000_ratio": met},
    }
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

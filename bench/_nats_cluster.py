"""A 3-node NATS JetStream cluster on loopback, for the R3 comparisons (bench/compare.py --r3).

Each `nats-server` gets its own client port, cluster (route) port, server name
and store dir; every server lists the others' routes, so the cluster forms
whichever starts first. Streams created on it with `num_replicas=3` are
replicated by JetStream's Raft, file storage, no fsync per message (NATS syncs
its files every 2 minutes by default): held against our `interval` policy.

Only the standard library here; the Python client (`nats-py`) is passed in as a
module by the caller, which skips NATS cleanly when it is missing.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

READY_TIMEOUT = 30.0


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        if p not in ports:
            ports.append(p)
    return ports


def available() -> bool:
    return shutil.which("nats-server") is not None


class NatsCluster:
    """`size` clustered `nats-server -js` processes; `urls` are their client addresses."""

    def __init__(self, size: int = 3) -> None:
        self.size = size
        ports = _free_ports(2 * size)
        self.client_ports = ports[:size]
        self.route_ports = ports[size:]
        self._tmp = tempfile.TemporaryDirectory(prefix="proglog-nats-r3-")
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def command(self, i: int) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.route_ports) if j != i)
        return [
            "nats-server",
            "-js",
            "-n",
            f"nats{i + 1}",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.client_ports[i]),
            "-sd",
            str(Path(self._tmp.name) / f"nats{i + 1}"),
            "--cluster_name",
            "bench",
            "--cluster",
            f"nats://127.0.0.1:{self.route_ports[i]}",
            "--routes",
            routes,
        ]

    def start_node(self, i: int) -> None:
        self.procs[i] = subprocess.Popen(
            self.command(i),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> NatsCluster:
        try:
            for i in range(self.size):
                self.start_node(i)
            deadline = time.monotonic() + READY_TIMEOUT
            for i in range(self.size):
                while not self._port_open(i):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"nats{i + 1} did not open its port")
                    time.sleep(0.05)
        except BaseException:
            self.close()
            raise
        return self

    def _port_open(self, i: int) -> bool:
        proc = self.procs[i]
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"nats{i + 1} exited")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.client_ports[i])) == 0

    def close(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._tmp.cleanup()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def add_replicated_stream(
    js: Any, name: str, subject: str, replicas: int = 3, timeout: float = READY_TIMEOUT
) -> None:
    """Create a file stream with `replicas`, retrying while JetStream's meta leader is elected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await js.add_stream(
                name=name, subjects=[subject], storage="file", num_replicas=replicas
            )
            return
        except Exception:  # no meta leader / not enough peers yet: the cluster is still forming
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def publish_pipelined(
    nats: ModuleType, urls: list[str], size: int, duration: float, window: int
) -> dict[str, float]:
    """Pipelined `publish_async` (at most `window` unacknowledged) for `duration`: rates."""
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream(publish_async_max_pending=window)
        subject = f"r3.{size}"
        await add_replicated_stream(js, f"R3_{size}", subject)
        value = (b"proglog-" * (size // 8 + 1))[:size]
        # Warm up: the stream's own Raft group may still be settling its leader.
        for _ in range(100):
            await js.publish(subject, value, timeout=10)
        acked = 0

        def done(fut: asyncio.Future[Any]) -> None:
            nonlocal acked
            if not fut.cancelled() and fut.exception() is None:
                acked += 1

        sent = 0
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            fut = await js.publish_async(subject, value)
            fut.add_done_callback(done)
            sent += 1
        await asyncio.wait_for(js.publish_async_completed(), 60)
        seconds = time.perf_counter() - start
        rate = acked / seconds
        return {"records_per_s": rate, "mb_per_s": rate * size / 1e6, "records": float(acked)}
    finally:
        await nc.close()

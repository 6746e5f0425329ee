"""A node's start: the data directory's lock and its ports, with real processes.

A start that fails (directory in use, port in use) must say so in one line,
exit non-zero, and leave every file in the data directory as it was: closing
a log trims the active segment's pre-allocated files, which would pull them
out from under a node that is using them.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pyproglog.agent import Agent
from pyproglog.agent.datadir import DataDirInUse, StartupError
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.config import Settings
from pyproglog.testing import ServerProcess, run_serve, started_agent

STEP = 10.0
LOCK_FILE = "LOCK"  # named in docs/operations.md


def sizes(directory: Path) -> dict[str, int]:
    # Not the lock: it holds the pid of whoever locked last, whose digits vary.
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.name != "LOCK"}


def produce(addr: str, values: list[bytes]) -> list[int]:
    with grpc.insecure_channel(addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        return [
            stub.Produce(
                log_pb2.ProduceRequest(record=log_pb2.Record(value=v)), timeout=STEP
            ).offset
            for v in values
        ]


def read_all(addr: str, count: int) -> list[bytes]:
    with grpc.insecure_channel(addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        return [
            stub.Consume(log_pb2.ConsumeRequest(offset=i), timeout=STEP).record.value
            for i in range(count)
        ]


def one_line_error(proc: object) -> str:
    """The `proglog:` line of a failed start; no traceback, nothing else on stderr."""
    assert proc.returncode != 0, proc.stdout + proc.stderr  # type: ignore[attr-defined]
    stderr: str = proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("proglog: "), stderr
    return lines[0]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process-like owner listens on for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_second_node_on_the_same_directory_is_refused_and_touches_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as first:
        assert produce(first.rpc_addr, [b"a%d" % i for i in range(5)]) == list(range(5))
        before = sizes(data)
        rpc_port = first.rpc_addr.rsplit(":", 1)[1]
        # The case that used to cut the first node's files: the second opens the
        # log, then fails on the port the first one holds, and closes the log.
        second = run_serve(data, ["--rpc-port", rpc_port, "--http-addr", "127.0.0.1:0"])
        line = one_line_error(second)
        assert line == (
            f"proglog: data directory {data} is in use by another proglog process (pid {first.pid})"
        )
        assert sizes(data) == before
        # The first node is unharmed: it appends where it was and reads everything.
        assert produce(first.rpc_addr, [b"b0", b"b1"]) == [5, 6]
        assert read_all(first.rpc_addr, 7) == [b"a%d" % i for i in range(5)] + [b"b0", b"b1"]
        assert first.stop() == 0


def test_a_killed_node_restarts_on_its_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as node:
        produce(node.rpc_addr, [b"x", b"y"])
        node.signal(signal.SIGKILL)
        assert node.proc is not None
        node.proc.wait(STEP)
    # The lock file is still there; the kernel dropped the lock with the process.
    assert (data / LOCK_FILE).exists()
    with ServerProcess(data) as again:
        assert read_all(again.rpc_addr, 2) == [b"x", b"y"]
        assert (data / LOCK_FILE).read_text().strip() == str(again.pid)
        assert again.stop() == 0


def test_a_stopped_node_releases_the_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as node:
        produce(node.rpc_addr, [b"x"])
        assert node.stop() == 0
    with ServerProcess(data) as again:
        assert read_all(again.rpc_addr, 1) == [b"x"]


@pytest.mark.parametrize("which", ["gRPC", "HTTP"])
def test_port_in_use_is_one_line_and_touches_no_log_file(
    tmp_path: Path, held_port: int, which: str
) -> None:
    data = tmp_path / "data"
    # An existing log: a failed start must leave its files as they were.
    with ServerProcess(data) as node:
        produce(node.rpc_addr, [b"kept"])
        node.signal(signal.SIGKILL)  # no clean close: the store keeps its pre-allocation
        assert node.proc is not None
        node.proc.wait(STEP)
    before = sizes(data)
    if which == "gRPC":
        args = ["--rpc-port", str(held_port), "--http-addr", "127.0.0.1:0"]
    else:
        args = ["--rpc-port", "0", "--http-addr", f"127.0.0.1:{held_port}"]
    proc = run_serve(data, args)
    assert one_line_error(proc) == (
        f"proglog: cannot listen on 127.0.0.1:{held_port} ({which}): address already in use"
    )
    after = sizes(data)
    assert after == before
    assert {name for name in after if name != LOCK_FILE}, "the log's files are still there"


async def test_in_process_agents_share_the_lock_rules(tmp_path: Path, held_port: int) -> None:
    """The same rules for nodes in one process (Agent), and a failed start gives all back."""
    data = tmp_path / "data"
    settings = {"data_dir": data, "rpc_port": 0, "http_addr": "127.0.0.1:0"}
    async with started_agent(settings):
        with pytest.raises(
            DataDirInUse, match=f"in use by another proglog process \\(pid {os.getpid()}\\)"
        ):
            await Agent(Settings.load(settings)).start()
    # A start that fails on its port releases the lock and the other port.
    with pytest.raises(StartupError, match="address already in use"):
        await Agent(Settings.load({**settings, "rpc_port": held_port})).start()
    async with started_agent(settings) as node:
        assert node.log is not None and node.log.next_offset == 0

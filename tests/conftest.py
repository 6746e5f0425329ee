"""Shared fixtures: real nodes, in process (fast) or as subprocesses (pyproglog.testing)."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from pyproglog.agent import Agent
from pyproglog.testing import ServerProcess, started_agent


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    """A node in the test's own event loop, on free ports, with a fresh data dir."""
    settings = {"data_dir": tmp_path / "data", "rpc_port": 0, "http_addr": "127.0.0.1:0"}
    async with started_agent(settings) as node:
        yield node


@pytest.fixture
async def aio_channel(agent: Agent) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(agent.rpc_addr) as channel:
        yield channel


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    """A `proglog serve` subprocess on free ports."""
    with ServerProcess(tmp_path / "data") as node:
        yield node


@pytest.fixture
def silent_addr() -> Iterator[str]:
    """A port that accepts TCP connections but never speaks HTTP/2 (so never gRPC).

    A server that hangs.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def echo_addr() -> Iterator[str]:
    """A TCP echo server on loopback (one thread per connection)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    with listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"

"""The fault-injecting TCP proxy, against a real echo server and a real node."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import ServerProcess, TcpProxy

STEP = 10.0  # bounds a failing wait only
# Channels share connections process-wide by default: the second channel below
# would reuse the first one's broken connection.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def connect(addr: str) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=STEP)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def test_passes_bytes_both_ways_and_the_half_close(echo_addr: str) -> None:
    with TcpProxy(echo_addr) as proxy, connect(proxy.addr) as sock:
        payload = bytes(range(256)) * 1000
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b"", "the echo server saw EOF and closed"


def test_blackhole_swallows_a_direction_until_healed(echo_addr: str) -> None:
    with TcpProxy(echo_addr) as proxy, connect(proxy.addr) as sock:
        proxy.blackhole("up")
        sock.sendall(b"lost")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(16)
        proxy.heal()
        sock.settimeout(STEP)
        sock.sendall(b"found")
        assert recv_exactly(sock, 5) == b"found"


def test_delay_holds_a_direction_back(echo_addr: str) -> None:
    with TcpProxy(echo_addr) as proxy, connect(proxy.addr) as sock:
        proxy.delay("down", 0.3)
        started = time.monotonic()
        sock.sendall(b"late")
        assert recv_exactly(sock, 4) == b"late"
        # A lower bound the proxy guarantees, not a speed expectation.
        assert time.monotonic() - started >= 0.3


def test_drop_connections_closes_open_ones_and_accepts_new_ones(echo_addr: str) -> None:
    with TcpProxy(echo_addr) as proxy:
        with connect(proxy.addr) as sock:
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
            proxy.drop_connections()
            # EOF or a reset: either way the connection is gone.
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
        with connect(proxy.addr) as again:
            again.sendall(b"y")
            assert recv_exactly(again, 1) == b"y"
        assert proxy.accepted == 2


def test_forwards_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        TcpProxy("192.0.2.1:8400")
    with pytest.raises(ValueError, match="loopback"):
        TcpProxy("127.0.0.1")


def test_a_partitioned_node_times_out_and_answers_again_once_healed(tmp_path: Path) -> None:
    request = log_pb2.ProduceRequest(record=log_pb2.Record(value=b"v"))
    with ServerProcess(tmp_path / "data", http=False) as node, TcpProxy(node.rpc_addr) as proxy:
        with grpc.insecure_channel(proxy.addr, OWN_CONNECTION) as channel:
            stub = log_pb2_grpc.LogStub(channel)
            assert stub.Produce(request, timeout=STEP).offset == 0
            proxy.blackhole("down")
            with pytest.raises(grpc.RpcError) as err:
                stub.Produce(request, timeout=0.5)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The lost bytes broke that HTTP/2 connection: heal, cut it, connect again.
        proxy.heal()
        proxy.drop_connections()
        with grpc.insecure_channel(proxy.addr, OWN_CONNECTION) as channel:
            stub = log_pb2_grpc.LogStub(channel)
            # The produce whose answer was lost reached the node: it is offset 1.
            assert stub.Produce(request, timeout=STEP).offset == 2

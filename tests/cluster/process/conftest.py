"""Real three-node clusters of `proglog serve` processes on loopback (pyproglog.testing.Cluster).

Every node runs the fast timings (gossip profile `local`, Raft election
timeout 0.5-1 s), so failure detection and elections take about a second. A
failing test prints every node's output after its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import Cluster

CALL = 5.0  # bounds one call in a test that expects it to succeed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


MakeCluster = Callable[..., Cluster]


@pytest.fixture
def make_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeCluster]:
    """Start a cluster (Cluster's arguments); closed at the end, its output shown on failure."""
    made: list[Cluster] = []

    def make(size: int = 3, **kwargs: Any) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", size, **kwargs)
        made.append(c)
        return c.start()

    yield make
    failed = request.node.stash.get(_FAILED, False)
    for c in made:
        if failed:
            print(c.describe())
        c.close()


@pytest.fixture
def cluster(make_cluster: MakeCluster) -> Cluster:
    return make_cluster()


def produce(stub: log_pb2_grpc.LogStub, value: bytes, timeout: float = CALL) -> int:
    req = log_pb2.ProduceRequest(record=log_pb2.Record(value=value))
    return int(stub.Produce(req, timeout=timeout).offset)


def produce_batch(
    stub: log_pb2_grpc.LogStub, values: list[bytes], timeout: float = CALL
) -> tuple[int, int]:
    req = log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=v) for v in values])
    resp = stub.ProduceBatch(req, timeout=timeout)
    return int(resp.base_offset), int(resp.last_offset)


def produce_routed(cluster: Cluster, value: bytes, via: str, retries: int = 1) -> int:
    """Produce the way a routing client does: ask `via` for GetServers, send to the leader;
    on failure ask again and retry, at most `retries` times."""
    last: grpc.RpcError | None = None
    for _ in range(retries + 1):
        servers = cluster.servers(via, timeout=CALL)
        leaders = [s for s in servers if s.is_leader]
        if leaders:
            with grpc.insecure_channel(leaders[0].rpc_addr) as ch:
                try:
                    return produce(log_pb2_grpc.LogStub(ch), value)
                except grpc.RpcError as e:
                    last = e
        time.sleep(0.1)
    raise AssertionError(f"routed produce failed after {retries} retries: {last}")


def rpc_code(call: Callable[[], object]) -> grpc.StatusCode | None:
    """The status a call ends with (None: it succeeded)."""
    try:
        call()
    except grpc.RpcError as e:
        return e.code()
    return None

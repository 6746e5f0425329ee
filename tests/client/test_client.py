"""The typed client (`pyproglog.client`) against a real node.

The node runs in process on its own event loop in a background thread: the
client is synchronous, so calling it from the `agent` fixture's loop (the
test's own) would block the very loop that has to answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from pyproglog.agent import Agent
from pyproglog.client import (
    Client,
    ClientClosed,
    ClientError,
    ClientTLS,
    DeadlineExceeded,
    InvalidArgument,
    OffsetOutOfRange,
    PermissionDenied,
    Record,
    ServerError,
    TLSConfigError,
    Unauthenticated,
    Unavailable,
    Unreachable,
)
from pyproglog.client._errors import from_rpc_error
from pyproglog.config import Settings
from pyproglog.testing import free_port

STEP = 10.0  # bound for anything that should happen "at once"


class ThreadedNode:
    """An Agent serving from its own loop in a daemon thread."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        self.settings = Settings.load(
            {"data_dir": data_dir, "rpc_port": 0, "http_addr": "", **overrides}
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.agent = Agent(self.settings)
        self._lock = threading.Lock()
        self._stopping: concurrent.futures.Future[None] | None = None

    def start(self) -> ThreadedNode:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.agent.start(), self.loop).result(STEP * 3)
        return self

    def stop(self) -> None:
        # Agent.stop() returns at once when a stop is already under way; every
        # caller here waits for the one real stop to finish.
        with self._lock:
            if self._stopping is None:
                self._stopping = asyncio.run_coroutine_threadsafe(self.agent.stop(), self.loop)
        self._stopping.result(STEP * 3)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STEP)
        self.loop.close()

    @property
    def addr(self) -> str:
        return self.agent.rpc_addr


def when_waiting(node: ThreadedNode, action: Callable[[], object]) -> threading.Thread:
    """Run `action` in a thread once the server next waits for a new record (no sleeps).

    Arm it before the call whose wait it is for: a wait that began earlier is not seen.
    """
    service = node.agent.service
    assert service is not None
    original = service.wait_for_offset
    waiting = threading.Event()

    async def spy(offset: int, timeout: float | None) -> bool:
        waiting.set()
        return await original(offset, timeout)

    service.wait_for_offset = spy  # type: ignore[method-assign]

    def run() -> None:
        assert waiting.wait(STEP), "the server never started waiting"
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ThreadedNode]:
    n = ThreadedNode(tmp_path / "data").start()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def client(node: ThreadedNode) -> Iterator[Client]:
    with Client(node.addr, timeout=STEP) as c:
        yield c


# -- every method ---------------------------------------------------------------------


def test_produce_and_consume(client: Client) -> None:
    assert client.produce(b"first") == 0
    assert client.produce("second") == 1  # str is sent as UTF-8
    before = int(time.time() * 1000)
    rec = client.consume(1)
    assert rec.value == b"second"
    assert rec.offset == 1
    assert 0 < rec.timestamp_ms <= before + 1000
    assert client.consume(0).value == b"first"


def test_produce_keeps_a_given_timestamp(client: Client) -> None:
    offset = client.produce(b"x", timestamp_ms=1_000)
    assert client.consume(offset).timestamp_ms == 1_000


def test_produce_batch_is_contiguous(client: Client) -> None:
    client.produce(b"before")
    first = client.produce_batch([b"a", "b", Record(b"c", timestamp_ms=42)])
    assert first == 1
    got = [client.consume(first + i) for i in range(3)]
    assert [r.value for r in got] == [b"a", b"b", b"c"]
    assert [r.offset for r in got] == [1, 2, 3]
    assert got[2].timestamp_ms == 42
    assert client.produce(b"after") == 4


def test_fetch_reads_a_range(client: Client) -> None:
    client.produce_batch([b"%d" % i for i in range(10)])
    res = client.fetch(2, max_records=3)
    assert [r.offset for r in res.records] == [2, 3, 4]
    assert [r.value for r in res.records] == [b"2", b"3", b"4"]
    assert res.next_offset == 5
    assert res.high_watermark == 10


def test_fetch_at_the_end_long_polls(node: ThreadedNode, client: Client) -> None:
    client.produce(b"a")
    start = time.monotonic()
    res = client.fetch(1, max_wait_ms=300)
    assert res.records == ()
    assert res.next_offset == 1
    assert time.monotonic() - start >= 0.25

    t = when_waiting(node, lambda: client.produce(b"b"))
    res = client.fetch(1, max_wait_ms=int(STEP * 1000))
    t.join()
    assert [r.value for r in res.records] == [b"b"]


def test_tail_yields_existing_then_new_records(node: ThreadedNode, client: Client) -> None:
    client.produce_batch([b"a", b"b"])
    # Armed first: the server waits for offset 2 as soon as it has sent "b".
    producer = when_waiting(node, lambda: client.produce(b"c"))
    stream = client.tail(1)
    assert next(stream).value == b"b"
    rec = next(stream)
    producer.join()
    assert (rec.offset, rec.value) == (2, b"c")
    stream.close()
    # Closing cancelled the call; the client still works.
    assert client.produce(b"d") == 3


def test_tail_many_records_in_order(client: Client) -> None:
    client.produce_batch([b"%d" % i for i in range(2500)])
    got = [r.offset for r in itertools.islice(client.tail(0, max_records=100), 2500)]
    assert got == list(range(2500))


def test_tail_ends_with_unavailable_when_the_server_stops(
    node: ThreadedNode, client: Client
) -> None:
    client.produce(b"a")
    stopper = when_waiting(node, node.stop)
    stream = client.tail(0)
    assert next(stream).value == b"a"
    with pytest.raises(Unavailable) as info:
        next(stream)
    stopper.join()
    assert not isinstance(info.value, Unreachable)
    assert "shutting down" in str(info.value)


def test_get_servers_lists_this_node_as_leader(node: ThreadedNode, client: Client) -> None:
    servers = client.get_servers()
    assert len(servers) == 1
    assert servers[0].rpc_addr == node.addr
    assert servers[0].id == node.settings.node_name
    assert servers[0].is_leader
    assert servers[0].voter


def test_info(client: Client) -> None:
    empty = client.info()
    assert empty.empty
    assert empty.highest_offset is None
    assert (empty.lowest_offset, empty.next_offset) == (0, 0)
    client.produce_batch([b"a", b"b", b"c"])
    info = client.info()
    assert not info.empty
    assert (info.lowest_offset, info.highest_offset, info.next_offset) == (0, 2, 3)
    assert info.commit_offset == 2
    assert info.segment_count >= 1
    assert info.size_bytes > 0
    # A plain node is no cluster.
    assert (info.role, info.term, info.leader_id, info.leader_addr) == ("standalone", 0, None, None)
    assert info.replicas == ()


@pytest.fixture
def cluster_of_one(tmp_path: Path) -> Iterator[ThreadedNode]:
    """A node bootstrapped as a cluster of one: it elects itself at once."""
    n = ThreadedNode(
        tmp_path / "data",
        node_name="solo",
        bind_addr=f"127.0.0.1:{free_port()}",
        bootstrap=True,
        gossip_profile="local",
    ).start()
    try:
        yield n
    finally:
        n.close()


def test_info_of_a_cluster_leader(cluster_of_one: ThreadedNode) -> None:
    with Client(cluster_of_one.addr, timeout=STEP) as c:
        c.produce(b"x")  # answered once committed: the node leads by then
        info = c.info()
        servers = c.get_servers()
    assert (info.role, info.leader_id, info.leader_addr) == ("leader", "solo", cluster_of_one.addr)
    assert info.term >= 1
    (replica,) = info.replicas
    assert (replica.id, replica.rpc_addr, replica.voter) == ("solo", cluster_of_one.addr, True)
    assert replica.lag_entries == 0 and replica.match_index >= 2
    assert [(s.id, s.is_leader, s.voter) for s in servers] == [("solo", True, True)]


def test_remove_server_names_the_server_error(cluster_of_one: ThreadedNode) -> None:
    with Client(cluster_of_one.addr, timeout=STEP) as c:
        c.produce(b"x")
        with pytest.raises(InvalidArgument, match="nobody is not a member"):
            c.remove_server("nobody")


def test_remove_server_on_a_single_node_is_a_server_error(client: Client) -> None:
    # A node that is no cluster does not serve the peer service at all.
    with pytest.raises(ClientError) as info:
        client.remove_server("anyone")
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_offset_for_timestamp(client: Client) -> None:
    client.produce_batch([Record(b"a", timestamp_ms=1_000), Record(b"b", timestamp_ms=2_000)])
    assert client.offset_for_timestamp(0).offset == 0
    hit = client.offset_for_timestamp(1_500)
    assert (hit.offset, hit.found) == (1, True)
    miss = client.offset_for_timestamp(3_000)
    assert (miss.offset, miss.found) == (2, False)


# -- errors from the server -------------------------------------------------------------


def test_consume_past_the_end_is_offset_out_of_range(client: Client) -> None:
    client.produce(b"a")
    with pytest.raises(OffsetOutOfRange) as info:
        client.consume(7)
    assert info.value.offset == 7
    assert str(info.value) == "offset out of range: 7"
    assert info.value.code is grpc.StatusCode.OUT_OF_RANGE
    assert any(isinstance(d, error_details_pb2.LocalizedMessage) for d in info.value.details)
    # Where the log is, from the server's ErrorInfo: a reader can resume there.
    assert info.value.error_reason == "OFFSET_OUT_OF_RANGE"
    assert (info.value.lowest, info.value.next_offset) == (0, 1)


def test_fetch_past_the_end_is_offset_out_of_range(client: Client) -> None:
    with pytest.raises(OffsetOutOfRange) as info:
        client.fetch(3)
    assert info.value.offset == 3


def test_out_of_range_is_read_from_error_info_not_from_the_message() -> None:
    meta = {"offset": "12", "lowest": "10", "next": "20"}
    info = error_details_pb2.ErrorInfo(reason="OFFSET_OUT_OF_RANGE", metadata=meta)
    # A message worded otherwise (another server, another language) changes nothing.
    exc = FakeRpcError(grpc.StatusCode.OUT_OF_RANGE, "hors limites : 99", [info])
    err = translate(exc, offset=5)
    assert isinstance(err, OffsetOutOfRange)
    assert (err.offset, err.lowest, err.next_offset) == (12, 10, 20)
    assert (err.error_reason, err.error_metadata) == ("OFFSET_OUT_OF_RANGE", meta)


def test_empty_batch_is_invalid(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="at least one record"):
        client.produce_batch([])


def test_oversized_record_is_invalid_and_not_written(tmp_path: Path) -> None:
    n = ThreadedNode(tmp_path / "data", max_record_bytes=100).start()
    try:
        with Client(n.addr, timeout=STEP) as c:
            with pytest.raises(InvalidArgument, match="exceeds the limit of 100 bytes") as info:
                c.produce(b"x" * 101)
            assert info.value.error_reason == "RECORD_TOO_LARGE"
            assert info.value.error_metadata == {"size": "101", "limit": "100"}
            assert c.info().empty
    finally:
        n.close()


def test_closed_client_raises_client_error(node: ThreadedNode) -> None:
    c = Client(node.addr)
    c.close()
    with pytest.raises(ClientClosed):
        c.info()
    with pytest.raises(ClientClosed):
        next(c.tail(0))


# -- errors before the server -----------------------------------------------------------


def test_refused_connection_is_unreachable_at_once() -> None:
    addr = f"127.0.0.1:{free_port()}"
    with Client(addr, timeout=STEP) as c:
        start = time.monotonic()
        with pytest.raises(Unreachable) as info:
            c.produce(b"a")
        assert str(info.value).startswith(f"cannot reach {addr}: ")
        assert info.value.addr == addr
        with pytest.raises(Unreachable):
            next(c.tail(0))
        assert time.monotonic() - start < STEP / 2


def test_silent_server_is_unreachable_after_the_timeout(silent_addr: str) -> None:
    with Client(silent_addr, timeout=0.3) as c:
        for call in (c.info, lambda: next(c.tail(0))):
            start = time.monotonic()
            with pytest.raises(Unreachable, match=r"no answer within 0\.3s"):
                call()
            assert time.monotonic() - start < STEP / 2


def test_unresolvable_host_is_unreachable() -> None:
    with Client("nosuchhost.invalid:8400", timeout=STEP) as c, pytest.raises(Unreachable):
        c.get_servers()


# -- TLS --------------------------------------------------------------------------------


def test_tls_needs_cert_and_key_together(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="both the certificate and the key"):
        ClientTLS(cert_file=tmp_path / "c.pem")


def test_tls_missing_file_fails_on_connect(tmp_path: Path) -> None:
    with pytest.raises(TLSConfigError, match="cannot read TLS CA file"):
        Client("127.0.0.1:1", tls=ClientTLS(ca_file=tmp_path / "nope.pem"))


def test_tls_to_a_plaintext_server_fails_fast(node: ThreadedNode) -> None:
    with Client(node.addr, tls=ClientTLS(), timeout=STEP) as c:
        start = time.monotonic()
        with pytest.raises(Unavailable):
            c.info()
        assert time.monotonic() - start < STEP / 2


# -- translation of statuses --------------------------------------------------------


class FakeRpcError(grpc.RpcError):  # type: ignore[misc]
    def __init__(
        self, code: grpc.StatusCode, details: str, status_details: list[Any] | None = None
    ) -> None:
        self._code, self._details = code, details
        self._trailers: list[tuple[str, Any]] = []
        if status_details is not None:
            packed = []
            for d in status_details:
                a = any_pb2.Any()
                a.Pack(d)
                packed.append(a)
            st = status_pb2.Status(code=code.value[0], message=details, details=packed)
            self._trailers.append(("grpc-status-details-bin", st.SerializeToString()))

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> list[tuple[str, Any]]:
        return self._trailers


def translate(exc: grpc.RpcError, connected: bool = True, **kw: Any) -> ClientError:
    return from_rpc_error(exc, addr="h:1", connected=connected, **kw)


def localized(msg: str) -> error_details_pb2.LocalizedMessage:
    return error_details_pb2.LocalizedMessage(locale="en-US", message=msg)


def test_permission_denied_keeps_the_server_message() -> None:
    msg = "nobody not permitted to produce to *"
    err = translate(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, msg, [localized(msg)]))
    assert isinstance(err, PermissionDenied)
    assert str(err) == msg
    assert err.details[0] == localized(msg)


def test_unauthenticated() -> None:
    err = translate(FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "no certificate", []))
    assert isinstance(err, Unauthenticated)


def test_unavailable_from_the_service_names_the_leader() -> None:
    info = error_details_pb2.ErrorInfo(reason="NOT_LEADER", metadata={"leader_addr": "n2:8400"})
    err = translate(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "not the leader", [info]))
    assert type(err) is Unavailable
    assert err.leader_addr == "n2:8400"


def test_unavailable_from_the_transport_is_unreachable() -> None:
    err = translate(
        FakeRpcError(
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: "
            "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused",
        )
    )
    assert isinstance(err, Unreachable)
    assert str(err) == "cannot reach h:1: Failed to connect to remote host: Connection refused"


def test_deadline_tells_slow_from_unreachable() -> None:
    exc = FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    slow = translate(exc, connected=True, timeout=2.0)
    assert type(slow) is DeadlineExceeded
    assert str(slow) == "no answer from h:1 within 2s"
    gone = translate(exc, connected=False, timeout=2.0)
    assert isinstance(gone, Unreachable)
    assert str(gone) == "cannot reach h:1: no answer within 2s"


def test_out_of_range_falls_back_to_the_requested_offset() -> None:
    err = translate(FakeRpcError(grpc.StatusCode.OUT_OF_RANGE, "below retention"), offset=9)
    assert isinstance(err, OffsetOutOfRange)
    assert err.offset == 9


def test_other_codes_are_server_errors() -> None:
    err = translate(FakeRpcError(grpc.StatusCode.INTERNAL, "internal error"))
    assert isinstance(err, ServerError)
    assert str(err) == "INTERNAL: internal error"
    assert err.code is grpc.StatusCode.INTERNAL


# What grpc core said in each case, seen against real servers (tests/cli has those runs).
_TLS_FAILURES = {
    "plaintext_server": "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
    "error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: "
    "Invalid certificate verification context",
    "untrusted_server": "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
    "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
    "certificate has expired",
    "handshake_closed": "Socket closed",
}


@pytest.mark.parametrize("problem", sorted(_TLS_FAILURES))
def test_tls_failures_are_classified(problem: str) -> None:
    details = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    err = translate(FakeRpcError(grpc.StatusCode.UNAVAILABLE, details + _TLS_FAILURES[problem]))
    assert isinstance(err, Unreachable)
    assert err.tls_problem == problem
    if problem == "untrusted_server":
        assert err.tls_detail == "certificate has expired"


def test_other_transport_failures_are_not_tls_problems() -> None:
    err = translate(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "Connection refused"))
    assert isinstance(err, Unreachable)
    assert err.tls_problem is None

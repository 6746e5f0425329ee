"""Graceful shutdown of a `proglog serve` process (SIGTERM / SIGINT).

Every test runs a real server subprocess and talks to it with blocking gRPC
clients on threads. Waits are on conditions with deadlines; where a test shows
that something did *not* hold the drain up, the server gets a long grace
period and the deadline for its exit is well below it.
"""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pyproglog.agent import Agent
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.config import Settings
from pyproglog.testing import ServerProcess

LONG_GRACE = ["--shutdown-grace-seconds", "60"]
EXIT_DEADLINE = 30.0  # well below LONG_GRACE: an exit by then was not held by the grace
STEP = 10.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_exit(node: ServerProcess, timeout: float = EXIT_DEADLINE) -> int:
    """Wait for a node that was already signalled (without signalling it again)."""
    assert node.proc is not None
    code = node.proc.wait(timeout)
    node.stop()  # only joins the output reader now that the process has exited
    return code


class RequestFeed:
    """A request iterator for a client stream that the test feeds by hand."""

    def __init__(self) -> None:
        self._queue: queue.Queue[log_pb2.ProduceRequest | None] = queue.Queue()

    def send(self, value: bytes) -> None:
        self._queue.put(log_pb2.ProduceRequest(record=log_pb2.Record(value=value)))

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[log_pb2.ProduceRequest]:
        while (item := self._queue.get()) is not None:
            yield item


def open_idle_produce_stream(
    stub: log_pb2_grpc.LogStub,
) -> tuple[RequestFeed, Iterator[log_pb2.ProduceResponse]]:
    """A ProduceStream that has produced one record and stays open: an in-flight call."""
    feed = RequestFeed()
    responses = stub.ProduceStream(iter(feed), timeout=120)
    feed.send(b"keep-open")
    next(responses)
    return feed, responses


# -- no acknowledged record lost --------------------------------------------------------


@dataclass
class Acks:
    cond: threading.Condition = field(default_factory=threading.Condition)
    records: list[tuple[int, bytes]] = field(default_factory=list)
    errors: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)

    def add(self, pairs: list[tuple[int, bytes]]) -> None:
        with self.cond:
            self.records.extend(pairs)
            self.cond.notify_all()

    def fail(self, err: grpc.RpcError) -> None:
        with self.cond:
            self.errors.append((err.code(), err.details() or ""))
            self.cond.notify_all()


def produce_until_refused(addr: str, name: str, batch: int, acks: Acks) -> None:
    """Produce until the server refuses; record exactly what was acknowledged."""
    with grpc.insecure_channel(addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        for i in range(1_000_000):
            values = [b"%s-%d-%d" % (name.encode(), i, j) for j in range(batch)]
            try:
                if batch == 1:
                    resp = stub.Produce(
                        log_pb2.ProduceRequest(record=log_pb2.Record(value=values[0])),
                        timeout=STEP,
                    )
                    acks.add([(resp.offset, values[0])])
                else:
                    got = stub.ProduceBatch(
                        log_pb2.ProduceBatchRequest(
                            records=[log_pb2.Record(value=v) for v in values]
                        ),
                        timeout=STEP,
                    )
                    assert got.count == batch
                    acks.add([(got.base_offset + j, v) for j, v in enumerate(values)])
            except grpc.RpcError as err:
                acks.fail(err)
                return


def read_all(addr: str) -> dict[int, bytes]:
    with grpc.insecure_channel(addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        info = stub.GetLogInfo(log_pb2.GetLogInfoRequest(), timeout=STEP)
        out: dict[int, bytes] = {}
        offset = info.lowest_offset
        while offset < info.next_offset:
            page = stub.Fetch(log_pb2.FetchRequest(offset=offset), timeout=STEP)
            assert page.records, f"no records at {offset} < {info.next_offset}"
            for r in page.records:
                assert r.offset == offset, "gap in the log"
                out[r.offset] = r.value
                offset += 1
        return out


def test_sigterm_under_load_loses_no_acknowledged_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acks = Acks()
    producers = [(f"single{i}", 1) for i in range(4)] + [(f"batch{i}", 20) for i in range(2)]
    with ServerProcess(data, http=False) as node:
        threads = [
            threading.Thread(target=produce_until_refused, args=(node.rpc_addr, n, b, acks))
            for n, b in producers
        ]
        for t in threads:
            t.start()
        try:
            with acks.cond:
                assert acks.cond.wait_for(lambda: len(acks.records) >= 2000, timeout=60), (
                    f"only {len(acks.records)} acknowledged; errors {acks.errors}"
                )
            node.signal(signal.SIGTERM)
            code = wait_exit(node)
        finally:
            for t in threads:
                t.join(STEP * 3)
        assert not any(t.is_alive() for t in threads)
    assert code == 0, "".join(node.output)
    assert "proglog stopped\n" in node.output
    # Each producer ran until refused: UNAVAILABLE ("server is shutting down", then
    # connection refused), or CANCELLED for a call that reached the server just as
    # grpc's shutdown began and never got to a handler (grpc core zombifies those
    # with CANCELLED: grpc/grpc#41785; see the report on Agent.stop's ordering).
    assert len(acks.errors) == len(producers)
    for code_, details in acks.errors:
        assert code_ == grpc.StatusCode.UNAVAILABLE or (code_, details) == (
            grpc.StatusCode.CANCELLED,
            "CANCELLED",
        ), acks.errors

    acked = dict(acks.records)
    assert len(acked) == len(acks.records), "an offset was acknowledged twice"

    with ServerProcess(data, http=False) as again:
        stored = read_all(again.rpc_addr)
    missing = {o: v for o, v in acked.items() if stored.get(o) != v}
    assert not missing, f"{len(missing)} acknowledged records lost or changed after restart"
    assert len(stored) >= len(acked)


# -- open calls end -----------------------------------------------------------------------


@dataclass
class Outcome:
    done: threading.Event = field(default_factory=threading.Event)
    code: grpc.StatusCode | None = None
    details: str = ""
    received: int = 0


def follow(stream: Iterator[object], first: threading.Event, out: Outcome) -> None:
    try:
        for _ in stream:
            out.received += 1
            first.set()
        out.code = grpc.StatusCode.OK
    except grpc.RpcError as err:
        out.code, out.details = err.code(), err.details() or ""
    finally:
        first.set()
        out.done.set()


def test_open_streams_and_long_polls_end_cleanly_on_sigterm(tmp_path: Path) -> None:
    with (
        ServerProcess(tmp_path / "data", LONG_GRACE, http=False) as node,
        grpc.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        stub.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"zero")), timeout=STEP)
        streams = {
            "ConsumeStream": stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0), timeout=120),
            "ConsumeBatchStream": stub.ConsumeBatchStream(
                log_pb2.ConsumeBatchStreamRequest(offset=0), timeout=120
            ),
        }
        outcomes = {name: Outcome() for name in streams}
        threads = []
        for name, stream in streams.items():
            first = threading.Event()
            threads.append(
                threading.Thread(target=follow, args=(stream, first, outcomes[name]), daemon=True)
            )
            threads[-1].start()
            assert first.wait(STEP), f"{name} delivered nothing"
        fetch = stub.Fetch.future(log_pb2.FetchRequest(offset=1, max_wait_ms=50_000), timeout=120)

        node.signal(signal.SIGTERM)
        code = wait_exit(node)  # streams and the long poll did not hold the drain up

        for name, out in outcomes.items():
            assert out.done.wait(STEP), f"{name} hangs after the server exited"
            assert out.received == 1, name
            assert (out.code, out.details) in {
                (grpc.StatusCode.OK, ""),
                (grpc.StatusCode.UNAVAILABLE, "server is shutting down"),
            }, (name, out.code, out.details)
        try:
            resp = fetch.result(STEP)
            assert list(resp.records) == []
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert code == 0, "".join(node.output)
    assert "proglog stopped\n" in node.output


# -- health while draining ----------------------------------------------------------------------


def test_health_watch_turns_not_serving_on_sigterm(tmp_path: Path) -> None:
    with (
        ServerProcess(tmp_path / "data", LONG_GRACE, http=False) as node,
        grpc.insecure_channel(node.rpc_addr) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        watches = {
            name: health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=60)
            for name in ("", "log.v1.Log")
        }
        for name, watch in watches.items():
            assert next(watch).status == SERVING, name
        node.signal(signal.SIGTERM)
        for name, watch in watches.items():
            assert next(watch).status == NOT_SERVING, name
            watch.cancel()  # an open Watch is an in-flight call: let the drain finish
        assert wait_exit(node) == 0, "".join(node.output)
    assert "proglog stopped\n" in node.output


async def test_health_check_answers_not_serving_while_draining(tmp_path: Path) -> None:
    settings = Settings.load(
        {
            "data_dir": tmp_path / "data",
            "rpc_port": 0,
            "http_addr": "",
            **{"shutdown_grace_seconds": 60},
        }
    )
    node = Agent(settings)
    await node.start()
    stopping: asyncio.Task[None] | None = None
    try:
        async with grpc.aio.insecure_channel(node.rpc_addr) as channel:
            stub = log_pb2_grpc.LogStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="")
            assert (await health.Check(check, timeout=STEP)).status == SERVING
            # A consumer that stops reading while the server still has data for it
            # is an in-flight call that holds the drain (up to the 60 s grace): the
            # server is blocked sending to it, flow control, until it reads again.
            value = b"v" * 64 * 1024
            for _ in range(8):
                await stub.ProduceBatch(
                    log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=value)] * 100),
                    timeout=STEP,
                )
            stalled = stub.ConsumeBatchStream(
                log_pb2.ConsumeBatchStreamRequest(offset=0, max_records=1)
            )
            assert (await stalled.read()).records[0].offset == 0
            watch = health.Watch(check)
            assert (await watch.read()).status == SERVING
            stopping = asyncio.create_task(node.stop())
            assert (await watch.read()).status == NOT_SERVING  # the drain has started
            watch.cancel()
            answers: list[object] = []
            for _ in range(5):  # probes during the drain, as a load balancer would
                try:
                    answers.append((await health.Check(check, timeout=STEP)).status)
                except grpc.RpcError as err:
                    answers.append(f"{err.code()}: {err.details()}")
            assert not stopping.done()
            stalled.cancel()  # the last in-flight call ends: the drain can finish
            await asyncio.wait_for(stopping, EXIT_DEADLINE)
    finally:
        await node.stop()
    assert answers == [NOT_SERVING] * 5, answers


def test_idle_produce_stream_ends_when_draining_starts(tmp_path: Path) -> None:
    # The grace is short so that the bug costs little; the outcome is told apart by
    # its status, not by timing.
    grace = 1.0
    with (
        ServerProcess(
            tmp_path / "data", ["--shutdown-grace-seconds", str(grace)], http=False
        ) as node,
        grpc.insecure_channel(node.rpc_addr) as channel,
    ):
        feed, responses = open_idle_produce_stream(log_pb2_grpc.LogStub(channel))
        try:
            node.signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as info:
                next(responses)
        finally:
            feed.close()
        assert wait_exit(node) == 0
    err = info.value
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAVAILABLE, "server is shutting down")


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_exits_at_once(tmp_path: Path, second: signal.Signals) -> None:
    data = tmp_path / "data"
    values = [b"acked-%d" % i for i in range(100)]
    with (
        ServerProcess(data, LONG_GRACE, http=False) as node,
        grpc.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        # An open ProduceStream (offset 0) holds the drain for the 60 s grace period.
        feed, _ = open_idle_produce_stream(stub)
        batch = stub.ProduceBatch(
            log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=v) for v in values]),
            timeout=STEP,
        )
        assert batch.base_offset == 1
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=60
        )
        try:
            assert next(watch).status == SERVING
            node.signal(signal.SIGTERM)
            assert next(watch).status == NOT_SERVING  # the first signal is being handled
            node.signal(second)
            code = wait_exit(node, timeout=STEP)
        finally:
            watch.cancel()
            feed.close()
    assert code == 128 + second
    assert "proglog stopped\n" not in node.output
    # The hard exit skips closing the log; acknowledged appends were already
    # handed to the kernel, so they are all there after a restart.
    with ServerProcess(data, http=False) as again:
        stored = read_all(again.rpc_addr)
    assert stored == {0: b"keep-open", **{1 + i: v for i, v in enumerate(values)}}

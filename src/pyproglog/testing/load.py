"""A steady write (and read) load on a cluster, recorded into a `History`.

    with Load(lambda: [(n.name, n.addr) for n in cluster.live()], history, writers=4) as load:
        load.wait_acks(50)            # writes flow
        cluster.kill(leader.name)
        load.wait_acks(50)            # writes resume
    check([history], logs)

Writers are threads with blocking gRPC stubs, each sending its produces to the
live nodes in turn (so followers forward many of them). Every attempt carries a
value of its own (`w{writer}-{seq}-a{attempt}`); a call that fails is recorded
as unknown and retried with a new attempt value. Readers fetch from every live
node in turn and record what they are served, for the checker's "nothing read
is later lost".
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType

import grpc

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing.cluster import CHANNEL_OPTIONS
from pyproglog.testing.history import History

# (node name, address) of the nodes to use now.
Targets = Callable[[], Sequence[tuple[str, str]]]


class Load:
    def __init__(
        self,
        targets: Targets,
        history: History,
        *,
        writers: int = 4,
        readers: int = 1,
        timeout: float = 2.0,
        pause: float = 0.0,
        value_size: int = 0,
    ) -> None:
        self.targets = targets
        self.history = history
        self.timeout = timeout
        self.pause = pause
        self.value_size = value_size
        self.errors: Counter[str] = Counter()
        self._acks = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(w,), daemon=True, name=f"writer-{w}")
            for w in range(writers)
        ] + [
            threading.Thread(target=self._read, daemon=True, name=f"reader-{r}")
            for r in range(readers)
        ]

    # -- control -----------------------------------------------------------------------------

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def acknowledged(self) -> int:
        with self._cond:
            return self._acks

    def wait_acks(self, more: int, timeout: float = 20.0) -> None:
        """Wait until `more` further produces are acknowledged (writes flow)."""
        with self._cond:
            target = self._acks + more
            if not self._cond.wait_for(lambda: self._acks >= target, timeout):
                raise AssertionError(
                    f"writes did not flow: {self._acks} of {target} acknowledged after "
                    f"{timeout} s; errors so far: {dict(self.errors)}"
                )

    # -- workers ------------------------------------------------------------------------------

    def _write(self, writer: int) -> None:
        channels: dict[str, grpc.Channel] = {}
        seq = attempt = turn = 0
        pad = b"." * self.value_size
        try:
            while not self._stop.is_set():
                targets = self.targets()
                if not targets:
                    time.sleep(0.05)
                    continue
                name, addr = targets[turn % len(targets)]
                turn += 1
                key = f"w{writer}-{seq}".encode()
                value = key + f"-a{attempt}".encode() + pad
                op = self.history.produce(value, key)
                stub = log_pb2_grpc.LogStub(_channel(channels, addr))
                req = log_pb2.ProduceRequest(record=log_pb2.Record(value=value))
                try:
                    resp = stub.Produce(req, timeout=self.timeout)
                except grpc.RpcError as e:
                    # Sent or not, applied or not: only an answer with an offset says.
                    op.unknown(f"{name}: {e.code().name} {e.details()}")
                    with self._cond:
                        self.errors[e.code().name] += 1
                    attempt += 1
                    time.sleep(0.05)  # no hot loop against a node that is down
                    continue
                op.ok(resp.offset)
                seq, attempt = seq + 1, 0
                with self._cond:
                    self._acks += 1
                    self._cond.notify_all()
                if self.pause:
                    time.sleep(self.pause)
        finally:
            for ch in channels.values():
                ch.close()

    def _read(self) -> None:
        channels: dict[str, grpc.Channel] = {}
        next_offset: dict[str, int] = {}
        turn = 0
        try:
            while not self._stop.is_set():
                targets = self.targets()
                if not targets:
                    time.sleep(0.05)
                    continue
                name, addr = targets[turn % len(targets)]
                turn += 1
                stub = log_pb2_grpc.LogStub(_channel(channels, addr))
                req = log_pb2.FetchRequest(offset=next_offset.get(name, 0), max_records=500)
                try:
                    resp = stub.Fetch(req, timeout=self.timeout)
                except grpc.RpcError:
                    time.sleep(0.05)
                    continue
                for r in resp.records:
                    self.history.read(name, r.offset, r.value)
                if resp.records:
                    next_offset[name] = resp.next_offset
                time.sleep(0.02)
        finally:
            for ch in channels.values():
                ch.close()


def _channel(channels: dict[str, grpc.Channel], addr: str) -> grpc.Channel:
    ch = channels.get(addr)
    if ch is None:
        ch = channels[addr] = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
    return ch

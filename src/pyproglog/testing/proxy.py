"""A loopback TCP proxy that injects faults: delay, blackhole or cut the bytes of a direction.

    with TcpProxy(node.rpc_addr) as proxy:
        channel = grpc.insecure_channel(proxy.addr)
        proxy.blackhole("up")      # requests vanish; the connection stays open (a hang)
        proxy.delay("down", 0.2)   # answers arrive 200 ms late
        proxy.heal()
        proxy.drop_connections()   # every open connection is closed (a reset)

"up" is client to target, "down" target to client. The proxy runs its own
event loop on a thread, so blocking and asyncio tests use it alike. It listens
on 127.0.0.1 and only forwards to loopback targets: it is a test tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

Direction = Literal["up", "down"]
_DIRECTIONS: tuple[Direction, ...] = ("up", "down")
_CHUNK = 64 * 1024


@dataclass
class _Fault:
    delay: float = 0.0
    blackhole: bool = False


def _split_loopback(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback or not port.isdigit():
        raise ValueError(f"TcpProxy forwards to loopback host:port only, not {target!r}")
    return host, int(port)


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; faults apply to bytes read after they are set."""

    def __init__(self, target: str) -> None:
        self._target = _split_loopback(target)
        self._faults = {d: _Fault() for d in _DIRECTIONS}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.addr = ""
        self.accepted = 0  # connections accepted so far

    # -- faults (from any thread) ------------------------------------------------------

    def delay(self, direction: Direction, seconds: float) -> None:
        """Hold each chunk of `direction` for `seconds` (latency, not a throughput cap)."""
        self._faults[direction] = _Fault(delay=seconds)

    def blackhole(self, direction: Direction) -> None:
        """Swallow the bytes of `direction`; connections stay open, so the peer just waits."""
        self._faults[direction] = _Fault(blackhole=True)

    def heal(self) -> None:
        """Both directions pass again (bytes swallowed meanwhile stay lost)."""
        self._faults = {d: _Fault() for d in _DIRECTIONS}

    def drop_connections(self) -> None:
        """Close every open connection, both sides; new ones are still accepted."""
        self._call(self._drop_all()).result()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(
            asyncio.start_server(self._accept, "127.0.0.1", 0, limit=_CHUNK)
        ).result()
        self.addr = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def close(self) -> None:
        if not self._thread.is_alive():  # never started, or closed already
            if not self._loop.is_closed():
                self._loop.close()
            return
        self._call(self._shutdown()).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- on the proxy's loop -------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # A task of our own: asyncio logs an error for a cancelled callback task.
        self.accepted += 1
        task = asyncio.ensure_future(self._connect(client_r, client_w))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _connect(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            try:
                target_r, target_w = await asyncio.open_connection(*self._target, limit=_CHUNK)
            except OSError:
                return  # the target is down: the client sees its connection close
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._pump(client_r, target_w, "up"))
                    group.create_task(self._pump(target_r, client_w, "down"))
            finally:
                target_w.close()
        except* (OSError, asyncio.IncompleteReadError):
            pass  # one side reset: the connection is over for both
        finally:
            client_w.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        """Copy one direction; a reader and a writer joined by a queue, so delays do not add up."""
        loop = asyncio.get_running_loop()
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def write() -> None:
            while True:
                at, data = await due.get()
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                await asyncio.sleep(max(0.0, at - loop.time()))
                writer.write(data)
                await writer.drain()

        writer_task = asyncio.create_task(write())
        try:
            while data := await reader.read(_CHUNK):
                fault = self._faults[direction]
                if not fault.blackhole:
                    due.put_nowait((loop.time() + fault.delay, data))
            due.put_nowait((loop.time(), b""))  # EOF: pass the half-close on
            await writer_task
        finally:
            writer_task.cancel()

    async def _drop_all(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        if self._server is not None:
            await self._server.wait_closed()

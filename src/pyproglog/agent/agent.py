"""One node: the log, the service, the gRPC server and the HTTP gateway.

Everything runs on one asyncio loop. Shutdown (SIGTERM/SIGINT) drains: health
turns NOT_SERVING, new produces are refused, tailing streams end, in-flight
calls get `shutdown_grace_seconds` to finish, then the log is closed cleanly.
A second signal exits at once (acknowledged appends are already in the kernel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Generator, Sequence

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.config import Settings
from pyproglog.log import Log
from pyproglog.server.core import LogService, ServiceLimits
from pyproglog.server.gateway import create_app
from pyproglog.server.grpc_service import SERVICE_NAME, LogServicer, ServerInfo

_log = logging.getLogger("pyproglog.agent")

# Room for a maximal batch/fetch message on top of the record size limit.
_MESSAGE_SLACK = 64 * 1024


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: the agent, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log: Log | None = None
        self.service: LogService | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.rpc_addr = ""
        self.http_url = ""
        self._stopped = asyncio.Event()

    def servers(self) -> Sequence[ServerInfo]:
        # A single node leads itself; the cluster replaces this with its membership.
        return [ServerInfo(self.settings.node_name, self.rpc_addr, True)]

    async def start(self) -> None:
        s = self.settings
        log_config = s.log_config()
        self.log = await asyncio.to_thread(Log, s.data_dir, log_config)
        limits = ServiceLimits(max_record_bytes=s.max_record_bytes)
        self.service = LogService(self.log, limits)
        self.service.start()

        max_message = max(limits.max_fetch_bytes, 32 * 1024 * 1024) + _MESSAGE_SLACK
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                ("grpc.so_reuseport", 0),
            ]
        )
        log_pb2_grpc.add_LogServicer_to_server(LogServicer(self.service, self.servers), self._grpc)
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection(
            [
                log_pb2.DESCRIPTOR.services_by_name["Log"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._grpc,
        )
        port = self._grpc.add_insecure_port(s.rpc_addr)
        if port == 0:
            raise OSError(f"cannot listen on {s.rpc_addr}")
        self.rpc_addr = f"{s.rpc_host}:{port}"
        _log.warning("gRPC serves plaintext: no TLS configured")
        await self._grpc.start()

        hp = s.http_host_port
        if hp is not None:
            app = create_app(self.service, self.servers)
            config = uvicorn.Config(
                app, host=hp[0], port=hp[1], log_config=None, access_log=False, lifespan="off"
            )
            self._http = _EmbeddedUvicorn(config)
            self._http_task = asyncio.create_task(self._http.serve(), name="proglog-http")
            while not self._http.started:
                if self._http_task.done():
                    await self._http_task
                    raise OSError(f"cannot listen on {s.http_addr}")
                await asyncio.sleep(0.01)
            sock_port = self._http.servers[0].sockets[0].getsockname()[1]
            self.http_url = f"http://{hp[0]}:{sock_port}"

        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """Drain and stop; safe to call more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.service is not None:
            self.service.begin_shutdown()
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(self.settings.shutdown_grace_seconds)
        if self._http_task is not None:
            await self._http_task
        if self.service is not None:
            await self.service.close()
        if self.log is not None:
            await asyncio.to_thread(self.log.close)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def _serve(settings: Settings, ready: bool = True) -> None:
    agent = Agent(settings)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            _log.warning("second signal: exiting at once")
            os._exit(128 + signum)
        _log.info("signal %s: draining", signal.Signals(signum).name)
        stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await agent.start()
    except BaseException:
        await agent.stop()
        raise
    if ready:
        http = f" http={agent.http_url}" if agent.http_url else ""
        print(
            f"proglog serving: grpc={agent.rpc_addr}{http} data={settings.data_dir}",
            flush=True,
        )
    await stop_requested.wait()
    await agent.stop()
    print("proglog stopped", flush=True)


def run(settings: Settings) -> None:
    """Run a node until SIGTERM/SIGINT (the `proglog serve` command)."""
    asyncio.run(_serve(settings))
    sys.stdout.flush()

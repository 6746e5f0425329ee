"""The node's two listeners: the gRPC server and the embedded HTTP gateway.

Each is bound first (the agent's ports step, before the log is opened: see
ports.py) and serves later, once the service exists. Neither touches the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Generator, Sequence
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from starlette.types import ASGIApp

from pyproglog.agent.datadir import StartupError
from pyproglog.agent.ports import bind_sockets, check_port_free, close_all
from pyproglog.api.v1 import log_pb2
from pyproglog.auth.asgi import TLSH11Protocol
from pyproglog.auth.tls import ServerTLS
from pyproglog.server.core import LogService
from pyproglog.server.grpc.handlers import SERVICE_NAME, add_log_service
from pyproglog.server.grpc.service import LogServicer
from pyproglog.server.servers import ServerLister

_log = logging.getLogger("pyproglog.agent")

# What is left after the drain is health watches, reflection, or reads that
# came in during it: a short last grace, not the whole period again.
_FINAL_GRACE_SECONDS = 1.0


class GrpcListener:
    """`log.v1.Log`, `grpc.health.v1.Health` and reflection on one grpc.aio server."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ServerTLS | None,
        interceptors: Sequence[grpc.aio.ServerInterceptor],
        max_message_bytes: int,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._interceptors = list(interceptors)
        self._max_message = max_message_bytes
        self._server: grpc.aio.Server | None = None
        self._servicer: LogServicer | None = None
        self._health: health_aio.HealthServicer | None = None
        self._serving = False
        self.addr = ""

    def bind(self) -> None:
        """Create the server and bind its port; StartupError with one line when taken."""
        max_message = self._max_message
        server = grpc.aio.server(
            interceptors=self._interceptors,
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                # Without this a second node could bind the same port silently.
                ("grpc.so_reuseport", 0),
            ],
        )
        addr = f"{self._host}:{self._port}"
        # grpc reports a port in use as a RuntimeError after logging a C-core
        # line of its own; trying the address first gives one clear line instead.
        check_port_free(self._host, self._port, "gRPC")
        try:
            if self._tls is not None:
                port = int(server.add_secure_port(addr, self._tls.grpc_credentials()))
            else:
                port = int(server.add_insecure_port(addr))
        except RuntimeError:  # taken between the check and grpc's own bind
            port = 0
        if port == 0:
            raise StartupError(f"cannot listen on {addr} (gRPC): address already in use")
        self._server = server
        self.addr = f"{self._host}:{port}"

    async def serve(
        self,
        service: LogService,
        servers: ServerLister,
        on_stream_end: Callable[[], None] | None = None,
        extra_services: Sequence[Callable[[grpc.aio.Server], None]] = (),
    ) -> None:
        """Add the services (`extra_services` add theirs, as the cluster's peer
        service) and start answering; health stays NOT_SERVING until `set_serving`."""
        assert self._server is not None, "bind() first"
        if self._tls is None:
            _log.warning("gRPC serves plaintext: no TLS configured")
        self._servicer = LogServicer(service, servers, on_stream_end)
        add_log_service(self._servicer, self._server)
        for add in extra_services:
            add(self._server)
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [
                log_pb2.DESCRIPTOR.services_by_name["Log"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        await self._server.start()
        self._serving = True

    async def set_serving(self) -> None:
        assert self._health is not None
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def set_not_serving(self) -> None:
        """Health watchers see NOT_SERVING; later health checks answer it too."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    def begin_drain(self) -> None:
        """End idle ProduceStreams at once (their next record would be refused)."""
        if self._servicer is not None:
            self._servicer.begin_drain()

    async def stop(self, deadline: float) -> None:
        """Wait until `deadline` (loop time) for in-flight calls, then stop.

        The port stays open while waiting, so late calls get a clear UNAVAILABLE
        from the draining service instead of a refused connection. Safe after a
        partial start: an unstarted server only holds its port, which this frees.
        """
        server, self._server = self._server, None
        if server is None:
            return
        if not self._serving:
            # grpc's core frees a bound port only in a started server's shutdown:
            # one that never started holds it until the process exits. So a failed
            # start starts it only to stop it at once (health never said SERVING).
            await server.start()
            await server.stop(0)
            return
        loop = asyncio.get_running_loop()
        if self._servicer is not None:
            await self._servicer.in_flight.wait_idle(max(0.0, deadline - loop.time()))
        await server.stop(min(max(0.0, deadline - loop.time()), _FINAL_GRACE_SECONDS))


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: the agent, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpListener:
    """The HTTP/JSON gateway on uvicorn, in the node's loop, on sockets bound in advance."""

    def __init__(self, host: str, port: int, tls: ServerTLS | None, grace: float) -> None:
        self._host = host
        self._port = port
        self._tls = tls
        self._grace = grace
        # Bound before the log is opened; uvicorn takes them over when it serves.
        self._sockets: list[socket.socket] = []
        self._server: _EmbeddedUvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    def bind(self) -> None:
        self._sockets = bind_sockets(self._host, self._port, "HTTP")

    def _config(self, app: ASGIApp) -> uvicorn.Config:
        common: dict[str, Any] = {
            "host": self._host,
            "port": self._port,
            "log_config": None,
            "access_log": False,
            "lifespan": "off",
            "timeout_graceful_shutdown": max(1, int(self._grace)),
        }
        tls = self._tls
        if tls is None:
            _log.warning("HTTP gateway serves plaintext: no TLS configured")
            return uvicorn.Config(app, **common)
        return uvicorn.Config(
            app,
            **common,
            # Our context follows certificate reloads; the protocol tells the app
            # whose verified certificate a request came with.
            ssl_context_factory=lambda _config, _default: tls.ssl_context(),
            http=TLSH11Protocol,
        )

    async def serve(self, app: ASGIApp) -> None:
        """Serve `app` on the bound sockets; returns once uvicorn listens."""
        server = self._server = _EmbeddedUvicorn(self._config(app))
        sockets, self._sockets = self._sockets, []
        task = self._task = asyncio.create_task(server.serve(sockets), name="proglog-http")
        # uvicorn offers no readiness future; `started` flips once it listens.
        while not server.started:
            if task.done():
                await task
                raise OSError(f"cannot listen on {self._host}:{self._port} (HTTP)")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if self._tls is not None else "http"
        self.url = f"{scheme}://{self._host}:{port}"

    async def stop(self) -> None:
        """Let uvicorn finish its requests (its own graceful timeout); close unused sockets."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            task, self._task = self._task, None
            await task
        close_all(self._sockets)
        self._sockets = []

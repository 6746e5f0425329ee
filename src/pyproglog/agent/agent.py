"""One node: the log, the service, the gRPC server and the HTTP gateway.

Everything runs on one asyncio loop. Shutdown (SIGTERM/SIGINT) drains: health
turns NOT_SERVING, new produces are refused, tailing streams end, in-flight
calls get `shutdown_grace_seconds` to finish, then the log is closed cleanly.
A second signal exits at once (acknowledged appends are already in the kernel).
SIGHUP re-reads the ACL policy and the TLS certificates without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Generator, Sequence
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from starlette.types import ASGIApp

from pyproglog.agent.datadir import DataDirLock, StartupError
from pyproglog.agent.memory import MemoryReleaser
from pyproglog.agent.ports import bind_sockets, check_port_free, close_all
from pyproglog.api.v1 import log_pb2
from pyproglog.auth.acl import Authorizer
from pyproglog.auth.asgi import TLSH11Protocol
from pyproglog.auth.errors import SecurityError
from pyproglog.auth.tls import ServerTLS, TLSFiles
from pyproglog.config import Settings
from pyproglog.log import Log, LogError
from pyproglog.observability import NodeMetrics, ObservabilityInterceptor, Tracing
from pyproglog.observability.grpc_interceptor import REQUEST_LOGGER
from pyproglog.observability.logging import configure_logging, level_number
from pyproglog.server.core import LogService, ServiceLimits
from pyproglog.server.gateway import create_app
from pyproglog.server.grpc_authz import AuthInterceptor
from pyproglog.server.grpc_service import SERVICE_NAME, LogServicer, ServerInfo, add_log_service
from pyproglog.server.http_authz import ACLMiddleware

_log = logging.getLogger("pyproglog.agent")

# Room for a maximal batch/fetch message on top of the record size limit.
_MESSAGE_SLACK = 64 * 1024
_FINAL_GRACE_SECONDS = 1.0
_RETENTION_PERIOD_SECONDS = 60.0


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: the agent, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Agent:
    def __init__(self, settings: Settings, tracing: Tracing | None = None) -> None:
        self.settings = settings
        # Per node, not per process: tests run several nodes side by side.
        self.metrics = NodeMetrics() if settings.metrics else None
        self.tracing = tracing if tracing is not None else Tracing.from_env(settings.node_name)
        self.log: Log | None = None
        self.service: LogService | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self.rpc_addr = ""
        self.http_url = ""
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Future[None] | None = None
        self._servicer: LogServicer | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self.authorizer: Authorizer | None = None
        self.server_tls: ServerTLS | None = None
        self._data_lock: DataDirLock | None = None
        self._memory = MemoryReleaser()
        # Bound before the log is opened; uvicorn takes them over when it starts.
        self._http_sockets: list[socket.socket] = []

    def servers(self) -> Sequence[ServerInfo]:
        # A single node leads itself; the cluster replaces this with its membership.
        return [ServerInfo(self.settings.node_name, self.rpc_addr, True)]

    async def start(self) -> None:
        """Lock the data directory, claim the ports, open the log, then serve.

        In that order: a node that cannot have the directory or its ports fails
        before it opens the log, since even a failed start closes the log, and
        closing trims the active segment's pre-allocated files.
        """
        try:
            await self._start()
        except BaseException:
            # Whatever was taken (the lock, the ports, the log) is given back,
            # so a caller may try again in this process.
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        log_config = s.log_config()
        self._load_security()
        self._data_lock = await asyncio.to_thread(DataDirLock.acquire, s.data_dir)
        limits = ServiceLimits(max_record_bytes=s.max_record_bytes)
        self._grpc = self._create_grpc(limits)
        if s.http_host_port is not None:
            self._http_sockets = bind_sockets(*s.http_host_port, "HTTP")
        self.log = await asyncio.to_thread(Log, s.data_dir, log_config)
        if self.metrics is not None:
            self.metrics.watch_log(self.log)
        self.tracing.instrument_log(self.log)
        self.service = LogService(
            self.log,
            limits,
            observer=self.metrics,
            tracer=self.tracing if self.tracing.enabled else None,
        )
        self.service.start()
        if s.retention_bytes is not None or s.retention_ms is not None:
            self._retention_task = asyncio.create_task(
                self._apply_retention_periodically(), name="proglog-retention"
            )
        await self._start_grpc()
        if s.http_host_port is not None:
            await self._start_http()
        assert self._health is not None
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def _apply_retention_periodically(self) -> None:
        # The log applies retention when it rolls; an idle log never rolls, so
        # age-based retention also needs a clock.
        assert self.log is not None
        while True:
            await asyncio.sleep(_RETENTION_PERIOD_SECONDS)
            try:
                removed = await asyncio.to_thread(self.log.apply_retention)
            except LogError as exc:
                _log.error("retention pass failed: %s", exc)
                continue
            if removed:
                _log.info("retention removed %d segment(s)", removed)

    def _load_security(self) -> None:
        """TLS and ACL material from the settings; SecurityError when unusable."""
        s = self.settings
        if s.server_tls_cert_file is not None and s.server_tls_key_file is not None:
            self.server_tls = ServerTLS(
                TLSFiles(s.server_tls_cert_file, s.server_tls_key_file, s.server_tls_ca_file)
            )
        if s.peer_tls_cert_file or s.peer_tls_key_file or s.peer_tls_ca_file:
            _log.info("peer-tls-* settings apply to cluster traffic; a single node has none")
        if s.acl_model_file is not None and s.acl_policy_file is not None:
            self.authorizer = Authorizer(s.acl_model_file, s.acl_policy_file)
            if s.server_tls_ca_file is None:
                _log.warning(
                    "ACL is on but client certificates are not required (no "
                    "server-tls-ca-file): every call will be refused as unauthenticated"
                )

    def reload_security(self) -> None:
        """Re-read the ACL policy and the certificates (SIGHUP).

        Each part that fails to load keeps its material in force; SecurityError
        names every failure.
        """
        failures = []
        for part in (self.authorizer, self.server_tls):
            if part is None:
                continue
            try:
                part.reload()
            except SecurityError as exc:
                failures.append(str(exc))
        if failures:
            raise SecurityError("; ".join(failures))

    def _on_acl_denial(self) -> Callable[[str], None] | None:
        return self.metrics.acl_denied if self.metrics is not None else None

    def _grpc_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """Interceptors, outermost first (tracing, metrics, then authorization)."""
        interceptors: list[grpc.aio.ServerInterceptor] = self._observability_interceptors()
        if self.authorizer is not None:
            interceptors.append(AuthInterceptor(self.authorizer, self._on_acl_denial()))
        return interceptors

    def _observability_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        request_level = level_number(self.settings.request_log_level)
        logs = logging.getLogger(REQUEST_LOGGER).isEnabledFor(request_level)
        # With metrics, tracing and the request log all off, calls pay for nothing.
        if self.metrics is None and not self.tracing.enabled and not logs:
            return []
        return [ObservabilityInterceptor(self.metrics, self.tracing.tracer, request_level)]

    def _bind_grpc(self, server: grpc.aio.Server) -> int:
        """Listen on the RPC address; the bound port."""
        addr = self.settings.rpc_addr
        # grpc reports a port in use as a RuntimeError after logging a C-core
        # line of its own; trying the address first gives one clear line instead.
        check_port_free(self.settings.rpc_host, self.settings.rpc_port, "gRPC")
        try:
            if self.server_tls is not None:
                creds = self.server_tls.grpc_credentials()
                port = int(server.add_secure_port(addr, creds))
            else:
                port = int(server.add_insecure_port(addr))
        except RuntimeError:  # taken between the check and grpc's own bind
            port = 0
        if port == 0:
            raise StartupError(f"cannot listen on {addr} (gRPC): address already in use")
        return port

    def _create_grpc(self, limits: ServiceLimits) -> grpc.aio.Server:
        """The gRPC server, bound to its port; services are added once the log is open."""
        max_message = (
            max(limits.max_fetch_bytes, limits.max_record_bytes, 32 * 1024 * 1024) + _MESSAGE_SLACK
        )
        server = grpc.aio.server(
            interceptors=self._grpc_interceptors(),
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                # Without this a second node could bind the same port silently.
                ("grpc.so_reuseport", 0),
            ],
        )
        port = self._bind_grpc(server)
        self.rpc_addr = f"{self.settings.rpc_host}:{port}"
        return server

    async def _start_grpc(self) -> None:
        assert self.service is not None and self._grpc is not None
        if self.server_tls is None:
            _log.warning("gRPC serves plaintext: no TLS configured")
        self._servicer = LogServicer(self.service, self.servers, self._memory.stream_ended)
        add_log_service(self._servicer, self._grpc)
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
        await self._grpc.start()

    def _http_config(self, app: ASGIApp, host: str, port: int) -> uvicorn.Config:
        tls = self.server_tls
        common: dict[str, Any] = {
            "log_config": None,
            "access_log": False,
            "lifespan": "off",
            "timeout_graceful_shutdown": max(1, int(self.settings.shutdown_grace_seconds)),
        }
        if tls is None:
            _log.warning("HTTP gateway serves plaintext: no TLS configured")
            return uvicorn.Config(app, host=host, port=port, **common)
        return uvicorn.Config(
            app,
            host=host,
            port=port,
            **common,
            # Our context follows certificate reloads; the protocol tells the app
            # whose verified certificate a request came with.
            ssl_context_factory=lambda _config, _default: tls.ssl_context(),
            http=TLSH11Protocol,
        )

    async def _start_http(self) -> None:
        assert self.service is not None
        hp = self.settings.http_host_port
        assert hp is not None
        gateway = create_app(self.service, self.servers)
        if self.metrics is not None:
            self.metrics.add_route(gateway)
        app: ASGIApp = gateway
        if self.authorizer is not None:
            app = ACLMiddleware(app, self.authorizer, self._on_acl_denial())
        self._http = _EmbeddedUvicorn(self._http_config(app, *hp))
        sockets, self._http_sockets = self._http_sockets, []
        self._http_task = asyncio.create_task(self._http.serve(sockets), name="proglog-http")
        # uvicorn offers no readiness future; `started` flips once it listens.
        while not self._http.started:
            if self._http_task.done():
                await self._http_task
                raise OSError(f"cannot listen on {self.settings.http_addr}")
            await asyncio.sleep(0.01)
        sock_port = self._http.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if self.server_tls is not None else "http"
        self.http_url = f"{scheme}://{hp[0]}:{sock_port}"

    async def stop(self) -> None:
        """Drain and stop; concurrent and repeated calls all wait for the same stop."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain_and_stop())
        await asyncio.shield(self._stopping)

    async def _drain_and_stop(self) -> None:
        self._stopped.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_seconds
        # The port stays open while draining, so health checks see NOT_SERVING
        # and late calls get a clear UNAVAILABLE instead of a refused connection.
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self.service is not None:
            self.service.begin_shutdown()
        if self._servicer is not None:
            self._servicer.begin_drain()
            await self._servicer.in_flight.wait_idle(max(0.0, deadline - loop.time()))
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            # What is left is health watches, reflection, or reads that came in
            # during the drain: a short last grace, not the whole period again.
            await self._grpc.stop(min(max(0.0, deadline - loop.time()), _FINAL_GRACE_SECONDS))
        if self._http_task is not None:
            await self._http_task
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        await self._memory.close()
        if self.service is not None:
            await self.service.close()
        if self.log is not None:
            await asyncio.to_thread(self.log.close)
        close_all(self._http_sockets)
        if self._data_lock is not None:
            # Last: the log is closed, another node may have the directory now.
            self._data_lock.release()
        # Flushes spans still queued; an unreachable collector must not block the loop.
        await asyncio.to_thread(self.tracing.shutdown)

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

    def on_reload() -> None:
        try:
            agent.reload_security()
        except SecurityError as exc:
            _log.error("reload rejected, the old material stays in force: %s", exc)
            print(f"proglog reload failed: {exc}", flush=True)
        else:
            print("proglog reloaded", flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
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
    # Before anything logs; stdout stays for the readiness line, logs go to stderr.
    configure_logging(settings.log_level, settings.log_format, settings.node_name)
    asyncio.run(_serve(settings))
    sys.stdout.flush()

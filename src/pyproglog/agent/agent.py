"""One node: its parts, started as ordered steps and stopped in reverse.

`Agent.start` runs the steps of `_step_list()` in order (see steps.py); `stop`
drains and tears down the started ones in reverse. Everything runs on one
asyncio loop; signals and the readiness line belong to process.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import grpc
from starlette.types import ASGIApp

from pyproglog.agent.clustering import cluster_mode, cluster_options
from pyproglog.agent.datadir import DataDirLock, StartupError
from pyproglog.agent.listeners import GrpcListener, HttpListener
from pyproglog.agent.memory import MemoryReleaser
from pyproglog.agent.retention import apply_retention_periodically
from pyproglog.agent.steps import Step, Steps, nothing
from pyproglog.auth.acl import Authorizer
from pyproglog.auth.errors import SecurityError
from pyproglog.auth.tls import ServerTLS, TLSFiles
from pyproglog.cluster import ClusterNode
from pyproglog.cluster.storage import StorageError
from pyproglog.cluster.transport import peer_max_message_bytes
from pyproglog.config import Settings
from pyproglog.discovery import MembershipError
from pyproglog.limits import ServiceLimits, max_message_bytes
from pyproglog.log import Log, SyncPolicy
from pyproglog.observability import NodeMetrics, ObservabilityInterceptor, Tracing
from pyproglog.observability.grpc_interceptor import REQUEST_LOGGER
from pyproglog.observability.logging import level_number
from pyproglog.server.commitlog import CommitLog, LocalCommitLog
from pyproglog.server.core import LogService
from pyproglog.server.grpc.authz import AuthInterceptor
from pyproglog.server.http.app import create_app
from pyproglog.server.http.authz import ACLMiddleware
from pyproglog.server.servers import ServerInfo

_log = logging.getLogger("pyproglog.agent")


class Agent:
    """A node on the caller's loop: `await start()`, then `await stop()` (drains first)."""

    def __init__(self, settings: Settings, tracing: Tracing | None = None) -> None:
        self.settings = settings
        # Per node, not per process: tests run several nodes side by side.
        self.metrics = NodeMetrics() if settings.metrics else None
        self.tracing = tracing if tracing is not None else Tracing.from_env(settings.node_name)
        self._limits = ServiceLimits()
        self.authorizer: Authorizer | None = None
        self.server_tls: ServerTLS | None = None
        self.log: Log | None = None
        self.service: LogService | None = None
        # Set when the node runs in a cluster (cluster_mode); None for a single node.
        self.cluster: ClusterNode | None = None
        self.rpc_addr = ""
        self.http_url = ""
        self._data_lock: DataDirLock | None = None
        self._grpc: GrpcListener | None = None
        self._http: HttpListener | None = None
        self._retention: asyncio.Task[None] | None = None
        self._memory = MemoryReleaser()
        self._steps = Steps(self._step_list())
        self._stopping: asyncio.Future[None] | None = None
        self._deadline = 0.0  # loop time by which in-flight calls must be done

    def _step_list(self) -> list[Step]:
        """The start order; stop runs it backwards. Each order below is a guarantee."""
        return [
            # Nothing to start (tracing is set up with the agent); stopped last, it
            # flushes the spans of everything above.
            Step("tracing", nothing, self._flush_traces),
            # Reads the TLS/ACL files only: bad material fails before the data
            # directory is even created.
            Step("security", self._load_security),
            # Before anything touches the directory: two nodes on one directory
            # would overwrite each other's records (datadir.py).
            Step("data-dir lock", self._lock_data_dir, self._unlock_data_dir),
            # Before the log: a node that cannot listen must fail before it opens
            # (and on the way out closes, which trims) the log's files.
            Step("ports", self._bind_ports, self._close_ports),
            Step("log", self._open_log, self._close_log),
            # Raft over the log: the service gets a replicated commit log instead of
            # the local one. Stopped after the service, so queued produces can commit.
            Step("cluster", self._open_cluster, self._close_cluster),
            Step("service", self._start_service, self._close_service, self._refuse_new_work),
            # HTTP before gRPC, so that it is stopped after gRPC: it keeps answering
            # (503 for writes) while gRPC waits for its in-flight calls.
            Step("HTTP", self._serve_http, self._stop_http),
            Step("gRPC", self._serve_grpc, self._stop_grpc, self._drain_grpc),
            # Gossip once the peer service answers: whoever learns of us can reach us.
            Step("gossip", self._join_cluster, self._part_cluster),
            Step("retention", self._start_retention, self._stop_retention),
            # Last: SERVING only once everything above is up; first to say NOT_SERVING.
            Step("health", self._report_serving, drain=self._report_not_serving),
            # Drained first: a leader hands over before anything else stops (and
            # leaves the configuration with --leave-on-shutdown).
            Step("hand-over", nothing, drain=self._hand_over),
        ]

    def servers(self) -> Sequence[ServerInfo]:
        if self.cluster is not None:
            return self.cluster.servers()
        # A single node leads itself.
        return [ServerInfo(self.settings.node_name, self.rpc_addr, True)]

    async def start(self) -> None:
        """Run the start steps in order; on a failure, give back what was taken and raise.

        Whatever was taken (the lock, the ports, the log) is released, so a
        new Agent may try again in this process.
        """
        await self._steps.start()

    async def stop(self) -> None:
        """Drain and stop; concurrent and repeated calls all wait for the same stop."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.settings.shutdown_grace_seconds
        await self._steps.stop()

    async def _flush_traces(self) -> None:
        # An unreachable collector must not block the loop.
        await asyncio.to_thread(self.tracing.shutdown)

    # -- security ---------------------------------------------------------------

    async def _load_security(self) -> None:
        """TLS and ACL material from the settings; SecurityError when unusable."""
        s = self.settings
        if s.server_tls_cert_file is not None and s.server_tls_key_file is not None:
            self.server_tls = ServerTLS(
                TLSFiles(s.server_tls_cert_file, s.server_tls_key_file, s.server_tls_ca_file)
            )
        if (s.peer_tls_cert_file or s.peer_tls_key_file or s.peer_tls_ca_file) and not (
            cluster_mode(s)
        ):
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

    # -- data directory and ports -------------------------------------------------

    async def _lock_data_dir(self) -> None:
        self._data_lock = await asyncio.to_thread(DataDirLock.acquire, self.settings.data_dir)

    async def _unlock_data_dir(self) -> None:
        # Last: the log is closed, another node may have the directory now.
        if self._data_lock is not None:
            self._data_lock.release()

    async def _bind_ports(self) -> None:
        s = self.settings
        self._grpc = GrpcListener(
            s.rpc_host,
            s.rpc_port,
            self.server_tls,
            self._grpc_interceptors(),
            # One budget for both ends: the client computes it the same way. A
            # cluster node also takes replication messages (larger, see transport.py).
            max(
                max_message_bytes(s.max_record_bytes, self._limits),
                peer_max_message_bytes(s.max_record_bytes) if cluster_mode(s) else 0,
            ),
        )
        self._grpc.bind()
        self.rpc_addr = self._grpc.addr
        if s.http_host_port is not None:
            self._http = HttpListener(*s.http_host_port, self.server_tls, s.shutdown_grace_seconds)
            self._http.bind()

    async def _close_ports(self) -> None:
        # After a full start the listeners have stopped already; after a failed
        # one this frees the ports they hold.
        if self._grpc is not None:
            await self._grpc.stop(self._deadline)
        if self._http is not None:
            await self._http.stop()

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

    # -- log and service ------------------------------------------------------------

    async def _open_log(self) -> None:
        # Durability: the log's own (sync policy, group fsync); the agent adds none.
        self.log = await asyncio.to_thread(Log, self.settings.data_dir, self.settings.log_config())
        if self.metrics is not None:
            self.metrics.watch_log(self.log)
        self.tracing.instrument_log(self.log)

    async def _close_log(self) -> None:
        if self.log is not None:
            await asyncio.to_thread(self.log.close)

    def _make_service(self, log: Log) -> LogService:
        """The one place the service is built over the log (a cluster swaps what it gets)."""
        commit_log: CommitLog = LocalCommitLog(log)
        if self.cluster is not None:
            assert self.cluster.commit_log is not None
            commit_log = self.cluster.commit_log
        return LogService(
            commit_log,
            self._limits,
            observer=self.metrics,
            tracer=self.tracing if self.tracing.enabled else None,
        )

    async def _start_service(self) -> None:
        assert self.log is not None
        self.service = self._make_service(self.log)
        self.service.start()

    async def _refuse_new_work(self) -> None:
        # Refuses new produces and ends tailing streams, so the front ends'
        # in-flight calls can finish within the grace.
        if self.service is not None:
            self.service.begin_shutdown()

    async def _close_service(self) -> None:
        # The committer drains: produces already queued are appended before the log closes.
        if self.service is not None:
            await self.service.close()

    # -- cluster ------------------------------------------------------------------

    async def _open_cluster(self) -> None:
        if not cluster_mode(self.settings):
            return
        assert self.log is not None
        options = cluster_options(self.settings, self.rpc_addr, self.server_tls is not None)
        self.cluster = ClusterNode(
            self.log,
            self.settings.data_dir,
            options,
            sync_always=self.settings.sync_policy is SyncPolicy.ALWAYS,
        )
        try:
            await self.cluster.open()
        except StorageError as exc:  # the one line the operator sees
            raise StartupError(f"cluster state in {self.settings.data_dir}: {exc}") from None
        if self.metrics is not None:
            self.metrics.watch_cluster(self.cluster.figures)

    async def _close_cluster(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()

    async def _join_cluster(self) -> None:
        if self.cluster is not None:
            try:
                await self.cluster.join()
            except MembershipError as exc:
                raise StartupError(str(exc)) from None

    async def _part_cluster(self) -> None:
        if self.cluster is not None:
            await self.cluster.part()

    async def _hand_over(self) -> None:
        if self.cluster is not None:
            await self.cluster.hand_over()

    # -- front ends ---------------------------------------------------------------

    async def _serve_http(self) -> None:
        if self._http is None:  # --http-addr ""
            return
        assert self.service is not None
        gateway = create_app(self.service, self.servers)
        if self.metrics is not None:
            self.metrics.add_route(gateway)
        app: ASGIApp = gateway
        if self.authorizer is not None:
            app = ACLMiddleware(app, self.authorizer, self._on_acl_denial())
        await self._http.serve(app)
        self.http_url = self._http.url

    async def _stop_http(self) -> None:
        if self._http is not None:
            await self._http.stop()

    async def _serve_grpc(self) -> None:
        assert self._grpc is not None and self.service is not None
        extra = [self.cluster.add_to_server] if self.cluster is not None else []
        await self._grpc.serve(self.service, self.servers, self._memory.stream_ended, extra)

    async def _drain_grpc(self) -> None:
        if self._grpc is not None:
            self._grpc.begin_drain()

    async def _stop_grpc(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(self._deadline)
        await self._memory.close()  # no stream is left to end

    # -- retention and health ----------------------------------------------------------

    async def _start_retention(self) -> None:
        s = self.settings
        if s.retention_bytes is not None or s.retention_ms is not None:
            assert self.log is not None
            self._retention = asyncio.create_task(
                apply_retention_periodically(self.log), name="proglog-retention"
            )

    async def _stop_retention(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention

    async def _report_serving(self) -> None:
        assert self._grpc is not None
        await self._grpc.set_serving()

    async def _report_not_serving(self) -> None:
        if self._grpc is not None:
            await self._grpc.set_not_serving()

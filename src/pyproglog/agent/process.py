"""`proglog serve`: one node as the process — signals, the readiness line, exit.

SIGTERM/SIGINT drain the node (see Agent.stop); a second signal exits at once
(acknowledged appends are already in the kernel, see docs/storage.md). SIGHUP
re-reads the ACL policy and the TLS certificates without a restart.

Stdout carries the lines a supervisor or a test waits for: `proglog serving:
grpc=ADDR [http=URL] data=DIR` once every start step is done and health is
SERVING, `proglog reloaded` / `proglog reload failed: …`, `proglog stopped`.
Logs go to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from pyproglog.agent.agent import Agent
from pyproglog.auth.errors import SecurityError
from pyproglog.config import Settings
from pyproglog.observability.logging import configure_logging

_log = logging.getLogger("pyproglog.agent")


def readiness_line(agent: Agent) -> str:
    http = f" http={agent.http_url}" if agent.http_url else ""
    return f"proglog serving: grpc={agent.rpc_addr}{http} data={agent.settings.data_dir}"


async def _serve(settings: Settings) -> None:
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
    # A failed start has already given back what it took (the steps' teardown).
    await agent.start()
    print(readiness_line(agent), flush=True)
    await stop_requested.wait()
    await agent.stop()
    print("proglog stopped", flush=True)


def run(settings: Settings) -> None:
    """Run a node until SIGTERM/SIGINT (the `proglog serve` command)."""
    # Before anything logs; stdout stays for the readiness line, logs go to stderr.
    configure_logging(settings.log_level, settings.log_format, settings.node_name)
    asyncio.run(_serve(settings))
    sys.stdout.flush()

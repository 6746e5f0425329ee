"""Start real Proglog nodes for tests: as subprocesses, with readiness waits.

    with ServerProcess(tmp_path) as node:
        channel = grpc.insecure_channel(node.rpc_addr)

The node is `python -m pyproglog serve` on free ports (port 0), so tests can
run side by side. Readiness is the "proglog serving:" line the command prints
once both listeners are up and health is SERVING.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

READY = re.compile(r"proglog serving: grpc=(?P<grpc>\S+)(?: http=(?P<http>\S+))?")


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        args: Sequence[str] = (),
        *,
        http: bool = True,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.http = http
        self.env = env
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.rpc_addr = ""
        self.http_url = ""
        self.output: list[str] = []  # every line the node printed (stdout and stderr)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self) -> ServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "pyproglog",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--rpc-port",
            "0",
            "--http-addr",
            "127.0.0.1:0" if self.http else "",
            *self.args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        if not self._ready.wait(self.ready_timeout) or not self.rpc_addr:
            self.kill()
            raise RuntimeError("node did not become ready:\n" + "".join(self.output))
        return self

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            m = READY.search(line)
            if m and not self._ready.is_set():
                self.rpc_addr = m.group("grpc")
                self.http_url = m.group("http") or ""
                self._ready.set()
        self._ready.set()  # exited: wake start() so it can report

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

"""`proglog serve` as a subprocess: a real node, started on free ports, with a readiness wait.

    with ServerProcess(tmp_path / "data") as node:
        channel = grpc.insecure_channel(node.rpc_addr)

The node is `python -m pyproglog serve` on port 0, so nodes run side by side.
Readiness is the `proglog serving:` line the command prints once every start
step is done and health is SERVING (pyproglog.agent.process). Everything the
node printed is kept in `output`, so a failed start explains itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

# The line pyproglog.agent.process prints when a node is ready.
READY = re.compile(r"proglog serving: grpc=(?P<grpc>\S+)(?: http=(?P<http>\S+))?")


class ServerProcess:
    """One `proglog serve` subprocess.

    `env` is added to `base_env` (default: this process's environment).
    `keep_output=False` keeps in `output` only the lines up to and including the
    readiness line (what explains a failed start) and drains the rest unkept, for
    nodes that write a lot (a console span exporter). `capture_stderr=False` sends
    the node's stderr to /dev/null instead of into `output`.
    """

    def __init__(
        self,
        data_dir: Path,
        args: Sequence[str] = (),
        *,
        http: bool = True,
        env: dict[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
        keep_output: bool = True,
        capture_stderr: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.http = http
        self.env = env
        self.base_env = base_env
        self.ready_timeout = ready_timeout
        self.keep_output = keep_output
        self.capture_stderr = capture_stderr
        self.proc: subprocess.Popen[str] | None = None
        self.rpc_addr = ""
        self.http_url = ""
        # Every line the node printed (stdout and stderr); see keep_output.
        self.output: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

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
        base_env = os.environ if self.base_env is None else self.base_env
        env = {**base_env, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if self.capture_stderr else subprocess.DEVNULL,
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
        stdout = self.proc.stdout
        for line in stdout:
            self.output.append(line)
            m = READY.search(line)
            if m:
                self.rpc_addr = m.group("grpc")
                self.http_url = m.group("http") or ""
                self._ready.set()
                break
        # Read to the end either way, so the node never blocks on a full pipe.
        if self.keep_output:
            for line in stdout:
                self.output.append(line)
        else:
            while stdout.read(1 << 16):
                pass
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

    def shutdown(self, timeout: float = 15.0) -> None:
        """Stop if still running; kill if it takes longer than `timeout`."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(timeout=15)


def run_serve(
    data_dir: Path, args: Sequence[str] = (), *, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run `proglog serve` expecting it to exit by itself (a start that fails)."""
    cmd = [sys.executable, "-m", "pyproglog", "serve", "--data-dir", str(data_dir)]
    return subprocess.run(
        [*cmd, "--log-format", "json", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

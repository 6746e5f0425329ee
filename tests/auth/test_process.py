"""`proglog serve` with TLS and the ACL as a real process: SIGHUP reloads, start-up errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import ServerProcess
from tests.auth.conftest import PKI, SecureFiles

STEP = 10.0


class Lines(list[str]):
    """The node's output, with a wait for a line to appear (the harness appends to it)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = threading.Condition()

    def append(self, line: str) -> None:
        with self._changed:
            super().append(line)
            self._changed.notify_all()

    def wait_for(self, text: str, start: int, timeout: float = 30.0) -> str:
        """The first line from index `start` on that contains `text`."""

        def found() -> str | None:
            return next((line for line in self[start:] if text in line), None)

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"no line with {text!r} in:\n" + "".join(self))
            line = found()
            assert line is not None
            return line


def consume(stub: log_pb2_grpc.LogStub) -> bytes:
    answer = stub.Consume(log_pb2.ConsumeRequest(offset=0), timeout=STEP)
    return bytes(answer.record.value)


def test_sighup_reloads_the_policy_and_keeps_it_when_the_new_one_is_broken(
    files: SecureFiles, pki: PKI, tmp_path: Path
) -> None:
    node = ServerProcess(tmp_path / "data", files.args())
    node.output = lines = Lines()
    with (
        node,
        grpc.secure_channel(node.rpc_addr, pki.root.grpc_credentials()) as root_channel,
        grpc.secure_channel(node.rpc_addr, pki.nobody.grpc_credentials()) as nobody_channel,
    ):
        assert node.http_url.startswith("https://")
        root = log_pb2_grpc.LogStub(root_channel)
        nobody = log_pb2_grpc.LogStub(nobody_channel)
        root.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"v")), timeout=STEP)
        with pytest.raises(grpc.RpcError) as err:
            consume(nobody)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        files.policy.write_text("p, root, *, produce\np, nobody, *, consume\n")
        mark = len(lines)
        node.signal(signal.SIGHUP)
        lines.wait_for("proglog reloaded", mark)
        assert consume(nobody) == b"v"

        files.policy.write_text("p, nobody, *, produce\nnot a rule\n")
        mark = len(lines)
        node.signal(signal.SIGHUP)
        failed = lines.wait_for("proglog reload failed", mark)
        assert "policy.csv:2: unknown policy type 'not a rule'" in failed
        assert consume(nobody) == b"v"
        with pytest.raises(grpc.RpcError) as err:
            nobody.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"x")), timeout=STEP)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert node.proc is not None and node.proc.returncode == 0


def test_serve_with_unusable_material_fails_with_one_line(
    files: SecureFiles, tmp_path: Path
) -> None:
    files.key.write_text("not a key\n")
    serve = [sys.executable, "-m", "pyproglog", "serve", "--data-dir", str(tmp_path / "data")]
    result = subprocess.run(
        [*serve, "--rpc-port", "0", "--http-addr", "", *files.args()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"proglog: TLS key file {files.key} holds no usable key")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()  # refused before touching the data

"""A node on a full disk, on a real small tmpfs (the tests run as root; skipped
where mounting is not permitted).

What the operator sees: a start that cannot have its first segment is one
`proglog:` line naming the settings to lower; a node whose appends hit a full
disk says so once at error level (not once per request), and once more, at
info, when appends work again.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import ServerProcess, run_serve

STEP = 10.0
SMALL_SEGMENTS = [
    "--segment-max-store-bytes",
    str(1 << 20),
    "--segment-max-index-bytes",
    "12000",
    "--max-record-bytes",
    str(128 * 1024),
]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)]
    try:
        mounted = subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    except OSError:
        mounted = False
    if not mounted:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_start_on_a_disk_too_small_for_a_segment_is_one_line(small_disk: Path) -> None:
    data = small_disk / "data"
    # The defaults need 128 MiB + 12 MiB for the first segment; the disk has 8.
    proc = run_serve(data, ["--rpc-port", "0", "--http-addr", ""])
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("proglog: "), proc.stderr
    assert "--segment-max-store-bytes" in lines[0]
    # Nothing half-made is left for the next start to trip on.
    assert sorted(p.name for p in data.iterdir()) == ["LOCK"]


def produce(stub: log_pb2_grpc.LogStub, value: bytes) -> grpc.StatusCode:
    try:
        stub.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=value)), timeout=STEP)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_disk_full_is_logged_once_per_episode(small_disk: Path) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(b"\xee" * (3 << 20))
    value = b"v" * (64 * 1024)
    with ServerProcess(small_disk / "data", [*SMALL_SEGMENTS, "--log-format", "json"]) as node:
        with grpc.insecure_channel(node.rpc_addr) as channel:
            stub = log_pb2_grpc.LogStub(channel)
            codes = []
            for _ in range(200):  # 12.5 MiB: more than the disk holds
                codes.append(produce(stub, value))
                if codes[-1] != grpc.StatusCode.OK:
                    break
            assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED, codes
            for _ in range(5):
                assert produce(stub, value) == grpc.StatusCode.RESOURCE_EXHAUSTED
            filler.unlink()
            assert produce(stub, value) == grpc.StatusCode.OK
        assert node.stop() == 0
    entries = [json.loads(line) for line in node.output if line.startswith("{")]
    errors = [e for e in entries if e["level"] in ("error", "critical")]
    assert len(errors) == 1, errors
    assert errors[0]["event"].startswith("disk full: appends are refused")
    assert "--segment-max-store-bytes" in errors[0]["event"]
    assert "exception" not in errors[0]
    again = [e for e in entries if e["event"].startswith("appends work again")]
    assert len(again) == 1 and "6 append(s) were refused" in again[0]["event"], again

"""Lines grpc's C core writes to stderr itself, around the structured pipeline.

A node keeps only the core's errors (GRPC_VERBOSITY=ERROR unless the operator
sets it): a client failing its TLS handshake, which the core reports at info
level on every attempt, leaves no line outside the JSON log.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.auth.certs import CertPaths, init_dir
from pyproglog.testing import ServerProcess


def test_failed_tls_handshakes_leave_no_native_lines(tmp_path: Path) -> None:
    paths = CertPaths(tmp_path / "pki")
    init_dir(tmp_path / "pki")
    tls = ["--server-tls-cert-file", str(paths.server), "--server-tls-key-file"]
    # This process imported the agent, which set GRPC_VERBOSITY for itself:
    # the node must not inherit it, it has to set it on its own.
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    node = ServerProcess(
        tmp_path / "data",
        [*tls, str(paths.server_key), "--log-format", "json"],
        http=False,
        base_env=env,
    )
    with node:
        for _ in range(3):  # plaintext to a TLS port: the handshake fails
            with (
                grpc.insecure_channel(node.rpc_addr) as channel,
                pytest.raises(grpc.RpcError),
            ):
                log_pb2_grpc.LogStub(channel).GetLogInfo(log_pb2.GetLogInfoRequest(), timeout=5)
        assert node.stop() == 0
    for line in node.output:
        if line.startswith(("proglog serving:", "proglog stopped")):
            continue
        assert json.loads(line)["event"], line  # every other line is a JSON log entry

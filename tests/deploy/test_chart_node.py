"""The chart's pod, run for real: `proglog serve` started exactly as the
StatefulSet starts it, with the image's environment under the chart's.

No Kubernetes here, so this plays the kubelet (tests/deploy/chart.py `Pod`):
it resolves the downward-API env, "mounts" the chart's Secrets as files in a
temporary directory, runs the container's command and args, and calls the
probes the pod spec declares. The pod's stable name stands for 127.0.0.1
(tests/deploy/localnames.py). With replicas 1 this is the whole single-node
deployment working end to end (a one-voter cluster).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyproglog.client import Client, ClientTLS
from pyproglog.testing import free_port
from tests.deploy.chart import DOCKERFILE, FULLNAME, Pod, one, pod_values, render

POD = f"{FULLNAME}-0"


def test_single_node_pod_serves_restarts_and_keeps_its_log(tmp_path: Path, pods: list[Pod]) -> None:
    objs = render(pod_values())
    pod = Pod(objs, tmp_path)
    pods.append(pod)
    pod.start()
    assert pod.rpc_addr.endswith(f":{pod.port('rpc')}")
    for kind in ("startup", "readiness", "liveness"):
        ok, why = pod.probe(kind)
        assert ok, f"{kind} probe: {why}"
    with Client(pod.addr) as log:
        assert log.produce(b"first") == 0
        assert log.get_servers()[0].id == POD  # the node is named after its pod
    # The log is on the volume, under the data dir the chart chose.
    assert any((tmp_path / "var/lib/proglog/data").glob("*.store"))

    assert pod.terminate() == 0
    ok, _ = pod.probe("liveness")
    assert not ok

    # The pod restarted with its volume: same log, new records after it.
    pod.start()
    with Client(pod.addr) as log:
        assert log.consume(0).value == b"first"
        assert log.produce(b"second") == 1
    assert pod.terminate() == 0


@pytest.mark.parametrize("mutual", [True, False], ids=["mutual-tls-acl", "tls-only"])
def test_tls_pod_with_chart_made_secrets(tmp_path: Path, pods: list[Pod], mutual: bool) -> None:
    # Without client certificates no call has a subject, so the ACL goes with mutual TLS.
    tls_values = {"enabled": True, "requireClientCerts": mutual}
    objs = render(pod_values(tls=tls_values, acl={"enabled": mutual}))
    pod = Pod(objs, tmp_path)
    pods.append(pod)
    pod.start()
    for kind in ("startup", "readiness", "liveness"):
        ok, why = pod.probe(kind)
        assert ok, f"{kind} probe (exec, over TLS): {why}"

    # The `root` client certificate the chart made, as NOTES.txt tells users to take it.
    client = one(objs, "Secret", f"{FULLNAME}-client-tls")["data"]
    certs = tmp_path / "certs"
    certs.mkdir()
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (certs / key).write_bytes(base64.b64decode(client[key]))
    tls = ClientTLS(
        ca_file=certs / "ca.crt",
        cert_file=certs / "tls.crt",
        key_file=certs / "tls.key",
        server_name="localhost",
    )
    with Client(pod.addr, tls=tls) as log:
        assert log.produce(b"secure") == 0
        assert log.consume(0).value == b"secure"
    assert pod.terminate() == 0


def test_health_check_fails_with_one_line_when_nothing_serves(tmp_path: Path) -> None:
    env = {**os.environ, "PROGLOG_RPC_PORT": str(free_port()), "PROGLOG_HEALTHCHECK_TIMEOUT": "1"}
    result = subprocess.run(
        [sys.executable, str(DOCKERFILE.parent / "docker" / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert re.fullmatch(
        r"unhealthy: 127\.0\.0\.1:\d+: (UNAVAILABLE|DEADLINE_EXCEEDED): .*\n", result.stderr
    )


def test_health_check_names_a_missing_tls_file(tmp_path: Path) -> None:
    env = {**os.environ, "PROGLOG_SERVER_TLS_CERT_FILE": str(tmp_path / "nope.crt")}
    result = subprocess.run(
        [sys.executable, str(DOCKERFILE.parent / "docker" / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy: cannot read TLS files:")
    assert "nope.crt" in result.stderr
    assert "Traceback" not in result.stderr

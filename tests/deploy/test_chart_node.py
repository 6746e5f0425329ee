"""The chart's pod, run for real: today's `proglog serve` started exactly as
the StatefulSet starts it, with the image's environment under the chart's.

No Kubernetes here, so this plays the kubelet: it resolves the downward-API
env, "mounts" the chart's Secrets as files in a temporary directory, runs the
container's command and args, and calls the probes the pod spec declares.
With replicas 1 this is the whole single-node deployment working end to end.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pyproglog.client import Client, ClientTLS
from pyproglog.testing import READY, free_port
from tests.deploy.chart import (
    DOCKERFILE,
    FULLNAME,
    Obj,
    container,
    every,
    one,
    pod_env,
    render,
)

POD = f"{FULLNAME}-0"
VENV_BIN = str(Path(sys.executable).parent)


def image_env() -> dict[str, str]:
    """The Dockerfile's ENV instructions: the container's environment before the chart's."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    assert "PROGLOG_RPC_PORT" in env
    return env


class Pod:
    """The pod's one container as a process; Secret volumes as directories under `root`."""

    def __init__(self, objs: list[Obj], root: Path) -> None:
        self.objs = objs
        self.root = root
        self.container = container(objs)
        self.sts = one(objs, "StatefulSet")
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.rpc_addr = ""
        self._ready = threading.Event()
        self.env = self._environment()

    def _mount(self, path: str) -> str:
        # Only the Secret mounts move; the data volume's mountPath is already under root.
        for mount in self.container["volumeMounts"]:
            mp = mount["mountPath"]
            if mount["name"] not in ("data", "tmp") and path.startswith(mp + "/"):
                return str(self.root / mp.lstrip("/")) + path[len(mp) :]
        return path

    def _environment(self) -> dict[str, str]:
        secrets = {s["metadata"]["name"]: s for s in every(self.objs, "Secret")}
        volumes = {v["name"]: v for v in self.sts["spec"]["template"]["spec"]["volumes"]}
        for mount in self.container["volumeMounts"]:
            volume = volumes.get(mount["name"], {})
            if "secret" not in volume:
                continue
            secret = secrets[volume["secret"]["secretName"]]
            target = self.root / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            for key, data in secret.get("data", {}).items():
                (target / key).write_bytes(base64.b64decode(data))
            for key, text in secret.get("stringData", {}).items():
                (target / key).write_text(text)
        env = {**image_env(), **pod_env(self.container, POD)}
        env = {k: self._mount(v) for k, v in env.items()}
        env["PATH"] = VENV_BIN + os.pathsep + os.environ["PATH"]
        return env

    def file(self, var: str) -> Path:
        return Path(self.env[var])

    def start(self, timeout: float = 30) -> Pod:
        self._ready.clear()
        self.output = []
        self.proc = subprocess.Popen(
            [*self.container["command"], *self.container["args"]],
            env=self.env,
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or not self.rpc_addr:
            self.kill()
            pytest.fail("pod did not start:\n" + "".join(self.output), pytrace=False)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            m = READY.search(line)
            if m:
                self.rpc_addr = m.group("grpc")
                self._ready.set()
        self._ready.set()

    def terminate(self) -> int:
        """What the kubelet does: SIGTERM, then SIGKILL after terminationGracePeriodSeconds."""
        assert self.proc is not None
        grace = self.sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"node still running {grace}s after SIGTERM", pytrace=False)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def probe(self, kind: str) -> tuple[bool, str]:
        """Run the pod spec's probe of `kind` as the kubelet would."""
        spec = self.container[f"{kind}Probe"]
        if "grpc" in spec:
            target = f"127.0.0.1:{spec['grpc']['port']}"
            with grpc.insecure_channel(target) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=spec["grpc"]["service"]),
                        timeout=spec["timeoutSeconds"],
                    )
                except grpc.RpcError as exc:
                    return False, f"{exc.code().name}: {exc.details()}"
            return reply.status == health_pb2.HealthCheckResponse.SERVING, str(reply.status)
        # exec: the command runs inside the container, with its environment.
        command = list(spec["exec"]["command"])
        if command[1] == "/usr/local/lib/proglog/healthcheck.py":
            command[1] = str(DOCKERFILE.parent / "docker" / "healthcheck.py")
        result = subprocess.run(
            command,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=spec["timeoutSeconds"] + 10,
        )
        return result.returncode == 0, result.stderr


def pod_values(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "replicaCount": 1,
        # Free ports: tests run side by side; the node still binds 0.0.0.0 as in a pod.
        "ports": {"rpc": free_port(), "gossip": free_port(), "http": free_port()},
        "persistence": {"mountPath": str(tmp_path / "var/lib/proglog")},
        "shutdownGraceSeconds": 2,
        **extra,
    }


@pytest.fixture
def pods() -> Any:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.kill()


def test_single_node_pod_serves_restarts_and_keeps_its_log(tmp_path: Path, pods: list[Pod]) -> None:
    objs = render(pod_values(tmp_path))
    pod = Pod(objs, tmp_path)
    pods.append(pod)
    pod.start()
    port = container(objs)["ports"][0]["containerPort"]
    assert pod.rpc_addr.endswith(f":{port}")
    for kind in ("startup", "readiness", "liveness"):
        ok, why = pod.probe(kind)
        assert ok, f"{kind} probe: {why}"
    with Client(f"127.0.0.1:{port}") as log:
        assert log.produce(b"first") == 0
        assert log.get_servers()[0].id == POD  # the node is named after its pod
    # The log is on the volume, under the data dir the chart chose.
    assert any((tmp_path / "var/lib/proglog/data").glob("*.store"))

    assert pod.terminate() == 0
    ok, _ = pod.probe("liveness")
    assert not ok

    # The pod restarted with its volume: same log, new records after it.
    pod.start()
    with Client(f"127.0.0.1:{port}") as log:
        assert log.consume(0).value == b"first"
        assert log.produce(b"second") == 1
    assert pod.terminate() == 0


@pytest.mark.parametrize("mutual", [True, False], ids=["mutual-tls-acl", "tls-only"])
def test_tls_pod_with_chart_made_secrets(tmp_path: Path, pods: list[Pod], mutual: bool) -> None:
    # Without client certificates no call has a subject, so the ACL goes with mutual TLS.
    tls_values = {"enabled": True, "requireClientCerts": mutual}
    objs = render(pod_values(tmp_path, tls=tls_values, acl={"enabled": mutual}))
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
    with Client(pod.rpc_addr.replace("0.0.0.0", "127.0.0.1"), tls=tls) as log:
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

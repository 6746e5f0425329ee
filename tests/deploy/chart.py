"""Render deploy/helm/proglog with the real helm binary and read what it made;
run the pods it describes as real processes (`Pod`, playing the kubelet).

helm comes from `make deploy-tools` (scripts/fetch_helm.sh). Without it the
tests fail, saying so: a chart test that skips would hide a broken chart.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pyproglog.testing import READY, free_port
from tests.deploy import localnames

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "proglog"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HELM = Path(os.environ.get("PROGLOG_HELM", ROOT / ".tools" / "helm"))
RELEASE = "t"
FULLNAME = "t-proglog"
NAMESPACE = "ns1"
VENV_BIN = str(Path(sys.executable).parent)
LOCALNAMES = Path(localnames.__file__)

Obj = dict[str, Any]


def helm_binary(path: Path = HELM) -> Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"helm not found at {path}: run `make deploy-tools` first", pytrace=False)
    return path


def _set_args(values: dict[str, Any]) -> list[str]:
    # --set-json keeps types (ints stay ints, lists stay lists).
    args: list[str] = []
    for key, value in values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


def helm_template(
    values: dict[str, Any] | None = None,
    files: Sequence[Path] = (),
    *,
    chart: Path = CHART,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_binary()), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    for f in files:
        cmd += ["-f", str(f)]
    cmd += _set_args(values or {})
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=60)


def render(values: dict[str, Any] | None = None, files: Sequence[Path] = ()) -> list[Obj]:
    """The objects the chart renders, or a failed test showing helm's error."""
    result = helm_template(values, files)
    if result.returncode != 0:
        pytest.fail(f"helm template failed:\n{result.stderr}", pytrace=False)
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_error(values: dict[str, Any]) -> str:
    """helm's error for values the chart must refuse."""
    result = helm_template(values)
    assert result.returncode != 0, f"helm accepted {values}:\n{result.stdout[:2000]}"
    return result.stderr


def render_notes(values: dict[str, Any] | None = None) -> str:
    """NOTES.txt as `helm install` would print it.

    `helm template` never renders NOTES.txt (and `helm install --dry-run`
    wants a cluster), so a copy of the chart turns it into a named template
    that a ConfigMap carries.
    """
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "proglog"
        shutil.copytree(CHART, copy)
        notes = (copy / "templates" / "NOTES.txt").read_text()
        (copy / "templates" / "NOTES.txt").unlink()
        (copy / "templates" / "_notes.tpl").write_text(
            '{{- define "test.notes" -}}' + notes + "{{- end }}"
        )
        (copy / "templates" / "notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
            'data:\n  notes: {{ include "test.notes" . | toJson }}\n'
        )
        result = helm_template(values, chart=copy, extra=["--show-only", "templates/notes.yaml"])
    if result.returncode != 0:
        pytest.fail(f"NOTES.txt did not render:\n{result.stderr}", pytrace=False)
    text: str = yaml.safe_load(result.stdout)["data"]["notes"]
    return text


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [
        o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def every(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def container(objs: list[Obj]) -> Obj:
    sts = one(objs, "StatefulSet")
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: Obj = containers[0]
    return c


def env_of(c: Obj) -> dict[str, Obj]:
    """Each env entry by name (value or valueFrom)."""
    return {e["name"]: e for e in c.get("env", [])}


def plain_env(c: Obj) -> dict[str, str]:
    return {n: e["value"] for n, e in env_of(c).items() if "value" in e}


def iter_probes(c: Obj) -> Iterator[tuple[str, Obj]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert kind in c, f"no {kind}"
        yield kind, c[kind]


def pod_env(c: Obj, pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet would give it to pod `pod_name`."""
    env = {"HOSTNAME": pod_name}
    for name, e in env_of(c).items():
        if "value" in e:
            env[name] = str(e["value"])
            continue
        field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field == "metadata.name":
            env[name] = pod_name
        elif field == "metadata.namespace":
            env[name] = NAMESPACE
        else:
            pytest.fail(f"env {name}: the tests cannot resolve {e}", pytrace=False)
    return env


def entrypoint_env(c: Obj, pod_name: str) -> subprocess.CompletedProcess[str]:
    """Run the container's real command with `env` as its args: the environment
    the node would be exec'd with in pod `pod_name`."""
    env = {"PATH": os.environ["PATH"], **pod_env(c, pod_name)}
    return subprocess.run(
        [*c["command"], "env"], capture_output=True, text=True, env=env, timeout=30
    )


def exec_env(c: Obj, pod_name: str) -> dict[str, str]:
    result = entrypoint_env(c, pod_name)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


# -- the kubelet, played ------------------------------------------------------------


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


def pod_name(ordinal: int) -> str:
    return f"{FULLNAME}-{ordinal}"


class LocalNet:
    """Pod IPs and cluster DNS on one machine: each pod gets its own local port
    for each of the chart's ports, and its stable name stands for 127.0.0.1
    (tests/deploy/localnames.py does the rewriting). One per test, shared by
    every pod of it, across renders (a scale-up renders the chart again)."""

    def __init__(self) -> None:
        self.ports: dict[str, dict[str, int]] = {}  # pod name -> port name -> local port
        self._taken: set[int] = set()

    def _free(self) -> int:
        while (port := free_port()) in self._taken:
            pass
        self._taken.add(port)
        return port

    def pod(self, name: str, chart_ports: dict[str, int]) -> dict[str, int]:
        if name not in self.ports:
            self.ports[name] = {n: self._free() for n in chart_ports}
        return self.ports[name]

    def spec(self, objs: list[Obj], name: str) -> dict[str, Any]:
        """localnames' mapping for pod `name` of the rendered chart `objs`."""
        c = container(objs)
        chart_ports = {p["name"]: p["containerPort"] for p in c["ports"] if p["protocol"] == "TCP"}
        domain = plain_env(c)["HEADLESS_DOMAIN"]
        replicas = one(objs, "StatefulSet")["spec"]["replicas"]
        hosts: dict[str, dict[str, int]] = {}
        for pod in {*(pod_name(i) for i in range(replicas)), name}:
            local = self.pod(pod, chart_ports)
            hosts[f"{pod}.{domain}"] = {str(chart_ports[n]): local[n] for n in chart_ports}
        own = hosts[f"{name}.{domain}"]
        return {"hosts": hosts, "own": own}


class Pod:
    """One pod's container as a process, started as the kubelet starts it.

    The chart's env with the downward API resolved (pod name), under the
    image's ENV; Secret volumes written as files and the data volume as a
    directory, all under `root` (the env's paths are moved there); the
    container's command and args run for real, with localnames between the
    entrypoint script's `exec` and the node (see LocalNet). The pod's probes
    are called as the pod spec declares them.
    """

    def __init__(
        self, objs: list[Obj], root: Path, name: str = f"{FULLNAME}-0", net: LocalNet | None = None
    ) -> None:
        self.objs = objs
        self.root = root
        self.name = name
        self.net = net or LocalNet()
        self.container = container(objs)
        self.sts = one(objs, "StatefulSet")
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.rpc_addr = ""
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.spec = self.net.spec(objs, name)
        self.env = self._environment()
        data = next(m for m in self.container["volumeMounts"] if m["name"] == "data")
        self.volume = root / data["mountPath"].lstrip("/")

    def _mount(self, path: str) -> str:
        for mount in self.container["volumeMounts"]:
            mp = mount["mountPath"]
            if mount["name"] != "tmp" and path.startswith(mp + "/"):
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
        env = {**image_env(), **pod_env(self.container, self.name)}
        env = {k: self._mount(v) for k, v in env.items()}
        env["PATH"] = VENV_BIN + os.pathsep + os.environ["PATH"]
        return env

    def port(self, name: str) -> int:
        """This pod's local port for the chart's port `name` (rpc, gossip, http)."""
        return self.net.ports[self.name][name]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port('rpc')}"

    def file(self, var: str) -> Path:
        return Path(self.env[var])

    def spawn(self) -> None:
        if self._reader is not None:
            self._reader.join()  # the last run's output is all read: it cannot wake this one
        self._ready.clear()
        self.output = []
        self.rpc_addr = ""
        env = {**self.env, localnames.SPEC_VAR: json.dumps(self.spec)}
        self.proc = subprocess.Popen(
            [*self.container["command"], sys.executable, str(LOCALNAMES), *self.container["args"]],
            env=env,
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def start(self, timeout: float = 30, *, restarts: int = 0) -> Pod:
        """Start the container; with `restarts`, start it again when it exits before
        it is ready, as restartPolicy Always does (a new pod that found no peer yet)."""
        deadline = time.monotonic() + timeout
        for attempt in range(restarts + 1):
            if attempt:
                time.sleep(0.5)  # the kubelet's back-off, shortened
            self.spawn()
            self._ready.wait(max(0.0, deadline - time.monotonic()))
            if self.rpc_addr:
                return self
            assert self.proc is not None and self._reader is not None
            if self._reader.is_alive() or time.monotonic() >= deadline:
                break  # still starting when time ran out
            self.proc.wait()  # its output ended: it exited (or is exiting)
        self.kill()
        pytest.fail(f"pod {self.name} did not start:\n" + "".join(self.output), pytrace=False)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)
            m = READY.search(line)
            if m:
                self.rpc_addr = m.group("grpc")
                self._ready.set()
        self._ready.set()

    def said(self, text: str) -> bool:
        """Whether the node's output since its last start holds `text`."""
        return any(text in line for line in self.output)

    def terminate(self) -> int:
        """What the kubelet does: SIGTERM, then SIGKILL after terminationGracePeriodSeconds."""
        assert self.proc is not None
        grace = self.sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} still running {grace}s after SIGTERM", pytrace=False)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wipe_volume(self) -> None:
        """The pod's PersistentVolume lost (or its claim deleted and made anew)."""
        assert self.proc is None or self.proc.poll() is not None, "stop the pod first"
        shutil.rmtree(self.volume, ignore_errors=True)
        self.volume.mkdir(parents=True)

    def probe(self, kind: str) -> tuple[bool, str]:
        """Run the pod spec's probe of `kind` as the kubelet would."""
        spec = self.container[f"{kind}Probe"]
        if "grpc" in spec:
            # The kubelet dials the pod's IP on the probe's port: here, the pod's local port.
            target = f"127.0.0.1:{self.spec['own'][str(spec['grpc']['port'])]}"
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
            env=localnames.rewrite(self.env, self.spec),
            capture_output=True,
            text=True,
            timeout=spec["timeoutSeconds"] + 10,
        )
        return result.returncode == 0, result.stderr


def pod_values(**extra: Any) -> dict[str, Any]:
    """Values for pods run here: a short drain so that stops take seconds."""
    return {"replicaCount": 1, "shutdownGraceSeconds": 2, **extra}

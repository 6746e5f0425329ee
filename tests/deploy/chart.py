"""Render deploy/helm/proglog with the real helm binary and read what it made.

helm comes from `make deploy-tools` (scripts/fetch_helm.sh). Without it the
tests fail, saying so: a chart test that skips would hide a broken chart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "proglog"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HELM = Path(os.environ.get("PROGLOG_HELM", ROOT / ".tools" / "helm"))
RELEASE = "t"
FULLNAME = "t-proglog"
NAMESPACE = "ns1"

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

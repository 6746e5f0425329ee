"""scripts/fetch_helm.sh: idempotent, and it replaces a binary that is not the pinned one."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.deploy.chart import ROOT, helm_binary

SCRIPT = ROOT / "scripts" / "fetch_helm.sh"


def pinned_sha256() -> str:
    m = re.search(r'^HELM_SHA256="([0-9a-f]{64})"$', SCRIPT.read_text(), re.M)
    assert m is not None
    return m[1]


def fetch(dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT)],
        env={**os.environ, "HELM_DEST": str(dest)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_present_binary_is_kept_as_is(tmp_path: Path) -> None:
    dest = tmp_path / "helm"
    shutil.copy2(helm_binary(), dest)
    before = dest.stat().st_mtime_ns
    result = fetch(dest)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert dest.stat().st_mtime_ns == before


def test_wrong_binary_is_replaced_by_the_pinned_one(tmp_path: Path) -> None:
    dest = tmp_path / "tools" / "helm"
    dest.parent.mkdir()
    dest.write_bytes(b"#!/bin/sh\necho not helm\n")
    dest.chmod(0o755)
    result = fetch(dest)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == pinned_sha256()
    assert "v3.17.2" in result.stdout
    version = subprocess.run(
        [str(dest), "version", "--short"], capture_output=True, text=True, timeout=30
    )
    assert version.stdout.startswith("v3.17.2")
    assert [p.name for p in dest.parent.iterdir()] == ["helm"]  # no temporary left behind

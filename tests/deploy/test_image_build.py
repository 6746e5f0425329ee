"""The image's build stage, without a Docker engine: build the wheel from
exactly what the build context (as .dockerignore filters it) and the
Dockerfile's COPY lines give the first stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.chart import DOCKERFILE, ROOT


def build_stage_sources() -> list[str]:
    """COPY sources of the first stage (up to the second FROM)."""
    stage = DOCKERFILE.read_text().split("\nFROM ")[1]
    sources: list[str] = []
    for line in stage.splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    return sources


def context_allows(path: str) -> bool:
    # .dockerignore is an allow-list: `*`, then `!entry` lines.
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    return any(path == a or path.startswith(a + "/") for a in allowed)


def test_build_stage_makes_the_proglog_wheel(tmp_path: Path) -> None:
    work = tmp_path / "src"
    work.mkdir()
    for source in build_stage_sources():
        assert context_allows(source), f"{source} is kept out by .dockerignore"
        origin = ROOT / source
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(origin, work / source, ignore=ignore)
        else:
            shutil.copy2(origin, work / source)
    # As the Dockerfile's `pip wheel`, but only the project's own wheel: the
    # dependencies come from PyPI as they are, nothing of ours to check.
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    result = subprocess.run(
        [*wheel_cmd, "-w", str(tmp_path / "w"), str(work)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "w").glob("pyproglog-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(meta).decode()
        entry_points = whl.read(meta.replace("METADATA", "entry_points.txt")).decode()
    assert "pyproglog/cli/__init__.py" in names
    assert "pyproglog/api/v1/log_pb2.py" in names
    # The entrypoint and the health check need these at run time.
    assert "proglog = pyproglog.cli:main" in entry_points
    assert "Requires-Dist: grpcio-health-checking" in metadata

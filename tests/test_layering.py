"""Imports flow one way (docs/architecture.md): a package never imports from a row above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pyproglog.client
import pyproglog.log

SRC = Path(pyproglog.__file__).parent

# Row of each package, top to bottom; a module may import its own row or below.
ROWS: dict[str, int] = {
    "cli": 0,
    "agent": 1,
    "server": 2,
    "client": 2,
    "config": 2,
    "auth": 3,
    "observability": 3,
    "log": 4,
    "api": 5,
}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pyproglog" and len(parts) > 1:
                found.add(parts[1])
    return found


def package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(SRC.rglob("*.py")) if package_of(p) in ROWS],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_imports_flow_downward(path: Path) -> None:
    here = package_of(path)
    upward = {
        pkg
        for pkg in imported_packages(path)
        if pkg in ROWS and pkg != here and ROWS[pkg] < ROWS[here]
    }
    # client and server share a row but must not depend on each other.
    if here in ("client", "server"):
        upward |= imported_packages(path) & ({"client", "server"} - {here})
    assert not upward, f"{path.relative_to(SRC)} imports from above: {sorted(upward)}"


# Separable libraries: they import nothing of pyproglog but themselves (docs/cluster.md).
SELF_CONTAINED = ("raft",)


@pytest.mark.parametrize("package", SELF_CONTAINED)
def test_self_contained_packages_import_nothing_of_ours(package: str) -> None:
    paths = sorted((SRC / package).rglob("*.py"))
    assert paths, f"pyproglog.{package} has no modules"
    for path in paths:
        foreign = imported_packages(path) - {package}
        assert not foreign, f"{path.relative_to(SRC)} imports pyproglog.{sorted(foreign)}"


def test_log_public_surface() -> None:
    assert sorted(pyproglog.log.__all__) == [
        "CorruptSegment",
        "DiskFull",
        "InvalidConfig",
        "Log",
        "LogClosed",
        "LogConfig",
        "LogError",
        "LogInfo",
        "LogWriteError",
        "OffsetOutOfRange",
        "Record",
        "RecordLike",
        "RecordTooLarge",
        "SyncPolicy",
        "decode_frames",
    ]
    for name in pyproglog.log.__all__:
        assert getattr(pyproglog.log, name) is not None


def test_client_public_surface_is_exported() -> None:
    for name in pyproglog.client.__all__:
        assert getattr(pyproglog.client, name) is not None
    assert "Client" in pyproglog.client.__all__
    assert not [n for n in pyproglog.client.__all__ if n.startswith("_")]

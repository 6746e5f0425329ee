"""Imports flow one way (docs/architecture.md): a package never imports from a row above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pyproglog

SRC = Path(pyproglog.__file__).parent

# Row of each package, top to bottom; a module may import its own row or below.
ROWS: dict[str, int] = {
    "cli": 0,
    # Test and bench helpers (real nodes): on top, beside cli; nothing in src uses them.
    "testing": 0,
    "agent": 1,
    # The replication runtime: under the agent, over the service's CommitLog seam.
    # raft and discovery are separable libraries (SELF_CONTAINED below), outside the rows.
    "cluster": 2,
    "server": 3,
    "client": 3,
    "config": 3,
    "auth": 4,
    "observability": 4,
    "limits": 4,
    "log": 5,
    "api": 6,
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


def imported_modules(path: Path) -> set[str]:
    """Every `pyproglog...` module a file imports, by its full dotted name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("pyproglog.")}


# Siblings: front ends that share a row and must not depend on each other (nor
# the core beside them on either).
SIBLINGS = (("server", "grpc"), ("server", "http"))


@pytest.mark.parametrize(
    "path",
    sorted((SRC / "server").rglob("*.py")),
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_front_ends_do_not_import_each_other(path: Path) -> None:
    parts = path.relative_to(SRC).parts
    others = [
        "pyproglog." + ".".join(sibling)
        for sibling in SIBLINGS
        if tuple(parts[: len(sibling)]) != sibling
    ]
    # The core below the front ends (server/*.py) imports neither of them.
    crossing = sorted(
        name
        for name in imported_modules(path)
        for other in others
        if name == other or name.startswith(other + ".")
    )
    assert not crossing, f"{path.relative_to(SRC)} imports another front end: {crossing}"


def test_the_sibling_rule_sees_a_crossing(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from pyproglog.server.grpc.status import abort_for\n")
    assert "pyproglog.server.grpc.status" in imported_modules(module)
    module.write_text("from pyproglog.server import grpc\n")
    assert "pyproglog.server.grpc" in imported_modules(module)


def test_nothing_in_src_imports_the_testing_package() -> None:
    users = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if package_of(path) != "testing" and "testing" in imported_packages(path)
    ]
    assert not users, f"shipped code imports pyproglog.testing: {users}"


# Separable libraries: they import nothing of pyproglog but themselves (docs/cluster.md).
SELF_CONTAINED = ("raft", "discovery")


@pytest.mark.parametrize("package", SELF_CONTAINED)
def test_self_contained_packages_import_nothing_of_ours(package: str) -> None:
    paths = sorted((SRC / package).rglob("*.py"))
    assert paths, f"pyproglog.{package} has no modules"
    for path in paths:
        foreign = imported_packages(path) - {package}
        assert not foreign, f"{path.relative_to(SRC)} imports pyproglog.{sorted(foreign)}"


# The public surfaces (__all__) are pinned in tests/test_public_surface.py.


def test_only_the_agent_imports_the_cluster() -> None:
    users = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if package_of(path) not in ("cluster", "agent") and "cluster" in imported_packages(path)
    ]
    assert not users, f"only pyproglog.agent may import pyproglog.cluster: {users}"

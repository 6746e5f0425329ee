"""`proglog servers` and `proglog servers remove` against three `proglog serve` processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyproglog.testing import Cluster
from tests.cli.test_cli import lines, proglog


def servers_json(addr: str) -> list[dict[str, Any]]:
    data = json.loads(lines(proglog("servers", "--json", "--addr", addr, "--timeout", "2"))[0])
    servers: list[dict[str, Any]] = data["servers"]
    return servers


def test_servers_shows_roles_and_lag_then_remove_takes_a_dead_member_out(
    tmp_path: Path,
) -> None:
    with Cluster(tmp_path, size=3) as cluster:
        leader = cluster.leader()

        # Every member a voter and known to the leader, with the leader's view of its lag.
        def settled() -> list[dict[str, Any]] | None:
            rows = servers_json(leader.addr)
            ok = len(rows) == 3 and all(
                r["voter"] and r["reachable"] and r["lag_entries"] is not None for r in rows
            )
            return rows if ok else None

        rows = cluster.wait("three voters, each with its lag", settled, timeout=30)
        assert sorted(r["id"] for r in rows) == ["n1", "n2", "n3"]
        assert [r["id"] for r in rows if r["is_leader"]] == [leader.name]
        by_id = {r["id"]: r for r in rows}
        assert by_id[leader.name]["role"] == "leader"
        assert {r["role"] for r in rows if r["id"] != leader.name} == {"follower"}
        assert len({r["term"] for r in rows}) == 1  # one term, the leader's

        plain = [line.split("\t") for line in lines(proglog("servers", "--addr", leader.addr))]
        assert sorted(p[0] for p in plain) == ["n1", "n2", "n3"]
        assert [p[0] for p in plain if p[2] == "leader"] == [leader.name]
        assert {p[3] for p in plain} == {"voter"}

        # A member killed (no leave) is still listed, as unreachable, not as a traceback.
        dead, alive = cluster.followers(leader)
        cluster.kill(dead.name)
        rows = servers_json(alive.addr)
        assert len(rows) == 3
        gone = next(r for r in rows if r["id"] == dead.name)
        assert gone["reachable"] is False and gone["role"] is None
        assert gone["error"].startswith(f"cannot reach {dead.addr}")

        # Removed through a follower, which passes it to the leader.
        done = proglog("servers", "remove", dead.name, "--addr", alive.addr)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"removed {dead.name} from the cluster"
        cluster.wait(
            "the dead member to leave the configuration",
            lambda: True if len(cluster.servers(leader.name)) == 2 else None,
        )
        assert sorted(r["id"] for r in servers_json(alive.addr)) == sorted(
            [leader.name, alive.name]
        )

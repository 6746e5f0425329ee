"""The agent's start/stop steps: order, teardown in reverse, failed starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pyproglog.agent import Agent, StartupError
from pyproglog.agent.steps import Step, Steps
from pyproglog.config import Settings
from pyproglog.testing import free_port, started_agent


class Journal:
    """Steps that write what they do into one list."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def step(self, name: str, *, fail_start: bool = False, fail_stop: bool = False) -> Step:
        async def start() -> None:
            self.events.append(f"start {name}")
            if fail_start:
                raise RuntimeError(f"{name} cannot start")

        async def stop() -> None:
            self.events.append(f"stop {name}")
            if fail_stop:
                raise RuntimeError(f"{name} cannot stop")

        async def drain() -> None:
            self.events.append(f"drain {name}")

        return Step(name, start, stop, drain)


async def test_start_in_order_then_drain_all_and_stop_all_in_reverse() -> None:
    j = Journal()
    steps = Steps([j.step("a"), j.step("b"), j.step("c")])
    await steps.start()
    assert j.events == ["start a", "start b", "start c"]
    j.events.clear()
    await steps.stop()
    # Every drain before any stop: a front end waits for its calls after the
    # core below it has already ended its tailing streams.
    assert j.events == ["drain c", "drain b", "drain a", "stop c", "stop b", "stop a"]
    j.events.clear()
    await steps.stop()
    assert j.events == [], "a second stop has nothing left to stop"


async def test_failed_start_stops_the_failed_step_and_those_before_it_in_reverse() -> None:
    j = Journal()
    steps = Steps([j.step("a"), j.step("b", fail_start=True), j.step("c")])
    with pytest.raises(RuntimeError, match="b cannot start"):
        await steps.start()
    assert j.events == ["start a", "start b", "drain b", "drain a", "stop b", "stop a"]


async def test_a_failing_stop_does_not_keep_the_rest_from_stopping() -> None:
    j = Journal()
    steps = Steps([j.step("a"), j.step("b", fail_stop=True), j.step("c", fail_start=True)])
    # The start error is the one reported, not the teardown's.
    with pytest.raises(RuntimeError, match="c cannot start"):
        await steps.start()
    assert j.events[-3:] == ["stop c", "stop b", "stop a"]
    steps = Steps([j.step("x"), j.step("y", fail_stop=True)])
    await steps.start()
    j.events.clear()
    with pytest.raises(RuntimeError, match="y cannot stop"):
        await steps.stop()
    assert j.events[-2:] == ["stop y", "stop x"]


def test_step_names_are_unique() -> None:
    j = Journal()
    with pytest.raises(ValueError, match="repeat"):
        Steps([j.step("a"), j.step("a")])


def test_a_node_starts_in_the_documented_order(tmp_path: Path) -> None:
    """The order docs/architecture.md gives; each pair below is a guarantee."""
    agent = Agent(Settings.load({"data_dir": tmp_path / "data"}))
    names = [step.name for step in agent._steps.steps]
    assert names == [
        "tracing",
        "security",
        "data-dir lock",
        "ports",
        "log",
        "cluster",
        "service",
        "HTTP",
        "gRPC",
        "gossip",
        "retention",
        "health",
        "hand-over",
    ]
    # Bad TLS material fails before the directory exists; nothing opens the log
    # without the lock or before the ports are held; SERVING comes last.
    assert names.index("security") < names.index("data-dir lock") < names.index("ports")
    assert names.index("ports") < names.index("log") < names.index("service")
    # The peer service answers before gossip tells anyone about us; a leader hands
    # over before anything drains (the last step drains first).
    assert names.index("gRPC") < names.index("gossip")
    assert names.index("log") < names.index("cluster") < names.index("service")
    assert names[-2:] == ["health", "hand-over"]


async def test_a_step_that_fails_halfway_gives_back_what_it_took(tmp_path: Path) -> None:
    """The ports step binds gRPC, then fails on HTTP: the gRPC port and the lock are free again."""
    rpc_port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        http_port = held.getsockname()[1]
        settings = {
            "data_dir": tmp_path / "data",
            "rpc_port": rpc_port,
            "http_addr": f"127.0.0.1:{http_port}",
        }
        with pytest.raises(StartupError, match=f"127.0.0.1:{http_port} \\(HTTP\\)"):
            await Agent(Settings.load(settings)).start()
    # Nothing opened the log; the port and the directory can be had again.
    assert not [p for p in (tmp_path / "data").iterdir() if p.name != "LOCK"]
    with socket.socket() as again:
        again.bind(("127.0.0.1", rpc_port))
    async with started_agent({**settings, "http_addr": "127.0.0.1:0"}) as node:
        assert node.rpc_addr == f"127.0.0.1:{rpc_port}"

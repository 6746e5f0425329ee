"""Thousands of seeded simulations of 3 and 5 cores under faults; every step checked.

A failure names its seed and prints the one command that replays it.
"""

from __future__ import annotations

import pytest

from tests.raft.sim import SCENARIOS, run_seed

STEPS = 1000
CHUNK = 100
CHUNKS = 3  # per scenario and cluster size: 6 scenarios x 2 sizes x 300 = 3600 seeds

CASES = [
    (scenario, nodes, chunk)
    for scenario in sorted(SCENARIOS)
    for nodes in (3, 5)
    for chunk in range(CHUNKS)
]


@pytest.mark.parametrize(
    ("scenario", "nodes", "chunk"), CASES, ids=[f"{s}-{n}n-{c}" for s, n, c in CASES]
)
def test_invariants_hold_under_faults(scenario: str, nodes: int, chunk: int) -> None:
    committed = elections = 0
    for seed in range(chunk * CHUNK, (chunk + 1) * CHUNK):
        stats = run_seed(seed, nodes, STEPS, scenario)
        committed += stats.committed
        elections += stats.elections
    # The runs did real work, so the invariants were checked against something.
    assert committed > CHUNK * 3
    assert elections > CHUNK


def test_a_failure_prints_its_seed_and_a_replay_command() -> None:
    from tests.raft.sim import InvariantViolation, Sim

    sim = Sim(7, 3, "default")
    sim.step()
    with pytest.raises(InvariantViolation) as info:
        sim.leaders[99] = 1
        core = sim.nodes[2].core
        assert core is not None
        core.term = 99
        core.role = type(core.role).LEADER
        sim.after(sim.nodes[2])
    assert "two leaders in term 99" in str(info.value)
    with pytest.raises(InvariantViolation) as info2:
        try:
            sim.fail("boom")
        except InvariantViolation as exc:
            raise InvariantViolation(f"{exc} replay: {sim.replay_command(1000)}") from None
    assert ".venv/bin/python -m tests.raft.sim --seed 7 --nodes 3 --steps 1000" in str(info2.value)

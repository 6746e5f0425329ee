"""The checker has teeth: each known-buggy core is caught by the simulator, fast."""

from __future__ import annotations

import pytest

from tests.raft.sim import InvariantViolation, run_seed
from tests.raft.variants import VARIANTS

MAX_SEEDS = 100

# variant -> (scenario aimed at it, cluster size, invariants that may catch it)
PLAN = {
    "commit-old-term": ("figure8", 3, ("leader completeness", "truncates committed", "commits")),
    "two-votes": ("elections", 3, ("two leaders",)),
    "vote-no-log-check": ("churn", 3, ("leader completeness", "truncates committed")),
    "eager-conf-change": ("membership", 5, ("two leaders", "leader completeness", "commits")),
    "read-before-term-commit": ("reads", 3, ("stale read",)),
    "read-without-heartbeat": ("reads", 3, ("stale read",)),
}


@pytest.mark.parametrize("variant", sorted(PLAN))
def test_buggy_core_is_caught(variant: str) -> None:
    scenario, nodes, kinds = PLAN[variant]
    for seed in range(MAX_SEEDS):
        try:
            run_seed(seed, nodes, 1000, scenario, VARIANTS[variant], variant)
        except InvariantViolation as exc:
            msg = str(exc)
            assert any(k in msg for k in kinds), msg
            assert f"--variant {variant}" in msg and f"--seed {seed}" in msg
            return
    pytest.fail(f"{variant} was not caught in {MAX_SEEDS} seeds of {scenario}")

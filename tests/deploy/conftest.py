from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.chart import Pod


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    """Pods a test starts; whatever still runs at its end is killed."""
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.kill()
        # Shown by pytest only when the test failed: what each node said last.
        print(f"--- {pod.name} (last 40 lines) ---\n" + "".join(pod.output[-40:]))

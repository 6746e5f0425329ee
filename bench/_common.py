"""What the benches share: importing each other, the records they write, percentiles."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def bench_module(name: str) -> ModuleType:
    """A sibling bench module, e.g. `bench_module("compare")`."""
    return importlib.import_module(f"bench.{name}")


def value_of(size: int) -> bytes:
    """A record value of `size` bytes (the same for every bench and peer)."""
    return (b"proglog-" * (size // 8 + 1))[:size]


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for none)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Rates:
    """records/s and MB/s of a throughput figure (mixed into each bench's result type)."""

    records: int
    seconds: float
    size: int  # bytes per record value

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.records_per_s * self.size / 1e6

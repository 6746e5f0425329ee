"""A history checker for a replicated log: what clients were told against what the nodes hold.

Writers record every produce attempt (each with a value of its own) and how it
ended; readers record every record they were served. After the faults, the
test reads every node's whole log and calls `check`:

    history = History()
    op = history.produce(b"w0-1-a1")        # before the call leaves
    op.ok(offset)                           # or op.unknown("UNAVAILABLE ...")
    history.read("n2", offset, value)       # a consumer was served this record
    report = check([history], {"n1": log1, "n2": log2, "n3": log3})

An attempt that did not end in an answer with an offset is *unknown*: the
record may have been written (the leader died after replicating it, a
forwarded write whose answer was lost) or not. Only `failed` says it certainly
was not; use it only for refusals that happen before anything is appended.
Without idempotent produce, a retry after an unknown outcome can store the
same logical record twice: the report lists those, they are not errors.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

# One node's log as read back: (offset, value) in offset order.
NodeLog = Sequence[tuple[int, bytes]]

# Problems listed in a HistoryError before the rest is summarized.
_MAX_LISTED = 25


class Outcome(Enum):
    PENDING = "pending"  # no answer yet (counts as unknown at check time)
    OK = "ok"  # acknowledged with an offset
    FAILED = "failed"  # certainly not written
    UNKNOWN = "unknown"  # may or may not have been written


@dataclass
class ProduceOp:
    """One produce attempt; `value` is unique to this attempt."""

    value: bytes
    key: bytes  # the logical record: attempts that retry one another share it
    outcome: Outcome = Outcome.PENDING
    offset: int | None = None
    error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def ok(self, offset: int) -> None:
        with self._lock:
            self.outcome, self.offset = Outcome.OK, offset

    def failed(self, error: str) -> None:
        with self._lock:
            self.outcome, self.error = Outcome.FAILED, error

    def unknown(self, error: str) -> None:
        with self._lock:
            self.outcome, self.error = Outcome.UNKNOWN, error


@dataclass(frozen=True)
class ReadOp:
    node: str
    offset: int
    value: bytes


class History:
    """Thread-safe record of produce attempts and reads (one per test, or one per worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.produces: list[ProduceOp] = []
        self.reads: list[ReadOp] = []

    def produce(self, value: bytes, key: bytes | None = None) -> ProduceOp:
        """Record an attempt before it is sent (so a crash mid-call still counts it)."""
        op = ProduceOp(value, value if key is None else key)
        with self._lock:
            self.produces.append(op)
        return op

    def read(self, node: str, offset: int, value: bytes) -> None:
        with self._lock:
            self.reads.append(ReadOp(node, offset, value))

    @property
    def acknowledged(self) -> int:
        with self._lock:
            return sum(1 for op in self.produces if op.outcome is Outcome.OK)

    def snapshot(self) -> tuple[list[ProduceOp], list[ReadOp]]:
        with self._lock:
            return list(self.produces), list(self.reads)


@dataclass
class Report:
    """What a passing check found; `problems` is empty (else HistoryError was raised)."""

    acknowledged: int = 0
    unknown_present: int = 0  # unacknowledged attempts that were written anyway
    unknown_absent: int = 0
    reads: int = 0
    # Unacknowledged attempt values stored more than once: value -> offsets.
    duplicate_values: dict[bytes, list[int]] = field(default_factory=dict)
    # Logical records stored by more than one attempt (a retry after an unknown outcome).
    duplicate_keys: dict[bytes, list[bytes]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.acknowledged} acknowledged, {self.unknown_present} unacknowledged written "
            f"({self.unknown_absent} not), {self.reads} reads checked, "
            f"{len(self.duplicate_values)} duplicated values, "
            f"{len(self.duplicate_keys)} logical records written twice"
        )


class HistoryError(AssertionError):
    def __init__(self, report: Report) -> None:
        shown = report.problems[:_MAX_LISTED]
        more = len(report.problems) - len(shown)
        lines = [f"history check failed: {len(report.problems)} problem(s)", *shown]
        if more:
            lines.append(f"... and {more} more")
        lines.append(report.summary())
        super().__init__("\n".join(lines))
        self.report = report


def check(
    histories: Iterable[History],
    logs: Mapping[str, NodeLog],
    *,
    start_offset: int | None = 0,
) -> Report:
    """Check the final logs of the live nodes against every history; raise HistoryError.

    `start_offset`: where every log must begin (0 when nothing was removed);
    None when retention may have removed a prefix, then each node's own first
    offset bounds what it can be checked for.
    """
    produces: list[ProduceOp] = []
    reads: list[ReadOp] = []
    for h in histories:
        h_produces, h_reads = h.snapshot()
        produces += h_produces
        reads += h_reads
    report = Report(reads=len(reads))
    problems = report.problems

    by_value: dict[bytes, ProduceOp] = {}
    for op in produces:
        if op.value in by_value:
            problems.append(f"the test reused value {op.value!r} for two attempts")
        by_value[op.value] = op

    # Per node: shape of the log, and where each value is.
    where: dict[str, dict[bytes, list[int]]] = {}
    at: dict[str, dict[int, bytes]] = {}
    for node, log in logs.items():
        offsets = [o for o, _ in log]
        if log:
            first = offsets[0]
            if start_offset is not None and first != start_offset:
                problems.append(f"{node}: log starts at {first}, not {start_offset}")
            for i, o in enumerate(offsets):
                if o != first + i:
                    problems.append(f"{node}: offsets not gap-free: {first + i} expected, got {o}")
                    break
        at[node] = dict(log)
        positions: dict[bytes, list[int]] = {}
        for o, v in log:
            positions.setdefault(v, []).append(o)
        where[node] = positions
        for v, offs in positions.items():
            if v not in by_value:
                problems.append(f"{node}: offset {offs[0]} holds {v!r}, which was never produced")

    # Every node holds the same record at every offset both retain.
    names = sorted(logs)
    for a, b in itertools.pairwise(names):
        diffs = [o for o, v in at[a].items() if o in at[b] and at[b][o] != v]
        if diffs:
            o = diffs[0]
            problems.append(
                f"{a} and {b} differ at {len(diffs)} offset(s), first {o}: "
                f"{at[a][o]!r} vs {at[b][o]!r}"
            )
        ends = {n: (log[-1][0] + 1 if log else None) for n, log in ((a, logs[a]), (b, logs[b]))}
        if ends[a] != ends[b]:
            problems.append(f"{a} and {b} end at different offsets: {ends}")

    def retained(node: str, offset: int) -> bool:
        log = logs[node]
        return start_offset is not None or (bool(log) and offset >= log[0][0])

    for op in produces:
        if op.outcome is Outcome.OK:
            report.acknowledged += 1
            assert op.offset is not None
            for node in names:
                if not retained(node, op.offset):
                    continue  # removed by retention: nothing to compare
                offs = where[node].get(op.value, [])
                if offs != [op.offset]:
                    got = at[node].get(op.offset)
                    problems.append(
                        f"{node}: acknowledged {op.value!r} at {op.offset}, found at {offs} "
                        f"(offset {op.offset} holds {got!r})"
                    )
        elif op.outcome is Outcome.FAILED:
            for node in names:
                if op.value in where[node]:
                    problems.append(
                        f"{node}: {op.value!r} failed ({op.error}) "
                        f"but is at {where[node][op.value]}"
                    )
        else:
            present = [where[n][op.value] for n in names if op.value in where[n]]
            if present:
                report.unknown_present += 1
                if any(len(offs) > 1 for offs in present):
                    report.duplicate_values[op.value] = max(present, key=len)
            else:
                report.unknown_absent += 1

    # Logical records written by more than one attempt.
    keys: dict[bytes, list[bytes]] = {}
    for op in produces:
        if any(op.value in where[n] for n in names):
            keys.setdefault(op.key, []).append(op.value)
    report.duplicate_keys = {k: vs for k, vs in keys.items() if len(vs) > 1}
    for k, vs in report.duplicate_keys.items():
        acked = [v for v in vs if by_value[v].outcome is Outcome.OK]
        if len(acked) > 1:
            problems.append(f"logical record {k!r} acknowledged twice: {acked}")

    # A record once served to a consumer stays, unchanged, everywhere.
    for read in reads:
        for node in names:
            if not retained(node, read.offset):
                continue
            got = at[node].get(read.offset)
            if got != read.value:
                problems.append(
                    f"{node}: offset {read.offset} holds {got!r}, "
                    f"but {read.node} served {read.value!r}"
                )
        if read.value not in by_value:
            problems.append(f"{read.node} served {read.value!r} at {read.offset}: never produced")

    if problems:
        raise HistoryError(report)
    return report

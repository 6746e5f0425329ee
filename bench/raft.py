"""Raft core benchmark: `make bench-raft`.

Measures the pure core, in one process, with no I/O (MemoryStorage, messages handed
from core to core in memory), so the figures are the core's own cost:

* committed entries/s through a 3-node cluster: the leader proposes entries (each
  entry stands for one group-commit batch of records) and the cluster is pumped in
  etcd's order (persist, send, apply, advance) until they are applied on every node;
  for 1, 64 and 512 entries proposed between two Ready rounds;
* ticks from a leader crash to a new leader (election_tick = 10, heartbeat_tick = 1,
  PreVote and CheckQuorum on), median and max over seeds;
* simulator steps/s (tests/raft/sim.py, default scenario, every invariant checked).

The last line of output is one JSON object. `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from pyproglog.raft import Config, ConfState, MemoryStorage, Message, Raft, Role

TARGET_ENTRIES_PER_S = 20_000


class Cluster:
    def __init__(self, n: int, seed: int, election_tick: int = 10) -> None:
        conf = ConfState(frozenset(range(1, n + 1)))
        self.storages = {i: MemoryStorage(conf) for i in conf.voters}
        self.cores = {
            i: Raft(
                Config(id=i, election_tick=election_tick, max_size_per_msg=4 << 20),
                self.storages[i],
                random.Random(seed * 100 + i),
            )
            for i in conf.voters
        }
        self.down: set[int] = set()
        self.inbox: list[Message] = []
        self.applied = dict.fromkeys(self.cores, 0)

    def pump(self) -> bool:
        moved = False
        for i, core in self.cores.items():
            if i in self.down or not core.has_ready():
                continue
            moved = True
            rd = core.ready()
            st = self.storages[i]
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            self.inbox.extend(rd.messages)
            if rd.committed_entries:
                self.applied[i] = rd.committed_entries[-1].index
            core.advance(rd)
        inbox, self.inbox = self.inbox, []
        for m in inbox:
            if m.to not in self.down:
                self.cores[m.to].step(m)
                moved = True
        return moved

    def settle(self) -> None:
        while self.pump():
            pass

    def leader(self) -> Raft | None:
        for i, c in self.cores.items():
            if i not in self.down and c.role is Role.LEADER:
                return c
        return None


def throughput(per_round: int, total: int) -> float:
    c = Cluster(3, seed=1)
    c.cores[1].campaign()
    c.settle()
    leader = c.cores[1]
    start_index = leader.log.last_index()
    t0 = time.perf_counter()
    proposed = 0
    while proposed < total:
        for _ in range(per_round):
            leader.propose(None, 4096)
        proposed += per_round
        c.pump()
        # Retention, as a runtime's storage would do: entries everyone applied leave
        # memory, so the figure is the core's cost, not a growing heap's.
        floor = min(c.applied.values())
        if floor - c.storages[1].first_index() > 4096:
            for st in c.storages.values():
                st.compact(floor)
    c.settle()
    dt = time.perf_counter() - t0
    target = start_index + proposed
    assert all(a >= target for a in c.applied.values()), c.applied
    return proposed / dt


def election_ticks(seeds: int) -> list[int]:
    out = []
    for seed in range(seeds):
        c = Cluster(3, seed=seed)
        c.cores[1].campaign()
        c.settle()
        for _ in range(3):  # a few heartbeats: followers hold a fresh lease
            for core in c.cores.values():
                core.tick()
            c.settle()
        c.down.add(1)
        ticks = 0
        while c.leader() is None:
            ticks += 1
            for i, core in c.cores.items():
                if i not in c.down:
                    core.tick()
            c.settle()
            assert ticks < 1000
        out.append(ticks)
    return out


def sim_rate(seeds: int, steps: int) -> tuple[float, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.raft.sim import run_seed

    t0 = time.perf_counter()
    total = delivered = 0
    for seed in range(seeds):
        st = run_seed(seed, 3, steps, "default")
        total += st.steps
        delivered += st.delivered
    dt = time.perf_counter() - t0
    return total / dt, delivered / dt


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    total = 20_000 if args.quick else 200_000
    rows: list[tuple[str, str]] = []
    result: dict[str, object] = {}
    for per_round in (1, 64, 512):
        n = total // 10 if per_round == 1 else total
        rate = max(throughput(per_round, n) for _ in range(1 if args.quick else 3))
        rows.append((f"3 nodes, {per_round} entries per Ready", f"{rate:,.0f} entries/s"))
        result[f"entries_per_s_batch_{per_round}"] = round(rate)
    ticks = election_ticks(50 if args.quick else 300)
    med, worst = statistics.median(ticks), max(ticks)
    rows.append(("ticks to elect after leader crash (T=10)", f"median {med:g}, max {worst}"))
    result["election_ticks_median"] = med
    result["election_ticks_max"] = worst
    steps, msgs = sim_rate(30 if args.quick else 200, 1000)
    rows.append(("simulator (3 nodes, default faults)", f"{steps:,.0f} steps/s"))
    rows.append(("simulator messages delivered", f"{msgs:,.0f} msgs/s"))
    result["sim_steps_per_s"] = round(steps)
    result["sim_msgs_per_s"] = round(msgs)
    best = max(v for k, v in result.items() if k.startswith("entries_per_s") and isinstance(v, int))
    result["target_entries_per_s"] = TARGET_ENTRIES_PER_S
    result["target_met"] = best >= TARGET_ENTRIES_PER_S
    width = max(len(r[0]) for r in rows)
    print("Raft core (pure, in-memory, one process)")
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value}")
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

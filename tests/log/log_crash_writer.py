"""Crash-test writer (run as a script by test_log_crash.py, then killed with SIGKILL).

Opens the log (recovering whatever the last kill left), prints `ready <next_offset>`,
then appends records whose values are a pure function of their offset, in batches
of random sizes, printing the last offset of each append once it has returned.

    python log_crash_writer.py DIR POLICY SEED MAX_STORE_BYTES MAX_INDEX_ENTRIES
"""

from __future__ import annotations

import random
import sys

from pyproglog.log import Log, LogConfig, Record, SyncPolicy
from pyproglog.log.format import INDEX_ENTRY_WIDTH

MAX_RECORD_BYTES = 2100


def value_for(offset: int) -> bytes:
    rng = random.Random(offset)
    size = rng.choice([0, 10, 100, 700, 1500, rng.randrange(2000)])
    return f"{offset}|".encode() + rng.randbytes(size)


def config(policy: str, max_store_bytes: int, max_index_entries: int) -> LogConfig:
    return LogConfig(
        max_store_bytes=max_store_bytes,
        max_index_bytes=INDEX_ENTRY_WIDTH * max_index_entries,
        max_record_bytes=MAX_RECORD_BYTES,
        sync_policy=SyncPolicy(policy),
        sync_interval_ms=2,
        time_index_interval_bytes=1024,
    )


def main(argv: list[str]) -> None:
    directory, policy, seed, max_store, max_entries = argv[1:6]
    rng = random.Random(int(seed))
    log = Log(directory, config(policy, int(max_store), int(max_entries)))
    out = sys.stdout
    out.write(f"ready {log.next_offset}\n")
    out.flush()
    for _ in range(100_000):  # a bound, in case nobody kills us
        first = log.next_offset
        k = rng.choice([1, 1, 1, 2, 3, 8, 20])
        if k == 1:
            got = log.append(value_for(first))
        else:
            got = log.append_batch([Record(value_for(first + i)) for i in range(k)])
        assert got == first, (got, first)
        out.write(f"{first + k - 1}\n")
        out.flush()
    log.close()


if __name__ == "__main__":
    main(sys.argv)

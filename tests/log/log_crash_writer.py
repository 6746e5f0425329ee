"""Crash-test writer (run as a script by test_log_crash.py, then killed with SIGKILL).

Opens the log (recovering whatever the last kill left), prints `ready <next_offset>`,
then appends records whose values are a pure function of their offset, in batches
whose sizes are a pure function of their first offset (so the checker knows where
every batch begins), printing the last offset of each append once it has returned.
With BIG, some batches are larger than a segment.

    python log_crash_writer.py DIR POLICY SEED MAX_STORE_BYTES MAX_INDEX_ENTRIES [BIG]
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterable

from pyproglog.log import Log, LogConfig, Record, SyncPolicy
from pyproglog.log import format as log_format
from pyproglog.log.format import INDEX_ENTRY_WIDTH
from pyproglog.log.store import Store

MAX_RECORD_BYTES = 2100


def value_for(offset: int) -> bytes:
    rng = random.Random(offset)
    size = rng.choice([0, 10, 100, 700, 1500, rng.randrange(2000)])
    return f"{offset}|".encode() + rng.randbytes(size)


def batch_size(first: int, big: bool) -> int:
    """How many records the batch that starts at `first` holds."""
    sizes = [1, 1, 1, 2, 3, 8, 20] + ([60, 150, 400] if big else [])
    return random.Random(first * 7919 + 17).choice(sizes)


def widen_the_kill_window() -> None:
    """Copy each batch into the store in small pieces with a pause after each,
    as a slow disk or a preempted writer would: a kill then lands inside a
    batch's copy often, which is the case recovery must cut whole. The store's
    own code does every write; only the pacing is the test's."""
    log_format.WRITE_PIECE = 4096
    real = Store.append_pieces

    def paced(self: Store, pieces: Iterable[bytes | bytearray], size: int) -> int:
        first = -1
        for piece in pieces:
            at = real(self, [piece], len(piece))
            first = at if first < 0 else first
            time.sleep(0.0005)
        return first

    Store.append_pieces = paced  # type: ignore[method-assign]


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
    directory, policy, _seed, max_store, max_entries = argv[1:6]
    big = argv[6:7] == ["big"]
    if big:
        widen_the_kill_window()
    log = Log(directory, config(policy, int(max_store), int(max_entries)))
    out = sys.stdout
    out.write(f"ready {log.next_offset}\n")
    out.flush()
    for _ in range(100_000):  # a bound, in case nobody kills us
        first = log.next_offset
        k = batch_size(first, big)
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

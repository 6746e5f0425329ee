"""Crash safety: a writer killed with SIGKILL at random moments, many times over.

After every kill the log must reopen without error and hold an unbroken prefix
0..N of exactly what the writer wrote, N at least the last acknowledged offset,
and N + 1 must be where a batch begins: every batch (one entry) is there whole
or not at all, also batches that span several segments' worth of records.
Every append reaches the kernel before it returns, so this holds under every
sync policy (sync policies are about power loss, which a kill is not).
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pyproglog.log import Log

WRITER = Path(__file__).with_name("log_crash_writer.py")


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs when we may mount one, else tmp_path.

    A kill -9 loses nothing the kernel already has, so for this test a tmpfs is as
    good as a disk -- and creating, copying and syncing hundreds of small segment
    files on it is fast, which keeps many kill iterations cheap.
    """
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mnt)]
    try:
        mounted = subprocess.run(cmd, capture_output=True, check=False).returncode == 0
    except OSError:  # no mount(8) here
        mounted = False
    if not mounted:
        yield tmp_path
        return
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def load_writer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("log_crash_writer", WRITER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(
    directory: Path, copy: Path, writer: ModuleType, cfg: object, acked: int, big: bool
) -> int:
    """Verify a copy (so the next writer recovers the crash state itself); its next offset."""
    if not directory.exists():  # killed before it made the directory
        assert acked == -1
        return 0
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(directory, copy)
    with Log(copy, cfg) as log:  # type: ignore[arg-type]
        assert log.lowest_offset == 0
        nxt = log.next_offset
        assert nxt > acked, f"acknowledged offset {acked} lost (next offset {nxt})"
        expected = 0
        for rec in log.iter_records():
            assert rec.offset == expected
            assert rec.value == writer.value_for(expected), f"wrong value at {expected}"
            expected += 1
        assert expected == nxt
        if nxt:
            assert log.read(nxt - 1).value == writer.value_for(nxt - 1)
    boundary = 0
    while boundary < nxt:
        boundary += writer.batch_size(boundary, big)
    assert boundary == nxt, (
        f"torn batch: the log ends at {nxt}, inside a batch ending at {boundary}"
    )
    return nxt


def crash_loop(
    tmp_path: Path,
    policy: str,
    iterations: int,
    seed: int,
    max_store_bytes: int,
    max_index_entries: int,
    big: bool = False,
) -> None:
    writer = load_writer()
    cfg = writer.config(policy, max_store_bytes, max_index_entries)
    rng = random.Random(seed)
    directory = tmp_path / "log"
    acked = -1
    kills_while_appending = 0
    for iteration in range(iterations):
        proc = subprocess.Popen(
            [
                sys.executable,
                str(WRITER),
                str(directory),
                policy,
                str(rng.randrange(1 << 30)),
                str(max_store_bytes),
                str(max_index_entries),
                *(["big"] if big else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        mode = rng.random()
        try:
            if mode >= 0.1:  # else: kill at once, during start-up or recovery
                line = proc.stdout.readline()
                if line.startswith("ready "):
                    # The writer's own recovery kept every acknowledged record.
                    assert int(line.split()[1]) > acked
                    # Kill right after the first append, or after up to 30 more.
                    for _ in range(1 if mode < 0.25 else rng.randrange(1, 30)):
                        line = proc.stdout.readline()
                        if not line:
                            break
                        acked = max(acked, int(line))
                    kills_while_appending += 1
        finally:
            if big:
                # Past the last acknowledged line the writer is building its next
                # batch: land the kill anywhere in it, its copy included.
                time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        # Lines written before the kill were acknowledged too.
        for line in out.splitlines():
            if line.isdigit():
                acked = max(acked, int(line))
        assert proc.returncode == -signal.SIGKILL, f"writer failed (iteration {iteration}):\n{err}"
        nxt = check(directory, tmp_path / "check", writer, cfg, acked, big)
        assert nxt > acked
    assert kills_while_appending > iterations // 2
    assert acked > 100  # the loop really wrote something worth checking
    # Many rolls happened inside the kill window.
    assert len(list(directory.glob("*.store"))) > iterations


@pytest.mark.slow
@pytest.mark.parametrize(
    ("policy", "iterations", "seed", "max_store_bytes", "max_index_entries"),
    [
        ("always", 40, 1, 16000, 40),
        ("never", 40, 2, 20000, 12),
        ("interval", 15, 3, 8000, 50),
    ],
)
def test_sigkill_leaves_an_unbroken_prefix_with_every_acknowledged_record(
    workdir, policy, iterations, seed, max_store_bytes, max_index_entries
):
    crash_loop(workdir, policy, iterations, seed, max_store_bytes, max_index_entries)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("policy", "seed", "max_store_bytes", "max_index_entries"),
    [("always", 4, 16000, 40), ("never", 5, 20000, 12)],
)
def test_sigkill_during_batches_larger_than_a_segment_keeps_them_whole(
    workdir, policy, seed, max_store_bytes, max_index_entries
):
    crash_loop(workdir, policy, 30, seed, max_store_bytes, max_index_entries, big=True)

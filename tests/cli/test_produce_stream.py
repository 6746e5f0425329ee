"""`proglog produce` streaming stdin through the producer, against a `proglog serve` process.

What is checked is what a user sees (offsets on stdout, in input order; one
line on error) and what the log then holds: every line exactly once, in order.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from pyproglog.client import Client
from pyproglog.testing import ServerProcess, free_port
from tests.cli.test_cli import STEP, LineReader, _env, assert_one_line_error, lines, proglog

LINES = 200_000
# Writes "0\n" .. "N-1\n" to stdout in large chunks: a pipe as `seq` would fill it.
GENERATOR = (
    "import sys\n"
    "n = int(sys.argv[1])\n"
    "out = sys.stdout.buffer\n"
    "for start in range(0, n, 10_000):\n"
    "    out.write(b''.join(b'%d\\n' % i for i in range(start, min(n, start + 10_000))))\n"
)


def read_all(addr: str) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    with Client(addr, timeout=STEP) as client:
        end = client.info().next_offset
        offset = 0
        while offset < end:
            res = client.fetch(offset, max_records=10_000)
            out += [(r.offset, r.value) for r in res.records]
            offset = res.next_offset
    return out


def test_a_pipe_of_lines_lands_once_each_in_order(server_process: ServerProcess) -> None:
    addr = server_process.rpc_addr
    gen = subprocess.Popen(
        [sys.executable, "-c", GENERATOR, str(LINES)], stdout=subprocess.PIPE, env=_env()
    )
    assert gen.stdout is not None
    try:
        produce = subprocess.run(
            [sys.executable, "-m", "pyproglog", "produce", "--addr", addr],
            stdin=gen.stdout,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=300,
        )
    finally:
        gen.stdout.close()
        gen.wait(STEP)
    assert gen.returncode == 0
    assert produce.returncode == 0, (produce.stderr, "".join(server_process.output))
    assert produce.stderr == ""
    # One offset per line, in input order.
    assert produce.stdout.splitlines() == [str(i) for i in range(LINES)]
    log = read_all(addr)
    assert [offset for offset, _ in log] == list(range(LINES))
    values = [value for _, value in log]
    assert values == [b"%d" % i for i in range(LINES)]


def test_each_line_is_answered_as_it_arrives(server_process: ServerProcess) -> None:
    """Input that comes slowly (a person typing, `tail -f |`) gets each offset while
    stdin is still open: nothing waits for the end of the input or a full batch."""
    addr = server_process.rpc_addr
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyproglog", "produce", "--addr", addr, "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out = LineReader(proc.stdout)
    try:
        for i, value in enumerate(["first", "second", "third"]):
            proc.stdin.write(value + "\n")
            proc.stdin.flush()
            assert out.next() == f'{{"offset": {i}}}'
        proc.stdin.close()
        assert proc.wait(STEP) == 0
        assert out.next() is None
        assert proc.stderr.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [v for _, v in read_all(addr)] == [b"first", b"second", b"third"]


def test_a_refused_record_is_one_line_and_nothing_is_claimed(
    server_process: ServerProcess,
) -> None:
    addr = server_process.rpc_addr
    big = "x" * (2 * 1024 * 1024)  # over the node's 1 MiB --max-record-bytes
    proc = proglog("produce", "--addr", addr, input=f"a\n{big}\nb\n")
    line = assert_one_line_error(proc)
    assert "1048576" in line, line
    # Whatever was printed is in the log, at that offset, with that value.
    log = dict(read_all(addr))
    printed = [int(x) for x in proc.stdout.split()]
    assert all(log[o] == v for o, v in zip(printed, [b"a", b"b"], strict=False))
    assert len(printed) <= 1 and b"x" * 10 not in b"".join(log.values())


def test_any_of_several_addresses_will_do(server_process: ServerProcess) -> None:
    # The first address refuses connections: the routed client asks the next.
    addrs = f"127.0.0.1:{free_port()},{server_process.rpc_addr}"
    assert lines(proglog("produce", "a", "b", "--addr", addrs, "--timeout", "10")) == ["0", "1"]
    assert lines(proglog("consume", "--addr", addrs, "--timeout", "10")) == ["0\ta", "1\tb"]
    # --direct talks to one node: the others are never asked.
    single = proglog("produce", "c", "--addr", server_process.rpc_addr, "--direct")
    assert lines(single) == ["2"]
    line = assert_one_line_error(proglog("produce", "x", "--addr", addrs, "--direct"), code=2)
    assert "--direct" in line


def read_until(fd: int, expected: bytes) -> bytes:
    """What a terminal shows, read until `expected` appears (within STEP)."""
    seen = b""
    deadline = time.monotonic() + STEP
    while expected not in seen:
        left = deadline - time.monotonic()
        assert left > 0, seen
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 4096)
    return seen


def test_a_terminal_gets_each_offset_as_the_line_is_typed(server_process: ServerProcess) -> None:
    addr = server_process.rpc_addr
    terminal, tty = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyproglog", "produce", "--addr", addr],
        stdin=tty,
        stdout=tty,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    os.close(tty)
    try:
        os.write(terminal, b"typed\n")
        assert b"offset 0\r\n" in read_until(terminal, b"offset 0\r\n")
        os.write(terminal, b"by hand\n")
        assert b"offset 1\r\n" in read_until(terminal, b"offset 1\r\n")
        os.write(terminal, b"\x04")  # Ctrl-D at the start of a line: end of input
        assert proc.wait(STEP) == 0
        assert proc.stderr is not None
        hint = "proglog: reading records from stdin, one per line (Ctrl-D ends)\n"
        assert proc.stderr.read().decode() == hint
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(terminal)
    assert [v for _, v in read_all(addr)] == [b"typed", b"by hand"]


def test_through_a_port_forward_direct_is_the_way(tmp_path: Path) -> None:
    """A cluster node whose advertised address is not reachable from the client (here
    127.0.0.2, where nothing listens), as through a port-forward: the routed commands
    say to pass --direct, and --direct works."""
    args = ["--bootstrap", "--node-name", "solo", "--gossip-profile", "local"]
    args += ["--bind-addr", f"127.0.0.1:{free_port()}", "--advertise-addr", "127.0.0.2"]
    with ServerProcess(tmp_path / "data", args, http=False) as node:
        addr = node.rpc_addr
        for command in (["produce", "x"], ["consume"]):
            line = assert_one_line_error(proglog(*command, "--addr", addr, "--timeout", "1"))
            assert line.startswith("proglog: cannot reach 127.0.0.2:"), line
            assert line.endswith("as through a port-forward or NAT, pass --direct)"), line
        assert lines(proglog("produce", "x", "--addr", addr, "--direct")) == ["0"]
        assert lines(proglog("consume", "--addr", addr, "--direct")) == ["0\tx"]

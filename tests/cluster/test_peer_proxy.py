"""PeerProxy tells which process each connection comes from, and cuts one sender alone."""

from __future__ import annotations

import socket
import subprocess
import sys

from pyproglog.testing.cluster import PeerProxy

STEP = 10.0  # bounds a failing wait only
QUIET = 0.5  # how long a swallowed line is waited for (the proxy creates the silence)

# A child that connects, then for each stdin line "TIMEOUT TEXT" sends TEXT and
# prints the answer, or "timeout" when none came within TIMEOUT seconds.
CHILD = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
for line in sys.stdin:
    timeout, text = line.split(" ", 1)
    s.settimeout(float(timeout))
    s.sendall(text.encode())
    try:
        print(s.recv(100).decode().strip() or "closed", flush=True)
    except TimeoutError:
        print("timeout", flush=True)
"""


def test_one_sender_is_cut_and_the_others_pass(echo_addr: str) -> None:
    children: dict[int, str] = {}
    with PeerProxy(echo_addr, lambda: dict(children)) as proxy:
        port = proxy.addr.rsplit(":", 1)[1]
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, port],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        children[child.pid] = "child"
        assert child.stdin is not None and child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "connected"
            mine = socket.create_connection(("127.0.0.1", int(port)))
            mine.settimeout(STEP)

            def child_says(line: str, timeout: float = STEP) -> str:
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(f"{timeout} {line}\n")
                child.stdin.flush()
                return child.stdout.readline().strip()

            assert child_says("a") == "a"
            proxy.cut_sources.add("child")
            assert child_says("b", QUIET) == "timeout"  # swallowed, connection still open
            mine.sendall(b"mine")
            assert mine.recv(100) == b"mine"  # another sender still passes
            assert sorted(s or "" for s in proxy.senders) == ["", "child"]
            proxy.cut_sources.clear()
            assert child_says("c") == "c"
            mine.close()
        finally:
            child.kill()
            child.wait()

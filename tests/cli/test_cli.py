"""`proglog` client commands, run as subprocesses against a `proglog serve` subprocess.

What is checked is what a user or a script sees: stdout lines, one-line
errors on stderr, exit codes, and no tracebacks.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pyproglog.testing import ServerProcess, free_port
from tests.auth.conftest import PKI, Identity, make_pki

STEP = 20.0  # bound for anything that should happen "at once" (generous: 2 cores)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # A developer's PROGLOG_ADDR etc. must not leak into the tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROGLOG_")}
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


def proglog(
    *args: str,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    binary = isinstance(input, bytes)
    proc = subprocess.run(
        [sys.executable, "-m", "pyproglog", *args],
        input=input,
        capture_output=True,
        text=not binary,
        env=_env(env),
        timeout=STEP * 2,
        cwd=cwd,
    )
    if binary:
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        )
    return proc


def popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pyproglog", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(),
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("proglog: ")
    return lines[0]


def lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


class LineReader:
    """Lines of a pipe, read in a thread so a test can wait with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, timeout: float = STEP) -> str | None:
        return self._lines.get(timeout=timeout)


@pytest.fixture
def addr(server_process: ServerProcess) -> str:
    return server_process.rpc_addr


# -- produce / consume ----------------------------------------------------------------


def test_produce_args_then_consume(addr: str) -> None:
    assert lines(proglog("produce", "hello", "wörld", "--addr", addr)) == ["0", "1"]
    assert lines(proglog("consume", "--addr", addr)) == ["0\thello", "1\twörld"]
    # --addr can come from the environment.
    assert lines(proglog("produce", "x", env={"PROGLOG_ADDR": addr})) == ["2"]


def test_produce_stdin_lines(addr: str) -> None:
    out = lines(proglog("produce", "--addr", addr, "--json", input="a\nb\n\nc"))
    assert [json.loads(line) for line in out] == [{"offset": i} for i in range(4)]
    # '-' reads stdin as well; batches are split at --batch-size.
    out = lines(proglog("produce", "-", "--addr", addr, "--batch-size", "2", input="d\ne\nf\n"))
    assert out == ["4", "5", "6"]
    values = [line.split("\t", 1)[1] for line in lines(proglog("consume", "--addr", addr))]
    assert values == ["a", "b", "", "c", "d", "e", "f"]


def test_consume_from_an_offset_as_json(addr: str) -> None:
    before = int(time.time() * 1000)
    proglog("produce", "zero", "one", "two", "--addr", addr)
    out = lines(proglog("consume", "--offset", "1", "--json", "--addr", addr))
    records = [json.loads(line) for line in out]
    assert [r["offset"] for r in records] == [1, 2]
    assert [r["value"] for r in records] == ["one", "two"]
    assert [base64.b64decode(r["value_base64"]) for r in records] == [b"one", b"two"]
    assert all(r["timestamp_ms"] >= before - 1000 for r in records)


def test_consume_max_and_end(addr: str) -> None:
    proglog("produce", *"abcde", "--addr", addr)
    assert lines(proglog("consume", "--offset", "1", "--max", "2", "--addr", addr)) == [
        "1\tb",
        "2\tc",
    ]
    # The end of the log is a valid place to start: nothing to print.
    assert lines(proglog("consume", "--offset", "5", "--addr", addr)) == []


def test_binary_values_survive_stdin_and_json(addr: str) -> None:
    proc = proglog("produce", "--addr", addr, input=b"\xff\x00bin\ntext\n")
    assert lines(proc) == ["0", "1"]
    records = [json.loads(x) for x in lines(proglog("consume", "--json", "--addr", addr))]
    assert records[0]["value"] is None
    assert base64.b64decode(records[0]["value_base64"]) == b"\xff\x00bin"
    assert records[1]["value"] == "text"
    # Human output stays one line per record, escaping what is not text.
    assert lines(proglog("consume", "--addr", addr)) == ["0\t\\xff\\x00bin", "1\ttext"]


def test_consume_follow_picks_up_new_records(addr: str) -> None:
    proglog("produce", "before", "--addr", addr)
    follower = popen("consume", "--follow", "--json", "--addr", addr)
    try:
        assert follower.stdout is not None
        out = LineReader(follower.stdout)
        first = out.next()
        assert first is not None and json.loads(first)["value"] == "before"
        assert lines(proglog("produce", "after", "--addr", addr)) == ["1"]
        second = out.next()
        assert second is not None
        assert (json.loads(second)["offset"], json.loads(second)["value"]) == (1, "after")
        follower.send_signal(signal.SIGINT)
        assert follower.wait(STEP) == 0
        assert follower.stderr is not None and follower.stderr.read() == ""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_consume_follow_with_max_exits_by_itself(addr: str) -> None:
    follower = popen("consume", "-f", "--max", "2", "--addr", addr)
    try:
        proglog("produce", "a", "b", "c", "--addr", addr)
        out, err = follower.communicate(timeout=STEP)
        assert follower.returncode == 0, err
        assert out.splitlines() == ["0\ta", "1\tb"]
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def test_consume_into_a_closed_pipe_stops_quietly(addr: str, server_process: ServerProcess) -> None:
    produced = proglog(
        "produce", "--addr", addr, input="".join(f"{'x' * 100} {i}\n" for i in range(3000))
    )
    assert produced.returncode == 0, (produced.stderr, "".join(server_process.output))
    reader = popen("consume", "--addr", addr)
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline().startswith("0\t")
    reader.stdout.close()  # like `| head -1`
    assert reader.wait(STEP) != 0
    assert reader.stderr.read() == "", "".join(server_process.output)


# -- servers / info -------------------------------------------------------------------


def test_servers(addr: str) -> None:
    data: dict[str, Any] = json.loads(proglog("servers", "--json", "--addr", addr).stdout)
    assert len(data["servers"]) == 1
    server = data["servers"][0]
    assert server["rpc_addr"] == addr
    assert server["is_leader"] is True
    assert server["id"]
    assert server["voter"] is True
    # --json also asks the server itself: a plain node is no cluster, and has no lag.
    assert (server["reachable"], server["role"], server["term"]) == (True, "standalone", 0)
    assert server["lag_entries"] is None and server["match_index"] is None
    (line,) = lines(proglog("servers", "--addr", addr))
    assert line.split("\t") == [server["id"], addr, "leader", "voter"]


def test_servers_remove_on_a_single_node_is_one_line(addr: str) -> None:
    line = assert_one_line_error(proglog("servers", "remove", "n2", "--addr", addr))
    assert line == f"proglog: the server at {addr} is a single node, not a cluster member"


def test_servers_remove_needs_a_name() -> None:
    proc = proglog("servers", "remove")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_info(addr: str) -> None:
    empty = json.loads(proglog("info", "--json", "--addr", addr).stdout)
    assert empty["empty"] is True
    assert empty["highest_offset"] is None
    proglog("produce", "a", "b", "c", "--addr", addr)
    info = json.loads(proglog("info", "--json", "--addr", addr).stdout)
    assert info["empty"] is False
    assert (info["lowest_offset"], info["highest_offset"], info["next_offset"]) == (0, 2, 3)
    assert info["segment_count"] >= 1
    assert info["size_bytes"] > 0
    assert (info["role"], info["term"], info["leader_id"], info["replicas"]) == (
        "standalone",
        0,
        None,
        [],
    )
    human = dict(line.split("\t") for line in lines(proglog("info", "--addr", addr)))
    assert human["next_offset"] == "3"
    assert human["empty"] == "false"
    assert (human["role"], human["leader_addr"]) == ("standalone", "-")


def test_an_empty_log_means_the_same_on_every_surface(server_process: ServerProcess) -> None:
    import httpx

    # No surface may say 0, the offset a first record gets: JSON says null,
    # the gauge (which cannot be null) says -1, and next_offset is 0 everywhere.
    addr, url = server_process.rpc_addr, server_process.http_url
    cli = json.loads(proglog("info", "--json", "--addr", addr).stdout)
    http = httpx.get(f"{url}/v1/info", timeout=STEP).json()
    for info in (cli, http):
        assert info["empty"] is True
        assert info["highest_offset"] is None and info["commit_offset"] is None
        assert info["next_offset"] == 0
    human = dict(line.split("\t") for line in lines(proglog("info", "--addr", addr)))
    assert human["highest_offset"] == "-" and human["empty"] == "true"
    metrics = httpx.get(f"{url}/metrics", timeout=STEP).text
    assert "\nproglog_log_highest_offset -1.0\n" in metrics
    assert "\nproglog_log_next_offset 0.0\n" in metrics


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["produce", "x"],
        ["consume"],
        ["consume", "--follow"],
        ["servers"],
        ["servers", "--json"],
        ["servers", "remove", "n2"],
        ["info"],
    ],
)
def test_refused_connection_is_one_line(command: list[str]) -> None:
    target = f"127.0.0.1:{free_port()}"
    line = assert_one_line_error(proglog(*command, "--addr", target))
    assert line.startswith(f"proglog: cannot reach {target}: ")


@pytest.mark.parametrize("command", [["info"], ["consume", "--follow"]])
def test_hanging_server_times_out(silent_addr: str, command: list[str]) -> None:
    start = time.monotonic()
    proc = proglog(*command, "--addr", silent_addr, "--timeout", "0.5")
    line = assert_one_line_error(proc)
    assert line == f"proglog: cannot reach {silent_addr}: no answer within 0.5s"
    assert time.monotonic() - start < STEP


def test_consume_out_of_range(addr: str) -> None:
    proglog("produce", "a", "--addr", addr)
    line = assert_one_line_error(proglog("consume", "--offset", "5", "--addr", addr))
    assert line == "proglog: offset out of range: 5"


def test_bad_flags_are_usage_errors() -> None:
    for args in (["consume", "--offset", "-1"], ["consume", "--bogus"], ["produce", "--json=x"]):
        proc = proglog(*args)
        assert proc.returncode == 2, proc
        assert "Traceback" not in proc.stderr


def test_bad_addr_is_one_line() -> None:
    line = assert_one_line_error(proglog("info", "--addr", "nohostport"), code=2)
    assert "HOST:PORT" in line


def test_missing_tls_file_is_one_line(tmp_path: Path) -> None:
    line = assert_one_line_error(proglog("info", "--tls-ca", str(tmp_path / "ca.pem")))
    assert "ca.pem" in line


def self_signed_pem(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_tls_to_a_plaintext_server_is_one_line(addr: str, tmp_path: Path) -> None:
    # grpc's C core would also log the failed handshake on stderr.
    ca = self_signed_pem(tmp_path / "ca.pem")
    line = assert_one_line_error(proglog("info", "--addr", addr, "--tls-ca", str(ca)))
    expected = f"the server at {addr} does not use TLS: drop --tls-ca, --tls-cert and --tls-key"
    assert line == f"proglog: {expected}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_addr(pki: PKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A node requiring client certificates of the PKI's CA."""
    d = pki.dir
    args = ["--server-tls-cert-file", str(d.server), "--server-tls-key-file", str(d.server_key)]
    args += ["--server-tls-ca-file", str(d.ca)]
    with ServerProcess(tmp_path_factory.mktemp("mtls") / "data", args) as node:
        yield node.rpc_addr


def tls_args(who: Identity) -> list[str]:
    args = ["--tls-ca", str(who.ca)]
    if who.cert is not None and who.key is not None:
        args += ["--tls-cert", str(who.cert), "--tls-key", str(who.key)]
    return args


REFUSED = "refused the TLS handshake: check that your client certificate is valid"


@pytest.mark.parametrize("command", [["info"], ["consume", "--follow"], ["produce", "x"]])
@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("expired", REFUSED),
        ("stranger", REFUSED),  # signed by another CA
        ("anonymous", "refused the TLS handshake: it requires a client certificate"),
        (None, "closed the connection: if it uses TLS, pass --tls-ca"),
    ],
)
def test_tls_refusals_say_what_to_check(
    mtls_addr: str, pki: PKI, who: str | None, expected: str, command: list[str]
) -> None:
    args = [] if who is None else tls_args(getattr(pki, who))
    line = assert_one_line_error(proglog(*command, "--addr", mtls_addr, *args))
    assert line.startswith(f"proglog: the server at {mtls_addr} {expected}"), line


def test_a_server_certificate_from_another_ca_is_named(mtls_addr: str, pki: PKI) -> None:
    other_ca = pki.dir.dir / "other-ca.pem"
    args = ["--tls-ca", str(other_ca), *tls_args(pki.root)[2:]]
    line = assert_one_line_error(proglog("info", "--addr", mtls_addr, *args))
    assert line.startswith(
        f"proglog: the server at {mtls_addr} presented a certificate that --tls-ca does not verify"
    ), line


def test_a_valid_client_certificate_is_served(mtls_addr: str, pki: PKI) -> None:
    # The refusals above are the server's, not a broken set-up.
    assert json.loads(lines(proglog("info", "--json", "--addr", mtls_addr, *tls_args(pki.root)))[0])


def test_servers_remove_needs_the_admin_action(pki: PKI, tmp_path: Path) -> None:
    """A cluster of one with TLS and the example ACL: root may administer, nobody not."""
    d = pki.dir
    args = ["--server-tls-cert-file", str(d.server), "--server-tls-key-file", str(d.server_key)]
    args += ["--server-tls-ca-file", str(d.ca)]
    args += ["--peer-tls-cert-file", str(d.server), "--peer-tls-key-file", str(d.server_key)]
    args += ["--peer-tls-ca-file", str(d.ca)]
    args += ["--acl-model-file", str(d.dir / "model.conf")]
    args += ["--acl-policy-file", str(d.dir / "policy.csv")]
    args += ["--bootstrap", "--node-name", "solo", "--gossip-profile", "local"]
    args += ["--bind-addr", f"127.0.0.1:{free_port()}"]
    with ServerProcess(tmp_path / "data", args, http=False) as node:
        addr = node.rpc_addr
        nobody = proglog("servers", "remove", "n2", "--addr", addr, *tls_args(pki.nobody))
        line = assert_one_line_error(nobody)
        assert "nobody not permitted to admin" in line, line
        # root gets past the ACL to the cluster, which knows no n2.
        root = proglog("servers", "remove", "n2", "--addr", addr, *tls_args(pki.root))
        assert assert_one_line_error(root) == "proglog: n2 is not a member of the cluster"
        data = json.loads(
            lines(proglog("servers", "--json", "--addr", addr, *tls_args(pki.root)))[0]
        )
        (server,) = data["servers"]
        assert (server["id"], server["is_leader"], server["voter"]) == ("solo", True, True)
        assert server["role"] == "leader" and server["term"] >= 1
        assert server["lag_entries"] == 0


def test_serve_with_invalid_config_is_one_line(tmp_path: Path) -> None:
    proc = proglog("serve", "--data-dir", str(tmp_path / "d"), "--segment-max-index-bytes", "13")
    line = assert_one_line_error(proc, code=2)
    assert "12" in line  # says what would be valid


# -- consume --follow across restarts -------------------------------------------------


def test_consume_follow_survives_a_server_restart(tmp_path: Path) -> None:
    port = free_port()
    args = ["--rpc-port", str(port)]  # the same address both times (the last flag wins)
    data = tmp_path / "data"
    with ServerProcess(data, args, http=False) as first:
        addr = first.rpc_addr
        assert lines(proglog("produce", "a", "b", "--addr", addr)) == ["0", "1"]
        follower = popen("consume", "--follow", "--addr", addr)
        assert follower.stdout is not None and follower.stderr is not None
        out, err = LineReader(follower.stdout), LineReader(follower.stderr)
        try:
            assert [out.next(), out.next()] == ["0\ta", "1\tb"]
            assert first.stop() == 0
            assert err.next() == "proglog: connection lost, reconnecting…"
            assert follower.poll() is None  # still waiting, not exited
            with ServerProcess(data, args, http=False) as second:
                assert second.rpc_addr == addr
                assert err.next() == "proglog: reconnected"
                assert lines(proglog("produce", "c", "--addr", addr)) == ["2"]
                # Resumed after the last record printed: no gap, no duplicate.
                assert out.next() == "2\tc"
                follower.send_signal(signal.SIGINT)
                assert follower.wait(STEP) == 0
            assert out.next() is None  # nothing else was printed
            assert err.next() is None
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()


def test_consume_follow_past_the_end_says_it_waits(addr: str) -> None:
    proglog("produce", "a", "b", "--addr", addr)
    follower = popen("consume", "--follow", "--offset", "4", "--addr", addr)
    assert follower.stdout is not None and follower.stderr is not None
    out, err = LineReader(follower.stdout), LineReader(follower.stderr)
    try:
        assert err.next() == "proglog: waiting for offset 4 (log ends at 2)"
        assert lines(proglog("produce", "c", "d", "e", "--addr", addr)) == ["2", "3", "4"]
        assert out.next() == "4\te"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(STEP) == 0
        assert err.next() is None  # said once
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


# -- certs cluster-key ----------------------------------------------------------------


def test_certs_cluster_key_writes_a_private_key_once(tmp_path: Path) -> None:
    from pyproglog.discovery import load_cluster_key

    out = tmp_path / "cluster.key"
    assert lines(proglog("certs", "cluster-key", "--out", str(out))) == [f"wrote {out}"]
    assert out.stat().st_mode & 0o777 == 0o600
    key = load_cluster_key(out)
    assert len(key) == 32

    line = assert_one_line_error(proglog("certs", "cluster-key", "--out", str(out)))
    assert "exists" in line and "--force" in line
    assert load_cluster_key(out) == key  # untouched

    assert lines(proglog("certs", "cluster-key", "--out", str(out), "--force"))
    assert load_cluster_key(out) != key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.key"]  # no temp left


def test_serve_refuses_bad_cluster_flags_by_name(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "d")]
    for args, says in [
        (["--election-ticks", "1"], "--election-ticks (1) must be more than --heartbeat-ticks"),
        (["--raft-tick-ms", "0"], "--raft-tick-ms must be at least 1"),
        (["--advertise-addr", "h:99999"], "--advertise-addr: port must be 1-65535"),
    ]:
        line = assert_one_line_error(proglog("serve", *data, *args), code=2)
        assert says in line, line

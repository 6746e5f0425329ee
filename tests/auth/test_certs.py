"""`proglog certs` and the certificate tooling behind it."""

from __future__ import annotations

import ipaddress
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from pyproglog.auth.acl import EXAMPLE_MODEL, EXAMPLE_POLICY
from pyproglog.auth.certs import CertError, CertPaths, make_ca, make_client_cert
from pyproglog.cli import app

REPO = Path(__file__).resolve().parents[2]
BOOK_FILES = {
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "root-client.pem",
    "root-client-key.pem",
    "nobody-client.pem",
    "nobody-client-key.pem",
}


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_init_writes_the_books_files(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = CliRunner().invoke(app, ["certs", "init", "--out", str(out), "--hosts", "node-1"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == BOOK_FILES | {"model.conf", "policy.csv"}
    assert (out / "model.conf").read_text() == EXAMPLE_MODEL
    assert (out / "policy.csv").read_text() == EXAMPLE_POLICY
    for name in BOOK_FILES:
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == (0o600 if name.endswith("-key.pem") else 0o644), name

    ca = load(out / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name, cn in (("server.pem", "proglog server"), ("root-client.pem", "root")):
        cert = load(out / name)
        cert.verify_directly_issued_by(ca)
        assert common_name(cert) == cn
    assert common_name(load(out / "nobody-client.pem")) == "nobody"
    load(out / "nobody-client.pem").verify_directly_issued_by(ca)

    server = load(out / "server.pem")
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "node-1"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usages = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    client_usages = load(out / "root-client.pem").extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    assert list(client_usages.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    "hosts",
    [
        ["--hosts", "a.example,10.0.0.7", "--hosts", "b"],
        ["--hosts", "a.example", "10.0.0.7", "b"],
    ],
)
def test_hosts_may_be_repeated_listed_or_comma_separated(hosts: list[str], tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = CliRunner().invoke(app, ["certs", "init", "--out", str(out), *hosts])
    assert result.exit_code == 0, result.output
    sans = load(out / "server.pem").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["localhost", "a.example", "b"]
    assert sans.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
    ]


def test_init_refuses_to_replace_a_ca_without_force(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    runner = CliRunner()
    assert runner.invoke(app, ["certs", "init", "--out", str(out)]).exit_code == 0
    before = (out / "ca.pem").read_bytes()
    result = runner.invoke(app, ["certs", "init", "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"proglog: {out / 'ca.pem'} exists; use --force to replace the CA\n"
    assert (out / "ca.pem").read_bytes() == before
    assert runner.invoke(app, ["certs", "init", "--out", str(out), "--force"]).exit_code == 0
    assert (out / "ca.pem").read_bytes() != before


def test_client_makes_another_subject(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    runner = CliRunner()
    assert runner.invoke(app, ["certs", "init", "--out", str(out)]).exit_code == 0
    result = runner.invoke(app, ["certs", "client", "alice", "--out", str(out), "--days", "2"])
    assert result.exit_code == 0, result.output
    cert = load(out / "alice-client.pem")
    cert.verify_directly_issued_by(load(out / "ca.pem"))
    assert common_name(cert) == "alice"
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 2
    assert stat.S_IMODE((out / "alice-client-key.pem").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certs", "client", "bob", "--out", "{missing}"], "cannot read the CA: {missing}/ca.pem"),
        (["certs", "client", "a,b", "--out", "{out}"], "invalid client name 'a,b'"),
        (["certs", "init", "--out", "{fresh}", "--days", "0"], "validity must be at least one"),
    ],
)
def test_errors_are_one_line_and_a_nonzero_exit(
    args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "certs"
    assert CliRunner().invoke(app, ["certs", "init", "--out", str(out)]).exit_code == 0
    where = {"missing": str(tmp_path / "missing"), "out": str(out), "fresh": str(tmp_path / "f")}
    result = CliRunner().invoke(app, [a.format(**where) for a in args])
    assert result.exit_code == 1
    assert result.stderr.startswith("proglog: " + message.format(**where))
    assert result.stderr.count("\n") == 1


def test_client_names_that_a_policy_cannot_hold_are_refused() -> None:
    ca = make_ca()
    for bad in ("", " root", "a,b"):
        with pytest.raises(CertError):
            make_client_cert(ca, bad)


def test_shipped_example_acl_is_the_one_certs_init_writes() -> None:
    example = CertPaths(REPO / "config" / "example")
    assert example.model.read_text() == EXAMPLE_MODEL
    assert example.policy.read_text() == EXAMPLE_POLICY


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "{tmp}/abs", "a\\b"])
def test_client_names_that_are_not_a_file_name_are_refused(name: str, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert CliRunner().invoke(app, ["certs", "init", "--out", str(out)]).exit_code == 0
    name = name.format(tmp=tmp_path)
    before = sorted(tmp_path.rglob("*"))
    # As a user runs it: a subprocess, one line on stderr, nothing written anywhere.
    proc = subprocess.run(
        [sys.executable, "-m", "pyproglog", "certs", "client", name, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc
    assert proc.stderr.startswith(f"proglog: invalid client name {name!r}: it must be a plain")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_client_name_with_nul_is_refused() -> None:
    # A NUL cannot pass through argv; the library refuses it all the same.
    with pytest.raises(CertError, match="plain file name"):
        make_client_cert(make_ca(), "a\0b")


@pytest.mark.parametrize("host", ["../x", "a b", "", "host/name", "a\0b"])
def test_hosts_that_are_not_names_or_addresses_are_refused(host: str, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    result = CliRunner().invoke(app, ["certs", "init", "--out", str(out), "--hosts", host])
    if host == "":
        # An empty --hosts is no host at all (comma-separated lists may end in a comma).
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"proglog: invalid host {host!r}")
    assert not out.exists()  # refused before anything is written

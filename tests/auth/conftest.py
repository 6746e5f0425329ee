"""Certificates made by our own tooling, and nodes serving mutual TLS with the ACL on."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from pyproglog.agent import Agent
from pyproglog.api.v1 import log_pb2_grpc
from pyproglog.auth.acl import EXAMPLE_MODEL, EXAMPLE_POLICY
from pyproglog.auth.certs import (
    CertPaths,
    init_dir,
    load_ca,
    make_ca,
    make_client_cert,
    make_server_cert,
)
from pyproglog.testing import started_agent


@dataclass(frozen=True)
class Identity:
    """What a client presents: the CA it trusts, and its certificate (if any)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert is not None:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass(frozen=True)
class PKI:
    dir: CertPaths
    root: Identity
    nobody: Identity
    anonymous: Identity  # trusts our CA, presents no certificate
    stranger: Identity  # a "root" certificate from another CA
    expired: Identity  # a "root" certificate from our CA, expired yesterday

    def client(self, subject: str) -> Identity:
        return Identity(self.dir.ca, self.dir.client(subject), self.dir.client_key(subject))


def make_pki(out: Path) -> PKI:
    paths = CertPaths(out)
    init_dir(out)
    other = make_ca("another CA")
    other.write(out / "other-ca.pem", out / "other-ca-key.pem")
    make_client_cert(other, "root").write(out / "stranger.pem", out / "stranger-key.pem")
    ten_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    make_client_cert(load_ca(paths), "root", days=9, start=ten_days_ago).write(
        out / "expired.pem", out / "expired-key.pem"
    )
    return PKI(
        dir=paths,
        root=Identity(paths.ca, paths.client("root"), paths.client_key("root")),
        nobody=Identity(paths.ca, paths.client("nobody"), paths.client_key("nobody")),
        anonymous=Identity(paths.ca),
        stranger=Identity(paths.ca, out / "stranger.pem", out / "stranger-key.pem"),
        expired=Identity(paths.ca, out / "expired.pem", out / "expired-key.pem"),
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """One CA and its certificates for the session (tests that replace files copy them)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass(frozen=True)
class SecureFiles:
    """The files a node serves with, private to one test so it may replace them."""

    cert: Path
    key: Path
    ca: Path
    model: Path
    policy: Path

    def settings(self, data_dir: Path, **overrides: Any) -> dict[str, Any]:
        return {
            "data_dir": data_dir,
            "rpc_port": 0,
            "http_addr": "127.0.0.1:0",
            "server_tls_cert_file": self.cert,
            "server_tls_key_file": self.key,
            "server_tls_ca_file": self.ca,
            "acl_model_file": self.model,
            "acl_policy_file": self.policy,
            **overrides,
        }

    def args(self) -> list[str]:
        return [
            "--server-tls-cert-file",
            str(self.cert),
            "--server-tls-key-file",
            str(self.key),
            "--server-tls-ca-file",
            str(self.ca),
            "--acl-model-file",
            str(self.model),
            "--acl-policy-file",
            str(self.policy),
        ]


@pytest.fixture
def files(pki: PKI, tmp_path: Path) -> SecureFiles:
    d = tmp_path / "etc"
    d.mkdir()
    for src in (pki.dir.server, pki.dir.server_key, pki.dir.ca):
        shutil.copy(src, d / src.name)
    (d / "model.conf").write_text(EXAMPLE_MODEL)
    (d / "policy.csv").write_text(EXAMPLE_POLICY)
    return SecureFiles(
        d / "server.pem", d / "server-key.pem", d / "ca.pem", d / "model.conf", d / "policy.csv"
    )


def rotate_ca(files: SecureFiles, new: Path) -> Identity:
    """Replace the node's CA and server certificate with a new CA's (made in `new`).

    Returns a root client of the new CA; the node serves it after reload_security().
    """
    new.mkdir()
    ca = make_ca("rotated CA")
    ca.write(new / "ca.pem", new / "ca-key.pem")
    make_client_cert(ca, "root").write(new / "root.pem", new / "root-key.pem")
    shutil.copy(new / "ca.pem", files.ca)
    make_server_cert(ca).write(files.cert, files.key)
    return Identity(new / "ca.pem", new / "root.pem", new / "root-key.pem")


running = started_agent  # the name the tests here import it by


@contextmanager
def log_unchanged(node: Agent) -> Iterator[None]:
    """Asserts that what runs inside leaves the node's log as it was."""
    assert node.service is not None
    before = node.service.info()
    yield
    assert node.service.info() == before


@pytest.fixture
async def secure_agent(files: SecureFiles, tmp_path: Path) -> AsyncIterator[Agent]:
    """A node with mutual TLS and the example ACL (root may everything, nobody nothing)."""
    async with running(files.settings(tmp_path / "data")) as node:
        yield node


@asynccontextmanager
async def stub_for(node: Agent, who: Identity) -> AsyncIterator[log_pb2_grpc.LogStub]:
    # rpc_addr is 127.0.0.1:PORT; the server certificate names that IP.
    async with grpc.aio.secure_channel(node.rpc_addr, who.grpc_credentials()) as channel:
        yield log_pb2_grpc.LogStub(channel)


@asynccontextmanager
async def http_for(node: Agent, who: Identity) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=node.http_url, verify=who.ssl_context(), timeout=10
    ) as client:
        yield client

"""Loading the serving certificate: what is refused, at start and on reload."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pyproglog.auth.certs import make_ca, make_server_cert
from pyproglog.auth.tls import ServerTLS, TLSError, TLSFiles
from tests.auth.conftest import PKI


@pytest.fixture
def tls_files(pki: PKI, tmp_path: Path) -> TLSFiles:
    for src in (pki.dir.server, pki.dir.server_key, pki.dir.ca):
        shutil.copy(src, tmp_path / src.name)
    return TLSFiles(tmp_path / "server.pem", tmp_path / "server-key.pem", tmp_path / "ca.pem")


def test_files_with_a_ca_require_client_certificates(tls_files: TLSFiles) -> None:
    assert tls_files.requires_client_cert
    assert not TLSFiles(tls_files.cert_file, tls_files.key_file).requires_client_cert


def break_key(files: TLSFiles, pki: PKI) -> None:
    shutil.copy(pki.dir.client_key("root"), files.key_file)


def expire_cert(files: TLSFiles, pki: PKI) -> None:
    ca = make_ca()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    make_server_cert(ca, days=1, start=start).write(files.cert_file, files.key_file)


def garble_ca(files: TLSFiles, pki: PKI) -> None:
    assert files.ca_file is not None
    files.ca_file.write_text("garbage\n")


def remove_cert(files: TLSFiles, pki: PKI) -> None:
    files.cert_file.unlink()


@pytest.mark.parametrize(
    ("spoil", "error"),
    [
        (break_key, "server-key.pem is not the key of .*server.pem"),
        (expire_cert, "server.pem expired at"),
        (garble_ca, "TLS CA file .*ca.pem holds no valid PEM certificate"),
        (remove_cert, "cannot read TLS certificate file .*server.pem: No such file"),
    ],
)
def test_unusable_files_are_refused(
    spoil: Callable[[TLSFiles, PKI], None], error: str, tls_files: TLSFiles, pki: PKI
) -> None:
    # That the old material keeps serving is shown over real connections in
    # test_grpc_security.py and test_http_security.py.
    tls = ServerTLS(tls_files)
    spoil(tls_files, pki)
    with pytest.raises(TLSError, match=error):
        tls.reload()
    with pytest.raises(TLSError, match=error):
        ServerTLS(tls_files)

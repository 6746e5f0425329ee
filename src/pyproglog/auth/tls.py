"""The serving certificate of both front ends, replaceable while serving.

gRPC: `grpc.dynamic_ssl_server_credentials` asks our fetcher before every TLS
handshake; it answers the new configuration once after a reload, else None.
HTTP (uvicorn): the listening socket keeps the SSLContext it was created with,
so that context's SNI callback, which runs in every handshake, switches the
connection to the context of the latest reload.

Either way a reload affects new connections only: established connections keep
the certificate and client CA they were accepted with.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyproglog.auth.errors import SecurityError

_log = logging.getLogger("pyproglog.auth")


class TLSError(SecurityError):
    pass


@dataclass(frozen=True, slots=True)
class TLSFiles:
    cert_file: Path
    key_file: Path
    # With a CA, clients must present a certificate it signed.
    ca_file: Path | None = None

    @property
    def requires_client_cert(self) -> bool:
        return self.ca_file is not None


@dataclass(frozen=True, slots=True)
class _Material:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSError(f"cannot read TLS {what} file {path}: {exc.strerror}") from None


def _certs(pem: bytes, path: Path, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TLSError(f"TLS {what} file {path} holds no valid PEM certificate: {exc}") from None
    return certs


def _load(files: TLSFiles) -> _Material:
    """Read and check the files: a valid, unexpired certificate with its key."""
    cert_pem = _read(files.cert_file, "certificate")
    key_pem = _read(files.key_file, "key")
    leaf = _certs(cert_pem, files.cert_file, "certificate")[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        # TypeError: an encrypted key; we have no password to give.
        raise TLSError(f"TLS key file {files.key_file} holds no usable key: {exc}") from None
    if key.public_key() != leaf.public_key():
        raise TLSError(f"TLS key file {files.key_file} is not the key of {files.cert_file}")
    expiry = leaf.not_valid_after_utc
    if expiry <= dt.datetime.now(dt.UTC):
        raise TLSError(f"TLS certificate {files.cert_file} expired at {expiry:%Y-%m-%d %H:%M}Z")
    ca_pem = None
    if files.ca_file is not None:
        ca_pem = _read(files.ca_file, "CA")
        _certs(ca_pem, files.ca_file, "CA")
    return _Material(cert_pem, key_pem, ca_pem)


def _ssl_context(files: TLSFiles, material: _Material) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # The ssl module loads a certificate chain only from files.
        ctx.load_cert_chain(files.cert_file, files.key_file)
        if material.ca_pem is not None:
            ctx.load_verify_locations(cadata=material.ca_pem.decode("ascii"))
    except (ssl.SSLError, OSError, UnicodeDecodeError) as exc:
        raise TLSError(f"cannot use TLS files {files.cert_file}, {files.key_file}: {exc}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED if files.requires_client_cert else ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _grpc_config(material: _Material) -> object:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.cert_pem)], root_certificates=material.ca_pem
    )


@dataclass(frozen=True, slots=True)
class _Generation:
    number: int
    grpc_config: object
    ssl_context: ssl.SSLContext


class ServerTLS:
    """TLS for the gRPC server and the HTTP gateway, from files that may be replaced."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self._current = self._build(0)
        # The context uvicorn listens with: it only dispatches to the current one.
        self._listening = self._current.ssl_context
        self._listening.sni_callback = self._select_context
        self._grpc_served = 0
        self._reload_lock = threading.Lock()

    def _build(self, number: int) -> _Generation:
        material = _load(self.files)
        return _Generation(number, _grpc_config(material), _ssl_context(self.files, material))

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current.grpc_config,
            self._fetch_grpc_config,
            require_client_authentication=self.files.requires_client_cert,
        )

    def _fetch_grpc_config(self) -> object | None:
        # Called by gRPC before each handshake, on one of its threads.
        current = self._current
        if current.number == self._grpc_served:
            return None
        self._grpc_served = current.number
        return current.grpc_config

    def ssl_context(self) -> ssl.SSLContext:
        """The context to listen with (HTTP): it follows reloads."""
        return self._listening

    def _select_context(
        self, conn: ssl.SSLObject, server_name: str | None, listening: ssl.SSLContext
    ) -> None:
        current = self._current.ssl_context
        if current is not listening:
            conn.context = current

    def reload(self) -> None:
        """Re-read the files; on TLSError the certificate in force stays."""
        with self._reload_lock:
            self._current = self._build(self._current.number + 1)
        _log.info("TLS certificate reloaded from %s", self.files.cert_file)

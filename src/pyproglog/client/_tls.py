"""TLS settings for a client channel."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from pyproglog.client._errors import TLSConfigError

StrPath = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """Files for a TLS channel.

    `ca_file` verifies the server (system roots when None); `cert_file` and
    `key_file`, given together, are the client certificate a server that
    requires one (mutual TLS) authenticates and authorizes. `server_name`
    overrides the name checked against the server certificate.
    """

    ca_file: StrPath | None = None
    cert_file: StrPath | None = None
    key_file: StrPath | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise TLSConfigError("a client certificate needs both the certificate and the key file")

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials; reads the files now, so a bad path fails here."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA"),
            private_key=_read(self.key_file, "key"),
            certificate_chain=_read(self.cert_file, "certificate"),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def _read(path: StrPath | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(
            f"cannot read TLS {what} file {os.fspath(path)}: {exc.strerror or exc}"
        ) from None

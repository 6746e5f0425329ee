"""The verified TLS client identity for the HTTP gateway (uvicorn + ASGI).

uvicorn verifies client certificates but does not tell the application whose
they are. `TLSH11Protocol` records the verified peer certificate when a
connection is made and puts it in every request's scope as the ASGI TLS
extension (`scope["extensions"]["tls"]`, plus our `client_cert_common_name`),
where `pyproglog.server.http.authz` reads it.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from cryptography import x509
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI TLS extension for a connection; the client certificate only if verified."""
    ext: dict[str, Any] = {
        "server_cert": None,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "client_cert_common_name": None,
    }
    # getpeercert() is empty unless the certificate was verified (CERT_REQUIRED).
    if not ssl_object.getpeercert():
        return ext
    der = ssl_object.getpeercert(binary_form=True)
    if der is None:
        return ext
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    ext["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der)]
    ext["client_cert_name"] = cert.subject.rfc4514_string()
    ext["client_cert_common_name"] = str(names[0].value) if names else None
    return ext


class TLSH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, adding the ASGI TLS extension to each request's scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio calls this after the handshake, so the peer certificate is known.
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        extension = tls_extension(ssl_object)
        app = self.app

        async def with_tls(scope: Scope, receive: Receive, send: Send) -> None:
            scope.setdefault("extensions", {})["tls"] = extension
            await app(scope, receive, send)

        # uvicorn takes `self.app` for each request of this connection.
        self.app = with_tls

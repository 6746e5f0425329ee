"""TLS client identity and authorization for the HTTP gateway (uvicorn + ASGI).

uvicorn verifies client certificates but does not tell the application whose
they are. `TLSH11Protocol` records the verified peer certificate when a
connection is made and puts it in every request's scope as the ASGI TLS
extension (`scope["extensions"]["tls"]`, plus our `client_cert_common_name`).
`ACLMiddleware` then authorizes each request from it, before the gateway reads
the body: a denied request has no effect.

Routes to actions: POST (and any other unsafe method) produces, GET and HEAD
consume, `/v1/servers` needs either (like GetServers). The API description
(`/openapi.json`, `/docs`, `/redoc`) and `/metrics` are open to every client
that passed the TLS handshake: they disclose no record, and scrapers and API
tools must reach them.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

from cryptography import x509
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from pyproglog.auth.acl import CONSUME, OBJECT, PRODUCE, Authorizer
from pyproglog.auth.interceptor import NO_CERTIFICATE, DenialHook
from pyproglog.server.status import PermissionDenied, Unauthenticated, error_status

OPEN_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/metrics"})
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# Paths whose actions do not follow from the method.
PATH_ACTIONS: dict[str, tuple[str, ...]] = {"/v1/servers": (PRODUCE, CONSUME)}

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def route_actions(method: str, path: str) -> tuple[str, ...]:
    """The actions a request needs (any one suffices); () when the route is open."""
    if path in OPEN_PATHS and method in _SAFE_METHODS:
        return ()
    actions = PATH_ACTIONS.get(path)
    if actions is not None:
        return actions
    return (CONSUME,) if method in _SAFE_METHODS else (PRODUCE,)


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


def subject_of(scope: Scope) -> str | None:
    tls = scope.get("extensions", {}).get("tls") or {}
    subject = tls.get("client_cert_common_name")
    return subject if isinstance(subject, str) else None


class ACLMiddleware:
    """Pure ASGI: answers 401/403 (JSON errors like the gateway's) or passes the request on."""

    def __init__(
        self, app: ASGIApp, authorizer: Authorizer, on_denial: DenialHook | None = None
    ) -> None:
        self.app = app
        self.authorizer = authorizer
        self.on_denial = on_denial

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # The gateway has no websockets; lifespan events carry no request.
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        actions = route_actions(scope["method"], scope["path"])
        if actions:
            subject = subject_of(scope)
            error: Exception | None = None
            if subject is None:
                error = Unauthenticated(NO_CERTIFICATE)
            elif not any(self.authorizer.allowed(subject, a) for a in actions):
                action = " or ".join(actions)
                if self.on_denial is not None:
                    self.on_denial(action)
                error = PermissionDenied(subject, action, OBJECT)
            if error is not None:
                await _send_error(send, error)
                return
        await self.app(scope, receive, send)


async def _send_error(send: Send, error: Exception) -> None:
    st = error_status(error)
    assert st is not None
    body = json.dumps({"error": {"code": st.grpc_code.name, "message": st.message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": st.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

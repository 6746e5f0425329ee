"""Authorization of HTTP gateway requests (pure ASGI, in front of the FastAPI app).

The subject is the common name of the verified client certificate that
`pyproglog.auth.asgi.TLSH11Protocol` put in the request scope. Requests are
authorized before the gateway reads the body: a denied request has no effect.

Routes to actions: POST (and any other unsafe method) produces, GET and HEAD
consume, `/v1/servers` needs either (like GetServers). The API description
(`/openapi.json`, `/docs`, `/redoc`) and `/metrics` are open to every client
that passed the TLS handshake: they disclose no record, and scrapers and API
tools must reach them.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from pyproglog.auth.acl import CONSUME, PRODUCE, Authorizer
from pyproglog.auth.errors import NO_CERTIFICATE, Unauthenticated
from pyproglog.server.grpc_authz import DenialHook, denial
from pyproglog.server.status import error_status

OPEN_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/metrics"})
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# Paths whose actions do not follow from the method.
PATH_ACTIONS: dict[str, tuple[str, ...]] = {"/v1/servers": (PRODUCE, CONSUME)}


def route_actions(method: str, path: str) -> tuple[str, ...]:
    """The actions a request needs (any one suffices); () when the route is open."""
    if path in OPEN_PATHS and method in _SAFE_METHODS:
        return ()
    actions = PATH_ACTIONS.get(path)
    if actions is not None:
        return actions
    return (CONSUME,) if method in _SAFE_METHODS else (PRODUCE,)


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
        error = self._refusal(route_actions(scope["method"], scope["path"]), scope)
        if error is not None:
            await _send_error(send, error)
            return
        await self.app(scope, receive, send)

    def _refusal(self, actions: tuple[str, ...], scope: Scope) -> Exception | None:
        """Why the request may not pass; None when it may (an open route needs no subject)."""
        if not actions:
            return None
        subject = subject_of(scope)
        if subject is None:
            return Unauthenticated(NO_CERTIFICATE)
        return denial(self.authorizer, subject, actions, self.on_denial)


async def _send_error(send: Send, error: Exception) -> None:
    st = error_status(error)
    assert st is not None
    body = json.dumps({"error": {"code": st.grpc_code.name, "message": st.message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": st.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

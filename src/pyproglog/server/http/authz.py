"""Authorization of HTTP gateway requests (pure ASGI, in front of the FastAPI app).

The subject is the common name of the verified client certificate that
`pyproglog.auth.asgi.TLSH11Protocol` put in the request scope. Requests are
authorized before the gateway reads the body: a denied request has no effect.
Which actions a route needs, and the denial itself, are `server.authz`'s.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from pyproglog.auth.acl import Authorizer
from pyproglog.auth.errors import NO_CERTIFICATE, Unauthenticated
from pyproglog.server.authz import DenialHook, denial, route_actions
from pyproglog.server.errors import error_status
from pyproglog.server.http.errors import status_response

__all__ = ["ACLMiddleware", "subject_of"]


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
            st = error_status(error)
            assert st is not None
            await status_response(st)(scope, receive, send)
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

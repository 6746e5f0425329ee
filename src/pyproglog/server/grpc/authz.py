"""Authorization of every gRPC call: the interceptor (the tables are in `server.authz`).

In grpc.aio an interceptor sees only the method name, not the peer's
certificate, so the interceptor wraps the method's handler and the check runs
first thing inside it, where the call's context (and its auth context) is. It
runs before the handler reads a request: a denied call has no effect.

Long calls are checked again whenever a new policy takes effect, in the
direction that carries the action's data: before each response of a consuming
stream, before each request of a producing stream is handed on. So a
revocation also ends open streams, without a record passing after it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from pyproglog.auth.acl import Authorizer
from pyproglog.auth.errors import NO_CERTIFICATE, PermissionDenied, Unauthenticated
from pyproglog.server.authz import DenialHook, denial, method_actions
from pyproglog.server.grpc.status import abort_for

__all__ = ["AuthInterceptor", "subject_of"]

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def subject_of(context: Context) -> str | None:
    """The common name of the peer's verified certificate, if any."""
    # gRPC fills x509_common_name only for a certificate it verified against our CA.
    names = context.auth_context().get("x509_common_name")
    return names[0].decode("utf-8", "replace") if names else None


class _Check:
    """The decision for one call: its subject and actions, re-evaluated on a policy change."""

    __slots__ = ("_actions", "_authorizer", "_generation", "_on_denial", "_subject")

    def __init__(
        self,
        authorizer: Authorizer,
        actions: tuple[str, ...],
        subject: str,
        on_denial: DenialHook | None,
    ) -> None:
        self._authorizer = authorizer
        self._actions = actions
        self._subject = subject
        self._on_denial = on_denial
        self._generation = -1

    def denial(self) -> PermissionDenied | None:
        """None when still allowed; checks the policy only when it changed."""
        generation = self._authorizer.generation
        if generation == self._generation:
            return None
        denied = denial(self._authorizer, self._subject, self._actions, self._on_denial)
        if denied is None:
            self._generation = generation
        return denied


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Checks every call against the ACL; health and reflection stay open."""

    def __init__(self, authorizer: Authorizer, on_denial: DenialHook | None = None) -> None:
        self._authorizer = authorizer
        self._on_denial = on_denial
        # method -> (handler as registered, the wrapped one): wrap once per method.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        actions = method_actions(method)
        if handler is None or not actions:
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, actions)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    async def _admit(self, context: Context, actions: tuple[str, ...]) -> _Check:
        subject = subject_of(context)
        if subject is None:
            await abort_for(context, Unauthenticated(NO_CERTIFICATE))
        check = _Check(self._authorizer, actions, subject, self._on_denial)
        denied = check.denial()
        if denied is not None:
            await abort_for(context, denied)
        return check

    def _wrap(
        self, handler: grpc.RpcMethodHandler, actions: tuple[str, ...]
    ) -> grpc.RpcMethodHandler:
        admit = self._admit

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                await admit(context, actions)
                return await inner_uu(request, context)

            return handler._replace(unary_unary=unary_unary)

        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                check = await admit(context, actions)
                async with contextlib.aclosing(_responses(inner_us(request, context))) as it:
                    async for response in it:
                        if (denied := check.denial()) is not None:
                            await abort_for(context, denied)
                        yield response

            return handler._replace(unary_stream=unary_stream)

        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: Context) -> Any:
                check = await admit(context, actions)
                return await inner_su(_guarded(requests, check), context)

            return handler._replace(stream_unary=stream_unary)

        inner_ss = handler.stream_stream

        async def stream_stream(
            requests: AsyncIterator[Any], context: Context
        ) -> AsyncIterator[Any]:
            check = await admit(context, actions)
            async with contextlib.aclosing(
                _responses(inner_ss(_guarded(requests, check), context))
            ) as it:
                async for response in it:
                    yield response

        return handler._replace(stream_stream=stream_stream)


async def _responses(result: Any) -> AsyncGenerator[Any, None]:
    """A handler's responses, whether it yields them or writes them via the context."""
    if inspect.isawaitable(result):
        await result
        return
    # Closed at once when the call ends early (a denial), not whenever it is collected.
    async with contextlib.aclosing(result):
        async for response in result:
            yield response


async def _guarded(requests: AsyncIterator[Any], check: _Check) -> AsyncIterator[Any]:
    # Raised inside the handler, which reports it like its other errors.
    async for request in requests:
        if (denied := check.denial()) is not None:
            raise denied
        yield request

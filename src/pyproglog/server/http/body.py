"""Request bodies: a limit per request and a budget for all bodies in flight."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyproglog.limits import MAX_BATCH_BYTES
from pyproglog.server.errors import Reason
from pyproglog.server.http.errors import error_response

_JSON_SLACK = 8 * 1024 * 1024  # field names and offsets around the values


def max_body_bytes(max_record_bytes: int) -> int:
    """The largest request body read: a full batch or one maximal record, as base64 JSON.

    The same payload budget as a gRPC message (`limits.max_message_bytes`).
    """
    payload = max(max_record_bytes, MAX_BATCH_BYTES)
    return 4 * ((payload + 2) // 3) + _JSON_SLACK


class BodyBudget:
    """Request body bytes in flight across all requests, against a total.

    A body is parsed into several copies (bytes, JSON text, decoded values), so
    the gateway's memory follows what is in flight: without a total, 16
    concurrent 50 MB bodies took a node from 94 MB to 1.6 GB.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.total:
            return False
        self.used += n
        return True

    def give_back(self, n: int) -> None:
        self.used -= n


_RETRY_AFTER_SECONDS = "1"


def limit_body(app: ASGIApp, max_bytes: int, max_total_bytes: int | None = None) -> ASGIApp:
    """Answer a JSON 413 to a request body over `max_bytes`, before the routes see it,
    and a JSON 503 (Retry-After) while bodies in flight would pass `max_total_bytes`.

    (FastAPI's own `max_body_size` answers in plain text when the oversize body
    is declared.) The routes read whole bodies anyway, so it is read here, up
    to the limit, and handed on. A declared Content-Length is refused or
    reserved before a byte is read; a chunked body is counted as it arrives.
    """
    budget = BodyBudget(max_total_bytes if max_total_bytes is not None else 2 * max_bytes)

    async def too_large(scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than {max_bytes} bytes"
        meta = {"limit": str(max_bytes)}
        response = error_response(413, "INVALID_ARGUMENT", Reason.REQUEST_TOO_LARGE, message, meta)
        await response(scope, receive, send)

    async def busy(scope: Scope, receive: Receive, send: Send) -> None:
        message = (
            f"the gateway is reading {budget.used} bytes of other request bodies "
            f"(at most {budget.total} at once); retry"
        )
        headers = {"Retry-After": _RETRY_AFTER_SECONDS}
        response = error_response(503, "UNAVAILABLE", Reason.BUSY, message, headers=headers)
        await response(scope, receive, send)

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            await too_large(scope, receive, send)
            return
        held = int(declared) if declared.isdigit() else 0
        if not budget.take(held):
            await busy(scope, receive, send)
            return
        try:
            await read_and_call(scope, receive, send, held)
        finally:
            budget.give_back(held)

    async def read_and_call(scope: Scope, receive: Receive, send: Send, reserved: int) -> None:
        held = reserved
        chunks: list[bytes] = []
        size, more = 0, True
        try:
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    await too_large(scope, receive, send)
                    return
                if size > held:  # chunked, or more than declared
                    if not budget.take(size - held):
                        await busy(scope, receive, send)
                        return
                    held = size
                chunks.append(chunk)
                more = message.get("more_body", False)
            body: Message | None = {"type": "http.request", "body": b"".join(chunks)}
            chunks.clear()

            async def replay() -> Message:
                nonlocal body
                if body is None:
                    return await receive()  # e.g. to notice a disconnect
                message, body = body, None
                return message

            await app(scope, replay, send)
        finally:
            budget.give_back(held - reserved)

    return limited

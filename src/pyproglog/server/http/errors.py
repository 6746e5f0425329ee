"""Every gateway error is JSON: `{"error": {"code", "reason", "message", "metadata"}}`.

`code` is the gRPC status code name for the same failure and `reason` /
`metadata` are what the gRPC ErrorInfo carries (`server.errors` decides all
of them), including for malformed requests (400, not FastAPI's 422), unknown
routes and bugs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pyproglog.log import LogError
from pyproglog.server.errors import (
    INTERNAL,
    ErrorStatus,
    PermissionDenied,
    Reason,
    ServiceError,
    Unauthenticated,
    error_status,
)
from pyproglog.server.http.models import Error, ErrorResponse

_log = logging.getLogger("pyproglog.server")

_ERROR_DOCS = {
    400: "Malformed request: invalid JSON, a missing, mistyped or out-of-range field, "
    "or invalid base64.",
    401: "No verified client certificate, on a node that enforces an ACL.",
    403: "The ACL does not permit the client's certificate subject this action.",
    404: "The offset is not in the log (past the end, or below the lowest retained offset).",
    409: "An idempotent producer's batch out of order (OUT_OF_ORDER_SEQUENCE): nothing "
    "was written; send the `expected_sequence` batch first.",
    413: "A record value is larger than the record size limit, or the request body is "
    "larger than the gateway reads; nothing was written.",
    500: "Stored data failed its checksum (DATA_LOSS).",
    503: "The node is shutting down, cannot write now, or is reading as many request "
    "bodies as it holds at once (then with Retry-After); retry (elsewhere).",
    507: "The disk is full; nothing was written.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can answer.

    Every route can answer 401 and 403: the agent puts its ACL in front of the gateway.
    """
    return {
        s: {"model": ErrorResponse, "description": _ERROR_DOCS[s]}
        for s in sorted({401, 403, *statuses})
    }


def error_response(
    status: int,
    code: str,
    reason: str,
    message: str,
    metadata: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error = Error(code=code, reason=reason, message=message, metadata=metadata or {})
    return JSONResponse(
        ErrorResponse(error=error).model_dump(), status_code=status, headers=headers
    )


def status_response(st: ErrorStatus, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for an error `server.errors` mapped."""
    return error_response(st.http_status, st.code, st.reason, st.message, st.metadata, headers)


def _service_error(request: Request, exc: Exception) -> JSONResponse:
    st = error_status(exc)
    if st is None:
        _log.error("%s %s: internal error", request.method, request.url.path, exc_info=exc)
        return _internal_error(request, exc)
    if st.http_status == 500:
        _log.error("%s %s: %s", request.method, request.url.path, st.message)
    return status_response(st)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after sending this, and uvicorn logs the traceback.
    return status_response(INTERNAL)


def invalid_argument(message: str) -> JSONResponse:
    return error_response(400, "INVALID_ARGUMENT", Reason.INVALID_ARGUMENT, message)


def _where(loc: Sequence[int | str]) -> str:
    """("body", "records", 0, "value") -> "body.records[0].value"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_MAX_REPORTED_ERRORS = 5


def validation_message(errors: Sequence[Any]) -> str:
    """What is wrong with a request, from FastAPI/pydantic validation errors."""
    parts: list[str] = []
    for err in errors[:_MAX_REPORTED_ERRORS]:
        loc = tuple(err.get("loc", ()))
        kind = err.get("type", "")
        if kind == "json_invalid":
            reason = err.get("ctx", {}).get("error", "invalid JSON")
            parts.append(f"body is not valid JSON: {reason}")
        elif loc == ("body",) and isinstance(err.get("input"), bytes | str):
            parts.append("body must be a JSON object")
        else:
            parts.append(f"{_where(loc)}: {err.get('msg', 'invalid')}")
    if len(errors) > _MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_REPORTED_ERRORS} more errors")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_argument(validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Raised by the framework: 404 unknown route, 405 wrong method, 400 unreadable body.
        status = exc.status_code
        headers = dict(exc.headers or {})
        if status == 400:
            # Bodies of our routes are parsed (and their faults named) by _JsonBodyRoute.
            return invalid_argument("the request body could not be read")
        name = HTTPStatus(status).name
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return error_response(status, name, name, message, headers=headers)

    for cls in (LogError, ServiceError, PermissionDenied, Unauthenticated):
        app.add_exception_handler(cls, _service_error)
    # Anything else is a bug: a JSON 500, logged with its traceback.
    app.add_exception_handler(Exception, _internal_error)

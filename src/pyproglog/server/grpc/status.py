"""Aborting a call with the status an error maps to, rich details included."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from pyproglog.server.errors import DOMAIN, INTERNAL, ErrorStatus, error_status

__all__ = ["abort_for", "rich_status"]

_log = logging.getLogger("pyproglog.server")


def rich_status(st: ErrorStatus) -> grpc.Status:
    """The status with its details: an ErrorInfo (reason, metadata) and a LocalizedMessage."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=st.reason, domain=DOMAIN, metadata=st.metadata))
    localized = any_pb2.Any()
    localized.Pack(error_details_pb2.LocalizedMessage(locale="en-US", message=st.message))
    status = status_pb2.Status(
        # The LocalizedMessage first, where the book's clients look for it.
        code=getattr(code_pb2, st.code),
        message=st.message,
        details=[localized, info],
    )
    return rpc_status.to_status(status)


async def abort_for(
    context: grpc.aio.ServicerContext[object, object], exc: BaseException
) -> NoReturn:
    """Abort the call with the status that `exc` maps to (INTERNAL for bugs)."""
    st = error_status(exc)
    if st is None:
        _log.exception("internal error", exc_info=exc)
        st = INTERNAL
    await context.abort_with_status(rich_status(st))
    raise AssertionError("unreachable")

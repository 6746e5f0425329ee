"""Registering `log.v1.Log` with the codecs we need around the generated ones.

- Requests that do not parse become a `MalformedRequest` the handler answers
  INVALID_ARGUMENT for (a raising deserializer makes grpc answer UNKNOWN and
  log a traceback; garbage from a client is the client's error).
- A handler may answer `bytes` already encoded as the response message: those
  are sent as they are. Fetch and the batched stream answer with the records'
  stored encoding, so no record object is built on the read path.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.server.authz import SERVICE_NAME
from pyproglog.server.errors import InvalidArgument

__all__ = ["SERVICE_NAME", "MalformedRequest", "add_log_service"]


class MalformedRequest:
    """What a request that does not parse becomes, so the handler can answer for it."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"malformed request: not a valid {self.type_name}")


def _safe_deserializer(
    parse: Callable[[bytes], object], type_name: str
) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError:
            return MalformedRequest(type_name)

    return deserialize


def _passing_bytes(serialize: Callable[[object], bytes]) -> Callable[[object], bytes]:
    def serializer(response: object) -> bytes:
        if type(response) is bytes:
            return response
        return serialize(response)

    return serializer


class _HandlerCapture:
    """Stands in for the server to collect the generated method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers = handlers


_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_log_service(servicer: log_pb2_grpc.LogServicer, server: grpc.aio.Server) -> None:
    """`add_LogServicer_to_server`, with request parsing that cannot fail the call and
    responses that may be given as encoded bytes."""
    capture = _HandlerCapture()
    log_pb2_grpc.add_LogServicer_to_server(servicer, capture)
    # Regenerated code that registers differently must fail here, not serve nothing.
    assert capture.handlers, "log_pb2_grpc no longer calls add_registered_method_handlers"
    methods = log_pb2.DESCRIPTOR.services_by_name["Log"].methods_by_name
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for name, h in capture.handlers.items():
        streaming = (bool(h.request_streaming), bool(h.response_streaming))
        behavior = (h.unary_unary, h.unary_stream, h.stream_unary, h.stream_stream)[
            2 * streaming[0] + streaming[1]
        ]
        handlers[name] = _FACTORIES[streaming](
            behavior,
            request_deserializer=_safe_deserializer(
                h.request_deserializer, methods[name].input_type.full_name
            ),
            response_serializer=_passing_bytes(h.response_serializer),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)

"""Typed client errors, translated from `grpc.RpcError` by status code."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import grpc
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ClientError(Exception):
    """Every error the client raises. `str()` is the server's message."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        # google.rpc detail messages (LocalizedMessage, ErrorInfo, ...), unpacked
        # when their type is known, else left as Any.
        self.details: tuple[Message, ...] = tuple(details)

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        """The server's ErrorInfo detail: what happened, for a program to test."""
        for d in self.details:
            if isinstance(d, error_details_pb2.ErrorInfo):
                return d
        return None

    @property
    def error_reason(self) -> str | None:
        """The stable cause the server named (`OFFSET_OUT_OF_RANGE`, `DISK_FULL`, ...;
        docs/api.md lists them); None when the error did not come from the service."""
        info = self.error_info
        return info.reason if info is not None and info.reason else None

    @property
    def error_metadata(self) -> dict[str, str]:
        """Facts that come with the reason (`offset`, `limit`, `leader_addr`, ...), as strings."""
        info = self.error_info
        return dict(info.metadata) if info is not None else {}


class TLSConfigError(ClientError):
    """The TLS settings cannot work (missing file, key without certificate)."""


class ClientClosed(ClientError):
    """A call on a client after `close()`."""

    def __init__(self) -> None:
        super().__init__("client is closed")


class Unavailable(ClientError):
    """The server cannot serve the call now; another node, or later, may."""

    @property
    def leader_addr(self) -> str | None:
        """The leader's RPC address when the server named one (ErrorInfo metadata)."""
        return self.error_metadata.get("leader_addr") or None


class Unreachable(Unavailable):
    """No connection to the server: refused, unresolvable, TLS handshake, or no answer."""

    def __init__(self, addr: str, reason: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"cannot reach {addr}: {reason}", code=code)
        self.addr = addr
        self.reason = reason

    @property
    def tls_problem(self) -> TLSProblem | None:
        """What went wrong in a TLS handshake, as far as grpc's reason tells."""
        return tls_problem(self.reason)

    @property
    def tls_detail(self) -> str:
        """OpenSSL's own words for a certificate that did not verify ("certificate has
        expired"), else the whole reason."""
        return self.reason.rsplit("CERTIFICATE_VERIFY_FAILED: ", 1)[-1].strip() or self.reason


TLSProblem = Literal["plaintext_server", "untrusted_server", "handshake_closed"]


def tls_problem(reason: str) -> TLSProblem | None:
    """The kind of TLS failure behind a transport error's reason, if it is one.

    - plaintext_server: we spoke TLS, the server answered in plaintext HTTP/2;
    - untrusted_server: the server's certificate did not verify against our CA
      (another CA, expired, or not naming the address);
    - handshake_closed: the server hung up during the handshake, which is all
      grpc reports when the server refuses our certificate (expired, another
      CA) or wants one we did not send -- or when we spoke plaintext to a TLS
      server.
    """
    if "WRONG_VERSION_NUMBER" in reason:
        return "plaintext_server"
    if "CERTIFICATE_VERIFY_FAILED" in reason or "Peer name" in reason:
        return "untrusted_server"
    # A routed call that gave up adds " (retried for Ns)" to the last reason.
    if reason.split(" (retried for ", 1)[0] == "Socket closed":
        return "handshake_closed"
    return None


class OffsetOutOfRange(ClientError):
    """The offset is past the end of the log or below its lowest retained offset.

    `offset` is the offset asked for; `lowest` and `next_offset` the log's bounds
    when the server answered (None otherwise): where a reader can resume.
    """

    def __init__(
        self,
        message: str,
        offset: int | None,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.offset = _int(self.error_metadata.get("offset"), offset)
        self.lowest = _int(self.error_metadata.get("lowest"), None)
        self.next_offset = _int(self.error_metadata.get("next"), None)


def _int(text: str | None, default: int | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else default


class OutOfOrderSequence(ClientError):
    """The leader refused a producer's batch: it expects batch `expected_sequence` of
    producer `producer_id` first. Nothing was written; never retried by the client."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[Message] = (),
    ) -> None:
        super().__init__(message, code=code, details=details)
        meta = self.error_metadata
        self.producer_id = _int(meta.get("producer_id"), 0) or 0
        self.sequence = _int(meta.get("sequence"), 0) or 0
        self.expected_sequence = _int(meta.get("expected_sequence"), 0) or 0


class BufferFull(ClientError):
    """A Producer's `send_nowait` found no room in its buffer: nothing was taken."""


class InvalidArgument(ClientError):
    """Malformed or oversized input; nothing was written."""


class PermissionDenied(ClientError):
    pass


class Unauthenticated(ClientError):
    pass


class DeadlineExceeded(ClientError):
    pass


class ResourceExhausted(ClientError):
    pass


class DataLoss(ClientError):
    pass


class Cancelled(ClientError):
    pass


class ServerError(ClientError):
    """Any other status: INTERNAL, UNKNOWN, UNIMPLEMENTED, ..."""


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def _status_details(exc: grpc.RpcError) -> list[Message] | None:
    """The rich status details the server attached; None when there were none.

    Every error our server raises deliberately carries details, so their absence
    on UNAVAILABLE means the status came from the transport, not the service.
    """
    trailers = getattr(exc, "trailing_metadata", None)
    metadata = trailers() if callable(trailers) else None
    for key, value in metadata or ():
        if key == _STATUS_DETAILS_KEY:
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:  # a garbled detail must not hide the error itself
                return None
            return [_unpack(d) for d in status.details]
    return None


def _reason(details: Sequence[Message]) -> str | None:
    for d in details:
        if isinstance(d, error_details_pb2.ErrorInfo):
            return str(d.reason)
    return None


def _unpack(detail: any_pb2.Any) -> Message:
    name = detail.TypeName()
    try:
        cls = symbol_database.Default().GetSymbol(name)
    except KeyError:
        return detail
    msg: Message = cls()
    return msg if detail.Unpack(msg) else detail


def _transport_reason(details: str) -> str:
    # grpc core says "failed to connect to all addresses; last error: UNKNOWN:
    # ipv4:127.0.0.1:8400: Failed to connect to remote host: Connection refused";
    # the part after the address is what a person needs.
    reason = details.rsplit("last error: ", 1)[-1]
    reason = re.sub(r"^[A-Z_]+: ", "", reason)
    reason = re.sub(r"^(ipv4|ipv6|unix):\S+: ", "", reason)
    # TLS failures end in the status of a nested call: ": OK".
    reason = reason.removesuffix(": OK")
    return reason or "connection failed"


def from_rpc_error(
    exc: grpc.RpcError,
    *,
    addr: str,
    connected: bool,
    timeout: float | None = None,
    offset: int | None = None,
) -> ClientError:
    """The ClientError for a failed call.

    `connected` says whether the server ever answered this client: a deadline
    that passes before it did means the server is unreachable, not slow.
    `offset` is the offset the call asked for, for OffsetOutOfRange.
    """
    code_fn = getattr(exc, "code", None)
    code: grpc.StatusCode = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details_fn = getattr(exc, "details", None)
    text = (details_fn() if callable(details_fn) else None) or code.name.lower().replace("_", " ")
    rich = _status_details(exc)

    if code is grpc.StatusCode.UNAVAILABLE and rich is None:
        return Unreachable(addr, _transport_reason(text), code=code)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        within = f" within {timeout:g}s" if timeout is not None else ""
        if not connected:
            return Unreachable(addr, f"no answer{within}", code=code)
        return DeadlineExceeded(f"no answer from {addr}{within}", code=code)
    if code is grpc.StatusCode.OUT_OF_RANGE:
        return OffsetOutOfRange(text, offset, code=code, details=rich or ())
    if rich is not None and _reason(rich) == "OUT_OF_ORDER_SEQUENCE":
        return OutOfOrderSequence(text, code=code, details=rich)
    cls = _BY_CODE.get(code, ServerError)
    if cls is ServerError:
        text = f"{code.name}: {text}"
    return cls(text, code=code, details=rich or ())

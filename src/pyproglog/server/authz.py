"""Transport-neutral authorization: which actions each call needs, and the denial.

Both front ends ask the same questions here and only differ in where they find
the subject (gRPC: the auth context; HTTP: the TLS scope) and how they refuse
(`errors.error_status` words a denial the same way on both: PERMISSION_DENIED
/ 403, UNAUTHENTICATED / 401, with reason and metadata).

A call is allowed when the subject, the common name of the client's verified
certificate, may perform one of the call's actions on `*`.
"""

from __future__ import annotations

from collections.abc import Callable

from pyproglog.api.raft.v1 import raft_pb2
from pyproglog.api.v1 import log_pb2
from pyproglog.auth.acl import CONSUME, OBJECT, PRODUCE, Authorizer
from pyproglog.auth.errors import PermissionDenied

__all__ = [
    "ADMIN",
    "METHOD_ACTIONS",
    "OPEN_PATHS",
    "OPEN_SERVICES",
    "PATH_ACTIONS",
    "PEER_SERVICE_NAME",
    "REPLICATE",
    "SERVICE_NAME",
    "DenialHook",
    "denial",
    "method_actions",
    "route_actions",
]

SERVICE_NAME: str = log_pb2.DESCRIPTOR.services_by_name["Log"].full_name  # "log.v1.Log"
# The nodes' own service, on the same port.
PEER_SERVICE_NAME: str = raft_pb2.DESCRIPTOR.services_by_name["Raft"].full_name

# The actions of the peer service, beside the clients' produce and consume: a
# node's certificate needs `replicate` to talk Raft and forward writes to the
# leader; removing a member from the cluster needs `admin`.
REPLICATE = "replicate"
ADMIN = "admin"

# Told the action of every denial (e.g. to count them in metrics).
DenialHook = Callable[[str], None]

# -- gRPC ------------------------------------------------------------------------

# The actions a method needs (any one of them suffices).
METHOD_ACTIONS: dict[str, tuple[str, ...]] = {
    f"/{SERVICE_NAME}/{name}": actions
    for name, actions in {
        "Produce": (PRODUCE,),
        "ProduceStream": (PRODUCE,),
        "ProduceBatch": (PRODUCE,),
        "Consume": (CONSUME,),
        "ConsumeStream": (CONSUME,),
        "Fetch": (CONSUME,),
        "ConsumeBatchStream": (CONSUME,),
        "GetLogInfo": (CONSUME,),
        "GetOffsetForTimestamp": (CONSUME,),
        # Where to send produces and consumes: of use, and disclosed, only to a
        # client that may do one of them; a producer-only client must route too.
        "GetServers": (PRODUCE, CONSUME),
    }.items()
} | {
    f"/{PEER_SERVICE_NAME}/{name}": actions
    for name, actions in {
        "Send": (REPLICATE,),
        # A write a follower forwards was authorized there, against the client's
        # own certificate; the leader only checks that a node sent it.
        "Forward": (REPLICATE,),
        # An operator's call (admin), or that call passed on by the node that
        # took it, which checked `admin` against the operator's certificate.
        "RemoveServer": (ADMIN, REPLICATE),
    }.items()
}

# Open to every client that passed the TLS handshake: probes and tools must work
# and they disclose no record (health status, the API schema).
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


def method_actions(method: str) -> tuple[str, ...]:
    """The actions a gRPC method needs; () when its service is open.

    A method missing from METHOD_ACTIONS needs its full name as the action: a
    new RPC is closed (no policy names it) until someone decides what it needs.
    """
    if method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES:
        return ()
    return METHOD_ACTIONS.get(method, (method,))


# -- HTTP ------------------------------------------------------------------------

# The API description and the metrics: they disclose no record, and scrapers and
# API tools must reach them.
OPEN_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/metrics"})
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# Paths whose actions do not follow from the method (as GetServers).
PATH_ACTIONS: dict[str, tuple[str, ...]] = {"/v1/servers": (PRODUCE, CONSUME)}


def route_actions(method: str, path: str) -> tuple[str, ...]:
    """The actions an HTTP request needs (any one suffices); () when the route is open.

    POST (and any other unsafe method) produces, GET and HEAD consume.
    """
    if path in OPEN_PATHS and method in _SAFE_METHODS:
        return ()
    actions = PATH_ACTIONS.get(path)
    if actions is not None:
        return actions
    return (CONSUME,) if method in _SAFE_METHODS else (PRODUCE,)


# -- the decision ------------------------------------------------------------------


def denial(
    authorizer: Authorizer,
    subject: str,
    actions: tuple[str, ...],
    on_denial: DenialHook | None = None,
) -> PermissionDenied | None:
    """None when `subject` may perform one of `actions`; else the denial, told to `on_denial`."""
    if any(authorizer.allowed(subject, a) for a in actions):
        return None
    action = " or ".join(actions)
    if on_denial is not None:
        on_denial(action)
    return PermissionDenied(subject, action, OBJECT)

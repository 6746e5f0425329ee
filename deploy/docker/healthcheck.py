"""Container health check: one gRPC Health/Check against this container's node.

Usage: healthcheck.py [SERVICE] (default "", the server as a whole).

Run by the image's HEALTHCHECK and, when the chart turns TLS on, by the pods'
exec probes: Kubernetes' native gRPC probes cannot speak TLS. It reads the
node's own PROGLOG_* settings, so it checks the port and the TLS set-up the
node was started with. Exit 0 when SERVING, 1 otherwise (a draining node
answers NOT_SERVING), with one line on stderr saying why.

Only the standard library and the image's runtime dependencies (grpcio,
grpcio-health-checking): no proglog subcommand, no extra package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Before grpc loads: its C core would add its own lines (a failed handshake at
# info) to the one this check prints, in `docker inspect` and probe events.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_SECONDS = float(os.environ.get("PROGLOG_HEALTHCHECK_TIMEOUT", "3"))


def _read(var: str) -> bytes | None:
    path = os.environ.get(var)
    return Path(path).read_bytes() if path else None


def _channel(target: str) -> grpc.Channel:
    cert = _read("PROGLOG_SERVER_TLS_CERT_FILE")
    if cert is None:
        return grpc.insecure_channel(target)
    # The node's own certificate is also its client identity (proglog certs and
    # the chart issue it for both server and client auth), so this works when
    # the node requires client certificates. Its CA is the client CA or, when
    # clients need no certificate, the peers' CA (the chart sets both to the
    # CA that signed the node); failing both, the system roots.
    root = _read("PROGLOG_SERVER_TLS_CA_FILE") or _read("PROGLOG_PEER_TLS_CA_FILE")
    creds = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=_read("PROGLOG_SERVER_TLS_KEY_FILE"),
        certificate_chain=cert,
    )
    # The node listens on all addresses; its certificate names "localhost".
    options = [("grpc.ssl_target_name_override", "localhost")]
    return grpc.secure_channel(target, creds, options=options)


def main() -> int:
    # The health service's name for the server as a whole is ""; readiness asks for log.v1.Log.
    service = sys.argv[1] if len(sys.argv) > 1 else ""
    target = f"127.0.0.1:{os.environ.get('PROGLOG_RPC_PORT', '8400')}"
    try:
        with _channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unhealthy: cannot read TLS files: {exc}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {target} answers {status} for {service!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Wires one node together and owns its lifecycle (start, drain, stop, reload).

agent.py: the node's parts as ordered start steps (steps.py), torn down in
reverse; listeners.py: the gRPC server and the HTTP gateway; process.py: the
`proglog serve` process (signals, readiness line).
"""

import os as _os

# grpc's C core writes its own lines straight to stderr, outside the structured
# log pipeline (one per failed TLS handshake, at info). A node keeps only its
# errors unless the operator sets GRPC_VERBOSITY. grpc reads the variable when
# it is first imported, which for `proglog serve` is just below.
_os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from pyproglog.agent.agent import Agent
from pyproglog.agent.datadir import DataDirInUse, StartupError
from pyproglog.agent.process import run

__all__ = ["Agent", "DataDirInUse", "StartupError", "run"]

"""Wires one node together and owns its lifecycle (start, drain, stop)."""

import os

# grpc's C core writes its own lines straight to stderr, outside the structured
# log pipeline (one per failed TLS handshake, at info). A node keeps only its
# errors unless the operator sets GRPC_VERBOSITY. grpc reads the variable when
# it is first imported, which for `proglog serve` is just below.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from pyproglog.agent.agent import Agent, run

__all__ = ["Agent", "run"]

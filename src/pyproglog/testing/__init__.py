"""Real Proglog nodes for tests and benchmarks (shipped, so benches need no `tests/`).

- `ServerProcess`: `proglog serve` as a subprocess, on free ports, with a
  readiness wait and its output kept for failures; `run_serve` for a start
  expected to fail; `READY` matches the readiness line.
- `started_agent`: a node in the caller's event loop.
- `free_port`: a loopback port nothing listens on.
- `TcpProxy`: a loopback TCP proxy that can delay, blackhole or cut either
  direction, for fault injection between a client and a node (and, later,
  between nodes).

- `Cluster`: several `proglog serve` nodes forming one cluster on loopback
  (fixed ports, optional proxies, kill/stop/restart/wipe, `leader()`).
- `History` and `Load`: a recorded write/read load and its checker
  (`pyproglog.testing.history.check`).
"""

from pyproglog.testing.agent import started_agent
from pyproglog.testing.cluster import Cluster, ClusterError
from pyproglog.testing.history import History, HistoryError
from pyproglog.testing.load import Load
from pyproglog.testing.net import free_port
from pyproglog.testing.process import READY, ServerProcess, run_serve
from pyproglog.testing.proxy import TcpProxy

__all__ = [
    "READY",
    "Cluster",
    "ClusterError",
    "History",
    "HistoryError",
    "Load",
    "ServerProcess",
    "TcpProxy",
    "free_port",
    "run_serve",
    "started_agent",
]

"""The transport-neutral service a node runs, and the seam it runs on.

`LogService` takes everything it does to the log through a `CommitLog`:
`LocalCommitLog` on a single node, the cluster's replicated log later. The
two front ends, `server.grpc` and `server.http`, only translate its answers
and errors; they are imported by the agent from their own packages.
"""

from pyproglog.server.commitlog import CommitListener, CommitLog, LocalCommitLog
from pyproglog.server.core import LogService
from pyproglog.server.errors import NoQuorum, NotLeader, Reason, ServiceError, ShuttingDown
from pyproglog.server.servers import ServerInfo, ServerLister

__all__ = [
    "CommitListener",
    "CommitLog",
    "LocalCommitLog",
    "LogService",
    "NoQuorum",
    "NotLeader",
    "Reason",
    "ServerInfo",
    "ServerLister",
    "ServiceError",
    "ShuttingDown",
]

"""The service's limits and the message-size budget that follows from them.

Below both `server` and `client` so that the node (which enforces the limits)
and the client (which must accept the largest message a node sends) compute
the budget the same way. The record size limit is not here: it is the storage
engine's (`LogConfig.max_record_bytes`, `--max-record-bytes`), the one limit
every layer checks against.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "MAX_BATCH_BYTES",
    "ServiceLimits",
    "max_message_bytes",
]

DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
# The values one produce batch may carry (gRPC message and HTTP body alike).
MAX_BATCH_BYTES = 32 * 1024 * 1024
# Field tags, lengths and offsets around the values of a maximal message.
_MESSAGE_SLACK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    max_batch_records: int = 100_000
    # Per fetch/stream message: records and bytes.
    default_fetch_records: int = 1000
    max_fetch_records: int = 10_000
    default_fetch_bytes: int = 1024 * 1024
    max_fetch_bytes: int = 16 * 1024 * 1024
    max_wait_ms: int = 60_000
    # The most records one group commit appends at once.
    max_group_records: int = 50_000


def max_message_bytes(
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, limits: ServiceLimits | None = None
) -> int:
    """The largest gRPC message either side sends: a full batch, a full fetch or one record."""
    lim = limits or ServiceLimits()
    return max(lim.max_fetch_bytes, max_record_bytes, MAX_BATCH_BYTES) + _MESSAGE_SLACK

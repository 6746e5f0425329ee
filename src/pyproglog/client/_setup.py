"""What both clients (sync and asyncio) make of their constructor arguments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from pyproglog.client._routing import ReadFrom
from pyproglog.client._tls import ClientTLS
from pyproglog.limits import max_message_bytes


@dataclass(frozen=True, slots=True)
class Setup:
    seeds: list[str]
    routed: bool
    channel_options: list[tuple[str, Any]]
    credentials: grpc.ChannelCredentials | None  # None: plaintext


def setup(
    who: str,
    addr: str | Sequence[str],
    *,
    tls: ClientTLS | None,
    options: Iterable[tuple[str, Any]],
    max_record_bytes: int,
    routing: bool | None,
    read_from: ReadFrom,
) -> Setup:
    """Check the arguments of client `who` and derive its channels' settings."""
    seeds = [addr] if isinstance(addr, str) else list(addr)
    if not seeds:
        raise ValueError(f"{who} needs at least one address")
    if read_from not in ("followers", "leader"):
        raise ValueError(f"read_from must be 'followers' or 'leader', got {read_from!r}")
    routed = routing if routing is not None else not isinstance(addr, str)
    # Fetch and batch-stream messages are as large as the node's own budget;
    # grpc's 4 MiB default would reject them.
    budget = max_message_bytes(max_record_bytes)
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", budget),
        ("grpc.max_send_message_length", budget),
    ]
    if tls is not None:
        opts += tls.channel_options()
    opts += list(options)
    # Read now, so that a bad path fails here and not on the first call.
    creds = tls.credentials() if tls is not None else None
    return Setup(seeds, routed, opts, creds)

"""Log configuration, validated before anything touches the disk."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pyproglog.log.errors import InvalidConfig
from pyproglog.log.format import (
    BODY_OVERHEAD,
    FRAME_OVERHEAD,
    INDEX_ENTRY_WIDTH,
    MAX_BODY,
    STORE_HEADER_SIZE,
    U64_MAX,
)


class SyncPolicy(enum.Enum):
    """When appended data is forced to stable storage (fsync).

    Every append reaches the operating system before it returns, so it survives
    the process being killed under any policy; the policy decides what survives
    a power loss or kernel crash.
    """

    NEVER = "never"  # the kernel writes back when it likes
    INTERVAL = "interval"  # a background thread syncs every `sync_interval_ms`
    ALWAYS = "always"  # an append returns after its data is synced (group commit)


@dataclass(frozen=True, slots=True)
class LogConfig:
    max_store_bytes: int = 128 * 1024 * 1024
    max_index_bytes: int = INDEX_ENTRY_WIDTH * 1024 * 1024
    initial_offset: int = 0
    max_record_bytes: int = 1024 * 1024
    sync_policy: SyncPolicy = SyncPolicy.NEVER
    sync_interval_ms: int = 1000
    # Retention deletes whole closed segments; None keeps everything.
    retention_bytes: int | None = None
    retention_ms: int | None = None
    # A sparse time-index entry is written after this many store bytes.
    time_index_interval_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.max_index_bytes < INDEX_ENTRY_WIDTH or self.max_index_bytes % INDEX_ENTRY_WIDTH:
            raise InvalidConfig(
                f"max_index_bytes must be a positive multiple of the index entry width "
                f"({INDEX_ENTRY_WIDTH} bytes), got {self.max_index_bytes}"
            )
        if self.max_index_bytes // INDEX_ENTRY_WIDTH > 2**32:
            raise InvalidConfig("max_index_bytes allows more than 2**32 entries per segment")
        if self.max_record_bytes < 1:
            raise InvalidConfig(f"max_record_bytes must be at least 1, got {self.max_record_bytes}")
        if self.max_record_bytes > MAX_BODY - BODY_OVERHEAD:
            # A frame's length field is 32 bits wide.
            raise InvalidConfig(
                f"max_record_bytes must be at most {MAX_BODY - BODY_OVERHEAD}, "
                f"got {self.max_record_bytes}"
            )
        smallest_segment = STORE_HEADER_SIZE + FRAME_OVERHEAD + self.max_record_bytes
        if self.max_store_bytes < smallest_segment:
            raise InvalidConfig(
                f"max_store_bytes ({self.max_store_bytes}) cannot hold one record of "
                f"max_record_bytes ({self.max_record_bytes}): "
                f"it must be at least {smallest_segment}"
            )
        if self.initial_offset < 0:
            raise InvalidConfig(f"initial_offset must not be negative, got {self.initial_offset}")
        if self.initial_offset > U64_MAX:
            raise InvalidConfig(f"initial_offset must fit in 64 bits, got {self.initial_offset}")
        if not isinstance(self.sync_policy, SyncPolicy):
            raise InvalidConfig(f"sync_policy must be a SyncPolicy, got {self.sync_policy!r}")
        if self.sync_policy is SyncPolicy.INTERVAL and self.sync_interval_ms < 1:
            raise InvalidConfig(f"sync_interval_ms must be at least 1, got {self.sync_interval_ms}")
        if self.retention_bytes is not None and self.retention_bytes < 1:
            raise InvalidConfig(f"retention_bytes must be positive, got {self.retention_bytes}")
        if self.retention_ms is not None and self.retention_ms < 1:
            raise InvalidConfig(f"retention_ms must be positive, got {self.retention_ms}")
        if self.time_index_interval_bytes < 1:
            raise InvalidConfig("time_index_interval_bytes must be positive")

    @property
    def max_index_entries(self) -> int:
        return self.max_index_bytes // INDEX_ENTRY_WIDTH

"""Node settings: flags > PROGLOG_* environment > YAML config file > defaults.

Field names are the `proglog serve` flag names with dashes as underscores
(`--data-dir` = `data_dir` = `PROGLOG_DATA_DIR` = `data-dir:` in YAML).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pyproglog.log import InvalidConfig, LogConfig, SyncPolicy

_LOG_FIELD_FLAGS = {
    "max_store_bytes": "segment-max-store-bytes",
    "max_index_bytes": "segment-max-index-bytes",
    "max_record_bytes": "max-record-bytes",
    "sync_interval_ms": "sync-interval-ms",
    "retention_bytes": "retention-bytes",
    "retention_ms": "retention-ms",
}


_DEFAULT_BIND_ADDR = "127.0.0.1:8401"


class ConfigError(Exception):
    """A setting that cannot work; the message says which and why."""


def _split_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split_advertise(value: str) -> tuple[str, int | None]:
    """HOST, HOST:PORT, [IPv6] or [IPv6]:PORT (a bare IPv6 address is a host)."""
    wrong = f"--advertise-addr must be HOST or HOST:PORT, got {value!r}"
    if value.startswith("["):
        host, close, rest = value[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError(wrong)
        port = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, None
    if not host or any(c.isspace() or c in "/@?#[]" for c in host):
        raise ValueError(wrong)
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--advertise-addr: port must be 1-65535, got {value!r}")
    return host, int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROGLOG_", extra="forbid")

    data_dir: Path = Path("proglog-data")
    node_name: str = Field(default_factory=socket.gethostname)
    bind_addr: str = _DEFAULT_BIND_ADDR
    rpc_port: int = Field(default=8400, ge=0, le=65535)
    # NoDecode: from the environment it is "a:1,b:2", split below, not JSON.
    start_join_addrs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    bootstrap: bool | None = None
    # Cluster: gossip key, how this node is reached, what it does on shutdown.
    cluster_key_file: Path | None = None
    leave_on_shutdown: bool = False
    advertise_addr: str | None = None
    gossip_profile: Literal["lan", "local"] = "lan"
    # Raft timing: one tick every raft_tick_ms; elections after election_ticks
    # (randomized up to twice that), a leader heartbeat every heartbeat_ticks.
    raft_tick_ms: int = 50
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    acl_model_file: Path | None = None
    acl_policy_file: Path | None = None
    server_tls_cert_file: Path | None = None
    server_tls_key_file: Path | None = None
    server_tls_ca_file: Path | None = None
    peer_tls_cert_file: Path | None = None
    peer_tls_key_file: Path | None = None
    peer_tls_ca_file: Path | None = None
    # Empty string turns the gateway off.
    http_addr: str = "127.0.0.1:8080"

    # Storage engine.
    segment_max_store_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    segment_max_index_bytes: int = Field(default=12 * 1024 * 1024, gt=0)
    max_record_bytes: int = Field(default=1024 * 1024, gt=0)
    sync_policy: SyncPolicy = SyncPolicy.INTERVAL
    sync_interval_ms: int = Field(default=200, gt=0)
    retention_bytes: int | None = Field(default=None, gt=0)
    retention_ms: int | None = Field(default=None, gt=0)

    # Operations.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    # One line per gRPC call at this level: hidden at the default log level.
    request_log_level: Literal["debug", "info", "warning", "error"] = "debug"
    # Prometheus metrics at /metrics on the HTTP gateway.
    metrics: bool = True
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _check_data_dir_given(cls, v: Any) -> Any:
        # Path("") is Path("."): an empty value would quietly mean the current directory.
        if isinstance(v, str | Path) and not str(v).strip():
            raise ValueError("--data-dir must not be empty (default: ./proglog-data)")
        return v

    @field_validator("data_dir")
    @classmethod
    def _check_data_dir_kind(cls, v: Path) -> Path:
        # Caught here so the user reads which setting is wrong, not mkdir's "File exists".
        if v.exists() and not v.is_dir():
            raise ValueError(f"--data-dir {v} is not a directory")
        for parent in v.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"--data-dir {v}: {parent} is not a directory")
                break
        return v

    @field_validator("bind_addr")
    @classmethod
    def _check_bind(cls, v: str) -> str:
        _split_hostport(v, "bind-addr")
        return v

    @field_validator("advertise_addr")
    @classmethod
    def _check_advertise(cls, v: str | None) -> str | None:
        if v is not None:
            _split_advertise(v)
        return v

    @field_validator("http_addr")
    @classmethod
    def _check_http(cls, v: str) -> str:
        if v:
            _split_hostport(v, "http-addr")
        return v

    @field_validator("start_join_addrs", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        # From the environment: "a:1,b:2".
        if isinstance(v, str):
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @model_validator(mode="after")
    def _check_pairs(self) -> Settings:
        if (self.acl_model_file is None) != (self.acl_policy_file is None):
            raise ValueError("acl-model-file and acl-policy-file must be given together")
        if (self.server_tls_cert_file is None) != (self.server_tls_key_file is None):
            raise ValueError("server-tls-cert-file and server-tls-key-file must be given together")
        if self.server_tls_ca_file is not None and self.server_tls_cert_file is None:
            raise ValueError("server-tls-ca-file needs server-tls-cert-file and -key-file")
        return self

    @model_validator(mode="after")
    def _check_raft_timing(self) -> Settings:
        if self.raft_tick_ms < 1:
            raise ValueError(f"--raft-tick-ms must be at least 1, got {self.raft_tick_ms}")
        if self.heartbeat_ticks < 1:
            raise ValueError(f"--heartbeat-ticks must be at least 1, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            # A follower would time out between two heartbeats of a healthy leader.
            raise ValueError(
                f"--election-ticks ({self.election_ticks}) must be more than "
                f"--heartbeat-ticks ({self.heartbeat_ticks})"
            )
        return self

    # -- derived ------------------------------------------------------------------

    @property
    def rpc_host(self) -> str:
        return _split_hostport(self.bind_addr, "bind-addr")[0]

    @property
    def rpc_addr(self) -> str:
        return f"{self.rpc_host}:{self.rpc_port}"

    @property
    def http_host_port(self) -> tuple[str, int] | None:
        return _split_hostport(self.http_addr, "http-addr") if self.http_addr else None

    @property
    def is_bootstrap(self) -> bool:
        # Whether a node with no cluster state founds a cluster rather than joins one;
        # the agent also looks at the data dir (a restarted node never bootstraps again).
        return self.bootstrap if self.bootstrap is not None else not self.start_join_addrs

    @property
    def advertise_host(self) -> str:
        """The host other nodes and clients are told to reach this node's ports on."""
        if self.advertise_addr is None:
            return self.rpc_host
        return _split_advertise(self.advertise_addr)[0]

    @property
    def advertise_rpc_addr(self) -> str:
        """The gRPC address peers and clients are told (gossip tag, GetServers).

        The port is --advertise-addr's when it has one (a NodePort, a proxy in
        front of the node), else --rpc-port. With --rpc-port 0 this says port 0:
        use `advertise_rpc_addr_for(bound_port)` once the port is bound.
        """
        return self.advertise_rpc_addr_for(self.rpc_port)

    def advertise_rpc_addr_for(self, bound_port: int) -> str:
        """`advertise_rpc_addr` with the port gRPC actually bound (for --rpc-port 0)."""
        port = None
        if self.advertise_addr is not None:
            port = _split_advertise(self.advertise_addr)[1]
        return _hostport(self.advertise_host, bound_port if port is None else port)

    def log_config(self) -> LogConfig:
        try:
            return LogConfig(
                max_store_bytes=self.segment_max_store_bytes,
                max_index_bytes=self.segment_max_index_bytes,
                max_record_bytes=self.max_record_bytes,
                sync_policy=self.sync_policy,
                sync_interval_ms=self.sync_interval_ms,
                retention_bytes=self.retention_bytes,
                retention_ms=self.retention_ms,
            )
        except InvalidConfig as exc:
            # Name the settings as the user wrote them, not the engine's fields.
            message = str(exc)
            for field, flag in _LOG_FIELD_FLAGS.items():
                message = message.replace(field, flag)
            raise ConfigError(message) from None

    # -- loading ------------------------------------------------------------------

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlFileSource(settings_cls)

    @classmethod
    def load(
        cls, overrides: dict[str, Any] | None = None, config_file: Path | None = None
    ) -> Settings:
        """Settings from flags (`overrides`, None values ignored), env and `config_file`."""
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        _YamlFileSource.path = config_file
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        finally:
            _YamlFileSource.path = None


class _YamlFileSource(InitSettingsSource):
    """The --config-file: YAML mapping with flag names (dashes or underscores) as keys."""

    path: Path | None = None

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        data: dict[str, Any] = {}
        if self.path is not None:
            try:
                loaded = yaml.safe_load(Path(self.path).read_text()) or {}
            except OSError as exc:
                raise ConfigError(f"cannot read config file {self.path}: {exc.strerror}") from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {self.path} is not valid YAML: {exc}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {self.path} must be a mapping of settings")
            data = {str(k).replace("-", "_"): v for k, v in loaded.items()}
        super().__init__(settings_cls, data)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]).replace("_", "-") or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        named = not err["loc"] or msg.startswith(f"--{name}")  # says which setting itself
        parts.append(msg if named else f"{name}: {msg}")
    return "; ".join(parts)

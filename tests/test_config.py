"""Settings: flags > PROGLOG_* environment > YAML --config-file > defaults."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.config import ConfigError, Settings
from pyproglog.log import SyncPolicy
from pyproglog.testing import ServerProcess


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PROGLOG_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_are_a_local_single_node() -> None:
    s = Settings.load()
    assert s.data_dir == Path("proglog-data")
    assert s.rpc_addr == "127.0.0.1:8400"
    assert s.http_addr == "127.0.0.1:8080"
    assert s.is_bootstrap
    assert s.sync_policy is SyncPolicy.INTERVAL


def test_precedence_flag_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "proglog.yaml",
        "rpc-port: 7001\nnode-name: from-file\ndata_dir: /var/lib/proglog\nsync-policy: always\n",
    )
    from_file = Settings.load(config_file=config)
    assert (from_file.rpc_port, from_file.node_name) == (7001, "from-file")
    assert from_file.data_dir == Path("/var/lib/proglog")
    assert from_file.sync_policy is SyncPolicy.ALWAYS

    monkeypatch.setenv("PROGLOG_RPC_PORT", "7002")
    monkeypatch.setenv("PROGLOG_START_JOIN_ADDRS", "10.0.0.1:8401, 10.0.0.2:8401")
    from_env = Settings.load(config_file=config)
    assert from_env.rpc_port == 7002
    assert from_env.node_name == "from-file"
    assert from_env.start_join_addrs == ["10.0.0.1:8401", "10.0.0.2:8401"]
    assert not from_env.is_bootstrap

    # A flag wins; a flag left unset (None) does not hide the lower sources.
    from_flag = Settings.load({"rpc_port": 7003, "node_name": None}, config_file=config)
    assert (from_flag.rpc_port, from_flag.node_name) == (7003, "from-file")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rpc-prt: 1\n", "rpc-prt: Extra inputs are not permitted"),
        ("bind-addr: nowhere\n", "bind-addr must be HOST:PORT, got 'nowhere'"),
        ("acl-model-file: m.conf\n", "acl-model-file and acl-policy-file must be given together"),
        ("- a\n- b\n", "must be a mapping of settings"),
        ("rpc-port: [\n", "is not valid YAML"),
    ],
)
def test_bad_config_file_is_refused_with_the_setting_named(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.load(config_file=write(tmp_path / "bad.yaml", text))
    assert message in str(err.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load(config_file=tmp_path / "absent.yaml")


def test_impossible_log_limits_name_the_flag() -> None:
    s = Settings.load({"segment_max_index_bytes": 13})
    with pytest.raises(ConfigError, match="segment-max-index-bytes must be a positive multiple"):
        s.log_config()


def test_serve_reads_its_config_file(tmp_path: Path) -> None:
    config = write(tmp_path / "node.yaml", "node-name: node-from-yaml\nmax-record-bytes: 64\n")
    with (
        ServerProcess(tmp_path / "data", ["--config-file", str(config)], http=False) as node,
        grpc.insecure_channel(node.rpc_addr) as channel,
    ):
        stub = log_pb2_grpc.LogStub(channel)
        servers = stub.GetServers(log_pb2.GetServersRequest(), timeout=10).servers
        assert [(s.id, s.rpc_addr, s.is_leader) for s in servers] == [
            ("node-from-yaml", node.rpc_addr, True)
        ]
        with pytest.raises(grpc.RpcError) as err:
            stub.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"x" * 65)), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_data_dir_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Path("") would be the current directory.
    with pytest.raises(ConfigError, match=r"^--data-dir must not be empty"):
        Settings.load({"data_dir": value})
    monkeypatch.setenv("PROGLOG_DATA_DIR", value)
    with pytest.raises(ConfigError, match=r"^--data-dir must not be empty"):
        Settings.load()


def test_data_dir_must_be_a_directory(tmp_path: Path) -> None:
    afile = write(tmp_path / "afile", "x")
    with pytest.raises(ConfigError) as exc:
        Settings.load({"data_dir": afile})
    assert str(exc.value) == f"--data-dir {afile} is not a directory"
    with pytest.raises(ConfigError, match="is not a directory"):
        Settings.load({"data_dir": afile / "below"})
    # Missing directories are fine: the node makes them.
    assert Settings.load({"data_dir": tmp_path / "a" / "b"}).data_dir == tmp_path / "a" / "b"


def test_cluster_settings_from_flags_env_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Settings.load()
    assert s.cluster_key_file is None and not s.leave_on_shutdown
    assert s.gossip_profile == "lan"
    assert (s.raft_tick_ms, s.election_ticks, s.heartbeat_ticks) == (50, 10, 1)

    config = write(
        tmp_path / "proglog.yaml",
        "cluster-key-file: /etc/proglog/cluster.key\nleave-on-shutdown: true\n"
        "gossip-profile: local\nelection-ticks: 20\n",
    )
    monkeypatch.setenv("PROGLOG_HEARTBEAT_TICKS", "2")
    monkeypatch.setenv("PROGLOG_ADVERTISE_ADDR", "node-1.proglog")
    s = Settings.load({"raft_tick_ms": 10}, config_file=config)
    assert s.cluster_key_file == Path("/etc/proglog/cluster.key")
    assert s.leave_on_shutdown and s.gossip_profile == "local"
    assert (s.raft_tick_ms, s.election_ticks, s.heartbeat_ticks) == (10, 20, 2)
    assert s.advertise_host == "node-1.proglog"


@pytest.mark.parametrize(
    ("settings", "host", "rpc_addr"),
    [
        ({}, "127.0.0.1", "127.0.0.1:8400"),
        ({"bind_addr": "10.0.0.5:8401", "rpc_port": 9000}, "10.0.0.5", "10.0.0.5:9000"),
        ({"advertise_addr": "node-1.svc"}, "node-1.svc", "node-1.svc:8400"),
        # A port replaces the advertised RPC port only (a NodePort, a proxy in front).
        ({"advertise_addr": "203.0.113.9:30400"}, "203.0.113.9", "203.0.113.9:30400"),
        ({"advertise_addr": "fd00::5"}, "fd00::5", "[fd00::5]:8400"),
        ({"advertise_addr": "[fd00::5]:31000"}, "fd00::5", "[fd00::5]:31000"),
    ],
)
def test_advertised_addresses(settings: dict[str, object], host: str, rpc_addr: str) -> None:
    s = Settings.load(settings)
    assert s.advertise_host == host
    assert s.advertise_rpc_addr == rpc_addr


def test_the_bound_port_is_advertised_unless_the_advertise_address_names_one() -> None:
    # --rpc-port 0 (tests): peers must be told the port gRPC actually bound.
    assert Settings.load({"rpc_port": 0}).advertise_rpc_addr_for(41000) == "127.0.0.1:41000"
    proxied = Settings.load({"rpc_port": 0, "advertise_addr": "127.0.0.1:5000"})
    assert proxied.advertise_rpc_addr_for(41000) == "127.0.0.1:5000"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"advertise_addr": "host:port"}, "--advertise-addr: port must be 1-65535"),
        ({"advertise_addr": "host:0"}, "--advertise-addr: port must be 1-65535"),
        ({"advertise_addr": ""}, "--advertise-addr must be HOST or HOST:PORT"),
        ({"advertise_addr": "[fd00::5"}, "--advertise-addr must be HOST or HOST:PORT"),
        ({"advertise_addr": "a b"}, "--advertise-addr must be HOST or HOST:PORT"),
        ({"raft_tick_ms": 0}, "--raft-tick-ms must be at least 1"),
        ({"heartbeat_ticks": 0}, "--heartbeat-ticks must be at least 1"),
        ({"election_ticks": 1}, "--election-ticks (1) must be more than --heartbeat-ticks (1)"),
        ({"election_ticks": 3, "heartbeat_ticks": 5}, "--election-ticks (3) must be more"),
        ({"gossip_profile": "wan"}, "gossip-profile"),
    ],
)
def test_bad_cluster_settings_name_the_flag(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.load(settings)
    assert str(exc.value).startswith(message) or message in str(exc.value), str(exc.value)

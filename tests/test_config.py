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


def test_cluster_only_settings_given_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load().unused_cluster_settings() == []
    # The bind address's host is used (gRPC listens there): only another port is "unused".
    assert Settings.load({"bind_addr": "0.0.0.0:8401"}).unused_cluster_settings() == []
    monkeypatch.setenv("PROGLOG_START_JOIN_ADDRS", "a:1,b:2")
    s = Settings.load({"bind_addr": "0.0.0.0:7946", "bootstrap": False})
    assert s.unused_cluster_settings() == ["bind_addr", "start_join_addrs", "bootstrap"]

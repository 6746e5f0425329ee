"""Whether a node runs in a cluster, and the cluster's options from the settings."""

from __future__ import annotations

import grpc

from pyproglog.agent.datadir import StartupError
from pyproglog.cluster import ClusterOptions, RaftTiming
from pyproglog.config import Settings
from pyproglog.discovery import load_cluster_key

__all__ = ["cluster_mode", "cluster_options"]


def cluster_mode(s: Settings) -> bool:
    """A node is in a cluster when asked (`--bootstrap`, `--start-join-addrs`) or
    when its data directory already holds cluster state: a restarted member
    rejoins as it was, whatever its flags say. A plain `proglog serve` is a
    single node, as it always was."""
    asked = s.bootstrap is True or bool(s.start_join_addrs)
    return asked or (s.data_dir / "raft").is_dir()


def cluster_options(s: Settings, bound_rpc_addr: str, server_tls: bool) -> ClusterOptions:
    """The cluster's options; StartupError naming the flag when they cannot work."""
    credentials = None
    peer_files = (s.peer_tls_cert_file, s.peer_tls_key_file, s.peer_tls_ca_file)
    if any(peer_files):
        if not all(peer_files):
            raise StartupError(
                "--peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file "
                "must be given together"
            )
        try:
            assert s.peer_tls_cert_file and s.peer_tls_key_file and s.peer_tls_ca_file
            credentials = grpc.ssl_channel_credentials(
                root_certificates=s.peer_tls_ca_file.read_bytes(),
                private_key=s.peer_tls_key_file.read_bytes(),
                certificate_chain=s.peer_tls_cert_file.read_bytes(),
            )
        except OSError as exc:
            raise StartupError(f"cannot read the peer TLS files: {exc}") from None
    elif server_tls:
        raise StartupError(
            "this node serves TLS, so its peers do too: give it --peer-tls-cert-file, "
            "--peer-tls-key-file and --peer-tls-ca-file to reach them"
        )
    key = None
    if s.cluster_key_file is not None:
        try:
            key = load_cluster_key(s.cluster_key_file)
        except (OSError, ValueError) as exc:
            raise StartupError(str(exc)) from None
    timing = RaftTiming(
        tick_seconds=s.raft_tick_ms / 1000,
        election_ticks=s.election_ticks,
        heartbeat_ticks=s.heartbeat_ticks,
    )
    return ClusterOptions(
        name=s.node_name,
        rpc_addr=s.advertise_rpc_addr_for(int(bound_rpc_addr.rpartition(":")[2])),
        bind_addr=s.bind_addr,
        join_addrs=tuple(s.start_join_addrs),
        bootstrap=s.is_bootstrap,
        advertise_host=s.advertise_host,
        cluster_key=key,
        gossip_fast=s.gossip_profile == "local",
        timing=timing,
        peer_credentials=credentials,
        leave_on_shutdown=s.leave_on_shutdown,
        write_timeout=10.0,
    )

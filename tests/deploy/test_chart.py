"""The Helm chart, rendered by the real helm: what a cluster would be given.

Each test renders deploy/helm/proglog with some values and checks the
objects. The container's entrypoint script is run for real (/bin/sh) to see
which bootstrap and join settings each ordinal gets.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyproglog.config import Settings
from tests.deploy.chart import (
    CHART,
    CI_VALUES,
    DOCKERFILE,
    FULLNAME,
    NAMESPACE,
    ROOT,
    container,
    entrypoint_env,
    every,
    exec_env,
    helm_binary,
    iter_probes,
    one,
    plain_env,
    render,
    render_error,
    render_notes,
)

HEADLESS = f"{FULLNAME}-headless"


def pod_host(ordinal: int) -> str:
    return f"{FULLNAME}-{ordinal}.{HEADLESS}.{NAMESPACE}.svc.cluster.local"


def test_missing_helm_fails_and_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"make deploy-tools"):
        helm_binary(tmp_path / "helm")


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_every_ci_value_set_renders(values_file: Path) -> None:
    objs = render(files=[values_file])
    assert one(objs, "StatefulSet")["spec"]["replicas"] == yaml.safe_load(
        values_file.read_text()
    ).get("replicaCount", 3)


def test_ports_and_services() -> None:
    objs = render({"replicaCount": 3})
    c = container(objs)
    ports = {(p["name"], p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert ports == {
        ("rpc", 8400, "TCP"),
        ("gossip", 8401, "TCP"),
        ("gossip-udp", 8401, "UDP"),
        ("http", 8080, "TCP"),
    }
    env = plain_env(c)
    assert env["PROGLOG_RPC_PORT"] == "8400"
    assert env["PROGLOG_BIND_ADDR"] == "0.0.0.0:8401"
    assert env["PROGLOG_HTTP_ADDR"] == "0.0.0.0:8080"

    headless = one(objs, "Service", HEADLESS)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["targetPort"] for p in headless["spec"]["ports"]} == {
        "rpc",
        "gossip",
        "gossip-udp",
        "http",
    }
    assert one(objs, "StatefulSet")["spec"]["serviceName"] == HEADLESS

    client = one(objs, "Service", FULLNAME)
    assert client["spec"]["type"] == "ClusterIP"
    assert {(p["port"], p["targetPort"]) for p in client["spec"]["ports"]} == {
        (8400, "rpc"),
        (8080, "http"),
    }
    # Both Services select the StatefulSet's pods.
    pod_labels = one(objs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    for svc in (headless, client):
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_custom_ports_reach_env_probes_and_services() -> None:
    objs = render({"ports": {"rpc": 9400, "gossip": 9401, "http": 9080}})
    c = container(objs)
    env = plain_env(c)
    assert env["PROGLOG_RPC_PORT"] == "9400"
    assert env["PROGLOG_BIND_ADDR"] == "0.0.0.0:9401"
    assert env["PROGLOG_HTTP_ADDR"] == "0.0.0.0:9080"
    for _, probe in iter_probes(c):
        assert probe["grpc"]["port"] == 9400
    assert all(a.endswith(":9401") for a in env["PEER_GOSSIP_ADDRS"].split(","))


def test_native_grpc_probes_on_the_health_service() -> None:
    c = container(render())
    for kind, probe in iter_probes(c):
        assert probe["grpc"]["port"] == 8400, kind
        assert "exec" not in probe and "httpGet" not in probe and "tcpSocket" not in probe
    # Readiness asks for the log service itself; startup and liveness for the server.
    assert c["readinessProbe"]["grpc"]["service"] == "log.v1.Log"
    assert c["livenessProbe"]["grpc"]["service"] == ""
    # A node recovering a large log gets minutes before liveness may kill it.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_probes_with_tls_run_the_image_health_check() -> None:
    c = container(render({"tls": {"enabled": True}}))
    dockerfile = DOCKERFILE.read_text()
    for kind, probe in iter_probes(c):
        assert "grpc" not in probe, f"{kind}: Kubernetes' gRPC probes cannot speak TLS"
        command = probe["exec"]["command"]
        assert command[0] == "python"
        assert command[2:] == (["log.v1.Log"] if kind == "readinessProbe" else [])
        # The script the probe runs is the one the image copies in.
        assert f"COPY deploy/docker/healthcheck.py {command[1]}" in dockerfile


@pytest.mark.parametrize("grace", [10, 12.5, 60])
def test_termination_grace_is_above_the_drain(grace: float) -> None:
    objs = render({"shutdownGraceSeconds": grace})
    pod = one(objs, "StatefulSet")["spec"]["template"]["spec"]
    env = plain_env(container(objs))
    assert float(env["PROGLOG_SHUTDOWN_GRACE_SECONDS"]) == grace
    assert pod["terminationGracePeriodSeconds"] >= grace + 5


def test_env_names_are_proglog_settings() -> None:
    """Every PROGLOG_* variable names a setting: a typo would be ignored by the
    node, silently."""
    values: dict[str, Any] = {
        "tls": {"enabled": True},
        "acl": {"enabled": True},
        "config": {"sync-policy": "always", "retention-bytes": 1 << 30, "metrics": False},
    }
    c = container(render(values))
    names = set(plain_env(c)) | set(exec_env(c, f"{FULLNAME}-1"))
    fields = set(Settings.model_fields)
    proglog = {n for n in names if n.startswith("PROGLOG_") and n != "PROGLOG_HEALTHCHECK_TIMEOUT"}
    unknown = {n for n in proglog if n.removeprefix("PROGLOG_").lower() not in fields}
    assert not unknown
    env = exec_env(c, f"{FULLNAME}-1")
    assert env["PROGLOG_SYNC_POLICY"] == "always"
    assert env["PROGLOG_RETENTION_BYTES"] == str(1 << 30)
    assert env["PROGLOG_METRICS"] == "false"
    assert env["PROGLOG_NODE_NAME"] == f"{FULLNAME}-1"


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 3, "tls": {"enabled": True}, "acl": {"enabled": True}},
        {"replicaCount": 3, "cluster": {"leaveOnShutdown": True, "bootstrap": False}},
        {
            "replicaCount": 2,
            "externalAccess": {"enabled": True, "type": "NodePort", "hosts": ["a.example", "b"]},
        },
        {"replicaCount": 1, "externalAccess": {"enabled": True, "hosts": ["34.1.2.3"]}},
    ],
    ids=["tls-acl", "leave-no-bootstrap", "nodeport", "loadbalancer"],
)
def test_every_pod_env_is_a_valid_node_configuration(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each pod's node is exec'd with, read by the node's own settings loader:
    the values have the formats the node takes (advertise HOST[:PORT], booleans,
    join lists, the cluster key path)."""
    c = container(render(values))
    for ordinal in range(values["replicaCount"]):
        env = exec_env(c, f"{FULLNAME}-{ordinal}")
        for name in [n for n in os.environ if n.startswith("PROGLOG_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            if name.startswith("PROGLOG_") and name != "PROGLOG_HEALTHCHECK_TIMEOUT":
                monkeypatch.setenv(name, value)
        s = Settings.load()
        assert s.node_name == f"{FULLNAME}-{ordinal}"
        assert s.cluster_key_file == Path("/etc/proglog/cluster-key/cluster.key")
        assert s.leave_on_shutdown is values.get("cluster", {}).get("leaveOnShutdown", False)
        assert s.bootstrap is (ordinal == 0 and values.get("cluster", {}).get("bootstrap", True))
        others = [i for i in range(values["replicaCount"]) if i != ordinal]
        assert s.start_join_addrs == [pod_host(i) + ":8401" for i in others]
        external = values.get("externalAccess", {})
        if not external:
            assert s.advertise_rpc_addr == pod_host(ordinal) + ":8400"
        elif external.get("type") == "NodePort":
            # The node port, not the one the node listens on.
            host = external["hosts"][ordinal]
            assert s.advertise_rpc_addr == f"{host}:{30400 + ordinal}"
            assert s.advertise_host == host
        else:
            assert s.advertise_rpc_addr == external["hosts"][ordinal] + ":8400"


def test_chart_owned_flags_are_refused_in_config() -> None:
    err = render_error({"config": {"data-dir": "/elsewhere"}})
    assert "data-dir" in err


def test_unknown_values_are_refused() -> None:
    assert "replicas" in render_error({"replicas": 3})


def test_bootstrap_only_on_ordinal_0_and_every_pod_joins_the_others() -> None:
    c = container(render({"replicaCount": 3}))
    first = exec_env(c, f"{FULLNAME}-0")
    assert first["PROGLOG_BOOTSTRAP"] == "true"
    # Ordinal 0 joins through the others too: with no state it finds the
    # cluster there (its volume was lost) instead of founding a second one.
    assert first["PROGLOG_START_JOIN_ADDRS"].split(",") == [
        pod_host(1) + ":8401",
        pod_host(2) + ":8401",
    ]
    assert first["PROGLOG_ADVERTISE_ADDR"] == pod_host(0)
    for ordinal in (1, 2):
        env = exec_env(c, f"{FULLNAME}-{ordinal}")
        assert env["PROGLOG_BOOTSTRAP"] == "false"
        others = [pod_host(i) + ":8401" for i in range(3) if i != ordinal]
        assert env["PROGLOG_START_JOIN_ADDRS"].split(",") == others
        assert env["PROGLOG_ADVERTISE_ADDR"] == pod_host(ordinal)
        assert env["PROGLOG_NODE_NAME"] == f"{FULLNAME}-{ordinal}"


def test_ordinal_0_joins_instead_when_bootstrap_is_off() -> None:
    c = container(render({"replicaCount": 3, "cluster": {"bootstrap": False}}))
    env = exec_env(c, f"{FULLNAME}-0")
    assert env["PROGLOG_BOOTSTRAP"] == "false"
    assert env["PROGLOG_START_JOIN_ADDRS"].split(",") == [
        pod_host(1) + ":8401",
        pod_host(2) + ":8401",
    ]


def test_a_single_node_bootstraps_with_nothing_to_join() -> None:
    env = exec_env(container(render({"replicaCount": 1})), f"{FULLNAME}-0")
    assert env["PROGLOG_BOOTSTRAP"] == "true"
    assert "PROGLOG_START_JOIN_ADDRS" not in env


def test_scaled_up_pod_joins_through_all_others() -> None:
    c = container(render({"replicaCount": 5}))
    env = exec_env(c, f"{FULLNAME}-4")
    assert env["PROGLOG_START_JOIN_ADDRS"].split(",") == [pod_host(i) + ":8401" for i in range(4)]


def test_entrypoint_execs_the_node_as_pid_1() -> None:
    c = container(render())
    assert c["command"][:2] == ["/bin/sh", "-ec"]
    script = c["command"][2]
    assert script.rstrip().endswith('exec "$@"')
    assert c["args"] == ["proglog", "serve"]


def test_security_context() -> None:
    objs = render({"tls": {"enabled": True}, "acl": {"enabled": True}})
    pod = one(objs, "StatefulSet")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objs)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The image's user is the one the pod runs as, and owns the volume via fsGroup.
    m = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.M)
    assert m is not None
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (
        int(m[1]),
        int(m[2]),
        int(m[2]),
    )
    assert pod["automountServiceAccountToken"] is False
    # Secrets mounted readable by the group only.
    for vol in pod["volumes"]:
        if "secret" in vol:
            assert vol["secret"]["defaultMode"] == 0o440


def test_volume_mounts_and_the_files_env_names() -> None:
    objs = render({"tls": {"enabled": True}, "acl": {"enabled": True}})
    sts = one(objs, "StatefulSet")
    c = container(objs)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert mounts["data"]["mountPath"] == "/var/lib/proglog"
    env = plain_env(c)
    # On the volume, but not its root (lost+found lives there).
    assert env["PROGLOG_DATA_DIR"] == "/var/lib/proglog/data"
    assert mounts["tmp"]["mountPath"] == "/tmp"
    for name in ("tls", "acl", "cluster-key"):
        assert mounts[name]["readOnly"] is True
    # Every file setting points into the volume that holds it.
    files = {k: v for k, v in env.items() if k.endswith("_FILE")}
    assert set(files) == {
        "PROGLOG_SERVER_TLS_CERT_FILE",
        "PROGLOG_SERVER_TLS_KEY_FILE",
        "PROGLOG_SERVER_TLS_CA_FILE",
        "PROGLOG_PEER_TLS_CERT_FILE",
        "PROGLOG_PEER_TLS_KEY_FILE",
        "PROGLOG_PEER_TLS_CA_FILE",
        "PROGLOG_ACL_MODEL_FILE",
        "PROGLOG_ACL_POLICY_FILE",
        "PROGLOG_CLUSTER_KEY_FILE",
    }
    secrets = {s["metadata"]["name"]: s for s in every(objs, "Secret")}
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    for path in files.values():
        mount = next(m for m in mounts.values() if path.startswith(m["mountPath"] + "/"))
        secret = secrets[volumes[mount["name"]]["secret"]["secretName"]]
        key = path.removeprefix(mount["mountPath"] + "/")
        assert key in secret.get("data", {}) or key in secret.get("stringData", {}), path
    # The volume outlives a scale-down: it holds the log.
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_without_tls_no_tls_settings_or_secrets() -> None:
    objs = render()
    env = plain_env(container(objs))
    assert not [k for k in env if "TLS" in k or "ACL" in k]
    assert [s["metadata"]["name"] for s in every(objs, "Secret")] == [f"{FULLNAME}-cluster-key"]


def test_mutual_tls_off_keeps_tls_without_a_client_ca() -> None:
    env = plain_env(container(render({"tls": {"enabled": True, "requireClientCerts": False}})))
    assert "PROGLOG_SERVER_TLS_CERT_FILE" in env
    assert "PROGLOG_SERVER_TLS_CA_FILE" not in env


def test_existing_secrets_are_used_not_made() -> None:
    objs = render(
        {
            "tls": {"enabled": True, "existingSecret": "my-tls"},
            "acl": {"enabled": True, "existingSecret": "my-acl"},
            "cluster": {"key": {"existingSecret": "my-key"}},
        }
    )
    assert every(objs, "Secret") == []
    volumes = one(objs, "StatefulSet")["spec"]["template"]["spec"]["volumes"]
    names = {v["name"]: v["secret"]["secretName"] for v in volumes if "secret" in v}
    assert names == {"tls": "my-tls", "acl": "my-acl", "cluster-key": "my-key"}


def _cert(data: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(data))


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    assert cert.signature_hash_algorithm is not None
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
    return cert.issuer == ca.subject


def test_dev_tls_certificates_the_chart_makes() -> None:
    objs = render(
        {
            "tls": {"enabled": True},
            "externalAccess": {
                "enabled": True,
                "hosts": ["34.1.2.3", "b.example.com", "c.example.com"],
            },
        }
    )
    node = one(objs, "Secret", f"{FULLNAME}-tls")["data"]
    client = one(objs, "Secret", f"{FULLNAME}-client-tls")["data"]
    ca = _cert(node["ca.crt"])
    cert = _cert(node["tls.crt"])
    assert _signed_by(cert, ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(san.get_values_for_type(x509.DNSName))
    # Peers dial each other by headless name; the health check and
    # port-forwards by localhost; clients outside by the external hosts.
    assert f"*.{HEADLESS}.{NAMESPACE}.svc.cluster.local" in dns
    assert {"localhost", f"{FULLNAME}.{NAMESPACE}.svc", "b.example.com", "c.example.com"} <= dns
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "34.1.2.3"}
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    # Server and client: the node is a client of its peers and of its own health check.
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages
    root = _cert(client["tls.crt"])
    assert _signed_by(root, ca)
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "root"


def test_acl_policy_names_the_node_subject_for_replication() -> None:
    objs = render({"tls": {"enabled": True}, "acl": {"enabled": True}})
    policy = one(objs, "Secret", f"{FULLNAME}-acl")["stringData"]["policy.csv"]
    node_cert = _cert(one(objs, "Secret", f"{FULLNAME}-tls")["data"]["tls.crt"])
    cn = node_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == FULLNAME
    # The grants of config/example/policy.csv, with the chart's node subject.
    example = (ROOT / "config" / "example" / "policy.csv").read_text().splitlines()
    grants = {line for line in example if line.startswith("p, ")}
    assert grants == {"p, root, *, produce", "p, root, *, consume", "p, root, *, admin"} | {
        "p, proglog server, *, replicate"
    }
    assert set(policy.splitlines()) == (grants - {"p, proglog server, *, replicate"}) | {
        f"p, {FULLNAME}, *, replicate"
    }


def test_cluster_key_is_32_random_bytes_base64() -> None:
    keys = []
    for _ in range(2):
        secret = one(render(), "Secret", f"{FULLNAME}-cluster-key")
        content = base64.b64decode(secret["data"]["cluster.key"])
        assert len(base64.b64decode(content, validate=True)) == 32
        keys.append(content)
    assert keys[0] != keys[1]


def test_pod_disruption_budget() -> None:
    objs = render()
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = one(objs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("mode", ["preferred", "required"])
def test_anti_affinity(mode: str) -> None:
    pod = one(render({"antiAffinity": mode}), "StatefulSet")["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    key = f"{mode}DuringSchedulingIgnoredDuringExecution"
    assert list(anti) == [key]
    term = anti[key][0] if mode == "required" else anti[key][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"


def test_parallel_pods_rolling_updates() -> None:
    spec = one(render(), "StatefulSet")["spec"]
    # After a full stop all pods must start for a quorum to form.
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"


def test_no_external_services_by_default() -> None:
    services = every(render(), "Service")
    assert {s["metadata"]["name"] for s in services} == {FULLNAME, HEADLESS}


@pytest.mark.parametrize("kind", ["LoadBalancer", "NodePort"])
def test_external_access_gives_each_pod_its_service_and_address(kind: str) -> None:
    hosts = ["34.1.2.10", "b.example.com", "c.example.com"]
    values = {
        "replicaCount": 3,
        "externalAccess": {"enabled": True, "type": kind, "hosts": hosts},
    }
    objs = render(values)
    external = [s for s in every(objs, "Service") if s["metadata"]["name"].endswith("-external")]
    assert len(external) == 3
    c = container(objs)
    for i in range(3):
        svc = one(objs, "Service", f"{FULLNAME}-{i}-external")
        assert svc["spec"]["type"] == kind
        # Local keeps client addresses; a NodePort must answer on every node.
        policy = "Local" if kind == "LoadBalancer" else "Cluster"
        assert svc["spec"]["externalTrafficPolicy"] == policy
        assert svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"{FULLNAME}-{i}"
        assert svc["spec"]["publishNotReadyAddresses"] is True
        rpc = next(p for p in svc["spec"]["ports"] if p["name"] == "rpc")
        assert rpc["targetPort"] == "rpc"
        if kind == "NodePort":
            assert rpc["nodePort"] == 30400 + i
        else:
            assert rpc["port"] == 8400
            # The node advertises this host for gossip too.
            assert {p["name"] for p in svc["spec"]["ports"]} == {"rpc", "gossip", "gossip-udp"}
        assert (svc["spec"].get("loadBalancerIP") == hosts[i]) == (
            kind == "LoadBalancer" and i == 0
        )
        # A NodePort is advertised with its port: what GetServers must name.
        advertised = hosts[i] if kind == "LoadBalancer" else f"{hosts[i]}:{30400 + i}"
        assert exec_env(c, f"{FULLNAME}-{i}")["PROGLOG_ADVERTISE_ADDR"] == advertised


def test_external_access_needs_a_host_per_pod() -> None:
    err = render_error({"replicaCount": 3, "externalAccess": {"enabled": True, "hosts": ["a"]}})
    assert "externalAccess.hosts" in err


def test_entrypoint_refuses_a_pod_without_an_external_host() -> None:
    """A pod scaled past the hosts list (kubectl scale) stops with one line."""
    c = container(render({"replicaCount": 1, "externalAccess": {"enabled": True, "hosts": ["a"]}}))
    result = entrypoint_env(c, f"{FULLNAME}-1")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "proglog-entrypoint: externalAccess.hosts has no host for ordinal 1"
    )


def test_service_monitor_scrapes_each_pod_once() -> None:
    objs = render({"serviceMonitor": {"enabled": True}})
    sm = one(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "http"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    selector = sm["spec"]["selector"]["matchLabels"]
    matched = [
        s["metadata"]["name"]
        for s in every(objs, "Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert matched == [HEADLESS]
    assert every(render(), "ServiceMonitor") == []


def test_notes_show_how_to_produce_and_consume() -> None:
    plain = render_notes()
    assert f"port-forward svc/{FULLNAME} 8400:8400" in plain
    assert 'proglog produce --direct --addr localhost:8400 "hello"' in plain
    assert "proglog consume --direct --addr localhost:8400 --offset 0" in plain
    tls = render_notes({"tls": {"enabled": True}})
    assert f"get secret {FULLNAME}-client-tls" in tls
    assert "--tls-cert certs/tls.crt" in tls
    ext = render_notes({"replicaCount": 1, "externalAccess": {"enabled": True, "hosts": ["h"]}})
    assert f"{FULLNAME}-0: h:8400" in ext


def test_values_schema_is_valid_json_and_covers_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    """The build context is the repository root, filtered by .dockerignore
    (an allow-list): every COPY source must exist and be let in."""
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed), src


def test_reserved_flags_agree_between_schema_and_template() -> None:
    """The schema and the template refuse the same chart-owned flags, and each
    is a real setting (or a pending cluster flag)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    in_schema = set(schema["properties"]["config"]["propertyNames"]["not"]["enum"])
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    m = re.search(r'define "proglog.reservedFlags".*?\{\{- list (.*?) \| toJson', helpers, re.S)
    assert m is not None
    in_template = set(re.findall(r'"([a-z-]+)"', m[1]))
    assert in_schema == in_template
    # --config-file is the command's own option, not a setting.
    fields = set(Settings.model_fields) | {"config_file"}
    assert {f.replace("-", "_") for f in in_schema} <= fields

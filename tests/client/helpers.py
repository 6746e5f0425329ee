"""What the client tests against real nodes share: where calls went, as the nodes count them."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from pyproglog.testing.cluster import Cluster, Node


def requests_ok(http_url: str, method: str) -> float:
    """The node's count of `method` calls that answered OK: its
    `proglog_rpc_requests_total{method=...,code="OK"}` on /metrics."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "proglog_rpc_requests"
        for s in family.samples
        if s.name.endswith("_total")
        and s.labels.get("method") == method
        and s.labels.get("code") == "OK"
    )


def http_url(node: Node) -> str:
    """A cluster node's HTTP address (never through a proxy)."""
    return f"http://127.0.0.1:{node.http_port}"


def counts(cluster: Cluster, method: str) -> dict[str, float]:
    """Each live node's count of `method` calls that answered OK."""
    return {n.name: requests_ok(http_url(n), method) for n in cluster.live()}


def addrs(cluster: Cluster) -> list[str]:
    """Every node's client address."""
    return [n.addr for n in cluster.nodes.values()]

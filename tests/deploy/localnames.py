"""Cluster DNS and pod IPs, played on one machine: run as `python localnames.py CMD...`.

In Kubernetes every pod has its own IP address, so every pod listens on the
chart's ports (8400, 8401, 8080) and peers dial each other by stable name,
`<pod>.<headless>.<ns>.svc.cluster.local:8401`. Here the pods share
127.0.0.1 and those names do not resolve. So the test gives each pod its own
local ports, and this program rewrites the `PROGLOG_*` environment the
container's entrypoint script computed before exec'ing the node:

- `<pod name>:<chart port>` (a join address) becomes `127.0.0.1:<that pod's
  local port for that chart port>`;
- a bare `<pod name>` (the advertised host) becomes `127.0.0.1`;
- the pod's own listening addresses keep their host (`0.0.0.0`) and get the
  pod's own local port; `PROGLOG_RPC_PORT` likewise.

Nothing else changes: the chart's script runs as is (its ordinal, bootstrap and
join logic), and this program `exec`s the node, so the node is still the
process the kubelet's signals reach. The mapping comes as JSON in
`DEPLOY_TEST_LOCAL_NAMES`: {"hosts": {name: {chart port: local port}},
"own": {chart port: local port}}.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

SPEC_VAR = "DEPLOY_TEST_LOCAL_NAMES"
LOCALHOST = "127.0.0.1"
_HOSTPORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:,]+):(?P<port>\d+)")
_LISTEN_HOSTS = {"0.0.0.0", "127.0.0.1", "localhost", "[::]"}


def _item(item: str, hosts: Mapping[str, Mapping[str, int]], own: Mapping[str, int]) -> str:
    if item in hosts:
        return LOCALHOST
    m = _HOSTPORT.fullmatch(item)
    if m is None:
        return item
    host, port = m["host"], m["port"]
    if host in hosts and port in hosts[host]:
        return f"{LOCALHOST}:{hosts[host][port]}"
    if host in _LISTEN_HOSTS and port in own:
        return f"{host}:{own[port]}"
    return item


def rewrite(env: Mapping[str, str], spec: Mapping[str, Any]) -> dict[str, str]:
    """`env` with every pod address made local (see the module docstring)."""
    hosts: Mapping[str, Mapping[str, int]] = spec["hosts"]
    own: Mapping[str, int] = spec["own"]
    out = dict(env)
    for key, value in env.items():
        if not key.startswith("PROGLOG_"):
            continue
        if key == "PROGLOG_RPC_PORT" and value in own:
            out[key] = str(own[value])
            continue
        out[key] = ",".join(_item(item, hosts, own) for item in value.split(","))
    return out


def main(argv: list[str]) -> None:
    env = dict(os.environ)
    spec = json.loads(env.pop(SPEC_VAR))
    os.execvpe(argv[0], argv, rewrite(env, spec))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Mutual TLS and the ACL on the HTTP/JSON gateway, over real TLS on loopback."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from pyproglog.agent import Agent
from pyproglog.api.v1 import log_pb2
from pyproglog.auth.errors import SecurityError
from tests.auth.conftest import (
    PKI,
    SecureFiles,
    http_for,
    log_unchanged,
    rotate_ca,
    running,
    stub_for,
)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


# route -> (method, path, request options, action named in a denial, expected root status)
ROUTES: dict[str, tuple[str, str, dict[str, Any], str, int]] = {
    "book produce": ("POST", "/", {"json": {"record": {"value": b64(b"x")}}}, "produce", 200),
    "book consume": ("GET", "/", {"json": {"offset": 0}}, "consume", 200),
    "produce records": (
        "POST",
        "/v1/records",
        {"json": {"records": [{"value": b64(b"a")}, {"value": b64(b"b")}]}},
        "produce",
        201,
    ),
    "read record": ("GET", "/v1/records/0", {}, "consume", 200),
    "fetch": ("GET", "/v1/records", {"params": {"offset": 0}}, "consume", 200),
    "info": ("GET", "/v1/info", {}, "consume", 200),
    "offset for timestamp": (
        "GET",
        "/v1/offsets",
        {"params": {"timestamp_ms": 0}},
        "consume",
        200,
    ),
    "servers": ("GET", "/v1/servers", {}, "produce or consume", 200),
}


async def seed(node: Agent, pki: PKI) -> None:
    async with http_for(node, pki.root) as client:
        answer = await client.post("/v1/records", json={"records": [{"value": b64(b"seed")}]})
        assert answer.status_code == 201


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_root_may_use(route: str, secure_agent: Agent, pki: PKI) -> None:
    await seed(secure_agent, pki)
    method, path, options, _, status = ROUTES[route]
    async with http_for(secure_agent, pki.root) as client:
        answer = await client.request(method, path, **options)
    assert answer.status_code == status, answer.text


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_nobody_is_denied_without_effect(route: str, secure_agent: Agent, pki: PKI) -> None:
    await seed(secure_agent, pki)
    method, path, options, action, _ = ROUTES[route]
    with log_unchanged(secure_agent):
        async with http_for(secure_agent, pki.nobody) as client:
            answer = await client.request(method, path, **options)
        assert answer.status_code == 403
        assert answer.json() == {
            "error": {
                "code": "PERMISSION_DENIED",
                "reason": "PERMISSION_DENIED",
                "message": f"nobody not permitted to {action} to *",
                "metadata": {"subject": "nobody", "action": action, "object": "*"},
            }
        }


async def test_api_description_is_open_to_any_verified_client(
    secure_agent: Agent, pki: PKI
) -> None:
    async with http_for(secure_agent, pki.nobody) as client:
        answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    assert "/v1/records" in answer.json()["paths"]


@pytest.mark.parametrize("who", ["anonymous", "stranger", "expired"])
async def test_unverifiable_clients_cannot_connect(who: str, secure_agent: Agent, pki: PKI) -> None:
    with log_unchanged(secure_agent):
        async with http_for(secure_agent, getattr(pki, who)) as client:
            with pytest.raises(httpx.TransportError):
                await client.post("/", json={"record": {"value": b64(b"x")}})


async def test_plaintext_client_cannot_talk_to_a_tls_gateway(secure_agent: Agent) -> None:
    url = secure_agent.http_url.replace("https://", "http://")
    with log_unchanged(secure_agent):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            with pytest.raises(httpx.TransportError):
                await client.post("/", json={"record": {"value": b64(b"x")}})


async def test_without_client_certificates_the_acl_answers_401(
    files: SecureFiles, pki: PKI, tmp_path: Path
) -> None:
    settings = files.settings(tmp_path / "data", server_tls_ca_file=None)
    async with running(settings) as node, http_for(node, pki.anonymous) as client:
        answer = await client.post("/", json={"record": {"value": b64(b"x")}})
        assert answer.status_code == 401
        assert answer.json() == {
            "error": {
                "code": "UNAUTHENTICATED",
                "reason": "UNAUTHENTICATED",
                "message": "no verified client certificate",
                "metadata": {},
            }
        }
        assert node.service is not None and node.service.info().next_offset == 0


async def test_certificate_reload_applies_to_new_connections(
    secure_agent: Agent, files: SecureFiles, pki: PKI, tmp_path: Path
) -> None:
    new_root = rotate_ca(files, tmp_path / "new")
    secure_agent.reload_security()
    async with http_for(secure_agent, new_root) as client:
        assert (await client.get("/v1/info")).status_code == 200
    async with http_for(secure_agent, pki.root) as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/v1/info")

    files.cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    with pytest.raises(SecurityError, match="no valid PEM certificate"):
        secure_agent.reload_security()
    async with http_for(secure_agent, new_root) as client:
        assert (await client.get("/v1/info")).status_code == 200


async def test_policy_reload_applies_to_the_gateway(
    secure_agent: Agent, files: SecureFiles, pki: PKI
) -> None:
    await seed(secure_agent, pki)
    async with http_for(secure_agent, pki.nobody) as client:
        assert (await client.get("/v1/records/0")).status_code == 403
        files.policy.write_text("p, nobody, *, consume\n")
        secure_agent.reload_security()
        # The same connection: the decision is per request, not per connection.
        answer = await client.get("/v1/records/0")
        assert answer.status_code == 200
        assert answer.json()["value"] == b64(b"seed")


async def test_metrics_are_open_and_count_denials(secure_agent: Agent, pki: PKI) -> None:
    async with http_for(secure_agent, pki.nobody) as client:
        assert (await client.post("/", json={"record": {"value": b64(b"x")}})).status_code == 403
        async with stub_for(secure_agent, pki.nobody) as stub:
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Consume(log_pb2.ConsumeRequest(offset=0), timeout=10)
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    samples = dict(
        line.rsplit(" ", 1) for line in answer.text.splitlines() if line.startswith("proglog_acl")
    )
    assert float(samples['proglog_acl_denials_total{action="produce"}']) == 1
    assert float(samples['proglog_acl_denials_total{action="consume"}']) == 1

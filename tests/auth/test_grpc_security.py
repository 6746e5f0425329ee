"""Mutual TLS and the ACL on every gRPC method, over real TLS on loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from pyproglog.agent import Agent
from pyproglog.api.raft.v1 import raft_pb2
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.auth.acl import Authorizer
from pyproglog.auth.errors import SecurityError
from pyproglog.auth.tls import ServerTLS, TLSFiles
from pyproglog.config import Settings
from pyproglog.server.authz import METHOD_ACTIONS, PEER_SERVICE_NAME, SERVICE_NAME
from pyproglog.server.grpc.authz import AuthInterceptor
from tests.auth.conftest import (
    PKI,
    Identity,
    SecureFiles,
    log_unchanged,
    rotate_ca,
    running,
    stub_for,
)

STEP = 10.0  # deadline for anything that should happen at once

Stub = log_pb2_grpc.LogStub


def rec(value: bytes) -> log_pb2.Record:
    return log_pb2.Record(value=value)


async def produce(stub: Stub) -> Any:
    return await stub.Produce(log_pb2.ProduceRequest(record=rec(b"new")), timeout=STEP)


async def produce_stream(stub: Stub) -> Any:
    call = stub.ProduceStream(timeout=STEP)
    await call.write(log_pb2.ProduceRequest(record=rec(b"new")))
    answer = await call.read()
    await call.done_writing()
    return answer


async def produce_batch(stub: Stub) -> Any:
    request = log_pb2.ProduceBatchRequest(records=[rec(b"a"), rec(b"b")])
    return await stub.ProduceBatch(request, timeout=STEP)


async def consume(stub: Stub) -> Any:
    return await stub.Consume(log_pb2.ConsumeRequest(offset=0), timeout=STEP)


async def first_then_cancel(call: Any) -> Any:
    first = await call.read()
    call.cancel()
    return first


async def consume_stream(stub: Stub) -> Any:
    return await first_then_cancel(
        stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0), timeout=STEP)
    )


async def fetch(stub: Stub) -> Any:
    return await stub.Fetch(log_pb2.FetchRequest(offset=0, max_records=10), timeout=STEP)


async def consume_batch_stream(stub: Stub) -> Any:
    return await first_then_cancel(
        stub.ConsumeBatchStream(log_pb2.ConsumeBatchStreamRequest(offset=0), timeout=STEP)
    )


async def log_info(stub: Stub) -> Any:
    return await stub.GetLogInfo(log_pb2.GetLogInfoRequest(), timeout=STEP)


async def offset_for_timestamp(stub: Stub) -> Any:
    request = log_pb2.GetOffsetForTimestampRequest(timestamp_ms=0)
    return await stub.GetOffsetForTimestamp(request, timeout=STEP)


async def get_servers(stub: Stub) -> Any:
    return await stub.GetServers(log_pb2.GetServersRequest(), timeout=STEP)


# method -> (call, action named in a denial, what root's answer must show)
CALLS: dict[str, tuple[Callable[[Stub], Awaitable[Any]], str, Callable[[Any], bool]]] = {
    "Produce": (produce, "produce", lambda r: r.offset == 2),
    "ProduceStream": (produce_stream, "produce", lambda r: r.offset == 2),
    "ProduceBatch": (produce_batch, "produce", lambda r: (r.base_offset, r.count) == (2, 2)),
    "Consume": (consume, "consume", lambda r: r.record.value == b"seed-0"),
    "ConsumeStream": (consume_stream, "consume", lambda r: r.record.value == b"seed-0"),
    "Fetch": (fetch, "consume", lambda r: [x.value for x in r.records] == [b"seed-0", b"seed-1"]),
    "ConsumeBatchStream": (
        consume_batch_stream,
        "consume",
        lambda r: [x.value for x in r.records] == [b"seed-0", b"seed-1"],
    ),
    "GetLogInfo": (log_info, "consume", lambda r: r.next_offset == 2),
    "GetOffsetForTimestamp": (offset_for_timestamp, "consume", lambda r: r.found and r.offset == 0),
    "GetServers": (get_servers, "produce or consume", lambda r: len(r.servers) == 1),
}


async def seed(node: Agent, pki: PKI) -> None:
    async with stub_for(node, pki.root) as stub:
        request = log_pb2.ProduceBatchRequest(records=[rec(b"seed-0"), rec(b"seed-1")])
        await stub.ProduceBatch(request, timeout=STEP)


def test_every_log_method_has_an_action() -> None:
    # A new RPC without an entry would be closed to everyone; this makes it a decision.
    service = log_pb2.DESCRIPTOR.services_by_name["Log"]
    peer = raft_pb2.DESCRIPTOR.services_by_name["Raft"]
    assert set(METHOD_ACTIONS) == {f"/{SERVICE_NAME}/{m.name}" for m in service.methods} | {
        f"/{PEER_SERVICE_NAME}/{m.name}" for m in peer.methods
    }
    assert set(CALLS) == {m.name for m in service.methods}


@pytest.mark.parametrize("method", sorted(CALLS))
async def test_root_may_call(method: str, secure_agent: Agent, pki: PKI) -> None:
    await seed(secure_agent, pki)
    call, _, expected = CALLS[method]
    async with stub_for(secure_agent, pki.root) as stub:
        answer = await call(stub)
    assert expected(answer), answer


@pytest.mark.parametrize("method", sorted(CALLS))
async def test_nobody_is_denied_without_effect(method: str, secure_agent: Agent, pki: PKI) -> None:
    await seed(secure_agent, pki)
    call, action, _ = CALLS[method]
    with log_unchanged(secure_agent):
        async with stub_for(secure_agent, pki.nobody) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(stub)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == f"nobody not permitted to {action} to *"


async def test_denial_carries_a_localized_message(secure_agent: Agent, pki: PKI) -> None:
    async with stub_for(secure_agent, pki.nobody) as stub:
        call = stub.Produce(log_pb2.ProduceRequest(record=rec(b"x")), timeout=STEP)
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        status = await rpc_status.aio.from_call(call)
    assert status is not None
    detail = error_details_pb2.LocalizedMessage()
    assert status.details[0].Unpack(detail)
    assert (detail.locale, detail.message) == ("en-US", "nobody not permitted to produce to *")
    info = error_details_pb2.ErrorInfo()
    assert status.details[1].Unpack(info)
    assert (info.domain, info.reason) == ("proglog.dev", "PERMISSION_DENIED")
    assert dict(info.metadata) == {"subject": "nobody", "action": "produce", "object": "*"}


async def test_health_is_open_to_any_verified_client(secure_agent: Agent, pki: PKI) -> None:
    creds = pki.nobody.grpc_credentials()
    async with grpc.aio.secure_channel(secure_agent.rpc_addr, creds) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=STEP
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("who", ["anonymous", "stranger", "expired"])
async def test_unverifiable_clients_cannot_connect(who: str, secure_agent: Agent, pki: PKI) -> None:
    identity: Identity = getattr(pki, who)
    with log_unchanged(secure_agent):
        async with stub_for(secure_agent, identity) as stub:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await produce(stub)
        # The handshake fails: there is no call to answer with a status of its own.
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_cannot_talk_to_a_tls_server(secure_agent: Agent) -> None:
    with log_unchanged(secure_agent):
        async with grpc.aio.insecure_channel(secure_agent.rpc_addr) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await produce(log_pb2_grpc.LogStub(channel))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_without_client_certificates_the_acl_refuses_as_unauthenticated(
    files: SecureFiles, pki: PKI, tmp_path: Path
) -> None:
    # TLS without a client CA: nobody is identified, so the ACL can allow no one.
    settings = files.settings(tmp_path / "data", server_tls_ca_file=None)
    async with running(settings) as node, stub_for(node, pki.anonymous) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await produce(stub)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.details() == "no verified client certificate"
        assert node.service is not None and node.service.info().next_offset == 0


async def test_tls_without_acl_serves_any_verified_client(
    files: SecureFiles, pki: PKI, tmp_path: Path
) -> None:
    settings = files.settings(tmp_path / "data", acl_model_file=None, acl_policy_file=None)
    async with running(settings) as node, stub_for(node, pki.nobody) as stub:
        assert (await produce(stub)).offset == 0
        assert node.http_url.startswith("https://")


# -- reloads ----------------------------------------------------------------------


async def test_policy_reload_takes_effect_and_a_broken_policy_is_rejected(
    secure_agent: Agent, files: SecureFiles, pki: PKI
) -> None:
    await seed(secure_agent, pki)
    async with stub_for(secure_agent, pki.nobody) as stub:
        with pytest.raises(grpc.aio.AioRpcError):
            await consume(stub)

        files.policy.write_text("p, root, *, produce\np, root, *, consume\np, nobody, *, consume\n")
        secure_agent.reload_security()
        assert (await consume(stub)).record.value == b"seed-0"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await produce(stub)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        files.policy.write_text("p, nobody, *, produce\nthis is not a policy line\n")
        with pytest.raises(SecurityError, match=r"policy.csv:2: unknown policy type"):
            secure_agent.reload_security()
        # The policy in force is the last good one: consume yes, produce no.
        assert (await consume(stub)).record.value == b"seed-0"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await produce(stub)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_revocation_ends_an_open_consume_stream(
    secure_agent: Agent, files: SecureFiles, pki: PKI
) -> None:
    await seed(secure_agent, pki)
    async with stub_for(secure_agent, pki.root) as stub:
        call = stub.ConsumeStream(log_pb2.ConsumeRequest(offset=0), timeout=STEP)
        assert (await call.read()).record.value == b"seed-0"
        assert (await call.read()).record.value == b"seed-1"
        files.policy.write_text("p, root, *, produce\n")
        secure_agent.reload_security()
        await produce(stub)  # the record the stream must not deliver
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == "root not permitted to consume to *"


async def test_revocation_ends_an_open_produce_stream(
    secure_agent: Agent, files: SecureFiles, pki: PKI
) -> None:
    async with stub_for(secure_agent, pki.root) as stub:
        call = stub.ProduceStream(timeout=STEP)
        await call.write(log_pb2.ProduceRequest(record=rec(b"before")))
        assert (await call.read()).offset == 0
        files.policy.write_text("p, root, *, consume\n")
        secure_agent.reload_security()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.write(log_pb2.ProduceRequest(record=rec(b"after")))
            await call.read()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == "root not permitted to produce to *"
    assert secure_agent.service is not None
    assert secure_agent.service.info().next_offset == 1


async def test_certificate_reload_serves_the_new_ca_and_rejects_a_broken_file(
    secure_agent: Agent, files: SecureFiles, pki: PKI, tmp_path: Path
) -> None:
    # A new CA with its own server and root certificates replaces the files.
    new_root = rotate_ca(files, tmp_path / "new")
    secure_agent.reload_security()
    async with stub_for(secure_agent, new_root) as stub:
        assert (await produce(stub)).offset == 0
    async with stub_for(secure_agent, pki.root) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await produce(stub)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    files.key.write_text("not a key\n")
    with pytest.raises(SecurityError, match="holds no usable key"):
        secure_agent.reload_security()
    async with stub_for(secure_agent, new_root) as stub:
        assert (await produce(stub)).offset == 1


async def test_a_node_does_not_start_with_unusable_material(
    files: SecureFiles, tmp_path: Path
) -> None:
    files.policy.write_text("p, root, *\n")
    node = Agent(Settings.load(files.settings(tmp_path / "d")))
    with pytest.raises(SecurityError, match="invalid policy size"):
        await node.start()
    await node.stop()
    assert node.rpc_addr == ""


async def test_a_method_missing_from_the_table_is_closed(files: SecureFiles, pki: PKI) -> None:
    # Another service on the same server, as a future RPC would be: fail closed.
    async def ping(request: bytes, context: object) -> bytes:
        return b"pong"

    acl = Authorizer(files.model, files.policy)
    server = grpc.aio.server(interceptors=[AuthInterceptor(acl)])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}
            )
        ]
    )
    tls = ServerTLS(TLSFiles(files.cert, files.key, files.ca))
    port = server.add_secure_port("127.0.0.1:0", tls.grpc_credentials())
    await server.start()
    try:
        creds = pki.root.grpc_credentials()
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            call = channel.unary_unary("/test.Echo/Ping")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(b"ping", timeout=STEP)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.value.details() == "root not permitted to /test.Echo/Ping to *"

            files.policy.write_text("p, root, *, /test.Echo/Ping\n")
            acl.reload()
            assert await call(b"ping", timeout=STEP) == b"pong"
    finally:
        await server.stop(None)

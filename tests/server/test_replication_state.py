"""The replication state a node reports (GetLogInfo, GET /v1/info) and the voter flag
of GetServers / /v1/servers, on both transports, against real in-process nodes.

A plain node is "standalone"; a node bootstrapped as a cluster of one is its
leader, with itself as its one replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from pyproglog.agent import Agent
from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.testing import free_port, started_agent

STEP = 20.0  # deadline for anything that should happen "at once" (2 cores)


async def grpc_info(addr: str) -> log_pb2.GetLogInfoResponse:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        info: log_pb2.GetLogInfoResponse = await stub.GetLogInfo(
            log_pb2.GetLogInfoRequest(), timeout=STEP
        )
        return info


async def grpc_servers(addr: str) -> list[log_pb2.Server]:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        resp = await stub.GetServers(log_pb2.GetServersRequest(), timeout=STEP)
        return list(resp.servers)


async def test_a_single_node_is_standalone(agent: Agent) -> None:
    info = await grpc_info(agent.rpc_addr)
    assert (info.role, info.term, info.leader_id, info.leader_addr) == ("standalone", 0, "", "")
    assert list(info.replicas) == []
    (server,) = await grpc_servers(agent.rpc_addr)
    assert (server.is_leader, server.voter) == (True, True)

    async with httpx.AsyncClient(base_url=agent.http_url, timeout=STEP) as http:
        body = (await http.get("/v1/info")).json()
        servers = (await http.get("/v1/servers")).json()["servers"]
    assert {k: body[k] for k in ("role", "term", "leader_id", "leader_addr", "replicas")} == {
        "role": "standalone",
        "term": 0,
        "leader_id": None,
        "leader_addr": None,
        "replicas": [],
    }
    assert servers == [
        {
            "id": agent.settings.node_name,
            "rpc_addr": agent.rpc_addr,
            "is_leader": True,
            "voter": True,
        }
    ]


@pytest.fixture
async def cluster_of_one(tmp_path: Path) -> AsyncIterator[Agent]:
    settings = {
        "data_dir": tmp_path / "data",
        "rpc_port": 0,
        "http_addr": "127.0.0.1:0",
        "node_name": "solo",
        "bind_addr": f"127.0.0.1:{free_port()}",
        "bootstrap": True,
        "gossip_profile": "local",
    }
    async with started_agent(settings) as node:
        yield node


async def leader_info(addr: str) -> log_pb2.GetLogInfoResponse:
    """GetLogInfo once the node has elected itself (it campaigns at once when alone)."""
    async with asyncio.timeout(STEP):
        while True:
            info = await grpc_info(addr)
            if info.role == "leader":
                return info
            await asyncio.sleep(0.05)


async def test_a_cluster_of_one_reports_itself_as_leader_and_replica(
    cluster_of_one: Agent,
) -> None:
    node = cluster_of_one
    async with grpc.aio.insecure_channel(node.rpc_addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        await leader_info(node.rpc_addr)
        await stub.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"x")), timeout=STEP)
    info = await grpc_info(node.rpc_addr)
    assert info.role == "leader"
    assert info.term >= 1
    assert (info.leader_id, info.leader_addr) == ("solo", node.rpc_addr)
    (replica,) = info.replicas
    assert (replica.id, replica.rpc_addr, replica.voter) == ("solo", node.rpc_addr, True)
    assert replica.match_index >= 2  # the new leader's NOOP, then the produced entry
    assert replica.lag_entries == 0
    (server,) = await grpc_servers(node.rpc_addr)
    assert (server.id, server.is_leader, server.voter) == ("solo", True, True)

    async with httpx.AsyncClient(base_url=node.http_url, timeout=STEP) as http:
        body = (await http.get("/v1/info")).json()
    assert body["role"] == "leader" and body["term"] == info.term
    assert (body["leader_id"], body["leader_addr"]) == ("solo", node.rpc_addr)
    assert body["replicas"] == [
        {
            "id": "solo",
            "rpc_addr": node.rpc_addr,
            "voter": True,
            "match_index": replica.match_index,
            "lag_entries": 0,
        }
    ]


async def test_linearizable_reads_on_both_transports(cluster_of_one: Agent) -> None:
    node = cluster_of_one
    await leader_info(node.rpc_addr)
    async with grpc.aio.insecure_channel(node.rpc_addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        produced = await stub.Produce(
            log_pb2.ProduceRequest(record=log_pb2.Record(value=b"lin")), timeout=STEP
        )
        got = await stub.Consume(
            log_pb2.ConsumeRequest(offset=produced.offset, linearizable=True), timeout=STEP
        )
        assert got.record.value == b"lin"
        fetched = await stub.Fetch(
            log_pb2.FetchRequest(offset=produced.offset, linearizable=True), timeout=STEP
        )
        assert [r.value for r in fetched.records] == [b"lin"]
    async with httpx.AsyncClient(base_url=node.http_url, timeout=STEP) as http:
        one = await http.get(f"/v1/records/{produced.offset}", params={"linearizable": "true"})
        many = await http.get(
            "/v1/records", params={"offset": produced.offset, "linearizable": "true"}
        )
    assert one.status_code == 200, one.text
    assert many.status_code == 200, many.text
    assert [r["offset"] for r in many.json()["records"]] == [produced.offset]


async def test_a_linearizable_read_on_a_single_node_is_a_plain_read(agent: Agent) -> None:
    async with grpc.aio.insecure_channel(agent.rpc_addr) as channel:
        stub = log_pb2_grpc.LogStub(channel)
        await stub.Produce(log_pb2.ProduceRequest(record=log_pb2.Record(value=b"x")), timeout=STEP)
        got = await stub.Consume(log_pb2.ConsumeRequest(offset=0, linearizable=True), timeout=STEP)
    assert got.record.value == b"x"

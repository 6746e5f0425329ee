"""Idempotent ProduceBatch on a single `proglog serve`: retries answered with the first
offsets, across a kill -9 and restart; out-of-order batches refused, on gRPC and HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from pyproglog.api.v1 import log_pb2, log_pb2_grpc
from pyproglog.client._errors import from_rpc_error
from pyproglog.testing import ServerProcess

PID = 0x5EED_F00D_0001
CALL = 10.0


def batch(stub: log_pb2_grpc.LogStub, values: list[bytes], seq: int, pid: int = PID) -> Any:
    req = log_pb2.ProduceBatchRequest(
        records=[log_pb2.Record(value=v) for v in values], producer_id=pid, sequence=seq
    )
    return stub.ProduceBatch(req, timeout=CALL)


def values_of(stub: log_pb2_grpc.LogStub) -> list[bytes]:
    resp = stub.Fetch(log_pb2.FetchRequest(offset=0, max_records=10_000), timeout=CALL)
    return [r.value for r in resp.records]


@pytest.mark.timeout(120)
def test_a_retried_batch_is_stored_once_even_across_a_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as node, grpc.insecure_channel(node.rpc_addr) as ch:
        stub = log_pb2_grpc.LogStub(ch)
        first = batch(stub, [b"a", b"b"], 0)
        assert (first.base_offset, first.count, first.duplicate) == (0, 2, False)
        again = batch(stub, [b"a", b"b"], 0)
        assert (again.base_offset, again.last_offset, again.duplicate) == (0, 1, True)
        stub.ProduceBatch(log_pb2.ProduceBatchRequest(records=[log_pb2.Record(value=b"x")]))
        assert batch(stub, [b"c"], 1).base_offset == 3
        node.kill()  # SIGKILL: the producer table must come back from disk
    with ServerProcess(data) as node, grpc.insecure_channel(node.rpc_addr) as ch:
        stub = log_pb2_grpc.LogStub(ch)
        retry = batch(stub, [b"c"], 1)
        assert (retry.base_offset, retry.duplicate) == (3, True)
        assert batch(stub, [b"d"], 2).base_offset == 4
        assert values_of(stub) == [b"a", b"b", b"x", b"c", b"d"]


@pytest.mark.timeout(60)
def test_an_out_of_order_batch_is_refused_with_the_expected_sequence(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as node, grpc.insecure_channel(node.rpc_addr) as ch:
        stub = log_pb2_grpc.LogStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            batch(stub, [b"late"], 3)
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        err = from_rpc_error(caught.value, addr=node.rpc_addr, connected=True)
        assert err.error_reason == "OUT_OF_ORDER_SEQUENCE"
        assert err.error_metadata["expected_sequence"] == "0"
        assert err.error_metadata["producer_id"] == str(PID)
        assert values_of(stub) == []

        # The same over HTTP: 409 with the reason, and a duplicate flagged in the answer.
        url = f"{node.http_url}/v1/records"

        def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            req = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=CALL) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        rec = {"records": [{"value": "aGk="}], "producer_id": 77, "sequence": 0}
        assert post(rec) == (
            201,
            {"base_offset": 0, "last_offset": 0, "count": 1, "offsets": [0], "duplicate": False},
        )
        status, body = post(rec)
        assert (status, body["duplicate"], body["base_offset"]) == (201, True, 0)
        status, body = post({**rec, "sequence": 5})
        assert status == 409
        assert body["error"]["reason"] == "OUT_OF_ORDER_SEQUENCE"
        assert body["error"]["metadata"]["expected_sequence"] == "1"

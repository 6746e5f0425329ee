"""Raft messages to and from `proglog.raft.v1` protobuf.

DATA entries travel as their records' `log.v1` encoding (what the log stores
and what `DataBatch.encoded` holds), with the record count and a CRC-32C of
those bytes: the receiver checks the checksum and keeps the bytes as they came
(`DataBatch(encoded=...)`); nothing is decoded record by record on arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import crc32c

from pyproglog.api.raft.v1 import raft_pb2
from pyproglog.cluster.payload import DataBatch, StoredBatch
from pyproglog.log import (
    DuplicateInFlight,
    LogError,
    OutOfOrderSequence,
    ProducerBatch,
    Write,
)
from pyproglog.raft import ConfState, Entry, EntryKind, Message, MsgType, SnapshotMeta
from pyproglog.server.commitlog import WriteOutcome, Written

__all__ = [
    "CodecError",
    "Resolve",
    "carries_membership",
    "checksum",
    "forward_request",
    "message_from_proto",
    "message_to_proto",
    "outcomes_from_proto",
    "outcomes_to_proto",
    "producers_from_proto",
    "producers_to_proto",
    "writes_from_forward",
]

# Reads a stored entry's records, as stored (`Log.read_encoded(...).data`).
Resolve = Callable[[StoredBatch], bytes]

# node id -> (name, rpc_addr)
Addresses = Mapping[int, tuple[str, str]]


class CodecError(ValueError):
    """A message that cannot be taken: a bad checksum or a malformed field."""


_TYPE_TO_PB: dict[MsgType, raft_pb2.MessageType.ValueType] = {
    MsgType.PRE_VOTE: raft_pb2.MESSAGE_TYPE_PRE_VOTE,
    MsgType.PRE_VOTE_RESP: raft_pb2.MESSAGE_TYPE_PRE_VOTE_RESP,
    MsgType.VOTE: raft_pb2.MESSAGE_TYPE_VOTE,
    MsgType.VOTE_RESP: raft_pb2.MESSAGE_TYPE_VOTE_RESP,
    MsgType.APPEND: raft_pb2.MESSAGE_TYPE_APPEND,
    MsgType.APPEND_RESP: raft_pb2.MESSAGE_TYPE_APPEND_RESP,
    MsgType.HEARTBEAT: raft_pb2.MESSAGE_TYPE_HEARTBEAT,
    MsgType.HEARTBEAT_RESP: raft_pb2.MESSAGE_TYPE_HEARTBEAT_RESP,
    MsgType.SNAPSHOT: raft_pb2.MESSAGE_TYPE_SNAPSHOT,
    MsgType.TIMEOUT_NOW: raft_pb2.MESSAGE_TYPE_TIMEOUT_NOW,
    MsgType.READ_INDEX: raft_pb2.MESSAGE_TYPE_READ_INDEX,
    MsgType.READ_INDEX_RESP: raft_pb2.MESSAGE_TYPE_READ_INDEX_RESP,
}
_TYPE_FROM_PB = {v: k for k, v in _TYPE_TO_PB.items()}

_KIND_TO_PB: dict[EntryKind, raft_pb2.EntryKind.ValueType] = {
    EntryKind.DATA: raft_pb2.ENTRY_KIND_DATA,
    EntryKind.NOOP: raft_pb2.ENTRY_KIND_NOOP,
    EntryKind.CONFIG: raft_pb2.ENTRY_KIND_CONFIG,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}


def checksum(data: bytes) -> int:
    return int(crc32c.crc32c(data))


def _sorted(ids: Iterable[int]) -> list[int]:
    # Sorted: the same membership always encodes to the same bytes.
    return sorted(ids)


def _entry_to_proto(e: Entry, resolve: Resolve, out: raft_pb2.Entry) -> None:
    out.index = e.index
    out.term = e.term
    out.kind = _KIND_TO_PB[e.kind]
    out.size = e.size
    p = e.payload
    if e.kind is EntryKind.DATA:
        if isinstance(p, DataBatch):
            records, count = p.encoded, p.count
        elif isinstance(p, StoredBatch):
            records, count = resolve(p), p.count
        else:
            raise CodecError(f"DATA entry {e.index} has no batch payload: {p!r}")
        out.records = records
        out.count = count
        out.crc32c = checksum(records)
        if p.producers:
            out.producers.extend(producers_to_proto(p.producers))
    elif e.kind is EntryKind.CONFIG:
        if not isinstance(p, ConfState):
            raise CodecError(f"CONFIG entry {e.index} has no ConfState payload: {p!r}")
        out.voters.extend(_sorted(p.voters))
        out.learners.extend(_sorted(p.learners))


def _entry_from_proto(pb: raft_pb2.Entry) -> Entry:
    kind = _KIND_FROM_PB.get(pb.kind)
    if kind is None:
        raise CodecError(f"entry {pb.index}: unknown kind {pb.kind}")
    payload: object = None
    if kind is EntryKind.DATA:
        records = pb.records
        if checksum(records) != pb.crc32c:
            raise CodecError(f"entry {pb.index}: records fail their CRC-32C")
        payload = DataBatch(
            encoded=records, count=pb.count, producers=producers_from_proto(pb.producers)
        )
    elif kind is EntryKind.CONFIG:
        payload = ConfState(frozenset(pb.voters), frozenset(pb.learners))
    return Entry(index=pb.index, term=pb.term, kind=kind, size=pb.size, payload=payload)


def producers_to_proto(batches: Iterable[ProducerBatch]) -> list[raft_pb2.ProducerBatch]:
    return [
        raft_pb2.ProducerBatch(
            producer_id=b.producer_id, sequence=b.sequence, start=b.start, count=b.count
        )
        for b in batches
    ]


def producers_from_proto(pbs: Iterable[raft_pb2.ProducerBatch]) -> tuple[ProducerBatch, ...]:
    return tuple(ProducerBatch(b.producer_id, b.sequence, b.start, b.count) for b in pbs)


def carries_membership(m: Message) -> bool:
    """Whether `m` tells a membership (the receiver then needs the members' addresses)."""
    return m.snapshot is not None or any(e.kind is EntryKind.CONFIG for e in m.entries)


def message_to_proto(
    m: Message, resolve: Resolve, addresses: Addresses | None
) -> raft_pb2.RaftMessage:
    """The wire form of `m`. `addresses` are attached only when `m` carries a
    membership (a CONFIG entry or a snapshot). Raises CodecError for a payload
    the wire cannot carry, and whatever `resolve` raises."""
    pb = raft_pb2.RaftMessage(
        type=_TYPE_TO_PB[m.type],
        to=m.to,
        frm=m.frm,
        term=m.term,
        log_term=m.log_term,
        index=m.index,
        commit=m.commit,
        reject=m.reject,
        reject_hint=m.reject_hint,
        context=m.context,
        force=m.force,
    )
    if m.snapshot is not None:
        s = m.snapshot
        pb.snapshot.index = s.index
        pb.snapshot.term = s.term
        pb.snapshot.voters.extend(_sorted(s.conf.voters))
        pb.snapshot.learners.extend(_sorted(s.conf.learners))
        pb.snapshot.lowest_offset = s.lowest_offset
    for e in m.entries:
        _entry_to_proto(e, resolve, pb.entries.add())
    if addresses and carries_membership(m):
        for node, (name, rpc_addr) in addresses.items():
            pb.addresses[node].name = name
            pb.addresses[node].rpc_addr = rpc_addr
    return pb


def message_from_proto(pb: raft_pb2.RaftMessage) -> tuple[Message, dict[int, tuple[str, str]]]:
    """The message and the member addresses it carried; CodecError when malformed."""
    msg_type = _TYPE_FROM_PB.get(pb.type)
    if msg_type is None:
        raise CodecError(f"unknown message type {pb.type}")
    if pb.frm == 0 or pb.to == 0:
        raise CodecError("a message names node 0 as its sender or receiver")
    snapshot = None
    if pb.HasField("snapshot"):
        s = pb.snapshot
        snapshot = SnapshotMeta(
            index=s.index,
            term=s.term,
            conf=ConfState(frozenset(s.voters), frozenset(s.learners)),
            lowest_offset=s.lowest_offset,
        )
    message = Message(
        type=msg_type,
        to=pb.to,
        frm=pb.frm,
        term=pb.term,
        log_term=pb.log_term,
        index=pb.index,
        entries=tuple(_entry_from_proto(e) for e in pb.entries),
        commit=pb.commit,
        reject=pb.reject,
        reject_hint=pb.reject_hint,
        context=pb.context,
        snapshot=snapshot,
        force=pb.force,
    )
    addresses = {node: (a.name, a.rpc_addr) for node, a in pb.addresses.items()}
    return message, addresses


def forward_request(
    batch: DataBatch, writes: Sequence[ProducerBatch] = ()
) -> raft_pb2.ForwardRequest:
    """A group of client writes, as one batch of records and where each write's are."""
    records = batch.encoded
    return raft_pb2.ForwardRequest(
        records=records,
        count=batch.count,
        crc32c=checksum(records),
        writes=producers_to_proto(writes),
    )


def writes_from_forward(pb: raft_pb2.ForwardRequest) -> list[Write]:
    """The client writes of a forwarded group (one plain write when it names none)."""
    if checksum(pb.records) != pb.crc32c:
        raise CodecError("forwarded records fail their CRC-32C")
    batch = DataBatch(encoded=pb.records, count=pb.count)
    records = batch.records
    if not pb.writes:
        return [Write(records)]
    writes: list[Write] = []
    at = 0
    for w in pb.writes:
        if w.start != at or w.count == 0 or at + w.count > len(records):
            raise CodecError("forwarded writes do not cover the records in order")
        writes.append(Write(records[at : at + w.count], w.producer_id, w.sequence))
        at += w.count
    if at != len(records):
        raise CodecError("forwarded writes do not cover the records in order")
    return writes


def outcomes_to_proto(outcomes: Sequence[WriteOutcome]) -> list[raft_pb2.WriteOutcome]:
    out: list[raft_pb2.WriteOutcome] = []
    for o in outcomes:
        if isinstance(o, Written):
            out.append(raft_pb2.WriteOutcome(offset=o.offset, duplicate=o.duplicate))
        elif isinstance(o, OutOfOrderSequence):
            out.append(
                raft_pb2.WriteOutcome(
                    error_reason="OUT_OF_ORDER_SEQUENCE",
                    error_message=str(o),
                    expected_sequence=o.expected,
                )
            )
        elif isinstance(o, DuplicateInFlight):
            out.append(
                raft_pb2.WriteOutcome(error_reason="DUPLICATE_IN_FLIGHT", error_message=str(o))
            )
        else:
            raise CodecError(f"a write outcome that cannot be forwarded: {o!r}")
    return out


def outcomes_from_proto(
    pbs: Sequence[raft_pb2.WriteOutcome], writes: Sequence[Write]
) -> list[WriteOutcome]:
    if len(pbs) != len(writes):
        raise CodecError(f"the leader answered {len(pbs)} outcomes for {len(writes)} writes")
    out: list[WriteOutcome] = []
    for pb, w in zip(pbs, writes, strict=True):
        err: LogError | None = None
        if pb.error_reason == "OUT_OF_ORDER_SEQUENCE":
            err = OutOfOrderSequence(w.producer_id, w.sequence, pb.expected_sequence)
        elif pb.error_reason == "DUPLICATE_IN_FLIGHT":
            err = DuplicateInFlight(w.producer_id, w.sequence)
        elif pb.error_reason:
            raise CodecError(f"the leader answered a write with {pb.error_reason}")
        out.append(err if err is not None else Written(pb.offset, pb.duplicate))
    return out

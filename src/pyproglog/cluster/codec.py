"""Raft messages to and from `proglog.raft.v1` protobuf.

DATA entries travel as their records' `log.v1` encoding (what the log stores
and what `DataBatch.encoded` holds), with the record count and a CRC-32C of
those bytes: the receiver checks the checksum and keeps the bytes as they came
(`DataBatch(encoded=...)`); nothing is decoded record by record on arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import crc32c

from pyproglog.api.raft.v1 import raft_pb2
from pyproglog.cluster.payload import DataBatch, StoredBatch
from pyproglog.raft import ConfState, Entry, EntryKind, Message, MsgType, SnapshotMeta

__all__ = [
    "CodecError",
    "Resolve",
    "batch_from_forward",
    "carries_membership",
    "checksum",
    "forward_request",
    "message_from_proto",
    "message_to_proto",
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
        payload = DataBatch(encoded=records, count=pb.count)
    elif kind is EntryKind.CONFIG:
        payload = ConfState(frozenset(pb.voters), frozenset(pb.learners))
    return Entry(index=pb.index, term=pb.term, kind=kind, size=pb.size, payload=payload)


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


def forward_request(batch: DataBatch) -> raft_pb2.ForwardRequest:
    records = batch.encoded
    return raft_pb2.ForwardRequest(records=records, count=batch.count, crc32c=checksum(records))


def batch_from_forward(pb: raft_pb2.ForwardRequest) -> DataBatch:
    if checksum(pb.records) != pb.crc32c:
        raise CodecError("forwarded records fail their CRC-32C")
    return DataBatch(encoded=pb.records, count=pb.count)

"""Raft messages survive the wire exactly; damaged records are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyproglog.api.raft.v1 import raft_pb2
from pyproglog.api.v1 import log_pb2
from pyproglog.cluster.codec import (
    CodecError,
    forward_request,
    message_from_proto,
    message_to_proto,
    outcomes_from_proto,
    outcomes_to_proto,
    writes_from_forward,
)
from pyproglog.cluster.payload import DataBatch, StoredBatch, encode_records
from pyproglog.log import DuplicateInFlight, OutOfOrderSequence, ProducerBatch
from pyproglog.raft import ConfState, Entry, EntryKind, Message, MsgType, SnapshotMeta
from pyproglog.server.commitlog import WriteOutcome, Written

u64 = st.integers(min_value=0, max_value=2**64 - 1)
small = st.integers(min_value=0, max_value=2**40)
node_ids = st.integers(min_value=1, max_value=2**64 - 1)
records = st.lists(
    st.builds(
        log_pb2.Record,
        value=st.binary(max_size=64),
        type=st.integers(min_value=0, max_value=2**32 - 1),
        timestamp_ms=st.integers(min_value=0, max_value=2**62),
    ),
    max_size=5,
)
conf_states = st.builds(
    ConfState,
    voters=st.frozensets(node_ids, max_size=5),
    learners=st.frozensets(node_ids, max_size=3),
)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(EntryKind))
    payload: object = None
    if kind is EntryKind.DATA:
        recs = draw(records)
        # Either shape the leader builds: from records, or as received (encoded).
        if draw(st.booleans()):
            payload = DataBatch(records=recs)
        else:
            payload = DataBatch(encoded=encode_records(recs), count=len(recs))
    elif kind is EntryKind.CONFIG:
        payload = draw(conf_states)
    return Entry(index=draw(small), term=draw(small), kind=kind, size=draw(u64), payload=payload)


messages = st.builds(
    Message,
    type=st.sampled_from(MsgType),
    to=node_ids,
    frm=node_ids,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries(), max_size=4).map(tuple),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    context=st.binary(max_size=16),
    snapshot=st.none()
    | st.builds(SnapshotMeta, index=u64, term=u64, conf=conf_states, lowest_offset=u64),
    force=st.booleans(),
)
addresses = st.dictionaries(node_ids, st.tuples(st.text(max_size=8), st.text(max_size=20)))


def no_resolve(batch: StoredBatch) -> bytes:
    raise AssertionError(f"nothing stored here: {batch}")


def comparable(m: Message) -> Message:
    """`m` with each DATA payload as (count, records): batches compare by their records."""

    def entry(e: Entry) -> Entry:
        if isinstance(e.payload, DataBatch):
            p = e.payload
            return Entry(e.index, e.term, e.kind, e.size, (p.count, list(p.records)))
        return e

    return Message(
        m.type, m.to, m.frm, m.term, m.log_term, m.index, tuple(entry(e) for e in m.entries),
        m.commit, m.reject, m.reject_hint, m.context, m.snapshot, m.force,
    )  # fmt: skip


def wire(pb: raft_pb2.RaftMessage) -> raft_pb2.RaftMessage:
    return raft_pb2.RaftMessage.FromString(pb.SerializeToString())


@given(messages, addresses)
def test_messages_round_trip_exactly(m: Message, book: dict[int, tuple[str, str]]) -> None:
    got, got_book = message_from_proto(wire(message_to_proto(m, no_resolve, book)))
    assert comparable(got) == comparable(m)
    # Addresses travel only with a membership: a CONFIG entry or a snapshot.
    config = m.snapshot is not None or any(e.kind is EntryKind.CONFIG for e in m.entries)
    assert got_book == (book if config else {})


def test_received_batches_keep_the_bytes_as_sent() -> None:
    recs = [log_pb2.Record(value=b"a"), log_pb2.Record(value=b"bc", type=7)]
    encoded = encode_records(recs)
    entry = Entry(1, 1, EntryKind.DATA, 3, DataBatch(records=recs))
    m = Message(MsgType.APPEND, to=2, frm=1, term=1, entries=(entry,))
    got, _ = message_from_proto(wire(message_to_proto(m, no_resolve, None)))
    batch = got.entries[0].payload
    assert isinstance(batch, DataBatch)
    assert (batch.encoded, batch.count) == (encoded, 2)


def test_stored_batches_are_read_through_resolve() -> None:
    recs = [log_pb2.Record(value=b"stored")]
    asked: list[StoredBatch] = []

    def resolve(batch: StoredBatch) -> bytes:
        asked.append(batch)
        return encode_records(recs)

    entry = Entry(5, 2, EntryKind.DATA, 6, StoredBatch(first_offset=40, count=1))
    m = Message(MsgType.APPEND, to=2, frm=1, term=2, entries=(entry,))
    got, _ = message_from_proto(wire(message_to_proto(m, resolve, None)))
    assert asked == [StoredBatch(40, 1)]
    batch = got.entries[0].payload
    assert isinstance(batch, DataBatch)
    assert list(batch.records) == recs


def append_with(recs: list[log_pb2.Record]) -> raft_pb2.RaftMessage:
    entry = Entry(1, 1, EntryKind.DATA, 1, DataBatch(records=recs))
    m = Message(MsgType.APPEND, to=2, frm=1, term=1, entries=(entry,))
    return wire(message_to_proto(m, no_resolve, None))


def test_damaged_records_are_refused() -> None:
    pb = append_with([log_pb2.Record(value=b"payload")])
    damaged = bytearray(pb.entries[0].records)
    damaged[-1] ^= 0x01
    pb.entries[0].records = bytes(damaged)
    with pytest.raises(CodecError, match="CRC-32C"):
        message_from_proto(pb)


@pytest.mark.parametrize(
    "damage",
    [
        lambda pb: setattr(pb, "type", raft_pb2.MESSAGE_TYPE_UNSPECIFIED),
        lambda pb: setattr(pb.entries[0], "kind", raft_pb2.ENTRY_KIND_UNSPECIFIED),
        lambda pb: setattr(pb, "frm", 0),
    ],
    ids=["no type", "no entry kind", "from nobody"],
)
def test_malformed_messages_are_refused(damage: object) -> None:
    pb = append_with([log_pb2.Record(value=b"x")])
    damage(pb)  # type: ignore[operator]
    with pytest.raises(CodecError):
        message_from_proto(pb)


def test_entries_without_a_wire_payload_are_a_codec_error() -> None:
    entry = Entry(1, 1, EntryKind.DATA, 1, payload="not a batch")
    m = Message(MsgType.APPEND, to=2, frm=1, term=1, entries=(entry,))
    with pytest.raises(CodecError, match="no batch payload"):
        message_to_proto(m, no_resolve, None)


def test_forwarded_batches_round_trip_and_are_checked() -> None:
    recs = [log_pb2.Record(value=b"fwd", timestamp_ms=5)]
    pb = raft_pb2.ForwardRequest.FromString(
        forward_request(DataBatch(records=recs)).SerializeToString()
    )
    (write,) = writes_from_forward(pb)
    assert (write.producer_id, list(write.records)) == (0, recs)
    pb.crc32c ^= 1
    with pytest.raises(CodecError):
        writes_from_forward(pb)


def test_forwarded_writes_and_their_outcomes_round_trip() -> None:
    recs = [log_pb2.Record(value=b"%d" % i, timestamp_ms=5) for i in range(3)]
    spans = [ProducerBatch(0, 0, 0, 1), ProducerBatch(9, 4, 1, 2)]
    pb = raft_pb2.ForwardRequest.FromString(
        forward_request(DataBatch(records=recs), spans).SerializeToString()
    )
    writes = writes_from_forward(pb)
    assert [(w.producer_id, w.sequence, list(w.records)) for w in writes] == [
        (0, 0, recs[:1]),
        (9, 4, recs[1:]),
    ]
    outcomes: list[WriteOutcome] = [Written(10), OutOfOrderSequence(9, 4, 2)]
    back = outcomes_from_proto(outcomes_to_proto(outcomes), writes)
    assert back[0] == Written(10)
    assert isinstance(back[1], OutOfOrderSequence) and back[1].expected == 2
    back = outcomes_from_proto(
        outcomes_to_proto([Written(3, True), DuplicateInFlight(9, 4)]), writes
    )
    assert back[0] == Written(3, duplicate=True) and isinstance(back[1], DuplicateInFlight)
    # Writes that do not cover the records in order are refused whole.
    pb.writes[1].start = 2
    with pytest.raises(CodecError, match="cover"):
        writes_from_forward(pb)


def test_entry_producer_batches_travel_with_the_records() -> None:
    recs = [log_pb2.Record(value=b"v", timestamp_ms=5)] * 2
    batches = (ProducerBatch(5, 1, 0, 2),)
    entry = Entry(7, 2, EntryKind.DATA, 10, DataBatch(records=recs, producers=batches))
    m = Message(MsgType.APPEND, to=2, frm=1, term=2, entries=(entry,))
    pb = raft_pb2.RaftMessage.FromString(message_to_proto(m, no_resolve, None).SerializeToString())
    got, _ = message_from_proto(pb)
    payload = got.entries[0].payload
    assert isinstance(payload, DataBatch) and tuple(payload.producers) == batches

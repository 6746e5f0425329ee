"""The one table of errors: code, HTTP status, reason and metadata, and its documentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyproglog.auth.errors import PermissionDenied, Unauthenticated
from pyproglog.log import (
    CorruptSegment,
    DiskFull,
    DuplicateInFlight,
    LogWriteError,
    MissingRecords,
    OffsetOutOfRange,
    OutOfOrderSequence,
)
from pyproglog.server.errors import (
    Busy,
    ErrorStatus,
    InvalidArgument,
    NoQuorum,
    NotLeader,
    Reason,
    ShuttingDown,
    error_status,
    record_too_large,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            OffsetOutOfRange(7, 2, 5),
            (
                "OUT_OF_RANGE",
                404,
                Reason.OFFSET_OUT_OF_RANGE,
                {"offset": "7", "lowest": "2", "next": "5"},
            ),
        ),
        (
            record_too_large(10, 4, index=3),
            (
                "INVALID_ARGUMENT",
                413,
                Reason.RECORD_TOO_LARGE,
                {"size": "10", "limit": "4", "index": "3"},
            ),
        ),
        (InvalidArgument("bad"), ("INVALID_ARGUMENT", 400, Reason.INVALID_ARGUMENT, {})),
        (DiskFull("append: no space"), ("RESOURCE_EXHAUSTED", 507, Reason.DISK_FULL, {})),
        (LogWriteError("append: EIO"), ("UNAVAILABLE", 503, Reason.WRITE_FAILED, {})),
        (ShuttingDown(), ("UNAVAILABLE", 503, Reason.SHUTTING_DOWN, {})),
        (NotLeader("n2:8400"), ("UNAVAILABLE", 503, Reason.NOT_LEADER, {"leader_addr": "n2:8400"})),
        (NotLeader(), ("UNAVAILABLE", 503, Reason.NOT_LEADER, {})),
        (NoQuorum("not committed"), ("UNAVAILABLE", 503, Reason.NO_QUORUM, {})),
        (Busy("a change is pending"), ("UNAVAILABLE", 503, Reason.BUSY, {})),
        (
            OutOfOrderSequence(9, 4, 2),
            (
                "FAILED_PRECONDITION",
                409,
                Reason.OUT_OF_ORDER_SEQUENCE,
                {"producer_id": "9", "sequence": "4", "expected_sequence": "2"},
            ),
        ),
        (
            DuplicateInFlight(9, 4),
            (
                "UNAVAILABLE",
                503,
                Reason.DUPLICATE_IN_FLIGHT,
                {"producer_id": "9", "sequence": "4"},
            ),
        ),
        (
            MissingRecords("p", 4, 7, "store file gone"),
            ("DATA_LOSS", 500, Reason.DATA_LOSS, {"first": "4", "last": "7"}),
        ),
        (CorruptSegment("p", 9, "checksum"), ("DATA_LOSS", 500, Reason.DATA_LOSS, {})),
        (
            PermissionDenied("nobody", "produce", "*"),
            (
                "PERMISSION_DENIED",
                403,
                Reason.PERMISSION_DENIED,
                {"subject": "nobody", "action": "produce", "object": "*"},
            ),
        ),
        (Unauthenticated("no cert"), ("UNAUTHENTICATED", 401, Reason.UNAUTHENTICATED, {})),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_each_error_maps_to_one_status(
    exc: BaseException, expected: tuple[str, int, Reason, dict[str, str]]
) -> None:
    st = error_status(exc)
    assert isinstance(st, ErrorStatus)
    assert (st.code, st.http_status, st.reason, st.metadata) == expected
    assert st.message


def test_a_batch_record_too_large_names_the_record() -> None:
    assert (
        str(record_too_large(10, 4, index=3)) == "record 3 of 10 bytes exceeds the limit of 4 bytes"
    )
    assert str(record_too_large(10, 4)) == "record of 10 bytes exceeds the limit of 4 bytes"


def test_a_bug_has_no_status() -> None:
    assert error_status(RuntimeError("internals")) is None


def test_every_reason_is_documented() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)? \|", DOCS.read_text(), re.M))
    names = {name for pair in documented for name in pair if name}
    assert {r.value for r in Reason} <= names, sorted({r.value for r in Reason} - names)

"""pyiscsid.async_msg: what iscsid does about each Async Message a target sends."""

from __future__ import annotations

import pytest

from pyiscsid import pdu as P
from pyiscsid.async_msg import LOGOUT_GRACE, AsyncAction, action_of


def msg(
    event: int, p1: int = 0, p2: int = 0, p3: int = 0, data: bytes = b"", vcode: int = 0
) -> bytes:
    m = P.AsyncMessage(async_event=event, async_vcode=vcode, parameter1=p1, parameter2=p2,
                       parameter3=p3, data=data)  # fmt: skip
    return m.encode()


def fixed_sense(key: int, asc: int, ascq: int) -> bytes:
    sense = bytearray(18)
    sense[0], sense[2], sense[7], sense[12], sense[13] = 0x70, key, 10, asc, ascq
    return len(sense).to_bytes(2, "big") + bytes(sense)


def test_logout_request_gives_parameter3_seconds() -> None:
    assert action_of(msg(1, p3=7)) == AsyncAction(
        "logout", "target requests logout within 7 seconds", 7.0
    )
    assert action_of(msg(1, p3=0)).delay == LOGOUT_GRACE


@pytest.mark.parametrize(
    ("event", "cid", "what"), [(2, 3, "connection 3"), (3, None, "all connections")]
)
def test_drops_wait_time2wait(event: int, cid: int | None, what: str) -> None:
    a = action_of(msg(event, p1=3, p2=4, p3=20))
    assert a == AsyncAction(
        "drop", f"target drops {what} (Time2Wait 4 s, Time2Retain 20 s)", 4.0, cid
    )


def test_time2wait_is_capped_at_rfc_range() -> None:
    """A 16-bit Time2Wait of 65535 s would keep the session away for 18 hours."""
    a = action_of(msg(2, p1=0, p2=65535, p3=65535))
    assert a is not None and a.delay == 3600.0
    assert "Time2Wait 65535 s" in a.message


def test_reported_luns_changed_rescans_other_sense_is_logged() -> None:
    a = action_of(msg(0, data=fixed_sense(6, 0x3F, 0x0E)))
    assert a is not None and a.kind == "rescan"
    assert "sense key 0x6, ASC/ASCQ 3f/0e" in a.message
    descriptor = (8).to_bytes(2, "big") + bytes([0x72, 6, 0x2A, 0x09, 0, 0, 0, 0])
    assert action_of(msg(0, data=descriptor)).kind == "rescan"
    other = action_of(msg(0, data=fixed_sense(6, 0x29, 0x00)))
    assert other.kind == "log" and "29/00" in other.message


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", "without sense data"),
        (b"\x00\x02\x70\x00", "without sense data"),
        (b"\x00\x40" + bytes(3), "without sense data"),
    ],
)
def test_short_or_lying_sense_is_only_logged(data: bytes, text: str) -> None:
    a = action_of(msg(0, data=data))
    assert a.kind == "log" and text in a.message


def test_renegotiation_vendor_and_unknown_events_are_logged() -> None:
    assert action_of(msg(4)).kind == "log"
    assert "not supported" in action_of(msg(4)).message
    assert action_of(msg(255, vcode=0x42)).message == "vendor specific asynchronous event 0x42"
    assert action_of(msg(9)).message == "unknown asynchronous event 9"


def test_other_pdus_and_garbage_are_not_async_messages() -> None:
    assert action_of(P.NopIn(itt=1).encode()) is None
    assert action_of(b"\x32" + bytes(10)) is None
    assert action_of(b"\xff" * 48) is None

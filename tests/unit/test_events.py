"""pyiscsid.events without a kernel: NOP-In answers, the event handling, Async Messages (the VM
tier runs the thread against the real modules)."""

from __future__ import annotations

import pytest

from pyiscsid import events as ev
from pyiscsid import kernel_session as ks
from pyiscsid.netlink import ConnErrorEvent, RecvPduEvent
from pyiscsid.states import ConnState
from pyiscsid.uapi import ConnError


def _nop_in(ttt: int, lun: bytes = bytes(8)) -> bytes:
    b = bytearray(48)
    b[0] = 0x20
    b[1] = 0x80
    b[8:16] = lun
    b[16:20] = (0xFFFFFFFF).to_bytes(4, "big")
    b[20:24] = ttt.to_bytes(4, "big")
    b[24:28] = (77).to_bytes(4, "big")  # StatSN
    return bytes(b)


def test_nop_out_reply() -> None:
    lun = bytes.fromhex("0001000000000000")
    reply = ev.nop_out_reply(_nop_in(0x1234, lun))
    expected = bytearray(48)
    expected[0] = 0x40  # immediate | NOP-Out
    expected[1] = 0x80
    expected[8:16] = lun
    expected[16:20] = (0xFFFFFFFF).to_bytes(4, "big")
    expected[20:24] = (0x1234).to_bytes(4, "big")
    assert reply == bytes(expected)
    assert ev.nop_out_reply(_nop_in(0xFFFFFFFF)) is None  # no answer wanted
    assert ev.nop_out_reply(b"\x26\x80" + bytes(46)) is None  # not a NOP-In
    assert ev.nop_out_reply(b"\x20") is None


class _Recorder:
    """Stands in for IscsiNetlink: the kernel is needed for the real one (VM test covers it)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []

    def send_pdu(self, sid: int, cid: int, pdu: bytes) -> None:
        self.sent.append((sid, cid, pdu))


def test_event_service_answers_pings_only(caplog: pytest.LogCaptureFixture) -> None:
    svc = ev.EventService()
    rec = _Recorder()
    svc.handle(rec, RecvPduEvent(3, 0, _nop_in(7)))
    svc.handle(rec, RecvPduEvent(3, 0, _nop_in(0xFFFFFFFF)))
    svc.handle(rec, ConnErrorEvent(3, 0, ConnError.CONN_FAILED))
    assert [(s, c, p[20:24]) for s, c, p in rec.sent] == [(3, 0, (7).to_bytes(4, "big"))]
    assert svc.pings_answered == 1
    assert "session 3: connection 0 failed (CONN_FAILED)" in caplog.text
    caplog.clear()
    ks._set_handling(3, ConnState.IN_LOGOUT)
    try:
        svc.handle(rec, ConnErrorEvent(3, 0, ConnError.CONN_FAILED))
    finally:
        ks._set_handling(3, None)
    assert caplog.text == ""  # a logout's connection close is expected


class _Recovery:
    def __init__(self) -> None:
        self.failed: list[tuple[int, int, str]] = []
        self.held: list[tuple[int, float]] = []

    def conn_failed(self, sid: int, cid: int, reason: str) -> bool:
        self.failed.append((sid, cid, reason))
        return True

    def hold_off(self, sid: int, seconds: float) -> None:
        self.held.append((sid, seconds))

    def active(self, sid: int) -> bool:
        return False


def test_async_logout_request_logs_out_then_recovers() -> None:
    from pyiscsid import pdu as P

    rec, recovery = _Recorder(), _Recovery()
    svc = ev.EventService(recovery=recovery)
    ask = P.AsyncMessage(async_event=1, parameter3=5).encode()
    svc.handle(rec, RecvPduEvent(3, 0, ask))
    svc.handle(rec, RecvPduEvent(3, 0, ask))  # a repeat while the logout is out: ignored
    ((sid, cid, sent),) = rec.sent
    logout = P.decode_bhs(sent[:48])
    assert (sid, cid) == (3, 0)
    assert isinstance(logout, P.LogoutRequest) and logout.reason == 1 and logout.immediate
    assert recovery.failed == []
    other = P.LogoutResponse(itt=logout.itt ^ 1).encode()
    svc.handle(rec, RecvPduEvent(3, 0, other))
    assert recovery.failed == []
    svc.handle(rec, RecvPduEvent(3, 0, P.LogoutResponse(itt=logout.itt).encode()))
    assert recovery.failed == [(3, 0, "target requested logout")]
    assert svc.async_logouts == {}


def test_async_logout_without_a_response_recovers_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyiscsid import pdu as P

    monkeypatch.setattr(ev.sysfs, "session_pulses", list)
    rec, recovery = _Recorder(), _Recovery()
    svc = ev.EventService(recovery=recovery)
    svc.handle(rec, RecvPduEvent(4, 0, P.AsyncMessage(async_event=1, parameter3=2).encode()))
    (_cid, _itt, deadline) = svc.async_logouts[4]
    svc.tick(rec, deadline - 0.5)
    assert recovery.failed == []
    svc._next_tick = 0.0
    svc.tick(rec, deadline + 0.1)
    assert recovery.failed == [(4, 0, "target requested logout")]


def test_async_drop_holds_the_reconnect_off_for_time2wait() -> None:
    from pyiscsid import pdu as P

    rec, recovery = _Recorder(), _Recovery()
    svc = ev.EventService(recovery=recovery)
    drop = P.AsyncMessage(async_event=3, parameter2=6, parameter3=20).encode()
    svc.handle(rec, RecvPduEvent(5, 0, drop))
    assert recovery.held == [(5, 6.0)] and rec.sent == [] and recovery.failed == []

"""Recovery without a kernel: back-off, one recovery per session, the end conditions, the
reinstatement login settings, and the NOP-Out ping bookkeeping (the VM test runs the real thing)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from pyiscsid import events as ev
from pyiscsid import kernel_session as ks
from pyiscsid.errors import Err, IscsiError
from pyiscsid.recovery import Backoff, RecoveryManager, reinstatement_settings
from pyiscsid.states import ConnState
from pyiscsid.sysfs import SessionInfo


def test_backoff_doubles_to_the_cap_and_never_ends() -> None:
    delays = Backoff().delays()
    assert [next(delays) for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    custom = Backoff(start=1.0, cap=3.0, factor=1.5).delays()
    assert [next(custom) for _ in range(5)] == [1.0, 1.5, 2.25, 3.0, 3.0]


@pytest.mark.parametrize(("start", "cap", "factor"), [(0, 5, 2), (2, 1, 2), (1, 5, 0.5)])
def test_backoff_rejects_nonsense(start: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(start, cap, factor)


class FakeSteps:
    """RecoverySteps that fail `failures` times, recording every call."""

    def __init__(
        self, failures: int = 0, alive_for: int = 1000, cids: list[int] | None = None
    ) -> None:
        self.failures = failures
        self.alive_for = alive_for
        self.calls: list[tuple[str, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        self.cids = [0] if cids is None else cids  # what `connections` answers
        self.stopped: list[tuple[int, int]] = []
        self.reconnected: list[tuple[int, int]] = []
        self.added: list[tuple[int, list[int]]] = []
        self.refuse: set[int] = set()  # CIDs `add` cannot add again
        self.t2w = 0.0  # what `time2wait` answers

    def stop(self, sid: int, cid: int) -> None:
        with self.lock:
            self.calls.append(("stop", sid))
            self.stopped.append((sid, cid))
        if sid == 99:
            raise IscsiError(Err.SESS_NOT_FOUND, "no session 99")

    def alive(self, sid: int) -> bool:
        with self.lock:
            self.alive_for -= 1
            return self.alive_for >= 0

    def reconnect(self, sid: int, cid: int, connected: Callable[[], None]) -> None:
        self.gate.wait(5)
        with self.lock:
            self.calls.append(("reconnect", sid))
            self.reconnected.append((sid, cid))
            connected()
            if self.failures > 0:
                self.failures -= 1
                raise IscsiError(Err.TRANS, "cannot make connection to 127.0.0.1: refused")

    def time2wait(self, sid: int) -> float:
        return self.t2w

    def connections(self, sid: int) -> list[int]:
        return list(self.cids)

    def add(self, sid: int, cids: list[int]) -> list[int]:
        with self.lock:
            self.added.append((sid, list(cids)))
        return [cid for cid in cids if cid not in self.refuse]


FAST = Backoff(start=0.01, cap=0.02)


def test_recovery_retries_until_the_login_works(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    steps = FakeSteps(failures=3)
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    assert mgr.conn_failed(4, 0, "CONN_FAILED")
    assert mgr.wait(4, 5)
    assert steps.calls == [("stop", 4)] + [("reconnect", 4)] * 4
    assert mgr.recovered == {4: 4}
    assert not mgr.active(4)
    assert "connection4:0 is operational after recovery (4 attempts)" in caplog.text
    assert caplog.text.count("attempt") == 4  # three failures logged, then the success


def test_one_recovery_per_session_others_run_alongside() -> None:
    steps = FakeSteps()
    steps.gate.clear()  # reconnects block until released
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    assert mgr.conn_failed(1, 0, "CONN_FAILED")
    assert not mgr.conn_failed(1, 0, "NOP_TIMEOUT")  # already recovering
    assert mgr.conn_failed(2, 0, "CONN_FAILED")  # another session is not held up
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and steps.calls.count(("stop", 2)) == 0:
        time.sleep(0.01)
    assert mgr.active(1) and mgr.active(2)
    steps.gate.set()
    assert mgr.wait(1, 5) and mgr.wait(2, 5)
    assert sorted(steps.calls) == [("reconnect", 1), ("reconnect", 2), ("stop", 1), ("stop", 2)]
    assert mgr.conn_failed(1, 0, "CONN_FAILED")  # a later failure gets a new recovery
    assert mgr.wait(1, 5)
    assert mgr.recovered == {1: 1, 2: 1}


def test_recovery_ends_when_the_session_goes_away() -> None:
    steps = FakeSteps(failures=1000, alive_for=3)
    done: list[tuple[int, bool]] = []
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    mgr.on_done = lambda sid, ok: done.append((sid, ok))
    mgr.conn_failed(5, 0, "CONN_FAILED")
    assert mgr.wait(5, 5)
    assert steps.calls == [("stop", 5)] + [("reconnect", 5)] * 3
    assert done == [(5, False)]
    assert mgr.recovered == {}


def test_no_recovery_for_a_session_the_kernel_does_not_have() -> None:
    steps = FakeSteps()
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    mgr.conn_failed(99, 0, "CONN_FAILED")
    assert mgr.wait(99, 5)
    assert steps.calls == [("stop", 99)]


def test_stop_ends_recoveries_and_refuses_new_ones() -> None:
    steps = FakeSteps(failures=10**6)
    mgr = RecoveryManager(backoff=Backoff(start=0.05, cap=0.05), steps=steps)
    mgr.conn_failed(7, 0, "CONN_FAILED")
    time.sleep(0.2)
    mgr.stop(2)
    assert not mgr.active(7)
    assert not mgr.conn_failed(8, 0, "CONN_FAILED")


def _info(**kw: object) -> SessionInfo:
    base: dict[str, object] = dict(
        sid=3,
        host_no=5,
        target="iqn.2003-01.org.example:t1",
        tpgt=1,
        address="10.0.0.9",
        port=3260,
        persistent_address="10.0.0.1",
        persistent_port=3260,
        iface="default",
        initiatorname="iqn.2026-11.test:host",
        isid="00023d000001",
        state="FAILED",
    )
    base.update(kw)
    return SessionInfo(**base)  # type: ignore[arg-type]


def test_reinstatement_settings_keep_the_isid_and_initiator_tsih_zero() -> None:
    s = reinstatement_settings(_info(), None, "iqn.other:name", "")
    assert s.isid == bytes.fromhex("00023d000001")
    assert s.tsih == 0
    assert s.cid == 0
    assert s.initiator_name == "iqn.2026-11.test:host"  # sysfs wins: the same I_T nexus
    assert s.target_name == "iqn.2003-01.org.example:t1"
    s = reinstatement_settings(_info(initiatorname=""), None, "iqn.other:name", "")
    assert s.initiator_name == "iqn.other:name"


@pytest.mark.parametrize("isid", ["", "00023d", "zz023d000001"])
def test_reinstatement_settings_refuse_a_bad_isid(isid: str) -> None:
    with pytest.raises(IscsiError) as exc:
        reinstatement_settings(_info(isid=isid), None, "iqn.x:y", "")
    assert exc.value.code == Err.INVAL
    assert "session 3: bad ISID" in exc.value.message


# -- NOP-Out pings -----------------------------------------------------------------------------


def test_ping_pdu_and_answer_recognised() -> None:
    from pyiscsid.pdu import NopIn

    pdu = ev.nop_out_ping(0x80000005)
    assert len(pdu) == 48
    assert pdu[0] == 0x40  # NOP-Out, immediate
    assert pdu[1] == 0x80  # F bit
    assert pdu[16:20] == bytes.fromhex("80000005")  # ITT
    assert pdu[20:24] == b"\xff\xff\xff\xff"  # TTT reserved: the target must answer
    answer = NopIn(itt=0x80000005, ttt=0xFFFFFFFF).encode()
    assert ev.nop_in_itt(answer) == 0x80000005
    assert ev.nop_out_reply(answer) is None  # an answer is not answered again
    assert ev.nop_in_itt(NopIn(itt=0xFFFFFFFF, ttt=7).encode()) is None  # target's own ping
    assert ev.nop_in_itt(NopIn(itt=5, ttt=0xFFFFFFFF).encode()) is None  # not one of ours
    assert ev.nop_in_itt(b"\x20" * 10) is None


def test_pinger_schedule_answer_and_timeout() -> None:
    p = ev.Pinger()
    sessions = {(1, 0): (5.0, 3.0), (2, 0): (0.0, 5.0)}  # session 2: pings disabled
    assert p.due(100.0, sessions) == ([], [])  # first ping one interval after first seen
    assert p.due(104.9, sessions) == ([], [])
    send, missed = p.due(105.0, sessions)
    assert [(s, c) for s, c, _ in send] == [(1, 0)] and missed == []
    itt = send[0][2]
    assert itt & 0x80000000
    assert p.due(107.0, sessions) == ([], [])  # waiting for the answer: no second ping
    assert not p.answered(1, 0, itt + 1, 107.5)  # not the ITT we sent
    assert not p.answered(1, 1, itt, 107.5)  # not the connection it went on
    assert p.answered(1, 0, itt, 107.5)
    assert p.due(112.4, sessions) == ([], [])  # next one interval after the answer
    send, _ = p.due(112.5, sessions)
    assert len(send) == 1
    assert p.due(115.4, sessions) == ([], [])
    assert p.due(115.5, sessions) == ([], [(1, 0)])  # noop_out_timeout passed: failed
    assert (1, 0) not in p.state
    assert p.sent == 2 and p.answered_count == 1


def test_pinger_forgets_sessions_that_leave_the_schedule() -> None:
    p = ev.Pinger()
    p.due(0.0, {(1, 0): (1.0, 1.0)})
    send, _ = p.due(1.0, {(1, 0): (1.0, 1.0)})
    assert len(send) == 1
    assert p.due(5.0, {}) == ([], [])  # recovering or gone: its outstanding ping is dropped
    assert p.due(6.0, {(1, 0): (1.0, 1.0)}) == ([], [])  # back: starts a fresh interval
    assert len(p.due(7.0, {(1, 0): (1.0, 1.0)})[0]) == 1


def test_pinger_pings_every_connection_and_times_each_out_alone() -> None:
    p = ev.Pinger()
    conns = {(1, 0): (1.0, 2.0), (1, 1): (1.0, 2.0), (1, 2): (1.0, 2.0)}
    p.due(0.0, conns)
    send, _ = p.due(1.0, conns)
    assert sorted((s, c) for s, c, _ in send) == [(1, 0), (1, 1), (1, 2)]
    itts = {c: itt for _, c, itt in send}
    assert p.answered(1, 0, itts[0], 1.5)
    p.unsent(1, 2, 1.5)  # connection 2 could not be pinged (being added): no answer awaited
    assert not p.answered(1, 1, itts[0], 1.5)  # connection 0's answer is not connection 1's
    send, missed = p.due(3.0, conns)
    assert missed == [(1, 1)]  # only the connection that did not answer
    assert sorted((s, c) for s, c, _ in send) == [(1, 0), (1, 2)]


def test_ping_schedule_has_every_connection_but_one_being_closed() -> None:
    from pyiscsid.sysfs import SessionPulse

    pulses = [SessionPulse(1, "LOGGED_IN", [0, 1, 2], 5, 3), SessionPulse(2, "FAILED", [0], 5, 3)]
    with ks._lock:
        ks._closing_conns.add((1, 1))
    try:
        assert ev.ping_schedule(None, pulses) == {(1, 0): (5.0, 3.0), (1, 2): (5.0, 3.0)}
    finally:
        with ks._lock:
            ks._closing_conns.discard((1, 1))


def test_recovery_of_several_connections_stops_all_and_adds_the_others_back() -> None:
    steps = FakeSteps(cids=[0, 1, 3])
    steps.refuse = {3}
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    assert mgr.conn_failed(4, 1, "CONN_FAILED")  # connection 1 failed
    assert not mgr.conn_failed(4, 3, "CONN_FAILED")  # one recovery per session
    assert mgr.wait(4, 5)
    assert steps.stopped == [(4, 0), (4, 1), (4, 3)]  # every connection stopped
    assert steps.reconnected == [(4, 0)]  # the leading login reinstates on CID 0
    assert steps.added == [(4, [1, 3])]  # then the others are logged in again
    assert mgr.recovered == {4: 1}


def test_several_connections_wait_time2wait_before_the_reinstatement() -> None:
    """All connections of the session went down at once: the target gets DefaultTime2Wait to
    close them before the reinstatement; one connection reconnects after the back-off only."""
    for cids, least, most in (([0, 1], 0.3, 5.0), ([0], 0.0, 0.25)):
        steps = FakeSteps(cids=cids)
        steps.t2w = 0.3
        mgr = RecoveryManager(backoff=FAST, steps=steps)
        t0 = time.monotonic()
        assert mgr.conn_failed(4, 0, "CONN_FAILED")
        assert mgr.wait(4, 5)
        assert least <= time.monotonic() - t0 < most, cids
        assert steps.reconnected == [(4, 0)]


def test_recovery_leads_with_the_first_cid_the_user_left() -> None:
    steps = FakeSteps(cids=[1, 2])  # CID 0 was closed by the user
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    assert mgr.conn_failed(4, 2, "NOP_TIMEOUT")
    assert mgr.wait(4, 5)
    assert steps.reconnected == [(4, 1)]
    assert steps.added == [(4, [2])]


def test_recovery_of_one_connection_adds_nothing() -> None:
    steps = FakeSteps()
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    assert mgr.conn_failed(4, 0, "CONN_FAILED")
    assert mgr.wait(4, 5)
    assert steps.stopped == [(4, 0)] and steps.added == []


def test_recovery_stops_on_any_connection_of_a_session_that_is_gone() -> None:
    steps = FakeSteps(cids=[0, 1])
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    mgr.conn_failed(99, 1, "CONN_FAILED")  # FakeSteps: session 99 is gone
    assert mgr.wait(99, 5)
    assert steps.stopped == [(99, 0)] and steps.reconnected == []


def test_kernel_steps_connections_leave_out_the_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiscsid import sysfs
    from pyiscsid.recovery import KernelSteps

    monkeypatch.setattr(sysfs, "connection_ids", lambda sid: [0, 1, 2])
    with ks._lock:
        ks._closed_cids[7] = {1}
    try:
        assert KernelSteps().connections(7) == [0, 2]
    finally:
        ks.forget_session(7)
    assert KernelSteps().connections(7) == [0, 1, 2]


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []

    def send_pdu(self, sid: int, cid: int, pdu: bytes) -> None:
        self.sent.append((sid, cid, pdu))


def test_event_service_hands_conn_errors_and_ping_answers_on() -> None:
    from pyiscsid.netlink import ConnErrorEvent, RecvPduEvent
    from pyiscsid.pdu import NopIn
    from pyiscsid.uapi import ConnError

    steps = FakeSteps()
    steps.gate.clear()
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    svc = ev.EventService(recovery=mgr)
    rec = _Recorder()
    svc.handle(rec, ConnErrorEvent(6, 0, ConnError.CONN_FAILED))
    assert mgr.active(6)
    ks._set_handling(9, ConnState.IN_LOGOUT)
    try:
        svc.handle(rec, ConnErrorEvent(9, 0, ConnError.CONN_FAILED))
    finally:
        ks._set_handling(9, None)
    assert not mgr.active(9)  # a logout's connection close is no failure
    svc.pinger.state[(6, 0)] = ev.PingState(5.0, 5.0, 0.0, itt=0x80000042, sent_at=1.0)
    svc.handle(rec, RecvPduEvent(6, 0, NopIn(itt=0x80000042).encode()))
    assert svc.pinger.state[(6, 0)].itt is None and rec.sent == []
    steps.gate.set()
    assert mgr.wait(6, 5)


def test_hold_off_delays_the_first_reconnect_once() -> None:
    steps = FakeSteps()
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    mgr.hold_off(5, 0.4)
    t0 = time.monotonic()
    assert mgr.conn_failed(5, 0, "target drops the connection")
    assert mgr.wait(5, 5)
    assert time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    assert mgr.conn_failed(5, 0, "CONN_FAILED")  # the hold-off was used up
    assert mgr.wait(5, 5)
    assert time.monotonic() - t0 < 0.3


def test_cancel_ends_a_time2wait_at_once_and_frees_the_sid() -> None:
    """A logout ends the recovery of its session even in a target's hour-long Time2Wait: the
    kernel hands the same SID to the next session, whose recovery must not find it taken."""
    steps = FakeSteps()
    mgr = RecoveryManager(backoff=FAST, steps=steps)
    mgr.hold_off(3, 3600)
    assert mgr.conn_failed(3, 0, "target drops the connection")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ("stop", 3) not in steps.calls:
        time.sleep(0.01)
    t0 = time.monotonic()
    assert mgr.cancel(3, 2)
    assert time.monotonic() - t0 < 1
    assert not mgr.active(3)
    assert ("reconnect", 3) not in steps.calls  # never reconnected the logged-out session
    assert mgr.conn_failed(3, 0, "CONN_FAILED")  # the SID's next session recovers
    assert mgr.wait(3, 5)
    assert steps.calls.count(("reconnect", 3)) == 1
    assert mgr.cancel(4, 0)  # nothing to cancel: nothing runs


def test_kernel_steps_add_uses_the_new_tsih_and_destroys_what_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyiscsid import connections, sysfs
    from pyiscsid.recovery import KernelSteps
    from pyiscsid.settings import LoginSettings

    steps = KernelSteps()
    assert steps.add(6, [1, 2]) == []  # nothing reinstated: nothing to add to
    node = type("N", (), {"target": "iqn.x:t", "address": "a", "port": 1, "tpgt": 1,
                                    "iface": "default", "get": lambda self, n: ""})()  # fmt: skip
    settings = LoginSettings(initiator_name="iqn.x:i", target_name="iqn.x:t")
    steps._reinstated[6] = (node, settings, 0x77)
    seen: list[tuple[list[int], int, set[int]]] = []

    def add_connections(sid, cids, portals, settings_, tsih, csteps):  # type: ignore[no-untyped-def]
        seen.append((list(cids), tsih, csteps.existing))
        return [1]

    destroyed: list[tuple[int, int]] = []

    class Nl:
        def __enter__(self) -> Nl:
            return self

        def __exit__(self, *_: object) -> None:
            pass

    monkeypatch.setattr(connections, "add_connections", add_connections)
    monkeypatch.setattr(connections, "record_portals", lambda n: [connections.Portal("a", 1)])
    monkeypatch.setattr(sysfs, "connection_ids", lambda sid: [0, 1, 2])
    monkeypatch.setattr("pyiscsid.recovery.IscsiNetlink", Nl)
    monkeypatch.setattr(
        ks, "destroy_connection", lambda nl, sid, cid, stop: destroyed.append((sid, cid))
    )
    assert steps.add(6, [1, 2, 3]) == [1]
    assert seen == [([1, 2, 3], 0x77, {1, 2, 3})]  # bound to the stopped kernel connections
    assert destroyed == [(6, 2)]  # 3 is gone already; 2 is stopped and not re-added

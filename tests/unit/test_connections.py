"""Multi-connection sessions without a kernel: what a further connection negotiates, which
portal each connection goes to, how the adding ends (0x0206, 0x020A), the statistics' totals,
and the events of a connection being closed."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from pyiscsid import connections as mcs
from pyiscsid import events as ev
from pyiscsid import kernel_session as ks
from pyiscsid.errors import Err, IscsiError
from pyiscsid.login import LoginError
from pyiscsid.negotiation import KEYS, NegotiatedParams, Negotiator
from pyiscsid.settings import LoginSettings

PROPOSALS = {
    "InitiatorName": "iqn.2026-11.test:host",
    "InitiatorAlias": "host",
    "TargetName": "iqn.2003-01.org.example:t1",
    "AuthMethod": "CHAP,None",
    "HeaderDigest": "CRC32C,None",
    "DataDigest": "None",
    "MaxRecvDataSegmentLength": "262144",
    "MaxConnections": "4",
    "InitialR2T": "No",
    "ImmediateData": "Yes",
    "FirstBurstLength": "65536",
    "MaxBurstLength": "262144",
    "DefaultTime2Wait": "2",
    "DefaultTime2Retain": "20",
    "MaxOutstandingR2T": "1",
    "ErrorRecoveryLevel": "0",
    "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes",
}
LEADING_ONLY = {
    "MaxConnections",
    "InitialR2T",
    "ImmediateData",
    "FirstBurstLength",
    "MaxBurstLength",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "MaxOutstandingR2T",
    "ErrorRecoveryLevel",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "SessionType",
}


# -- negotiation -------------------------------------------------------------------------------


def test_the_key_table_marks_the_rfcs_leading_only_keys() -> None:
    assert {k for k, d in KEYS.items() if d.leading_only} == LEADING_ONLY | {"RDMAExtensions"}


def test_leading_login_proposes_max_connections() -> None:
    n = Negotiator(PROPOSALS)
    assert ("SessionType", "Normal") in n.security_keys()
    assert ("MaxConnections", "4") in n.initial_keys()
    n.process([("MaxConnections", "2")])  # the target allows fewer: the minimum counts
    assert n.result().max_connections == 2


def test_further_connection_sends_only_connection_keys_and_names() -> None:
    n = Negotiator(PROPOSALS, leading=False)
    security = dict(n.security_keys())
    assert security == {
        "InitiatorName": "iqn.2026-11.test:host",
        "InitiatorAlias": "host",
        "TargetName": "iqn.2003-01.org.example:t1",  # every connection names both ends
        "AuthMethod": "CHAP,None",  # and authenticates again
    }
    operational = dict(n.initial_keys())
    assert operational == {
        "HeaderDigest": "CRC32C,None",
        "DataDigest": "None",
        "MaxRecvDataSegmentLength": "262144",
    }
    assert not (set(security) | set(operational)) & LEADING_ONLY


def test_further_connection_rejects_a_session_key_the_target_offers() -> None:
    n = Negotiator(PROPOSALS, leading=False)
    n.initial_keys()
    replies = n.process([("HeaderDigest", "CRC32C"), ("MaxBurstLength", "4096")])
    assert replies == [("MaxBurstLength", "Reject")]
    params = n.result()
    assert params.header_digest
    assert params.max_burst_length == 262144  # the session's value is the leading login's


def test_login_of_a_further_connection_is_not_leading() -> None:
    import socket

    from pyiscsid.login import _Login

    a, b = socket.socketpair()
    try:
        s = LoginSettings(initiator_name="iqn.2026-11.test:host", target_name="iqn.x:t")
        s.operational = {"MaxConnections": "2", "HeaderDigest": "None"}
        assert _Login(a, "h", 1, s, 0.0, 1).negotiator.leading
        s.tsih, s.cid = 9, 1
        further = _Login(a, "h", 1, s, 0.0, 5)
        assert not further.negotiator.leading
        assert dict(further.negotiator.initial_keys()) == {"HeaderDigest": "None"}
    finally:
        a.close()
        b.close()


# -- how many, where ---------------------------------------------------------------------------


@pytest.mark.parametrize(("negotiated", "count"), [(1, 1), (2, 2), (4, 4), (16, 16), (65535, 16)])
def test_connection_count_is_capped(negotiated: int, count: int) -> None:
    assert mcs.connection_count(NegotiatedParams(max_connections=negotiated)) == count


@dataclass
class Rec:
    target: str
    address: str
    port: int
    tpgt: int


T1 = "iqn.2003-01.org.example:t1"


def test_group_portals_same_target_and_tpgt_own_first() -> None:
    own = Rec(T1, "10.0.0.2", 3260, 1)
    records = [
        Rec(T1, "10.0.0.1", 3260, 1),
        Rec(T1, "10.0.0.2", 3260, 1),  # its own record: not twice
        Rec(T1, "10.0.0.3", 3260, 2),  # another portal group
        Rec("iqn.2003-01.org.example:t2", "10.0.0.4", 3260, 1),  # another target
        Rec(T1, "10.0.0.5", 3261, 1),
        Rec(T1, "10.0.0.1", 3260, 1),  # the same portal through another iface
    ]
    assert mcs.group_portals(own, records) == [
        mcs.Portal("10.0.0.2", 3260),
        mcs.Portal("10.0.0.1", 3260),
        mcs.Portal("10.0.0.5", 3261),
    ]


def test_portals_round_robin_from_the_records_own() -> None:
    portals = [mcs.Portal("a", 1), mcs.Portal("b", 1), mcs.Portal("c", 1)]
    assert [mcs.portal_of(cid, portals).address for cid in range(7)] == list("abcabca")
    one = [mcs.Portal("a", 1)]
    assert {mcs.portal_of(cid, one) for cid in range(4)} == {mcs.Portal("a", 1)}


def test_further_settings_keep_the_session_change_tsih_and_cid() -> None:
    s = LoginSettings(initiator_name="iqn.2026-11.test:host", target_name=T1)
    s.isid = bytes.fromhex("00023d000005")
    s.operational = {"HeaderDigest": "CRC32C"}
    f = mcs.further_settings(s, tsih=0x1234, cid=3)
    assert (f.tsih, f.cid, f.isid, f.target_name) == (0x1234, 3, s.isid, T1)
    assert (s.tsih, s.cid) == (0, 0)  # the session's own settings are left alone
    f.operational["DataDigest"] = "None"
    assert "DataDigest" not in s.operational


# -- adding ------------------------------------------------------------------------------------


class FakeConnSteps:
    """ConnectionSteps that fail as told, recording (cid, portal address, tsih, cid) calls."""

    def __init__(self, failures: dict[int, Exception] | None = None) -> None:
        self.failures = failures or {}
        self.calls: list[tuple[int, str, int, int]] = []

    def add(self, sid: int, cid: int, portal: mcs.Portal, settings: LoginSettings) -> None:
        self.calls.append((cid, portal.address, settings.tsih, settings.cid))
        if cid in self.failures:
            raise self.failures[cid]


SETTINGS = LoginSettings(initiator_name="iqn.2026-11.test:host", target_name=T1)
PORTALS = [mcs.Portal("a", 3260), mcs.Portal("b", 3260)]


def _status(detail: int) -> LoginError:
    return LoginError(Err.FATAL_LOGIN, f"rejected (02/{detail:02x})", 2, detail)


def test_add_connections_all_up_round_robin() -> None:
    steps = FakeConnSteps()
    assert mcs.add_connections(1, range(1, 4), PORTALS, SETTINGS, 7, steps) == [1, 2, 3]
    assert steps.calls == [(1, "b", 7, 1), (2, "a", 7, 2), (3, "b", 7, 3)]


def test_too_many_connections_keeps_those_up_and_logs_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    steps = FakeConnSteps({2: _status(0x06)})
    assert mcs.add_connections(1, range(1, 4), PORTALS, SETTINGS, 7, steps) == [1]
    assert [c[0] for c in steps.calls] == [1, 2]  # no third try
    record = next(r for r in caplog.records if "allows no more connections" in r.message)
    assert record.levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_session_does_not_exist_ends_the_adding(caplog: pytest.LogCaptureFixture) -> None:
    steps = FakeConnSteps({1: _status(0x0A)})
    assert mcs.add_connections(1, range(1, 4), PORTALS, SETTINGS, 7, steps) == []
    assert len(steps.calls) == 1
    assert "does not know the session" in caplog.text


@pytest.mark.parametrize(
    "failure",
    [
        IscsiError(Err.TRANS_TIMEOUT, "cannot make connection to b: Connection timed out"),
        _status(0x01),  # authentication failure on this connection
        OSError("connection reset"),
    ],
)
def test_other_failures_skip_that_connection_only(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    steps = FakeConnSteps({1: failure})
    assert mcs.add_connections(1, range(1, 4), PORTALS, SETTINGS, 7, steps) == [2, 3]
    assert "connection1:1 could not be added" in caplog.text


def test_add_further_does_nothing_with_one_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> list[mcs.Portal]:
        raise AssertionError("no portals wanted")

    monkeypatch.setattr(mcs, "record_portals", boom)
    leading = type("L", (), {"negotiated": NegotiatedParams(max_connections=1), "tsih": 3})()
    node = Rec(T1, "a", 3260, 1)
    assert mcs.add_further(1, node, leading, SETTINGS) == []  # type: ignore[arg-type]


# -- statistics --------------------------------------------------------------------------------


def test_stats_are_summed_over_connections() -> None:
    per = {
        0: {"txdata_octets": 100, "rxdata_octets": 5, "digest_err": 0},
        1: {"txdata_octets": 50, "rxdata_octets": 7, "digest_err": 1},
    }
    assert ks.sum_stats(per.values()) == {
        "txdata_octets": 150,
        "rxdata_octets": 12,
        "digest_err": 1,
    }
    assert ks.sum_stats([]) == {}


def test_stats_reply_has_the_total_and_each_connection() -> None:
    from pyiscsid.daemon import stats_reply

    per = {1: {"scsicmd_pdus": 3}, 0: {"scsicmd_pdus": 4}}
    assert stats_reply(per) == {
        "stats": {"scsicmd_pdus": 7},
        "connections": [
            {"cid": 0, "stats": {"scsicmd_pdus": 4}},
            {"cid": 1, "stats": {"scsicmd_pdus": 3}},
        ],
    }


def test_connection_stats_ask_every_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiscsid.uapi import Stat

    asked: list[tuple[int, int]] = []

    class FakeNl:
        def __enter__(self) -> FakeNl:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def get_stats(self, sid: int, cid: int) -> dict[Stat, int]:
            asked.append((sid, cid))
            return {Stat.TXDATA_OCTETS: 10 * (cid + 1), Stat.REJECT_PDUS: cid}

    monkeypatch.setattr(ks.sysfs, "connection_ids", lambda sid: [0, 2])
    monkeypatch.setattr(ks, "IscsiNetlink", FakeNl)
    per = ks.connection_stats(5)
    assert asked == [(5, 0), (5, 2)]
    assert per == {
        0: {"txdata_octets": 10, "rjt_pdus": 0},
        2: {"txdata_octets": 30, "rjt_pdus": 2},
    }
    assert ks.session_stats(5) == {"txdata_octets": 40, "rjt_pdus": 2}


# -- closing one connection --------------------------------------------------------------------


def test_close_connection_of_an_unknown_cid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ks.sysfs, "connection_ids", lambda sid: [0, 1])
    with pytest.raises(IscsiError) as exc:
        ks.close_connection(3, 4)
    assert exc.value.code == Err.SESS_NOT_FOUND


def test_close_connection_of_the_only_one_logs_the_session_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopped: list[int] = []
    monkeypatch.setattr(ks.sysfs, "connection_ids", lambda sid: [1])
    monkeypatch.setattr(ks, "stop_session", lambda sid, timeout=15.0: stopped.append(sid))
    ks.close_connection(3, 1)
    assert stopped == [3]


class FakeCloseNl:
    """The netlink calls close_connection makes, recorded; the Logout is answered by a fake
    EventListener (see the test)."""

    def __init__(self, drain_error: int | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.drain_error = drain_error

    def __enter__(self) -> FakeCloseNl:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def drain_conn(self, sid: int, cid: int, timeout: int) -> None:
        self.calls.append(("drain", sid, cid))
        assert ks.is_closing_conn(sid, cid)  # its errors are expected from now on
        if self.drain_error is not None:
            raise IscsiError(self.drain_error, "drain")

    def send_pdu(self, sid: int, cid: int, pdu: bytes) -> None:
        from pyiscsid.pdu import LogoutRequest, peek_bhs

        req = peek_bhs(pdu, LogoutRequest)
        assert req is not None
        self.calls.append(("logout", sid, cid, req.reason, req.cid))
        self.itt = req.itt

    def stop_conn(self, sid: int, cid: int, flag: int) -> None:
        self.calls.append(("stop", sid, cid, flag))

    def destroy_conn(self, sid: int, cid: int) -> None:
        self.calls.append(("destroy", sid, cid))


def _fake_listener(nl: FakeCloseNl) -> type:
    from pyiscsid.netlink import RecvPduEvent
    from pyiscsid.pdu import LogoutResponse

    class Listener:
        def __enter__(self) -> Listener:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def wait(self, timeout: float, sid: int | None = None) -> list[RecvPduEvent]:
            answer = LogoutResponse(itt=nl.itt, response=0).encode()
            return [RecvPduEvent(sid or 0, 1, answer)]

    return Listener


def test_close_connection_drains_logs_out_reason_1_and_destroys_only_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyiscsid.uapi import Stop

    nl = FakeCloseNl()
    monkeypatch.setattr(ks.sysfs, "connection_ids", lambda sid: [0, 1, 2])
    monkeypatch.setattr(ks, "IscsiNetlink", lambda: nl)
    monkeypatch.setattr(ks, "EventListener", _fake_listener(nl))
    try:
        ks.close_connection(3, 1)
        assert nl.calls == [
            ("drain", 3, 1),
            ("logout", 3, 1, 1, 1),  # reason 1: close the connection, its CID
            ("stop", 3, 1, Stop.TERM),
            ("destroy", 3, 1),
        ]
        assert ks.closed_cids(3) == {1}  # a recovery does not add it again
        assert not ks.is_closing_conn(3, 1)
    finally:
        ks.forget_session(3)


def test_close_connection_of_the_last_running_one_logs_the_session_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nl = FakeCloseNl(drain_error=Err.BUSY)
    stopped: list[int] = []
    monkeypatch.setattr(ks.sysfs, "connection_ids", lambda sid: [0, 1])
    monkeypatch.setattr(ks, "IscsiNetlink", lambda: nl)
    monkeypatch.setattr(ks, "stop_session", lambda sid, timeout=15.0: stopped.append(sid))
    ks.close_connection(3, 1)
    assert stopped == [3]
    assert nl.calls == [("drain", 3, 1)]
    assert ks.closed_cids(3) == set()


def test_conn_error_of_a_connection_being_closed_starts_no_recovery() -> None:
    from pyiscsid.netlink import ConnErrorEvent
    from pyiscsid.uapi import ConnError

    failed: list[tuple[int, int]] = []

    class Rec_:
        def conn_failed(self, sid: int, cid: int, reason: str) -> bool:
            failed.append((sid, cid))
            return True

        def hold_off(self, sid: int, seconds: float) -> None: ...
        def active(self, sid: int) -> bool:
            return False

        def stop(self, timeout: float = 2.0) -> None: ...

    svc = ev.EventService(recovery=Rec_())
    with ks._lock:
        ks._closing_conns.add((8, 1))
    try:
        svc.handle(None, ConnErrorEvent(8, 1, ConnError.CONN_FAILED))  # type: ignore[arg-type]
        svc.handle(None, ConnErrorEvent(8, 2, ConnError.CONN_FAILED))  # type: ignore[arg-type]
    finally:
        with ks._lock:
            ks._closing_conns.discard((8, 1))
    assert failed == [(8, 2)]  # another connection's failure still recovers the session


@pytest.mark.parametrize("code", [Err.BUSY, Err.SESS_NOT_FOUND])
def test_a_session_that_failed_or_went_ends_the_adding(code: Err) -> None:
    steps = FakeConnSteps({1: IscsiError(code, "session 1 is not logged in")})
    assert mcs.add_connections(1, range(1, 4), PORTALS, SETTINGS, 7, steps) == []
    assert len(steps.calls) == 1

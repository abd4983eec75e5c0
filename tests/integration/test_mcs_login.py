"""A two-connection session's logins against a scripted target (no kernel): the leading login
proposes MaxConnections, the further one carries the session's ISID, TSIH and CmdSN with its own
CID and only the connection's keys; a target that refuses it (0x0206) leaves the first alone."""

from __future__ import annotations

import logging
import threading

import pytest
from hostile import HostileTarget, answer_login, recv_login, response_to

from pyiscsid import connections as mcs
from pyiscsid import pdu as P
from pyiscsid.login import LoginResult, login
from pyiscsid.negotiation import decode_text
from pyiscsid.pduio import PduConnection
from pyiscsid.settings import LoginSettings

pytestmark = pytest.mark.integration

TARGET = "iqn.2024-01.org.pyiscsi:mcs"
TSIH = 0x2A


class Recorder:
    """The Login Requests each connection sent, by connection index."""

    def __init__(self) -> None:
        self.requests: dict[int, list[P.LoginRequest]] = {}
        self.lock = threading.Lock()

    def keys(self, index: int) -> dict[str, str]:
        with self.lock:
            return {k: v for req in self.requests[index] for k, v in decode_text(req.data)}

    def add(self, index: int, req: P.LoginRequest) -> None:
        with self.lock:
            self.requests.setdefault(index, []).append(req)


class RecordingConnection:
    """A PduConnection whose Login Requests are recorded (answer_login reads through it)."""

    def __init__(self, conn: PduConnection, index: int, rec: Recorder) -> None:
        self.conn, self.index, self.rec = conn, index, rec

    def recv(self, timeout: float) -> P.Pdu:
        pdu = self.conn.recv(timeout)
        if isinstance(pdu, P.LoginRequest):
            self.rec.add(self.index, pdu)
        return pdu

    def send(self, pdu: P.Pdu) -> None:
        self.conn.send(pdu)


def settings() -> LoginSettings:
    s = LoginSettings(
        initiator_name="iqn.2024-01.org.pyiscsi:init", target_name=TARGET, login_timeout=3.0
    )
    s.isid = bytes.fromhex("00023d000009")
    s.operational = {
        "MaxConnections": "4",
        "HeaderDigest": "None",
        "DataDigest": "None",
        "MaxRecvDataSegmentLength": "262144",
        "InitialR2T": "Yes",
        "ImmediateData": "Yes",
        "ErrorRecoveryLevel": "0",
    }
    return s


class LoginOnly:
    """ConnectionSteps without a kernel: the further connection's login, kept for the test;
    CmdSN is what the leading login left (the kernel's session CmdSN in iscsid)."""

    def __init__(self, cmdsn: int) -> None:
        self.cmdsn = cmdsn
        self.results: dict[int, LoginResult] = {}

    def add(self, sid: int, cid: int, portal: mcs.Portal, settings: LoginSettings) -> None:
        self.results[cid] = login(portal.address, portal.port, settings, cmdsn=self.cmdsn)

    def close(self) -> None:
        for r in self.results.values():
            r.close()


def _two_connection_target(rec: Recorder, refuse_second: bool = False):  # type: ignore[no-untyped-def]
    def handler(conn: PduConnection, index: int) -> None:
        wrapped = RecordingConnection(conn, index, rec)
        if index > 0 and refuse_second:
            req = recv_login(wrapped)  # type: ignore[arg-type]
            conn.send(response_to(req, status_class=2, status_detail=0x06, transit=False))
            return
        answer_login(wrapped, tsih=TSIH)  # type: ignore[arg-type]
        threading.Event().wait(2)  # keep the connection up while the test looks

    return handler


def test_second_connection_joins_the_session_with_connection_keys_only() -> None:
    rec = Recorder()
    with HostileTarget(_two_connection_target(rec)) as t:
        lead = login(t.address, t.port, settings())
        steps = LoginOnly(lead.cmdsn)
        try:
            assert lead.negotiated.max_connections == 4  # the scripted target echoes the offer
            assert lead.tsih == TSIH
            assert rec.keys(0)["MaxConnections"] == "4"
            count = mcs.connection_count(lead.negotiated)
            portals = [mcs.Portal(t.address, t.port)]
            added = mcs.add_connections(7, range(1, 2), portals, settings(), lead.tsih, steps)
            assert added == [1] and count == 4
            second = rec.requests[1][0]
            assert (second.isid, second.tsih, second.cid) == (lead.isid, TSIH, 1)
            assert second.cmdsn == lead.cmdsn and second.immediate
            keys = rec.keys(1)
            assert keys["TargetName"] == TARGET and keys["InitiatorName"]
            assert "AuthMethod" in keys
            assert {"HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength"} <= set(keys)
            for key in ("MaxConnections", "InitialR2T", "ImmediateData", "ErrorRecoveryLevel",
                        "SessionType"):  # fmt: skip
                assert key not in keys, key
            assert steps.results[1].tsih == TSIH and steps.results[1].cid == 1
        finally:
            steps.close()
            lead.close()


def test_too_many_connections_keeps_the_first(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()
    with HostileTarget(_two_connection_target(rec, refuse_second=True)) as t:
        lead = login(t.address, t.port, settings())
        steps = LoginOnly(lead.cmdsn)
        try:
            portals = [mcs.Portal(t.address, t.port)]
            added = mcs.add_connections(7, range(1, 4), portals, settings(), lead.tsih, steps)
            assert added == []
            assert len(rec.requests) == 2  # one refused further login, no more tried
            assert "allows no more connections" in caplog.text
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
            lead.conn.send(P.NopOut(immediate=True, itt=5, cmdsn=lead.cmdsn))  # still up
        finally:
            steps.close()
            lead.close()

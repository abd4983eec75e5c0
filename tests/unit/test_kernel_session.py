"""pyiscsid.kernel_session without a kernel: the parameters handed over, the Logout PDU, and the
sysfs reader against a tree laid out like the iSCSI transport class's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyiscsid import kernel_session as ks
from pyiscsid.login import LoginResult
from pyiscsid.negotiation import NegotiatedParams
from pyiscsid.pduio import PduConnection
from pyiscsid.records import NodeRecord
from pyiscsid.uapi import Param

IQN = "iqn.2003-01.org.linux-iscsi.vm:ram"


@pytest.fixture
def login() -> Iterator[LoginResult]:
    a, b = socket.socketpair()
    neg = NegotiatedParams(
        header_digest=True,
        max_recv_data_segment_length=262144,
        max_xmit_data_segment_length=65536,
        max_burst_length=1048576,
        first_burst_length=65536,
        initial_r2t=False,
        immediate_data=True,
        max_outstanding_r2t=4,
        target_alias="ramdisk",
        target_portal_group_tag=1,
    )
    yield LoginResult(
        conn=PduConnection(a),
        sock=a,
        address="10.0.0.9",
        port=3261,
        tsih=0x1234,
        isid=bytes.fromhex("00023d000001"),
        cid=0,
        statsn=41,
        exp_statsn=42,
        cmdsn=1,
        exp_cmdsn=1,
        max_cmdsn=64,
        negotiated=neg,
        target_name=IQN,
    )
    a.close()
    b.close()


def test_session_params(login: LoginResult) -> None:
    rec = NodeRecord(IQN, "127.0.0.1", 3260, tpgt=-1)
    rec.set("node.session.timeo.replacement_timeout", "30")
    rec.set("node.conn[0].timeo.noop_out_interval", "7")
    rec.set("node.session.auth.username", "joe")
    got = {(p, c): v for p, v, c in ks.session_params(rec, login, "iqn.2026-11.test:init")}
    expected = {
        Param.MAX_RECV_DLENGTH: "262144",
        Param.MAX_XMIT_DLENGTH: "65536",
        Param.HDRDGST_EN: "1",
        Param.DATADGST_EN: "0",
        Param.CONN_ADDRESS: "10.0.0.9",
        Param.CONN_PORT: "3261",
        Param.PERSISTENT_ADDRESS: "127.0.0.1",
        Param.PERSISTENT_PORT: "3260",
        Param.PING_TMO: "5",
        Param.RECV_TMO: "7",
    }
    assert {p: v for (p, c), v in got.items() if c} == expected
    session = {p: v for (p, c), v in got.items() if not c}
    assert session == {
        Param.TARGET_NAME: IQN,
        Param.TPGT: "1",
        Param.INITIATOR_NAME: "iqn.2026-11.test:init",
        Param.TARGET_ALIAS: "ramdisk",
        Param.IFACE_NAME: "default",
        Param.ISID: "00023d000001",
        Param.TSIH: str(0x1234),
        Param.INITIAL_R2T_EN: "0",
        Param.IMM_DATA_EN: "1",
        Param.FIRST_BURST: "65536",
        Param.MAX_BURST: "1048576",
        Param.MAX_R2T: "4",
        Param.PDU_INORDER_EN: "1",
        Param.DATASEQ_INORDER_EN: "1",
        Param.ERL: "0",
        Param.DEF_TIME2WAIT: "2",
        Param.DEF_TIME2RETAIN: "20",
        Param.RECOVERY_TMO: "30",
        Param.ABORT_TMO: "15",
        Param.LU_RESET_TMO: "30",
        Param.TGT_RESET_TMO: "30",
        Param.USERNAME: "joe",
        Param.USERNAME_IN: "",
    }
    # every parameter of the header is handed over
    assert {p for p, _ in got} == set(Param)


def test_xmit_cap_and_tpgt_fallback(login: LoginResult) -> None:
    rec = NodeRecord(IQN, "127.0.0.1", 3260, tpgt=5)
    rec.set("node.conn[0].iscsi.MaxXmitDataSegmentLength", "8192")
    rec.set("iface.initiatorname", "iqn.2026-11.test:from-iface")
    login.negotiated.target_portal_group_tag = None
    got = {p: v for p, v, _ in ks.session_params(rec, login)}
    assert got[Param.MAX_XMIT_DLENGTH] == "8192"
    assert got[Param.TPGT] == "5"
    assert got[Param.INITIATOR_NAME] == "iqn.2026-11.test:from-iface"
    rec = NodeRecord(IQN, "127.0.0.1", 3260, tpgt=-1)
    got = {p: v for p, v, _ in ks.session_params(rec, login)}
    assert got[Param.TPGT] == ""


def test_logout_pdu_bytes() -> None:
    pdu = ks.logout_pdu(0x80000005, 3)
    expected = bytearray(48)
    expected[0] = 0x46  # immediate | Logout Request
    expected[1] = 0x80  # F, reason 0: close the session
    expected[16:20] = (0x80000005).to_bytes(4, "big")
    expected[20:22] = (3).to_bytes(2, "big")
    assert pdu == bytes(expected)
    assert ks._next_itt() & 0x80000000
    assert ks._next_itt() != ks._next_itt()


def test_logout_response_match() -> None:
    rsp = bytearray(48)
    rsp[0] = 0x26
    rsp[1] = 0x80
    rsp[2] = 1  # CID not found
    rsp[16:20] = (0x80000007).to_bytes(4, "big")
    assert ks.logout_response_of(bytes(rsp), 0x80000007) == 1
    assert ks.logout_response_of(bytes(rsp), 0x80000008) is None
    nop_in = bytearray(48)
    nop_in[0] = 0x20
    nop_in[1] = 0x80
    assert ks.logout_response_of(bytes(nop_in), 0x80000007) is None
    assert ks.logout_response_of(b"\x26", 0) is None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sys_ = tmp_path / "sys"
    dev = tmp_path / "dev"
    dev.mkdir()
    monkeypatch.setattr(ks, "SYSFS", sys_)
    monkeypatch.setattr(ks, "DEV", dev)
    host = sys_ / "devices" / "platform" / "host4"
    sess = host / "session2"
    (sys_ / "class" / "iscsi_session").mkdir(parents=True)
    (sys_ / "class" / "iscsi_connection").mkdir(parents=True)
    sdir = sess / "iscsi_session" / "session2"
    for k, v in {
        "targetname": IQN,
        "tpgt": "1",
        "initiatorname": "iqn.2026-11.test:init",
        "ifacename": "default",
        "isid": "00023d000001",
        "tsih": "4660",
        "state": "LOGGED_IN",
        "recovery_tmo": "120",
    }.items():
        _write(sdir / k, v)
    (sdir / "device").symlink_to(os.path.relpath(sess, sdir))
    (sys_ / "class" / "iscsi_session" / "session2").symlink_to(sdir)
    cdir = sess / "connection2:0" / "iscsi_connection" / "connection2:0"
    for k, v in {
        "address": "10.0.0.9",
        "port": "3261",
        "persistent_address": "127.0.0.1",
        "persistent_port": "3260",
        "header_digest": "None",
    }.items():
        _write(cdir / k, v)
    (sys_ / "class" / "iscsi_connection" / "connection2:0").symlink_to(cdir)
    lun = sess / "target4:0:0" / "4:0:0:0"
    _write(lun / "type", "0")
    (lun / "block" / "sdb").mkdir(parents=True)
    ctl = sess / "target4:0:0" / "4:0:0:1"
    _write(ctl / "type", "12")  # a RAID controller LUN: no block device expected
    (sys_ / "bus" / "scsi" / "devices").mkdir(parents=True)
    (sys_ / "bus" / "scsi" / "devices" / "4:0:0:0").symlink_to(lun)
    (sys_ / "bus" / "scsi" / "devices" / "4:0:0:1").symlink_to(ctl)
    (sys_ / "bus" / "scsi" / "devices" / "target4:0:0").mkdir()  # not a LUN
    return tmp_path


def test_list_sessions_from_sysfs(sysfs: Path) -> None:
    (sessions,) = ks.list_sessions()
    assert sessions.sid == 2
    assert sessions.host_no == 4
    assert (sessions.target_name, sessions.tpgt) == (IQN, 1)
    assert (sessions.address, sessions.port) == ("10.0.0.9", 3261)
    assert (sessions.persistent_address, sessions.persistent_port) == ("127.0.0.1", 3260)
    assert (sessions.iface, sessions.initiator_name) == ("default", "iqn.2026-11.test:init")
    assert (sessions.isid, sessions.tsih, sessions.state) == ("00023d000001", 4660, "LOGGED_IN")
    assert sessions.cids == [0]
    assert sessions.attrs["recovery_tmo"] == "120"
    assert sessions.conn_attrs["header_digest"] == "None"
    assert sessions.disks == ["sdb"]
    assert ks.session_info(3) is None


def test_identities_and_pulses_read_only_what_they_need(sysfs: Path) -> None:
    assert ks.session_identities() == [
        ks.SessionIdentity(2, IQN, "127.0.0.1", 3260, "default", "00023d000001")
    ]
    cdir = sysfs / "sys" / "class" / "iscsi_connection" / "connection2:0"
    _write(cdir / "recv_tmo", "7")
    _write(cdir / "ping_tmo", "3")
    (pulse,) = ks.session_pulses()
    assert pulse == ks.SessionPulse(2, "LOGGED_IN", [0], 7, 3)
    assert ks.ping_schedule() == {2: (0, 7.0, 3.0)}
    assert ks.failed_sessions() == []
    _write(sysfs / "sys" / "class" / "iscsi_session" / "session2" / "state", "FAILED")
    assert ks.ping_schedule() == {}
    assert ks.failed_sessions() == [(2, 0)]


def test_identities_cached_for_a_sessions_lifetime(sysfs: Path) -> None:
    link = sysfs / "sys" / "class" / "iscsi_session" / "session2"
    sdir = link.resolve()
    ks._identities.clear()
    assert [i.target_name for i in ks.session_identities()] == [IQN]
    _write(sdir / "targetname", "iqn.2026-12.test:other")
    assert [i.target_name for i in ks.session_identities()] == [IQN]  # same session: no read
    # the session goes, a new one gets its number (a new sysfs entry): read again
    link.unlink()
    assert ks.session_identities() == []
    link.symlink_to(sdir)
    assert [i.target_name for i in ks.session_identities()] == ["iqn.2026-12.test:other"]
    # a session whose parameters are not set yet is not remembered as it is
    link.unlink()
    assert ks.session_identities() == []  # (a test file system may reuse the inode at once)
    _write(sdir / "targetname", "")
    link.symlink_to(sdir)
    assert [i.target_name for i in ks.session_identities()] == [""]
    _write(sdir / "targetname", IQN)
    assert [i.target_name for i in ks.session_identities()] == [IQN]


def test_wait_for_disks(sysfs: Path) -> None:
    assert ks.wait_for_disks(4, 0.1) == ["4:0:0:0"]  # /dev/sdb not there yet
    (sysfs / "dev" / "sdb").touch()
    assert ks.wait_for_disks(4, 0.1) == []
    assert ks.wait_for_disks(9, 0.1) == []


def test_no_sysfs_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ks, "SYSFS", tmp_path)
    assert ks.list_sessions() == []
    assert ks.connection_ids(1) == []
    assert ks.session_host(1) == -1


def test_listing_imports_neither_pyroute2_nor_cffi() -> None:
    code = (
        "import sys\n"
        "from pyiscsid import kernel_session\n"
        "kernel_session.list_sessions()\n"
        "bad = [m for m in ('pyroute2', 'cffi', 'pyiscsid.netlink') if m in sys.modules]\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "[]\n"), proc.stderr


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
    reply = ks.nop_out_reply(_nop_in(0x1234, lun))
    expected = bytearray(48)
    expected[0] = 0x40  # immediate | NOP-Out
    expected[1] = 0x80
    expected[8:16] = lun
    expected[16:20] = (0xFFFFFFFF).to_bytes(4, "big")
    expected[20:24] = (0x1234).to_bytes(4, "big")
    assert reply == bytes(expected)
    assert ks.nop_out_reply(_nop_in(0xFFFFFFFF)) is None  # no answer wanted
    assert ks.nop_out_reply(b"\x26\x80" + bytes(46)) is None  # not a NOP-In
    assert ks.nop_out_reply(b"\x20") is None


class _Recorder:
    """Stands in for IscsiNetlink: the kernel is needed for the real one (VM test covers it)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int, bytes]] = []

    def send_pdu(self, sid: int, cid: int, pdu: bytes) -> None:
        self.sent.append((sid, cid, pdu))


def test_event_service_answers_pings_only(caplog: pytest.LogCaptureFixture) -> None:
    from pyiscsid.netlink import ConnErrorEvent, RecvPduEvent
    from pyiscsid.uapi import ConnError

    svc = ks.EventService()
    rec = _Recorder()
    svc.handle(rec, RecvPduEvent(3, 0, _nop_in(7)))  # type: ignore[arg-type]
    svc.handle(rec, RecvPduEvent(3, 0, _nop_in(0xFFFFFFFF)))  # type: ignore[arg-type]
    svc.handle(rec, ConnErrorEvent(3, 0, ConnError.CONN_FAILED))  # type: ignore[arg-type]
    assert [(s, c, p[20:24]) for s, c, p in rec.sent] == [(3, 0, (7).to_bytes(4, "big"))]
    assert svc.pings_answered == 1
    assert "session 3: connection 0 failed (CONN_FAILED)" in caplog.text
    caplog.clear()
    ks._closing.add(3)
    try:
        svc.handle(rec, ConnErrorEvent(3, 0, ConnError.CONN_FAILED))  # type: ignore[arg-type]
    finally:
        ks._closing.discard(3)
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
    from pyiscsid.netlink import RecvPduEvent

    rec, recovery = _Recorder(), _Recovery()
    svc = ks.EventService(recovery=recovery)
    ask = P.AsyncMessage(async_event=1, parameter3=5).encode()
    svc.handle(rec, RecvPduEvent(3, 0, ask))  # type: ignore[arg-type]
    svc.handle(rec, RecvPduEvent(3, 0, ask))  # a repeat while the logout is out: ignored
    ((sid, cid, sent),) = rec.sent
    logout = P.decode_bhs(sent[:48])
    assert (sid, cid) == (3, 0)
    assert isinstance(logout, P.LogoutRequest) and logout.reason == 1 and logout.immediate
    assert recovery.failed == []
    other = P.LogoutResponse(itt=logout.itt ^ 1).encode()
    svc.handle(rec, RecvPduEvent(3, 0, other))  # type: ignore[arg-type]
    assert recovery.failed == []
    svc.handle(rec, RecvPduEvent(3, 0, P.LogoutResponse(itt=logout.itt).encode()))  # type: ignore[arg-type]
    assert recovery.failed == [(3, 0, "target requested logout")]
    assert svc.async_logouts == {}


def test_async_logout_without_a_response_recovers_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyiscsid import pdu as P
    from pyiscsid.netlink import RecvPduEvent

    monkeypatch.setattr(ks, "session_pulses", list)
    rec, recovery = _Recorder(), _Recovery()
    svc = ks.EventService(recovery=recovery)
    svc.handle(rec, RecvPduEvent(4, 0, P.AsyncMessage(async_event=1, parameter3=2).encode()))  # type: ignore[arg-type]
    (_cid, _itt, deadline) = svc.async_logouts[4]
    svc.tick(rec, deadline - 0.5)
    assert recovery.failed == []
    svc._next_tick = 0.0
    svc.tick(rec, deadline + 0.1)
    assert recovery.failed == [(4, 0, "target requested logout")]


def test_async_drop_holds_the_reconnect_off_for_time2wait() -> None:
    from pyiscsid import pdu as P
    from pyiscsid.netlink import RecvPduEvent

    rec, recovery = _Recorder(), _Recovery()
    svc = ks.EventService(recovery=recovery)
    drop = P.AsyncMessage(async_event=3, parameter2=6, parameter3=20).encode()
    svc.handle(rec, RecvPduEvent(5, 0, drop))  # type: ignore[arg-type]
    assert recovery.held == [(5, 6.0)] and rec.sent == [] and recovery.failed == []

"""pyiscsid.kernel_session without a kernel: the parameters handed over, the Logout PDU and its
answer (the VM tier runs the rest against the real modules)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

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
        Param.NETDEV_NAME: "",  # the default iface binds to nothing: the host shows "default"
        Param.HWADDRESS: "",
    }
    # every parameter of the header is handed over
    assert {p for p, _ in got} == set(Param)


def test_session_params_carry_the_iface_binding(login: LoginResult) -> None:
    from pyiscsid.records import IfaceRecord

    rec = NodeRecord(IQN, "127.0.0.1", 3260, tpgt=-1)
    rec.apply_iface(
        IfaceRecord("iface0", {"iface.net_ifacename": "veth1", "iface.hwaddress": "default"})
    )
    got = {p: v for p, v, _ in ks.session_params(rec, login)}
    assert got[Param.IFACE_NAME] == "iface0"
    assert got[Param.NETDEV_NAME] == "veth1"
    assert got[Param.HWADDRESS] == ""  # open-iscsi's placeholder "default": not set


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
    assert ks.next_itt() & 0x80000000
    assert ks.next_itt() != ks.next_itt()


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

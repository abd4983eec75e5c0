"""pyiscsid.netlink: message encoding/decoding against bytes built by hand, and the request/ack
path against the kernel's own generic netlink controller (no iscsi_if module needed)."""

from __future__ import annotations

import errno
import struct
import subprocess
import sys

import pytest

from pyiscsid import netlink as nl
from pyiscsid.errors import Err, IscsiError
from pyiscsid.uapi import Attr, Cmd, ConnError, SessionState, Stat

FID = 0x1E  # any family id


def nla(t: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, t) + payload + bytes((-length) % 4)


def u32(t: int, v: int) -> bytes:
    return nla(t, struct.pack("=I", v))


def genl(cmd: int, body: bytes, *, seq: int = 0, flags: int = 0, fid: int = FID) -> bytes:
    payload = bytes([cmd, 1, 0, 0]) + body
    return struct.pack("=IHHII", 16 + len(payload), fid, flags, seq, 0) + payload


REQ_ACK = 0x1 | 0x4


def test_bind_conn_exact_bytes() -> None:
    got = nl.build_msg(
        FID,
        Cmd.BIND_CONN,
        {Attr.SID: 1, Attr.CID: 0, Attr.SOCK_FD: -1, Attr.EXP_STATSN: 7, Attr.CMDSN: 9},
        seq=4,
    )
    body = (
        u32(Attr.SID, 1)
        + u32(Attr.CID, 0)
        + nla(Attr.SOCK_FD, struct.pack("=i", -1))
        + u32(Attr.EXP_STATSN, 7)
        + u32(Attr.CMDSN, 9)
    )
    assert got == genl(Cmd.BIND_CONN, body, seq=4, flags=REQ_ACK)


def test_every_attribute_of_the_header_has_a_type() -> None:
    assert set(nl.ATTR_TYPES) == {a.name for a in Attr}
    for a in Attr:
        assert nl.IscsiIfMsg.nla_map[int(a)] == (
            int(a),
            f"ISCSI_IF_ATTR_{a.name}",
            nl.ATTR_TYPES[a.name],
        )


def test_strings_binary_u64_and_absent_attributes() -> None:
    got = nl.build_msg(
        FID,
        Cmd.SET_PARAM,
        {Attr.SID: 2, Attr.CID: None, Attr.PARAM: 10, Attr.VALUE: "iqn.x"},
        seq=1,
    )
    body = u32(Attr.SID, 2) + u32(Attr.PARAM, 10) + nla(Attr.VALUE, b"iqn.x\0")
    assert got == genl(Cmd.SET_PARAM, body, seq=1, flags=REQ_ACK)

    got = nl.build_msg(FID, Cmd.SEND_PDU, {Attr.PDU: b"\x06\x80\x01", Attr.LUN: 1 << 40})
    body = nla(Attr.PDU, b"\x06\x80\x01") + nla(Attr.LUN, struct.pack("=Q", 1 << 40))
    assert got == genl(Cmd.SEND_PDU, body, flags=REQ_ACK)


@pytest.mark.parametrize(
    ("cmd", "attrs"),
    [
        (Cmd.CREATE_SESSION, {Attr.TRANSPORT: "tcp", Attr.CMDS_MAX: 128, Attr.QUEUE_DEPTH: 32}),
        (Cmd.STOP_CONN, {Attr.SID: 7, Attr.CID: 1, Attr.STOP_FLAG: 2}),
        (Cmd.SCAN, {Attr.SID: 7, Attr.CHANNEL: 0, Attr.ID: 0, Attr.LUN: 2**64 - 1}),
        (Cmd.SEND_PDU, {Attr.SID: 7, Attr.CID: 0, Attr.PDU: bytes(range(256)) * 3 + b"x"}),
        (Cmd.GET_PARAM, {Attr.SID: 1, Attr.PARAM: 0, Attr.VALUE: "ünïcode"}),
    ],
)
def test_round_trip(cmd: int, attrs: dict[int, object]) -> None:
    data = nl.build_msg(FID, cmd, attrs, seq=77)
    ((mtype, flags, seq, whole),) = list(nl.split_messages(data))
    assert (mtype, flags, seq, whole) == (FID, REQ_ACK, 77, data)
    msg = nl.decode_msg(whole)
    assert msg["cmd"] == cmd
    for attr, value in attrs.items():
        assert nl.get(msg, attr) == value
    assert len(msg["attrs"]) == len(attrs)


def test_split_messages_walks_a_datagram_and_rejects_garbage() -> None:
    a = nl.build_msg(FID, Cmd.START_CONN, {Attr.SID: 1, Attr.CID: 0}, seq=1)
    b = nl.build_msg(FID, Cmd.DESTROY_SESSION, {Attr.SID: 1}, seq=2)
    got = [(s, nl.decode_msg(m)["cmd"]) for _, _, s, m in nl.split_messages(a + b)]
    assert got == [(1, Cmd.START_CONN), (2, Cmd.DESTROY_SESSION)]
    with pytest.raises(IscsiError, match="malformed netlink message"):
        list(nl.split_messages(struct.pack("=IHHII", 400, FID, 0, 0, 0)))


def test_events_are_typed() -> None:
    pdu = bytes([0x26, 0x80]) + bytes(46)
    cases = [
        (
            genl(Cmd.EVENT_RECV_PDU, u32(Attr.SID, 3) + u32(Attr.CID, 0) + nla(Attr.PDU, pdu)),
            nl.RecvPduEvent(3, 0, pdu),
        ),
        (
            genl(Cmd.EVENT_CONN_ERROR, u32(Attr.SID, 4) + u32(Attr.CID, 1) + u32(Attr.ERROR, 4)),
            nl.ConnErrorEvent(4, 1, ConnError.DATA_DGST),
        ),
        (
            genl(Cmd.EVENT_SESSION_STATE, u32(Attr.SID, 5) + u32(Attr.STATE, 2)),
            nl.SessionStateEvent(5, SessionState.FAILED),
        ),
        (genl(Cmd.EVENT_SESSION_DESTROYED, u32(Attr.SID, 6)), nl.SessionDestroyedEvent(6)),
    ]
    for data, expected in cases:
        event = nl.decode_event(nl.decode_msg(data))
        assert event == expected
        assert type(getattr(event, "error", None) or 0).__name__ in ("ConnError", "int")
    assert nl.decode_event(nl.decode_msg(genl(Cmd.GET_SESSION, u32(Attr.SID, 1)))) is None
    # an error number newer than this header stays a plain int
    data = genl(Cmd.EVENT_CONN_ERROR, u32(Attr.SID, 4) + u32(Attr.ERROR, 99))
    assert nl.decode_event(nl.decode_msg(data)) == nl.ConnErrorEvent(4, 0, 99)
    with pytest.raises(IscsiError, match="lacks ISCSI_IF_ATTR_PDU"):
        nl.decode_event(nl.decode_msg(genl(Cmd.EVENT_RECV_PDU, u32(Attr.SID, 3))))


def test_nested_stats_with_nested_flag() -> None:
    inner = nla(Stat.TXDATA_OCTETS, struct.pack("=Q", 1 << 40)) + nla(
        Stat.DIGEST_ERR, struct.pack("=Q", 7)
    )
    data = genl(Cmd.GET_STATS, u32(Attr.SID, 3) + nla(0x8000 | Attr.STATS, inner))
    assert nl.stats_of(nl.decode_msg(data)) == {Stat.TXDATA_OCTETS: 1 << 40, Stat.DIGEST_ERR: 7}
    assert nl.stats_of(nl.decode_msg(genl(Cmd.GET_STATS, u32(Attr.SID, 3)))) == {}


def test_session_reply() -> None:
    data = genl(Cmd.GET_SESSION, u32(Attr.SID, 9) + u32(Attr.HOST_NO, 4) + u32(Attr.STATE, 1))
    assert nl.session_of(nl.decode_msg(data)) == nl.KernelSession(9, 4, SessionState.LOGGED_IN)


def _ack(error: int, extack: bytes = b"") -> bytes:
    orig = struct.pack("=IHHII", 20, FID, REQ_ACK, 5, 0)
    body = struct.pack("=i", error) + orig + extack
    return struct.pack("=IHHII", 16 + len(body), 2, 0x100 | (0x200 if extack else 0), 5, 0) + body


def test_ack_decoding_and_error_mapping() -> None:
    assert nl.decode_ack(_ack(0)) == (0, "")
    error, text = nl.decode_ack(_ack(-errno.ENOENT, nla(1, b"no session 42\0")))
    assert (error, text) == (-errno.ENOENT, "no session 42")
    short = struct.pack("=IHHII", 20, 2, 0, 5, 0) + struct.pack("=i", -errno.EBUSY)
    assert nl.decode_ack(short) == (-errno.EBUSY, "")

    exc = nl.kernel_error(Cmd.DESTROY_SESSION, -errno.ENOENT, "no session 42")
    assert exc.code == Err.SESS_NOT_FOUND
    assert exc.message == (
        "kernel iscsi_if DESTROY_SESSION failed: No such file or directory (ENOENT): no session 42"
    )
    assert nl.kernel_error(Cmd.CREATE_SESSION, -errno.ENOENT).code == Err.TRANS_NOT_FOUND
    assert nl.kernel_error(Cmd.BIND_CONN, -errno.EBADF).code == Err.TRANS
    assert nl.kernel_error(Cmd.CREATE_SESSION, -errno.ENOMEM).code == Err.NOMEM
    assert nl.kernel_error(Cmd.START_CONN, -errno.EBUSY).code == Err.BUSY
    assert nl.kernel_error(Cmd.SET_PARAM, -errno.EINVAL).message == (
        "kernel iscsi_if SET_PARAM failed: Invalid argument (EINVAL)"
    )


# -- against the running kernel (generic netlink works in any container) ---------------------


def test_missing_family_is_trans_not_found() -> None:
    with pytest.raises(IscsiError) as exc:
        nl.IscsiNetlink(timeout=5, family="nosuchfamily")
    assert exc.value.code == Err.TRANS_NOT_FOUND
    assert "'nosuchfamily' not found" in exc.value.message


def test_kernel_error_ack_through_a_real_socket() -> None:
    # nlctrl answers an unknown command with -EOPNOTSUPP: the whole request/ack path runs.
    with nl.IscsiNetlink(timeout=5, family="nlctrl") as sock:
        assert sock.family_id == 0x10
        with pytest.raises(IscsiError) as exc:
            sock.request(99, {Attr.SID: 1})
        assert exc.value.code == Err.OP_NOT_SUPP
        assert exc.value.message.startswith("kernel iscsi_if command 99 failed: ")
        assert f"({errno.errorcode[errno.EOPNOTSUPP]})" in exc.value.message
        # the socket stays usable: sequence numbers keep the next answer apart
        with pytest.raises(IscsiError, match="Operation not supported"):
            sock.request(98, {})


def test_event_listener_needs_the_events_group() -> None:
    with pytest.raises(IscsiError, match="no multicast group 'events'"):
        nl.EventListener(timeout=5, family="nlctrl")


def test_import_is_light_and_pyroute2_stays_whole() -> None:
    code = (
        "import sys\n"
        "import pyiscsid.netlink\n"
        "assert 'asyncio' not in sys.modules, 'pyroute2/__init__ ran at import'\n"
        "import pyroute2\n"
        "assert pyroute2.netlink.genlmsg is pyiscsid.netlink.genlmsg\n"
        "assert pyroute2.IPRoute.__name__ == 'IPRoute'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok\n", "")


def test_a_batch_consumes_every_ack_and_raises_the_first_error() -> None:
    # three requests in one datagram, each answered with an error ack by nlctrl
    with nl.IscsiNetlink(timeout=5, family="nlctrl") as sock:
        with pytest.raises(IscsiError) as exc:
            sock.request_batch(99, [{Attr.SID: 1}, {Attr.SID: 2}, {}])
        assert exc.value.code == Err.OP_NOT_SUPP
        assert exc.value.message.startswith("kernel iscsi_if command 99 failed: ")
        sock.request_batch(99, [])  # nothing to send, nothing to wait for
        # no ack of the batch is left behind to be taken for the next answer
        sock.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.sock.recv(4096)
        sock.sock.setblocking(True)
        with pytest.raises(IscsiError, match="Operation not supported"):
            sock.request(98, {})


def _pyroute2_encoded(cmd: int, attrs: dict[int, object], seq: int) -> bytes:
    msg = nl.IscsiIfMsg()
    msg["cmd"] = int(cmd)
    msg["version"] = 1
    msg["attrs"] = [[nl.attr_name(k), v] for k, v in attrs.items() if v is not None]
    msg["header"]["type"] = FID
    msg["header"]["flags"] = REQ_ACK
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize(
    ("cmd", "attrs"),
    [
        (Cmd.CREATE_SESSION, {Attr.TRANSPORT: "tcp", Attr.CMDS_MAX: 128, Attr.QUEUE_DEPTH: 32}),
        (Cmd.SET_PARAM, {Attr.SID: 3, Attr.CID: None, Attr.PARAM: 7, Attr.VALUE: "iqn.x:yz"}),
        (Cmd.SET_PARAM, {Attr.SID: 3, Attr.CID: 0, Attr.PARAM: 1, Attr.VALUE: ""}),
        (
            Cmd.BIND_CONN,
            {
                Attr.SID: 1,
                Attr.CID: 0,
                Attr.SOCK_FD: -1,
                Attr.EXP_STATSN: 2**32 - 1,
                Attr.CMDSN: 0,
                Attr.MAX_CMDSN: 5,
            },
        ),
        (Cmd.SEND_PDU, {Attr.SID: 1, Attr.CID: 0, Attr.PDU: bytes(range(49))}),
        (Cmd.SCAN, {Attr.SID: 1, Attr.CHANNEL: 0, Attr.ID: 0, Attr.LUN: 2**40 + 3}),
    ],
)
def test_request_encoding_is_pyroute2s(cmd: int, attrs: dict[int, object]) -> None:
    assert nl.build_msg(FID, cmd, attrs, seq=9) == _pyroute2_encoded(cmd, attrs, 9)


def test_reply_only_attributes_are_refused_in_requests() -> None:
    with pytest.raises(IscsiError, match="STATS"):
        nl.build_msg(FID, Cmd.GET_STATS, {Attr.STATS: {}})


def test_sid_of_reads_the_sid_without_a_decode() -> None:
    msg = nl.build_msg(0x20, Cmd.STOP_CONN, {Attr.CID: 3, Attr.SID: 42, Attr.STOP_FLAG: 1})
    assert nl.sid_of(msg) == 42
    assert nl.sid_of(nl.build_msg(0x20, Cmd.STOP_CONN, {Attr.CID: 3})) is None
    last = nl.build_msg(0x20, Cmd.STOP_CONN, {Attr.CID: 3, Attr.SID: 42})
    assert nl.sid_of(last[:-2]) is None  # a truncated attribute is not read past the end

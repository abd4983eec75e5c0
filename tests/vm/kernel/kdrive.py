"""Guest-side driver for the kernel bring-up tests: our login, then the netlink commands by hand.

  kdrive.py up IQN [KEY=VALUE...]   log in to 127.0.0.1:3260, create/bind/start/scan; prints
                                    "sid=N host=M"; with --hold keeps running (for kill tests);
                                    portal=HOST:PORT and recovery_tmo=SECONDS are not login keys
  kdrive.py recover SID IQN [K=V]  STOP_CONN(RECOVER), new login with the same ISID, rebind
  kdrive.py down SID                Logout through the kernel, stop, destroy (kernel_session)
  kdrive.py kill SID                STOP_CONN(TERM), DESTROY_SESSION without a logout
  kdrive.py stats SID               GET_STATS as "name value" lines
  kdrive.py nopd                    answer NOP-In pings like iscsid (runs until killed)
  kdrive.py errors                  bad requests get the right errno, never a crash
Exit status 0 on success; a message and 1 otherwise.
"""

from __future__ import annotations

import errno
import socket
import sys
import time
from pathlib import Path
from typing import Any

from pyiscsid.errors import IscsiError
from pyiscsid.login import login
from pyiscsid.netlink import IscsiNetlink
from pyiscsid.settings import LoginSettings
from pyiscsid.uapi import Attr, Cmd, Param, Stop

INITIATOR = "iqn.2026-11.test:kdrive"


def _yn(v: bool) -> str:
    return "1" if v else "0"


def _recovery_tmo(opts: list[str]) -> str:
    """recovery_tmo=N among the options (not a login key): the replacement timeout, default 10 s."""
    return next((kv.partition("=")[2] for kv in opts if kv.startswith("recovery_tmo=")), "10")


def _login(iqn: str, opts: list[str], isid: bytes | None = None) -> Any:
    operational = {"MaxRecvDataSegmentLength": "262144", "MaxOutstandingR2T": "8"}
    host, port = "127.0.0.1", 3260
    for kv in opts:
        k, _, v = kv.partition("=")
        if k == "portal":  # not a login key: where to log in
            host, _, p = v.rpartition(":")
            port = int(p)
        elif k != "recovery_tmo":
            operational[k] = v
    settings = LoginSettings(initiator_name=INITIATOR, target_name=iqn, operational=operational)
    if isid is not None:
        settings.isid = isid
    return login(host, port, settings)


def _handover(nl: IscsiNetlink, sid: int, iqn: str, res: Any, recovery_tmo: str = "10") -> None:
    """SET_PARAM everything, BIND_CONN the login socket, START_CONN."""
    neg = res.negotiated
    conn_params = {
        Param.MAX_RECV_DLENGTH: str(neg.max_recv_data_segment_length),
        Param.MAX_XMIT_DLENGTH: str(neg.max_xmit_data_segment_length),
        Param.HDRDGST_EN: _yn(neg.header_digest),
        Param.DATADGST_EN: _yn(neg.data_digest),
        Param.CONN_ADDRESS: "127.0.0.1",
        Param.CONN_PORT: "3260",
        Param.PERSISTENT_ADDRESS: "127.0.0.1",
        Param.PERSISTENT_PORT: "3260",
    }
    sess_params = {
        Param.TARGET_NAME: iqn,
        Param.TPGT: str(neg.target_portal_group_tag or 1),
        Param.INITIATOR_NAME: INITIATOR,
        Param.ISID: bytes(res.isid).hex(),
        Param.TSIH: str(res.tsih),
        Param.INITIAL_R2T_EN: _yn(neg.initial_r2t),
        Param.IMM_DATA_EN: _yn(neg.immediate_data),
        Param.FIRST_BURST: str(neg.first_burst_length),
        Param.MAX_BURST: str(neg.max_burst_length),
        Param.MAX_R2T: str(neg.max_outstanding_r2t),
        Param.ERL: str(neg.error_recovery_level),
        Param.RECOVERY_TMO: recovery_tmo,
        Param.ABORT_TMO: "5",
    }
    for p, v in conn_params.items():
        nl.set_param(sid, p, v, 0)
    for p, v in sess_params.items():
        nl.set_param(sid, p, v)
    res.sock.setblocking(True)
    nl.request(
        Cmd.BIND_CONN,
        {
            Attr.SID: sid,
            Attr.CID: 0,
            Attr.SOCK_FD: res.sock.fileno(),
            Attr.EXP_STATSN: res.exp_statsn & 0xFFFFFFFF,
            Attr.CMDSN: res.cmdsn & 0xFFFFFFFF,
            Attr.MAX_CMDSN: res.max_cmdsn & 0xFFFFFFFF,
        },
    )
    nl.start_conn(sid, 0)


def up(iqn: str, opts: list[str], hold: bool) -> int:
    res = _login(iqn, opts)
    with IscsiNetlink() as nl:
        created = nl.create_session(128, 32)
        sid = created.sid
        nl.create_conn(sid, 0)
        _handover(nl, sid, iqn, res, _recovery_tmo(opts))
        nl.scan(sid)
        neg = res.negotiated.as_dict()
        print(f"sid={sid} host={created.host_no} negotiated={neg}", flush=True)
    if hold:
        # The kernel holds its own reference to the socket: this process may die any time.
        while True:
            time.sleep(3600)
    res.sock.close()
    return 0


def recover(sid: int, iqn: str, opts: list[str]) -> int:
    """Connection recovery by hand: STOP_CONN(RECOVER), log in again (same ISID), rebind."""
    isid = bytes.fromhex(Path(f"/sys/class/iscsi_session/session{sid}/isid").read_text().strip())
    with IscsiNetlink() as nl:
        nl.stop_conn(sid, 0, Stop.RECOVER)
        state = Path(f"/sys/class/iscsi_session/session{sid}/state").read_text().strip()
        print(f"after STOP_CONN(RECOVER): {state}", flush=True)
        res = _login(iqn, opts, isid)
        _handover(nl, sid, iqn, res, _recovery_tmo(opts))
    res.sock.close()
    return 0


def nopd() -> int:
    """Answer the targets' NOP-In pings (what iscsid does), until killed."""
    from pyiscsid.netlink import EventListener, RecvPduEvent

    with EventListener() as events, IscsiNetlink() as nl:
        print("nopd: listening", flush=True)
        for ev in events:
            if not isinstance(ev, RecvPduEvent) or len(ev.pdu) < 48:
                continue
            bhs = ev.pdu[:48]
            ttt = int.from_bytes(bhs[20:24], "big")
            if bhs[0] & 0x3F != 0x20 or ttt == 0xFFFFFFFF:
                continue
            # NOP-Out, immediate, F bit; LUN and TTT echoed; the kernel fills CmdSN/ExpStatSN.
            out = bytes([0x40, 0x80, 0, 0]) + bytes(4) + bhs[8:16] + b"\xff" * 4 + bhs[20:24]
            out += bytes(48 - len(out))
            try:
                nl.send_pdu(ev.sid, ev.cid, out)
            except IscsiError as exc:
                print(f"nopd: {exc.message}", flush=True)
    return 0


def down(sid: int) -> int:
    from pyiscsid.kernel_session import stop_session

    stop_session(sid, timeout=10)
    return 0


def kill(sid: int) -> int:
    with IscsiNetlink() as nl:
        nl.stop_conn(sid, 0, Stop.TERM)
        nl.destroy_conn(sid, 0)
        nl.destroy_session(sid)
    return 0


def stats(sid: int) -> int:
    with IscsiNetlink() as nl:
        for k, v in nl.get_stats(sid, 0).items():
            print(f"{k.name.lower()} {v}")
    return 0


def _expect(what: str, want: int, fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except IscsiError as exc:
        if f"({errno.errorcode[want]})" not in exc.message:
            raise SystemExit(
                f"{what}: expected {errno.errorcode[want]}, got {exc.message}"
            ) from None
        print(f"ok {what}: {errno.errorcode[want]}")
        return
    raise SystemExit(f"{what}: expected {errno.errorcode[want]}, got success")


def errors() -> int:
    with IscsiNetlink() as nl:
        _expect("destroy unknown session", errno.ENOENT, nl.destroy_session, 999)
        _expect("create conn in unknown session", errno.ENOENT, nl.create_conn, 999, 0)
        _expect(
            "unknown transport",
            errno.ENOENT,
            nl.request,
            Cmd.CREATE_SESSION,
            {Attr.TRANSPORT: "nosuch"},
        )
        _expect(
            "cmds_max out of range",
            errno.ERANGE,
            nl.request,
            Cmd.CREATE_SESSION,
            {Attr.TRANSPORT: "tcp", Attr.CMDS_MAX: 100000},
        )
        created = nl.create_session(16, 4)
        sid = created.sid
        try:
            _expect("conn of unknown cid", errno.ENOENT, nl.start_conn, sid, 7)
            nl.create_conn(sid, 0)
            _expect("duplicate conn", errno.EEXIST, nl.create_conn, sid, 0)
            _expect("start unbound", errno.EINVAL, nl.start_conn, sid, 0)
            _expect("bad number", errno.EINVAL, nl.set_param, sid, Param.MAX_BURST, "12x")
            _expect("bad range", errno.EINVAL, nl.set_param, sid, Param.MAX_BURST, "1")
            _expect("bad isid", errno.EINVAL, nl.set_param, sid, Param.ISID, "zz")
            _expect("conn param, no cid", errno.EINVAL, nl.set_param, sid, Param.HDRDGST_EN, "1")
            nl.set_param(sid, Param.TARGET_NAME, "iqn.x:y")
            if nl.get_param(sid, Param.TARGET_NAME) != "iqn.x:y":
                raise SystemExit("GET_PARAM does not return what SET_PARAM set")
            _expect("unset param", errno.ENOENT, nl.get_param, sid, Param.TARGET_ALIAS)
            # A UDP socket and a listening TCP socket are not connected TCP sockets.
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            _expect("bind udp", errno.EINVAL, nl.bind_conn, sid, 0, u.fileno(), 1, 1)
            u.close()
            _expect("bind bad fd", errno.EBADF, nl.bind_conn, sid, 0, 9999, 1, 1)
            _expect("send pdu unbound", errno.ENOTCONN, nl.send_pdu, sid, 0, b"\x00" * 48)
            _expect("scan not logged in", errno.ENOTCONN, nl.scan, sid)  # never started: no conn
            nl.stop_conn(sid, 0, Stop.TERM)  # stopping an unbound connection is a no-op
        finally:
            nl.destroy_session(sid)
        _expect("destroyed session", errno.ENOENT, nl.get_session, sid)
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "up":
            hold = "--hold" in rest
            rest = [a for a in rest if a != "--hold"]
            return up(rest[0], rest[1:], hold)
        if cmd == "recover":
            return recover(int(rest[0]), rest[1], rest[2:])
        if cmd == "down":
            return down(int(rest[0]))
        if cmd == "kill":
            return kill(int(rest[0]))
        if cmd == "stats":
            return stats(int(rest[0]))
        if cmd == "nopd":
            return nopd()
        if cmd == "errors":
            return errors()
    except IscsiError as exc:
        print(f"kdrive {cmd}: {exc.message}", file=sys.stderr)
        return 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

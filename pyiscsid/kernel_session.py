"""A kernel session's lifecycle: hand a logged-in connection to iscsi_if.ko, tear it down.

``start_session`` turns a finished login into a kernel session (create, set parameters, bind the
login socket, start, scan, wait for the disks); ``stop_session`` logs out through the kernel and
destroys the session. This module also owns what the two share with the event service and the
recovery: the login sockets bound to kernel connections, the ITTs of iscsid's own PDUs, and
which sessions iscsid is handing over or logging out. Reading sessions is pyiscsid.sysfs's job;
answering the kernel's events, pyiscsid.events's.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Protocol

from pyiscsid import sysfs
from pyiscsid.errors import Err, IscsiError
from pyiscsid.netlink import (
    ConnErrorEvent,
    EventListener,
    IscsiNetlink,
    RecvPduEvent,
    SessionDestroyedEvent,
    family_available,
)
from pyiscsid.pdu import LogoutRequest, LogoutResponse, peek_bhs
from pyiscsid.states import ConnState
from pyiscsid.uapi import Param, Stop

if TYPE_CHECKING:
    from pyiscsid.login import LoginResult

log = logging.getLogger(__name__)

DEV = os.environ.get("PYISCSI_DEV", "/dev")
DISK_WAIT = 15.0  # seconds start_session waits for the block devices of the scanned LUNs
ISCSID_ITT_BASE = 0x80000000  # ITTs of iscsid's PDUs have bit 31 set (kernel/iscsi_if.h)

_CONN = "node.conn[0]."

# The login sockets bound to kernel connections: closed after DESTROY_CONN. The kernel holds its
# own reference, so a session outlives an iscsid that dies without closing them.
_sockets: dict[tuple[int, int], socket.socket] = {}
_lock = threading.Lock()
_itt = itertools.count(1)
# SIDs this process hands to the kernel (IN_LOGIN) or logs out of (IN_LOGOUT): a logout's
# connection errors are expected.
_handling: dict[int, ConnState] = {}


class Node(Protocol):
    """What a session is started from: a records.NodeRecord, or what sysfs knows of a session
    whose record is gone (get raises KeyError then: the defaults apply)."""

    target: str
    address: str
    port: int
    tpgt: int
    iface: str

    def get(self, name: str) -> str: ...


def next_itt() -> int:
    """A fresh ITT for a PDU iscsid sends through the kernel (a Logout, a NOP-Out ping)."""
    return ISCSID_ITT_BASE | (next(_itt) % 0x7FFFFFFF)


def handling(sid: int) -> ConnState | None:
    """IN_LOGIN while this process hands session `sid` to the kernel, IN_LOGOUT while it logs
    out of it, else None."""
    with _lock:
        return _handling.get(sid)


def is_closing(sid: int) -> bool:
    """True while session `sid` is being logged out by this process."""
    return handling(sid) is ConnState.IN_LOGOUT


def _set_handling(sid: int, state: ConnState | None) -> None:
    with _lock:
        if state is None:
            _handling.pop(sid, None)
        else:
            _handling[sid] = state


def close_socket(sid: int, cid: int) -> None:
    """Close the socket iscsid kept for connection `sid`:`cid` (the kernel gave it back)."""
    with _lock:
        old = _sockets.pop((sid, cid), None)
    if old is not None:
        old.close()


def replace_socket(sid: int, cid: int, sock: socket.socket) -> None:
    """Remember the socket now bound to connection `sid`:`cid`; close the one it replaces."""
    with _lock:
        old = _sockets.get((sid, cid))
        _sockets[(sid, cid)] = sock
    if old is not None and old is not sock:
        old.close()


def available() -> bool:
    """True if the iscsi_if module is loaded (its generic netlink family exists)."""
    return family_available()


def _yn(value: bool) -> str:
    return "1" if value else "0"


def _rec_int(record: Node, name: str, default: int) -> int:
    try:
        return int(record.get(name))
    except (IscsiError, ValueError, KeyError):
        return default


def _rec_str(record: Node, name: str) -> str:
    try:
        return str(record.get(name))
    except (IscsiError, KeyError):
        return ""


def _iface_value(record: Node, name: str) -> str:
    value = _rec_str(record, name)
    return "" if value == "default" else value


def session_params(
    record: Node, login: LoginResult, initiator_name: str = ""
) -> list[tuple[Param, str, bool]]:
    """[(Param, value text, is_connection_param)] for a login of `record` (no I/O).

    A value of "" means unknown: start_session leaves such parameters unset.
    """
    neg = login.negotiated
    xmit = int(neg.max_xmit_data_segment_length)
    cap = _rec_int(record, _CONN + "iscsi.MaxXmitDataSegmentLength", 0)
    if cap > 0:
        xmit = min(xmit, cap)
    tpgt = neg.target_portal_group_tag
    if tpgt is None:
        tpgt = record.tpgt
    initiator = initiator_name or _rec_str(record, "iface.initiatorname")
    conn = [
        (Param.MAX_RECV_DLENGTH, str(neg.max_recv_data_segment_length)),
        (Param.MAX_XMIT_DLENGTH, str(xmit)),
        (Param.HDRDGST_EN, _yn(neg.header_digest)),
        (Param.DATADGST_EN, _yn(neg.data_digest)),
        (Param.CONN_ADDRESS, str(login.address)),
        (Param.CONN_PORT, str(login.port)),
        (Param.PERSISTENT_ADDRESS, record.address),
        (Param.PERSISTENT_PORT, str(record.port)),
        (Param.PING_TMO, str(_rec_int(record, _CONN + "timeo.noop_out_timeout", 5))),
        (Param.RECV_TMO, str(_rec_int(record, _CONN + "timeo.noop_out_interval", 5))),
    ]
    session_timeouts = (
        (Param.RECOVERY_TMO, "node.session.timeo.replacement_timeout", 120),
        (Param.ABORT_TMO, "node.session.err_timeo.abort_timeout", 15),
        (Param.LU_RESET_TMO, "node.session.err_timeo.lu_reset_timeout", 30),
        (Param.TGT_RESET_TMO, "node.session.err_timeo.tgt_reset_timeout", 30),
    )
    sess = [
        (Param.TARGET_NAME, str(login.target_name or record.target)),
        (Param.TPGT, str(tpgt) if tpgt >= 0 else ""),
        (Param.INITIATOR_NAME, initiator),
        (Param.TARGET_ALIAS, neg.target_alias),
        (Param.IFACE_NAME, record.iface),
        (Param.ISID, bytes(login.isid).hex()),
        (Param.TSIH, str(login.tsih)),
        (Param.INITIAL_R2T_EN, _yn(neg.initial_r2t)),
        (Param.IMM_DATA_EN, _yn(neg.immediate_data)),
        (Param.FIRST_BURST, str(neg.first_burst_length)),
        (Param.MAX_BURST, str(neg.max_burst_length)),
        (Param.MAX_R2T, str(neg.max_outstanding_r2t)),
        (Param.PDU_INORDER_EN, _yn(neg.data_pdu_in_order)),
        (Param.DATASEQ_INORDER_EN, _yn(neg.data_sequence_in_order)),
        (Param.ERL, str(neg.error_recovery_level)),
        (Param.DEF_TIME2WAIT, str(neg.default_time2wait)),
        (Param.DEF_TIME2RETAIN, str(neg.default_time2retain)),
        *((p, str(_rec_int(record, name, default))) for p, name, default in session_timeouts),
        (Param.USERNAME, _rec_str(record, "node.session.auth.username")),
        (Param.USERNAME_IN, _rec_str(record, "node.session.auth.username_in")),
        # the iface binding, for iscsi_host's netdev and hwaddress (unset: "default")
        (Param.NETDEV_NAME, _iface_value(record, "iface.net_ifacename")),
        (Param.HWADDRESS, _iface_value(record, "iface.hwaddress")),
    ]
    return [(p, v, True) for p, v in conn] + [(p, v, False) for p, v in sess]


def start_session(record: Node, login: LoginResult, initiator_name: str = "") -> int:
    """Make the logged-in connection `login` a kernel session; its SID.

    Creates the session (cmds_max/queue_depth from the record) and connection, sets every
    negotiated and identity parameter, binds the login socket with CmdSN/ExpStatSN, starts the
    connection, scans, and waits until the disks' block devices exist. On failure everything
    created is torn down again and an IscsiError is raised. The session's pings and recovery
    are the event service's (iscsid runs one: events.EventService).
    """
    t0 = time.monotonic()
    cmds_max = _rec_int(record, "node.session.cmds_max", 128)
    queue_depth = _rec_int(record, "node.session.queue_depth", 32)
    cid = login.cid
    with IscsiNetlink() as nl:
        created = nl.create_session(cmds_max, queue_depth)
        sid = created.sid
        _set_handling(sid, ConnState.IN_LOGIN)
        try:
            t1 = _hand_over(nl, sid, cid, record, login, initiator_name)
        finally:
            _set_handling(sid, None)
    t2 = time.monotonic()
    missing = wait_for_disks(created.host_no, DISK_WAIT)
    if missing:
        log.warning("session %d: no block device appeared for %s", sid, ", ".join(missing))
    log.debug(
        "session %d: handed to the kernel in %.0f ms, scanned in %.0f ms, disks after %.0f ms",
        sid,
        (t1 - t0) * 1e3,
        (t2 - t1) * 1e3,
        (time.monotonic() - t2) * 1e3,
    )
    return sid


def _hand_over(
    nl: IscsiNetlink, sid: int, cid: int, record: Node, login: LoginResult, initiator_name: str
) -> float:
    """Connection, parameters, bind, start and scan of the new session `sid` (torn down again
    on failure); the monotonic time the scan began."""
    stage = "create the connection"
    bound = False
    try:
        nl.create_conn(sid, cid)
        stage = "set the session parameters"
        nl.set_params(
            sid,
            [
                (param, value, cid if is_conn else None)
                for param, value, is_conn in session_params(record, login, initiator_name)
                if value != ""  # not known: the kernel shows it as unset
            ],
        )
        stage = "hand the connection to the kernel"
        login.sock.setblocking(True)  # no O_NONBLOCK left over from the login's timeouts
        nl.bind_conn(sid, cid, login.sock.fileno(), login.exp_statsn, login.cmdsn, login.max_cmdsn)
        bound = True
        with _lock:
            _sockets[(sid, cid)] = login.sock
        stage = "start the connection"
        nl.start_conn(sid, cid)
        stage = "scan for LUNs"
        scan_start = time.monotonic()
        if _rec_str(record, "node.session.scan") != "manual":
            nl.scan(sid)
    except IscsiError as exc:
        _teardown(nl, sid, [cid], Stop.TERM if bound else None)
        raise IscsiError(exc.code, f"session {sid}: could not {stage}: {exc.message}") from exc
    except BaseException:
        _teardown(nl, sid, [cid], Stop.TERM if bound else None)
        raise
    return scan_start


def _teardown(nl: IscsiNetlink, sid: int, cids: list[int], stop: Stop | None) -> IscsiError | None:
    """Stop (if bound), destroy the connections and the session; log, do not raise.

    Returns the DESTROY_SESSION error if the session could not be destroyed (None: it is gone).
    """
    for cid in cids:
        if stop is not None:
            try:
                nl.stop_conn(sid, cid, stop)
            except IscsiError as exc:
                log.warning("session %d: STOP_CONN: %s", sid, exc.message)
        try:
            nl.destroy_conn(sid, cid)
        except IscsiError as exc:
            if exc.code != Err.SESS_NOT_FOUND:
                log.warning("session %d: DESTROY_CONN: %s", sid, exc.message)
        close_socket(sid, cid)
    try:
        nl.destroy_session(sid)
    except IscsiError as exc:
        if exc.code != Err.SESS_NOT_FOUND:
            log.warning("session %d: DESTROY_SESSION: %s", sid, exc.message)
            return exc
    return None


def wait_for_disks(host_no: int, timeout: float) -> list[str]:
    """Wait until every disk-type LUN of the host has its /dev node; the H:C:T:L still missing."""
    deadline = time.monotonic() + timeout
    done: set[str] = set()  # LUNs seen with their /dev nodes: not looked at again
    while True:
        missing = []
        for dev in sysfs.scsi_device_dirs(host_no):
            name = os.path.basename(dev)
            if name in done:
                continue
            kind = sysfs.read_attr(f"{dev}/type")
            if kind is not None and kind not in ("0", "7", "14"):
                continue  # not a block device type (e.g. an enclosure or controller LUN)
            try:
                names = os.listdir(f"{dev}/block")
            except OSError:
                names = []
            if names and all(os.path.exists(f"{DEV}/{n}") for n in names):
                done.add(name)
            else:
                missing.append(name)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.02)


def logout_pdu(itt: int, cid: int, reason: int = 0) -> bytes:
    """Logout Request, immediate, reason 0 close the session (1: close the connection); the
    kernel fills CmdSN/ExpStatSN."""
    return LogoutRequest(immediate=True, reason=reason, itt=itt, cid=cid).encode()


def logout_response_of(pdu: bytes, itt: int) -> int | None:
    """The Response field if `pdu` is the Logout Response to `itt`, else None."""
    rsp = peek_bhs(pdu, LogoutResponse)
    return rsp.response if rsp is not None and rsp.itt == itt else None


def stop_session(sid: int, timeout: float = 15.0) -> None:
    """Log out of session `sid` through the kernel, then stop and destroy it.

    Sends a Logout Request (SEND_PDU) and waits up to `timeout` seconds for the target's Logout
    Response; tears the session down whether or not the target answers. IscsiError
    SESS_NOT_FOUND if there is no such session, LOGOUT if the kernel would not destroy it.
    """
    with IscsiNetlink() as nl:
        nl.get_session(sid)  # raises SESS_NOT_FOUND
        _set_handling(sid, ConnState.IN_LOGOUT)
        try:
            _logout_and_destroy(nl, sid, timeout)
        finally:
            _set_handling(sid, None)


def remove_devices(sid: int) -> None:
    """Delete the SCSI devices of session `sid` while its connection still runs, as a logout
    must: removing a disk flushes its write cache (SYNCHRONIZE CACHE), which has to reach the
    target before the Logout. Only for a LOGGED_IN session and a device that is running: a
    failed session would hold the flush until the replacement timeout, an offline device would
    wait for its timeouts; the teardown fails their I/O at once instead."""
    if sysfs.read_str(f"{sysfs.session_dir(sid)}/state") != "LOGGED_IN":
        return
    t0 = time.monotonic()
    for ddir in reversed(sysfs.scsi_device_dirs(sysfs.session_host(sid))):
        if sysfs.read_str(f"{ddir}/state") != "running":
            continue  # offline after errors: a flush would only wait for its timeouts
        try:
            with open(f"{ddir}/delete", "w") as f:
                f.write("1")
        except OSError as exc:  # gone meanwhile, or removed by someone else
            log.debug("session %d: deleting %s: %s", sid, ddir, exc)
    log.debug("session %d: devices removed in %.0f ms", sid, (time.monotonic() - t0) * 1e3)


def _logout_and_destroy(nl: IscsiNetlink, sid: int, timeout: float) -> None:
    remove_devices(sid)
    t0 = time.monotonic()
    cids = sysfs.connection_ids(sid) or [0]
    answered = False
    with EventListener() as events:  # subscribed before the request: the answer cannot slip by
        itt = next_itt()
        try:
            nl.send_pdu(sid, cids[0], logout_pdu(itt, cids[0]))
        except IscsiError as exc:
            log.warning("session %d: cannot send the Logout Request: %s", sid, exc.message)
            timeout = 0.0
        for event in events.wait(timeout, sid):
            if isinstance(event, RecvPduEvent) and event.sid == sid:
                response = logout_response_of(event.pdu, itt)
                if response is not None:
                    if response != 0:
                        log.warning("session %d: logout response %d", sid, response)
                    answered = True
                    break
            elif isinstance(event, ConnErrorEvent | SessionDestroyedEvent) and event.sid == sid:
                break
    if not answered:
        log.warning("session %d: no Logout Response, tearing down anyway", sid)
    t1 = time.monotonic()
    error = _teardown(nl, sid, cids, Stop.TERM)
    log.debug(
        "session %d: Logout Response after %.0f ms, torn down in %.0f ms",
        sid,
        (t1 - t0) * 1e3,
        (time.monotonic() - t1) * 1e3,
    )
    if error is not None:
        raise IscsiError(Err.LOGOUT, f"session {sid}: could not be destroyed: {error.message}")


def rescan(sid: int) -> None:
    """SCAN session `sid` again (new or changed LUNs); logged, never raised."""
    try:
        with IscsiNetlink() as nl:
            nl.scan(sid)
        log.info("session %d: rescanned", sid)
    except (IscsiError, OSError) as exc:
        log.warning("session %d: rescan failed: %s", sid, exc)


def session_stats(sid: int) -> dict[str, int]:
    """The kernel's counters for session `sid` (GET_STATS on its connection), named as
    `iscsiadm -m session -s` prints them: txdata_octets, ..., rjt_pdus, digest_err, timeout_err."""
    cids = sysfs.connection_ids(sid)
    if not cids:
        raise IscsiError(Err.SESS_NOT_FOUND, f"session {sid} has no connection")
    with IscsiNetlink() as nl:
        counters = nl.get_stats(sid, cids[0])
    names = {"REJECT_PDUS": "rjt_pdus"}
    return {names.get(stat.name, stat.name.lower()): value for stat, value in counters.items()}

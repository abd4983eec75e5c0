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
from collections.abc import Iterable
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
# Connections this process is closing (close_connection): their errors are expected.
_closing_conns: set[tuple[int, int]] = set()
# CIDs the user closed, by SID: a recovery of the session does not add them again.
_closed_cids: dict[int, set[int]] = {}


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


def is_closing_conn(sid: int, cid: int) -> bool:
    """True while connection `sid`:`cid` alone is being closed (close_connection), or its
    whole session logged out."""
    with _lock:
        return (sid, cid) in _closing_conns or _handling.get(sid) is ConnState.IN_LOGOUT


def closed_cids(sid: int) -> set[int]:
    """The CIDs of session `sid` the user closed (close_connection): not to be re-added."""
    with _lock:
        return set(_closed_cids.get(sid, ()))


def forget_session(sid: int) -> None:
    """Session `sid` is gone: a later session with its SID starts with no closed CIDs."""
    with _lock:
        _closed_cids.pop(sid, None)


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


def connection_params(
    record: Node, login: LoginResult, initiator_name: str = ""
) -> list[tuple[Param, str]]:
    """The connection parameters of session_params (those a further connection sets: the
    session parameters would get EBUSY while another connection runs), the unknown ones left
    out."""
    return [
        (param, value)
        for param, value, is_conn in session_params(record, login, initiator_name)
        if is_conn and value != ""
    ]


def add_connection(
    nl: IscsiNetlink,
    sid: int,
    cid: int,
    record: Node,
    login: LoginResult,
    initiator_name: str = "",
    create: bool = True,
) -> None:
    """Make the logged-in further connection `login` connection `cid` of the running session
    `sid` (MC/S): CREATE_CONN (unless `create` is False: a connection a recovery stopped), its
    connection parameters, BIND_CONN (the kernel keeps the session's CmdSN), START_CONN. On
    failure the kernel connection is stopped and destroyed, its socket closed, and the
    IscsiError raised: the session keeps its other connections."""
    stage = "create the connection"
    bound = False
    try:
        if create:
            nl.create_conn(sid, cid)
        stage = "set the connection parameters"
        nl.set_params(
            sid, [(p, v, cid) for p, v in connection_params(record, login, initiator_name)]
        )
        stage = "bind the connection"
        login.sock.setblocking(True)
        nl.bind_conn(sid, cid, login.sock.fileno(), login.exp_statsn, login.cmdsn, login.max_cmdsn)
        bound = True
        replace_socket(sid, cid, login.sock)
        stage = "start the connection"
        nl.start_conn(sid, cid)
    except IscsiError as exc:
        destroy_connection(nl, sid, cid, Stop.TERM if bound else None)
        raise IscsiError(
            exc.code, f"connection{sid}:{cid}: could not {stage}: {exc.message}"
        ) from exc
    except BaseException:
        destroy_connection(nl, sid, cid, Stop.TERM if bound else None)
        raise


def destroy_connection(nl: IscsiNetlink, sid: int, cid: int, stop: Stop | None) -> None:
    """STOP_CONN (`stop`, if not None) and DESTROY_CONN of one connection, close its socket;
    logged, not raised."""
    if stop is not None:
        try:
            nl.stop_conn(sid, cid, stop)
        except IscsiError as exc:
            log.warning("connection%d:%d: STOP_CONN: %s", sid, cid, exc.message)
    try:
        nl.destroy_conn(sid, cid)
    except IscsiError as exc:
        if exc.code != Err.SESS_NOT_FOUND:
            log.warning("connection%d:%d: DESTROY_CONN: %s", sid, cid, exc.message)
    close_socket(sid, cid)


def _teardown(nl: IscsiNetlink, sid: int, cids: list[int], stop: Stop | None) -> IscsiError | None:
    """Stop (if bound), destroy the connections and the session; log, do not raise.

    Returns the DESTROY_SESSION error if the session could not be destroyed (None: it is gone).
    """
    for cid in cids:
        destroy_connection(nl, sid, cid, stop)
    forget_session(sid)
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


def _await_logout(nl: IscsiNetlink, sid: int, cid: int, reason: int, timeout: float) -> bool:
    """Send a Logout Request (`reason` 0: close the session, 1: close connection `cid`) on
    connection `cid` and wait up to `timeout` s for its Logout Response; True if it came (a
    failed connection or a destroyed session ends the wait)."""
    with EventListener() as events:  # subscribed before the request: the answer cannot slip by
        itt = next_itt()
        try:
            nl.send_pdu(sid, cid, logout_pdu(itt, cid, reason))
        except IscsiError as exc:
            log.warning(
                "connection%d:%d: cannot send the Logout Request: %s", sid, cid, exc.message
            )
            return False
        for event in events.wait(timeout, sid):
            if isinstance(event, RecvPduEvent) and event.sid == sid:
                response = logout_response_of(event.pdu, itt)
                if response is not None:
                    if response != 0:
                        log.warning("connection%d:%d: logout response %d", sid, cid, response)
                    return True
            elif isinstance(event, SessionDestroyedEvent) and event.sid == sid:
                return False
            elif isinstance(event, ConnErrorEvent) and (event.sid, event.cid) == (sid, cid):
                return False
    return False


def _logout_and_destroy(nl: IscsiNetlink, sid: int, timeout: float) -> None:
    remove_devices(sid)
    t0 = time.monotonic()
    cids = sysfs.connection_ids(sid) or [0]
    # one Logout "close the session" (RFC 7143 11.14.1, reason 0) ends every connection
    if not _await_logout(nl, sid, cids[0], 0, timeout):
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


def close_connection(sid: int, cid: int, timeout: float = 15.0) -> None:
    """Close connection `cid` of session `sid` alone; the others carry on (MC/S).

    DRAIN_CONN (no new commands go to it; its outstanding ones complete), a Logout Request
    with reason 1 "close the connection" on it, its Logout Response awaited up to `timeout` s,
    then STOP_CONN(TERM), DESTROY_CONN and its socket closed. The CID is remembered, so that a
    recovery of the session does not add it again. If it is the session's only (running)
    connection, the whole session is logged out (stop_session). IscsiError SESS_NOT_FOUND if
    there is no such session or connection.
    """
    cids = sysfs.connection_ids(sid)
    if cid not in cids:
        raise IscsiError(Err.SESS_NOT_FOUND, f"no connection {sid}:{cid}")
    if cids == [cid]:
        stop_session(sid, timeout)
        return
    with _lock:
        _closing_conns.add((sid, cid))
    try:
        with IscsiNetlink() as nl:
            if not _drain(nl, sid, cid, timeout):
                stop_session(sid, timeout)  # the session's last running connection
                return
            if not _await_logout(nl, sid, cid, 1, timeout):
                log.warning("connection%d:%d: no Logout Response, closing anyway", sid, cid)
            with _lock:
                _closed_cids.setdefault(sid, set()).add(cid)
            destroy_connection(nl, sid, cid, Stop.TERM)
        log.info("connection%d:%d closed", sid, cid)
    finally:
        with _lock:
            _closing_conns.discard((sid, cid))


def _drain(nl: IscsiNetlink, sid: int, cid: int, timeout: float) -> bool:
    """DRAIN_CONN; False if `cid` is the session's last running connection (BUSY). A drain
    that times out is logged: the logout goes ahead (the target ends the rest)."""
    try:
        nl.drain_conn(sid, cid, max(1, int(timeout)))
    except IscsiError as exc:
        if exc.code == Err.BUSY:
            return False
        if exc.code != Err.TRANS_TIMEOUT:
            raise
        log.warning("connection%d:%d: commands still outstanding after %g s", sid, cid, timeout)
    return True


def rescan(sid: int) -> None:
    """SCAN session `sid` again (new or changed LUNs); logged, never raised."""
    try:
        with IscsiNetlink() as nl:
            nl.scan(sid)
        log.info("session %d: rescanned", sid)
    except (IscsiError, OSError) as exc:
        log.warning("session %d: rescan failed: %s", sid, exc)


def connection_stats(sid: int) -> dict[int, dict[str, int]]:
    """The kernel's counters of every connection of session `sid` (GET_STATS each), by CID,
    named as `iscsiadm -m session -s` prints them: txdata_octets, ..., rjt_pdus, digest_err,
    timeout_err."""
    cids = sysfs.connection_ids(sid)
    if not cids:
        raise IscsiError(Err.SESS_NOT_FOUND, f"session {sid} has no connection")
    names = {"REJECT_PDUS": "rjt_pdus"}
    out: dict[int, dict[str, int]] = {}
    with IscsiNetlink() as nl:
        for cid in cids:
            counters = nl.get_stats(sid, cid)
            out[cid] = {names.get(st.name, st.name.lower()): v for st, v in counters.items()}
    return out


def sum_stats(per_connection: Iterable[dict[str, int]]) -> dict[str, int]:
    """The session's total: each counter summed over its connections (in first-seen order)."""
    total: dict[str, int] = {}
    for counters in per_connection:
        for name, value in counters.items():
            total[name] = total.get(name, 0) + value
    return total


def session_stats(sid: int) -> dict[str, int]:
    """The kernel's counters for session `sid`, summed over its connections."""
    return sum_stats(connection_stats(sid).values())

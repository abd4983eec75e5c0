"""iscsid's kernel sessions: hand a logged-in connection to iscsi_if.ko, tear it down, list it.

``start_session`` turns a finished login into a kernel session (create, set parameters, bind the
login socket, start, scan, wait for the disks); ``stop_session`` logs out through the kernel and
destroys the session; ``list_sessions`` reads sysfs only (fast, and right for an iscsid that did
not create the sessions). The netlink client is imported lazily: listing sessions stays cheap.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyiscsid.errors import Err, IscsiError

if TYPE_CHECKING:
    from pyiscsid.netlink import IscsiNetlink
    from pyiscsid.records import NodeRecord

log = logging.getLogger(__name__)

SYSFS = Path(os.environ.get("PYISCSI_SYSFS", "/sys"))
DEV = Path(os.environ.get("PYISCSI_DEV", "/dev"))
DISK_WAIT = 15.0  # seconds start_session waits for the block devices of the scanned LUNs
LOGOUT_ITT_BASE = 0x80000000  # ITTs of iscsid's PDUs have bit 31 set (kernel/iscsi_if.h)

_CONN = "node.conn[0]."

# The login sockets bound to kernel connections: closed after DESTROY_CONN. The kernel holds its
# own reference, so a session outlives an iscsid that dies without closing them.
_sockets: dict[tuple[int, int], socket.socket] = {}
_lock = threading.Lock()
_itt = itertools.count(1)
_closing: set[int] = set()  # SIDs being logged out: their connection errors are expected


def _next_itt() -> int:
    return LOGOUT_ITT_BASE | (next(_itt) % 0x7FFFFFFF)


def is_closing(sid: int) -> bool:
    """True while session `sid` is being logged out by this process."""
    with _lock:
        return sid in _closing


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
    from pyiscsid.netlink import family_available

    return family_available()


def _yn(value: bool) -> str:
    return "1" if value else "0"


def _rec_int(record: NodeRecord, name: str, default: int) -> int:
    try:
        return int(record.get(name))
    except (IscsiError, ValueError, KeyError):
        return default


def _rec_str(record: NodeRecord, name: str) -> str:
    try:
        return str(record.get(name))
    except (IscsiError, KeyError):
        return ""


def session_params(record: NodeRecord, login: Any, initiator_name: str = "") -> list[Any]:
    """[(Param, value text, is_connection_param)] for a login of `record` (no I/O).

    A value of "" means unknown: start_session leaves such parameters unset.
    """
    from pyiscsid.uapi import Param

    neg = login.negotiated
    xmit = int(neg.max_xmit_data_segment_length)
    cap = _rec_int(record, _CONN + "iscsi.MaxXmitDataSegmentLength", 0)
    if cap > 0:
        xmit = min(xmit, cap)
    tpgt = neg.target_portal_group_tag
    if tpgt is None:
        tpgt = record.tpgt
    isid = bytes(login.isid)
    initiator = (
        initiator_name
        or _rec_str(record, "iface.initiatorname")
        or str(getattr(getattr(login, "settings", None), "initiator_name", "") or "")
    )
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
    sess = [
        (Param.TARGET_NAME, str(login.target_name or record.target)),
        (Param.TPGT, str(tpgt) if tpgt >= 0 else ""),
        (Param.INITIATOR_NAME, initiator),
        (Param.TARGET_ALIAS, neg.target_alias),
        (Param.IFACE_NAME, record.iface),
        (Param.ISID, isid.hex()),
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
        (
            Param.RECOVERY_TMO,
            str(_rec_int(record, "node.session.timeo.replacement_timeout", 120)),
        ),
        (Param.ABORT_TMO, str(_rec_int(record, "node.session.err_timeo.abort_timeout", 15))),
        (
            Param.LU_RESET_TMO,
            str(_rec_int(record, "node.session.err_timeo.lu_reset_timeout", 30)),
        ),
        (
            Param.TGT_RESET_TMO,
            str(_rec_int(record, "node.session.err_timeo.tgt_reset_timeout", 30)),
        ),
        (Param.USERNAME, _rec_str(record, "node.session.auth.username")),
        (Param.USERNAME_IN, _rec_str(record, "node.session.auth.username_in")),
    ]
    return [(p, v, True) for p, v in conn] + [(p, v, False) for p, v in sess]


def start_session(record: NodeRecord, login: Any, initiator_name: str = "") -> int:
    """Make the logged-in connection `login` (a login.LoginResult) a kernel session; its SID.

    Creates the session (cmds_max/queue_depth from the record) and connection, sets every
    negotiated and identity parameter, binds the login socket with CmdSN/ExpStatSN, starts the
    connection, scans, and waits until the disks' block devices exist. On failure everything
    created is torn down again and an IscsiError is raised. Starts the event service (NOP-In
    answers) if this process does not run it yet.
    """
    from pyiscsid.netlink import IscsiNetlink
    from pyiscsid.uapi import Stop

    t0 = time.monotonic()
    start_event_service()
    cmds_max = _rec_int(record, "node.session.cmds_max", 128)
    queue_depth = _rec_int(record, "node.session.queue_depth", 32)
    cid = int(getattr(login, "cid", 0))
    with IscsiNetlink() as nl:
        created = nl.create_session(cmds_max, queue_depth)
        sid = created.sid
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
            nl.bind_conn(
                sid,
                cid,
                login.sock.fileno(),
                login.exp_statsn,
                login.cmdsn,
                getattr(login, "max_cmdsn", None),
            )
            bound = True
            with _lock:
                _sockets[(sid, cid)] = login.sock
            stage = "start the connection"
            nl.start_conn(sid, cid)
            stage = "scan for LUNs"
            t1 = time.monotonic()
            if _rec_str(record, "node.session.scan") != "manual":
                nl.scan(sid)
        except IscsiError as exc:
            _teardown(nl, sid, [cid], Stop.TERM if bound else None)
            raise IscsiError(exc.code, f"session {sid}: could not {stage}: {exc.message}") from exc
        except BaseException:
            _teardown(nl, sid, [cid], Stop.TERM if bound else None)
            raise
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


def _teardown(nl: IscsiNetlink, sid: int, cids: list[int], stop: int | None) -> IscsiError | None:
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
        with _lock:
            sock = _sockets.pop((sid, cid), None)
        if sock is not None:
            sock.close()
    try:
        nl.destroy_session(sid)
    except IscsiError as exc:
        if exc.code != Err.SESS_NOT_FOUND:
            log.warning("session %d: DESTROY_SESSION: %s", sid, exc.message)
            return exc
    return None


def logout_pdu(itt: int, cid: int, reason: int = 0) -> bytes:
    """Logout Request, immediate, reason 0 close the session (1: close the connection); the
    kernel fills CmdSN/ExpStatSN."""
    from pyiscsid.pdu import LogoutRequest

    return LogoutRequest(immediate=True, reason=reason, itt=itt, cid=cid).encode()


def _rescan(sid: int) -> None:
    """SCAN the session again (new or changed LUNs); logged, never raised."""
    from pyiscsid.netlink import IscsiNetlink

    try:
        with IscsiNetlink() as nl:
            nl.scan(sid)
        log.info("session %d: rescanned", sid)
    except (IscsiError, OSError) as exc:
        log.warning("session %d: rescan failed: %s", sid, exc)


def logout_response_of(pdu: bytes, itt: int) -> int | None:
    """The Response field if `pdu` is the Logout Response to `itt`, else None."""
    from pyiscsid.pdu import LogoutResponse, decode_bhs

    if len(pdu) < 48:
        return None
    try:
        rsp = decode_bhs(pdu[:48])
    except IscsiError:
        return None
    if isinstance(rsp, LogoutResponse) and rsp.itt == itt:
        return rsp.response
    return None


def stop_session(sid: int, timeout: float = 15.0) -> None:
    """Log out of session `sid` through the kernel, then stop and destroy it.

    Sends a Logout Request (SEND_PDU) and waits up to `timeout` seconds for the target's Logout
    Response; tears the session down whether or not the target answers. IscsiError
    SESS_NOT_FOUND if there is no such session, LOGOUT if the kernel would not destroy it.
    """
    from pyiscsid.netlink import IscsiNetlink

    with IscsiNetlink() as nl:
        nl.get_session(sid)  # raises SESS_NOT_FOUND
        with _lock:
            _closing.add(sid)
        try:
            _logout_and_destroy(nl, sid, timeout)
        finally:
            with _lock:
                _closing.discard(sid)


def _logout_and_destroy(nl: IscsiNetlink, sid: int, timeout: float) -> None:
    from pyiscsid.netlink import ConnErrorEvent, EventListener, RecvPduEvent, SessionDestroyedEvent
    from pyiscsid.uapi import Stop

    t0 = time.monotonic()
    cids = connection_ids(sid) or [0]
    answered = False
    with EventListener() as events:  # subscribed before the request: the answer cannot slip by
        itt = _next_itt()
        try:
            nl.send_pdu(sid, cids[0], logout_pdu(itt, cids[0]))
        except IscsiError as exc:
            log.warning("session %d: cannot send the Logout Request: %s", sid, exc.message)
            timeout = 0.0
        for event in events.wait(timeout, sid):
            if getattr(event, "sid", sid) != sid:
                continue
            if isinstance(event, RecvPduEvent):
                response = logout_response_of(event.pdu, itt)
                if response is not None:
                    if response != 0:
                        log.warning("session %d: logout response %d", sid, response)
                    answered = True
                    break
            elif isinstance(event, ConnErrorEvent | SessionDestroyedEvent):
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


# ------------------------------------------------------------------------------------------
# Events: what iscsid must do for running sessions
# ------------------------------------------------------------------------------------------

RSVD_TAG = 0xFFFFFFFF


def nop_out_reply(pdu: bytes) -> bytes | None:
    """The NOP-Out answering `pdu` if it is a NOP-In that asks for one (TTT != 0xffffffff)."""
    from pyiscsid.pdu import NopIn, NopOut, decode_bhs

    if len(pdu) < 48:
        return None
    try:
        nop = decode_bhs(pdu[:48])
    except IscsiError:
        return None
    if not isinstance(nop, NopIn) or nop.ttt == RSVD_TAG:
        return None
    # RFC 7143 11.18: immediate, ITT reserved, the target's TTT and LUN echoed; the kernel
    # fills CmdSN (not advanced: immediate) and ExpStatSN.
    return NopOut(immediate=True, lun=nop.lun, itt=RSVD_TAG, ttt=nop.ttt).encode()


def nop_out_ping(itt: int) -> bytes:
    """iscsid's own ping: an immediate NOP-Out with ITT `itt` and TTT reserved (RFC 7143 11.18);
    the target must answer with a NOP-In of the same ITT."""
    from pyiscsid.pdu import NopOut

    return NopOut(immediate=True, itt=itt, ttt=RSVD_TAG).encode()


def nop_in_itt(pdu: bytes) -> int | None:
    """The ITT of `pdu` if it is a NOP-In answering one of iscsid's pings (bit 31 set)."""
    from pyiscsid.pdu import NopIn, decode_bhs

    if len(pdu) < 48:
        return None
    try:
        nop = decode_bhs(pdu[:48])
    except IscsiError:
        return None
    if isinstance(nop, NopIn) and nop.itt != RSVD_TAG and nop.itt & LOGOUT_ITT_BASE:
        return int(nop.itt)
    return None


@dataclass
class PingState:
    """The NOP-Out schedule of one connection."""

    cid: int
    interval: float  # node.conn[0].timeo.noop_out_interval (sysfs recv_tmo); 0: no pings
    timeout: float  # node.conn[0].timeo.noop_out_timeout (sysfs ping_tmo)
    next_at: float  # monotonic time of the next ping
    itt: int | None = None  # the ping waiting for its answer
    sent_at: float = 0.0


class Pinger:
    """NOP-Out pings of running sessions; pure bookkeeping, the EventService does the I/O.

    `due(now, sessions)` says which pings to send and which connections missed an answer;
    `answered(sid, itt, now)` takes an answer. `sessions` maps sid -> (cid, interval, timeout)
    for the sessions that are LOGGED_IN and not under recovery.
    """

    def __init__(self) -> None:
        self.state: dict[int, PingState] = {}
        self.sent = 0
        self.answered_count = 0

    def due(
        self, now: float, sessions: dict[int, tuple[int, float, float]]
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
        """([(sid, cid, itt) to send now], [(sid, cid) whose ping timed out])."""
        for sid in list(self.state):
            if sid not in sessions:
                del self.state[sid]  # gone, failed or recovering: start over when it is back
        send: list[tuple[int, int, int]] = []
        missed: list[tuple[int, int]] = []
        for sid, (cid, interval, timeout) in sessions.items():
            st = self.state.get(sid)
            if st is None or st.cid != cid or st.interval != interval:
                st = self.state[sid] = PingState(cid, interval, timeout, now + interval)
            st.timeout = timeout
            if interval <= 0:
                continue
            if st.itt is not None:
                if timeout > 0 and now - st.sent_at >= timeout:
                    missed.append((sid, cid))
                    del self.state[sid]
                continue
            if now >= st.next_at:
                st.itt = _next_itt()
                st.sent_at = now
                send.append((sid, cid, st.itt))
                self.sent += 1
        return send, missed

    def answered(self, sid: int, itt: int, now: float) -> bool:
        st = self.state.get(sid)
        if st is None or st.itt != itt:
            return False
        st.itt = None
        st.next_at = now + st.interval
        self.answered_count += 1
        return True


@dataclass(frozen=True)
class SessionPulse:
    """What the event thread reads of a session every second: its state and ping timers."""

    sid: int
    state: str
    cids: list[int]
    recv_tmo: int  # node.conn[0].timeo.noop_out_interval
    ping_tmo: int  # node.conn[0].timeo.noop_out_timeout


def session_pulses() -> list[SessionPulse]:
    """Every session's state and ping timers: three sysfs reads a session, not all of them."""
    out = []
    all_cids = _all_cids()
    for sid in _sids():
        cids = all_cids.get(sid, [])
        sess, conn = _session_dirs(sid, cids)
        out.append(
            SessionPulse(
                sid,
                _cat(f"{sess}/state"),
                cids,
                _int(_cat(f"{conn}/recv_tmo"), 5),
                _int(_cat(f"{conn}/ping_tmo"), 5),
            )
        )
    return out


def ping_schedule(
    recovery: Any = None, pulses: list[SessionPulse] | None = None
) -> dict[int, tuple[int, float, float]]:
    """sid -> (cid, noop_out_interval, noop_out_timeout) of the sessions to ping, from sysfs."""
    out: dict[int, tuple[int, float, float]] = {}
    for p in session_pulses() if pulses is None else pulses:
        if p.state != "LOGGED_IN" or not p.cids or is_closing(p.sid):
            continue
        if recovery is not None and recovery.active(p.sid):
            continue
        out[p.sid] = (p.cids[0], float(max(p.recv_tmo, 0)), float(max(p.ping_tmo, 0)))
    return out


def failed_sessions(pulses: list[SessionPulse] | None = None) -> list[tuple[int, int]]:
    """(sid, cid) of the sessions sysfs shows FAILED: they need a recovery."""
    return [
        (p.sid, p.cids[0] if p.cids else 0)
        for p in (session_pulses() if pulses is None else pulses)
        if p.state == "FAILED" and not is_closing(p.sid)
    ]


class EventService:
    """iscsid's listener on the kernel's "events" group, run in a thread of its own.

    Answers the targets' NOP-In pings (a target drops a connection whose pings go unanswered),
    sends iscsid's own NOP-Out pings, and hands connection failures (CONN_ERROR, a ping left
    unanswered, a FAILED session nobody recovers) to `recovery` (a recovery.RecoveryManager;
    None: failures are only logged). Survives the module being absent or unloaded: it retries.
    """

    TICK = 1.0  # seconds between ping/FAILED-session checks

    def __init__(self, retry: float = 1.0, recovery: Any = None) -> None:
        self.retry = retry
        self.recovery = recovery
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.pings_answered = 0
        self.pinger = Pinger()
        self._next_tick = 0.0
        # Logouts the targets asked for (Async Message 1): sid -> (cid, itt, deadline)
        self.async_logouts: dict[int, tuple[int, int, float]] = {}

    def start(self) -> EventService:
        self.thread = threading.Thread(target=self.run, name="iscsi-events", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout)
        if self.recovery is not None:
            self.recovery.stop(timeout)

    def run(self) -> None:
        from pyiscsid.netlink import EventListener, IscsiNetlink

        while not self.stop_event.is_set():
            try:
                with EventListener() as events, IscsiNetlink() as nl:
                    while not self.stop_event.is_set():
                        for event in events.poll(0.25):
                            self.handle(nl, event)
                        self.tick(nl, time.monotonic())
            except (IscsiError, OSError) as exc:
                log.debug("kernel events unavailable: %s", exc)
                self.stop_event.wait(self.retry)

    def tick(self, nl: Any, now: float) -> None:
        """Send the pings that are due, fail connections whose ping went unanswered, start a
        recovery for FAILED sessions nobody recovers (events lost, or a previous iscsid's)."""
        if now < self._next_tick:
            return
        self._next_tick = now + self.TICK
        pulses = session_pulses()
        send, missed = self.pinger.due(now, ping_schedule(self.recovery, pulses))
        for sid, cid, itt in send:
            try:
                nl.send_pdu(sid, cid, nop_out_ping(itt))
            except IscsiError as exc:
                log.debug("session %d: cannot send a NOP-Out: %s", sid, exc.message)
        for sid, cid in missed:
            log.warning("connection%d:%d: ping timeout: no NOP-In answer", sid, cid)
            self.conn_failed(sid, cid, "NOP_TIMEOUT")
        for sid, (cid, _itt, deadline) in list(self.async_logouts.items()):
            if now >= deadline:
                del self.async_logouts[sid]
                log.warning("connection%d:%d: no Logout Response in time", sid, cid)
                self.conn_failed(sid, cid, "target requested logout")
        if self.recovery is not None:
            for sid, cid in failed_sessions(pulses):
                if not self.recovery.active(sid):
                    self.conn_failed(sid, cid, "session FAILED")

    def conn_failed(self, sid: int, cid: int, reason: str) -> None:
        if self.recovery is not None:
            self.recovery.conn_failed(sid, cid, reason)

    def _async_logout_done(self, event: Any) -> bool:
        """A Logout Response to a logout the target asked for: the connection is closed,
        recover the session (True: the event was that)."""
        pending = self.async_logouts.get(event.sid)
        if pending is None:
            return False
        cid, itt, _deadline = pending
        response = logout_response_of(event.pdu, itt)
        if response is None:
            return False
        del self.async_logouts[event.sid]
        log.info("connection%d:%d logged out (response %d): reconnecting", event.sid, cid, response)
        self.conn_failed(event.sid, cid, "target requested logout")
        return True

    def on_async(self, nl: Any, sid: int, cid: int, action: Any) -> None:
        """Carry out an async_msg.AsyncAction for connection sid:cid."""
        log.warning("connection%d:%d: %s", sid, cid, action.message)
        if action.kind == "logout":
            if sid in self.async_logouts or is_closing(sid):
                return
            itt = _next_itt()
            try:
                nl.send_pdu(sid, cid, logout_pdu(itt, cid, reason=1))
            except IscsiError as exc:
                log.warning("connection%d:%d: cannot send the Logout: %s", sid, cid, exc.message)
                self.conn_failed(sid, cid, "target requested logout")
                return
            self.async_logouts[sid] = (cid, itt, time.monotonic() + action.delay)
        elif action.kind == "drop":
            if self.recovery is not None:
                self.recovery.hold_off(sid, action.delay)
        elif action.kind == "rescan":
            threading.Thread(target=_rescan, args=(sid,), name=f"rescan-{sid}", daemon=True).start()

    def handle(self, nl: IscsiNetlink, event: Any) -> None:
        from pyiscsid.netlink import ConnErrorEvent, EventsLost, RecvPduEvent

        if isinstance(event, RecvPduEvent):
            itt = nop_in_itt(event.pdu)
            if itt is not None:
                self.pinger.answered(event.sid, itt, time.monotonic())
                return
            if self._async_logout_done(event):
                return
            from pyiscsid.async_msg import action_of

            action = action_of(event.pdu)
            if action is not None:
                self.on_async(nl, event.sid, event.cid, action)
                return
            reply = nop_out_reply(event.pdu)
            if reply is None:
                return
            try:
                nl.send_pdu(event.sid, event.cid, reply)
                self.pings_answered += 1
            except IscsiError as exc:
                log.warning("session %d: cannot answer the target's NOP-In: %s", event.sid, exc)
        elif isinstance(event, ConnErrorEvent):
            if is_closing(event.sid):
                return  # the target closes the connection after a logout
            name = getattr(event.error, "name", str(event.error))
            log.warning("session %d: connection %d failed (%s)", event.sid, event.cid, name)
            self.conn_failed(event.sid, event.cid, name)
        elif isinstance(event, EventsLost):
            log.warning("kernel events were lost (socket buffer overrun)")
            self._next_tick = 0.0  # look at the sessions' states now


_service: EventService | None = None


def start_event_service(recovery: Any = None) -> EventService:
    """Start iscsid's kernel event thread once per process; idempotent.

    iscsid calls it at startup with its recovery.RecoveryManager (sessions that a previous
    iscsid left need their pings answered and their failures recovered too); start_session
    calls it as well, so a session never runs unanswered (a default RecoveryManager then).
    """
    global _service
    with _lock:
        if _service is None or _service.stop_event.is_set():
            if recovery is None:
                from pyiscsid.recovery import RecoveryManager

                recovery = RecoveryManager()
            _service = EventService(recovery=recovery).start()
        return _service


# ------------------------------------------------------------------------------------------
# sysfs
# ------------------------------------------------------------------------------------------


@dataclass
class SessionInfo:
    """One session as sysfs shows it (iscsi_session/sessionN and its connections)."""

    sid: int
    host_no: int
    target_name: str
    tpgt: int
    address: str  # the connection's current address (after any redirect)
    port: int
    persistent_address: str  # the node record's portal
    persistent_port: int
    iface: str
    initiator_name: str
    isid: str
    tsih: int
    state: str  # LOGGED_IN, FAILED, FREE
    cids: list[int] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)  # every readable session attribute
    conn_attrs: dict[str, str] = field(default_factory=dict)  # of the first connection
    disks: list[str] = field(default_factory=list)  # block device names, e.g. ["sda"]
    transport: str = "tcp"


def _read_attrs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with os.scandir(path) as it:
            entries = [e for e in it if e.name != "uevent" and e.is_file(follow_symlinks=False)]
    except OSError:
        return out
    for entry in entries:
        text = _cat_or_none(entry.path)
        if text is not None:  # None: a write-only or unreadable attribute
            out[entry.name] = text
    return out


def _int(text: str | None, default: int = -1) -> int:
    try:
        return int(text or "", 0)
    except ValueError:
        return default


def connection_ids(sid: int) -> list[int]:
    prefix = f"connection{sid}:"
    try:
        names = [n for n in os.listdir(f"{SYSFS}/class/iscsi_connection") if n.startswith(prefix)]
    except OSError:
        return []
    return sorted(_int(n[len(prefix) :], 0) for n in names)


def session_host(sid: int) -> int:
    """The Scsi_Host number of session `sid` (-1 if unknown)."""
    sess = SYSFS / "class" / "iscsi_session" / f"session{sid}"
    try:
        parts = (sess / "device").resolve().parts
    except OSError:
        return -1
    for part in reversed(parts):
        if part.startswith("host") and part[4:].isdigit():
            return int(part[4:])
    return -1


def scsi_devices(host_no: int) -> list[Path]:
    """sysfs dirs of the SCSI devices (H:C:T:L) of host `host_no`."""
    root = SYSFS / "bus" / "scsi" / "devices"
    try:
        names = os.listdir(root)
    except OSError:
        return []
    prefix = f"{host_no}:"
    return [root / n for n in sorted(names) if n.startswith(prefix) and n.count(":") == 3]


def host_disks(host_no: int) -> list[str]:
    """Block device names of the disks on host `host_no`."""
    disks: list[str] = []
    for dev in scsi_devices(host_no):
        try:
            disks += sorted(p.name for p in (dev / "block").iterdir())
        except OSError:
            continue
    return disks


def wait_for_disks(host_no: int, timeout: float) -> list[str]:
    """Wait until every disk-type LUN of the host has its /dev node; the H:C:T:L still missing."""
    deadline = time.monotonic() + timeout
    done: set[str] = set()  # LUNs seen with their /dev nodes: not looked at again
    while True:
        missing = []
        for dev in scsi_devices(host_no):
            name = dev.name
            if name in done:
                continue
            kind = _cat_or_none(f"{dev}/type")
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


def session_stats(sid: int) -> dict[str, int]:
    """The kernel's counters for session `sid` (GET_STATS on its connection), named as
    `iscsiadm -m session -s` prints them: txdata_octets, ..., rjt_pdus, digest_err, timeout_err."""
    from pyiscsid.netlink import IscsiNetlink

    cids = connection_ids(sid)
    if not cids:
        raise IscsiError(Err.SESS_NOT_FOUND, f"session {sid} has no connection")
    with IscsiNetlink() as nl:
        counters = nl.get_stats(sid, cids[0])
    names = {"REJECT_PDUS": "rjt_pdus"}
    return {names.get(stat.name, stat.name.lower()): value for stat, value in counters.items()}


def session_info(sid: int) -> SessionInfo | None:
    """SessionInfo of `sid` from sysfs, None if the session does not exist."""
    sess = SYSFS / "class" / "iscsi_session" / f"session{sid}"
    if not sess.is_dir():
        return None
    attrs = _read_attrs(sess)
    cids = connection_ids(sid)
    conn = (
        _read_attrs(SYSFS / "class" / "iscsi_connection" / f"connection{sid}:{cids[0]}")
        if cids
        else {}
    )
    host_no = session_host(sid)
    return SessionInfo(
        sid=sid,
        host_no=host_no,
        target_name=attrs.get("targetname", ""),
        tpgt=_int(attrs.get("tpgt")),
        address=conn.get("address", ""),
        port=_int(conn.get("port")),
        persistent_address=conn.get("persistent_address", ""),
        persistent_port=_int(conn.get("persistent_port")),
        iface=attrs.get("ifacename", ""),
        initiator_name=attrs.get("initiatorname", ""),
        isid=attrs.get("isid", ""),
        tsih=_int(attrs.get("tsih"), 0),
        state=attrs.get("state", ""),
        cids=cids,
        attrs=attrs,
        conn_attrs=conn,
        disks=host_disks(host_no) if host_no >= 0 else [],
    )


@dataclass(frozen=True)
class SessionIdentity:
    """What names a session: the few sysfs attributes a login checks before it makes one."""

    sid: int
    target_name: str
    persistent_address: str
    persistent_port: int
    iface: str
    isid: str


def _cat_or_none(path: str) -> str | None:
    """A sysfs attribute's text, None if unreadable; plain os calls (no file object)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 65536).decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def _cat(path: str) -> str:
    """A sysfs attribute's text ("" if unreadable)."""
    text = _cat_or_none(path)
    return "" if text is None else text


def _all_cids() -> dict[int, list[int]]:
    """sid -> its CIDs, in order, from one listing of the connection class."""
    try:
        names = os.listdir(f"{SYSFS}/class/iscsi_connection")
    except OSError:
        return {}
    out: dict[int, list[int]] = {}
    for n in names:
        sid, _, cid = n.removeprefix("connection").partition(":")
        if n.startswith("connection") and sid.isdigit() and cid.isdigit():
            out.setdefault(int(sid), []).append(int(cid))
    for cids in out.values():
        cids.sort()
    return out


def _session_dirs(sid: int, cids: list[int]) -> tuple[str, str]:
    """The sysfs dir of session `sid` and the dir of its first connection."""
    conn = f"{SYSFS}/class/iscsi_connection/connection{sid}:{cids[0] if cids else 0}"
    return f"{SYSFS}/class/iscsi_session/session{sid}", conn


def _session_entries() -> list[tuple[int, int]]:
    """(sid, inode of its sysfs entry) of every session, in SID order. sysfs never gives a
    new entry the inode of a removed one soon, so the pair names one session's lifetime."""
    try:
        with os.scandir(f"{SYSFS}/class/iscsi_session") as it:
            found = [
                (int(e.name[7:]), e.inode())
                for e in it
                if e.name.startswith("session") and e.name[7:].isdigit()
            ]
    except OSError:
        return []
    return sorted(found)


def _sids() -> list[int]:
    """The SIDs sysfs has, in order."""
    return [sid for sid, _ino in _session_entries()]


# (sid, inode) -> identity: what names a session does not change while it exists. A login asks
# for every session's identity; without the cache, N logins at once read 5N files each.
_identities: dict[tuple[int, int], SessionIdentity] = {}
_identities_lock = threading.Lock()


def session_identities() -> list[SessionIdentity]:
    """Every session's target, persistent portal, iface and ISID, by SID: five reads for a
    session not seen before, none for one already known (a login asks this under its node
    lock). A session whose parameters are not all set yet is read again next time."""
    entries = _session_entries()
    with _identities_lock:
        known = dict(_identities)
    out = []
    all_cids: dict[int, list[int]] | None = None
    for key in entries:
        ident = known.get(key)
        if ident is None:
            if all_cids is None:
                all_cids = _all_cids()
            sid = key[0]
            sess, conn = _session_dirs(sid, all_cids.get(sid, []))
            ident = SessionIdentity(
                sid,
                _cat(f"{sess}/targetname"),
                _cat(f"{conn}/persistent_address"),
                _int(_cat(f"{conn}/persistent_port")),
                _cat(f"{sess}/ifacename"),
                _cat(f"{sess}/isid"),
            )
            if ident.target_name and ident.persistent_address and ident.isid:
                known[key] = ident
        out.append(ident)
    live = set(entries)
    with _identities_lock:
        _identities.clear()
        _identities.update({k: v for k, v in known.items() if k in live})
    return out


def list_sessions() -> list[SessionInfo]:
    """Every iscsi_if session in sysfs, by SID."""
    root = SYSFS / "class" / "iscsi_session"
    try:
        names = [p.name for p in root.iterdir()]
    except OSError:
        return []
    sids = sorted(_int(n[7:]) for n in names if n.startswith("session") and n[7:].isdigit())
    return [info for sid in sids if (info := session_info(sid)) is not None]

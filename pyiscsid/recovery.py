"""Connection recovery (ERL 0): bring a failed session's connection back without losing I/O.

On a connection failure (CONN_ERROR from the kernel, or a NOP-Out ping left unanswered) the
RecoveryManager runs one thread per session: STOP_CONN(RECOVER) (the kernel blocks the SCSI
queue, keeps the commands and starts the replacement timer), then reconnects to the session's
persistent portal with back-off (0.5 s doubling up to 5 s, forever, until the session is destroyed
or logged out: the kernel's replacement timer decides when I/O fails), logs in again with the
session's ISID, sets the negotiated parameters, BIND_CONN with the new socket and the login's
CmdSN/ExpStatSN/MaxCmdSN, and START_CONN: the kernel re-issues the commands it kept.

The login is a session reinstatement (RFC 7143 6.3.5): the same ISID with TSIH 0, so the target
closes whatever is left of the old session and the new one takes its place. Everything the login
needs comes from sysfs (target, portal, ISID, initiator name) and, when there is one, the node
record of that portal (authentication, proposals): sessions a previous iscsid created recover too.

A session with several connections (MC/S) is recovered as a whole, once, whichever connection
failed (at ErrorRecoveryLevel 0 the kernel fails the session on any connection's failure):
every connection is stopped (STOP_CONN(RECOVER), its socket closed), the leading login
reinstates the session on the first of its CIDs (0 unless the user closed it), and once that
connection runs the other CIDs the session had (minus the ones the user closed) are logged in
again with the new TSIH and bound to their stopped kernel connections (connections.py). A
connection that cannot be added again is destroyed: the session goes on with fewer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from pyiscsid import connections, kernel_session, sysfs
from pyiscsid.async_msg import MAX_TIME2WAIT
from pyiscsid.db import Database
from pyiscsid.errors import Err, IscsiError
from pyiscsid.login import LoginResult, login
from pyiscsid.netlink import IscsiNetlink
from pyiscsid.records import NodeRecord, login_settings
from pyiscsid.settings import LoginSettings
from pyiscsid.states import ConnState
from pyiscsid.sysfs import SessionInfo
from pyiscsid.uapi import Param, Stop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnect attempts: `start`, then times `factor`, never above `cap`."""

    start: float = 0.5
    cap: float = 5.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.start <= 0 or self.cap < self.start or self.factor < 1:
            raise ValueError(f"bad back-off {self.start}/{self.cap}/{self.factor}")

    def delays(self) -> Iterator[float]:
        """An endless sequence of delays in seconds."""
        delay = self.start
        while True:
            yield delay
            delay = min(self.cap, delay * self.factor)


class RecoverySteps(Protocol):
    """What a recovery does to the kernel and the target (a fake one in unit tests)."""

    def stop(self, sid: int, cid: int) -> None:
        """STOP_CONN(RECOVER). IscsiError SESS_NOT_FOUND if the session is gone."""

    def alive(self, sid: int) -> bool:
        """False once the session is destroyed or being logged out: recovery ends."""

    def reconnect(self, sid: int, cid: int, connected: Callable[[], None]) -> None:
        """Connect, log in (`connected()` once the TCP connection is up), set parameters, bind,
        start. IscsiError on any failure."""

    def connections(self, sid: int) -> list[int]:
        """The CIDs of session `sid` to recover, leading first (not the ones the user closed);
        [] if none is known."""

    def add(self, sid: int, cids: list[int]) -> list[int]:
        """After `reconnect`: log the further connections `cids` in again with the reinstated
        session's TSIH and start them; the CIDs added (the others are destroyed). Never
        raises for a connection."""

    def time2wait(self, sid: int) -> float:
        """The session's negotiated DefaultTime2Wait in seconds (RFC 7143 13.15)."""


# Parameters a new login renegotiates: set again before BIND_CONN. Identity and timeouts stay.
RENEGOTIATED = frozenset(
    {
        Param.MAX_RECV_DLENGTH,
        Param.MAX_XMIT_DLENGTH,
        Param.HDRDGST_EN,
        Param.DATADGST_EN,
        Param.CONN_ADDRESS,
        Param.CONN_PORT,
        Param.TARGET_ALIAS,
        Param.TSIH,
        Param.INITIAL_R2T_EN,
        Param.IMM_DATA_EN,
        Param.FIRST_BURST,
        Param.MAX_BURST,
        Param.MAX_R2T,
        Param.PDU_INORDER_EN,
        Param.DATASEQ_INORDER_EN,
        Param.ERL,
        Param.DEF_TIME2WAIT,
        Param.DEF_TIME2RETAIN,
    }
)


@dataclass
class _SysfsNode:
    """Stands in for a node record when the database has none for a session: sysfs values,
    defaults for everything else (record.get raises KeyError: callers use their default)."""

    target: str
    address: str
    port: int
    tpgt: int
    iface: str

    def get(self, name: str) -> str:
        raise KeyError(name)


def find_record(info: SessionInfo) -> NodeRecord | None:
    """The node record of the session's target and persistent portal (its iface if several)."""
    try:
        with Database() as db:
            recs = db.find_nodes(
                target=info.target, address=info.persistent_address, port=info.persistent_port
            )
    except (IscsiError, OSError) as exc:
        log.warning("session %d: cannot read the node records: %s", info.sid, exc)
        return None
    for rec in recs:
        if rec.iface == info.iface:
            return rec
    return recs[0] if recs else None


def reinstatement_settings(
    info: SessionInfo, record: NodeRecord | None, initiator_name: str, initiator_alias: str
) -> LoginSettings:
    """The login settings that reinstate session `info`: its ISID and initiator name, TSIH 0,
    the record's authentication and proposals (defaults without a record)."""
    name = info.initiatorname or initiator_name
    if record is not None:
        settings = login_settings(record, name, initiator_alias)
    else:
        # no record left: the session's iface binding as sysfs shows it (netdev, hwaddress)
        settings = LoginSettings(initiator_name=name, target_name=info.target).bound_to(
            info.iface,
            "" if info.netdev in ("", "default") else info.netdev,
            "" if info.hwaddress in ("", "default") else info.hwaddress,
            "",
        )
    settings.initiator_name = name  # the I_T nexus must be the same one
    try:
        isid = bytes.fromhex(info.isid)
    except ValueError:
        isid = b""
    if len(isid) != 6:
        raise IscsiError(Err.INVAL, f"session {info.sid}: bad ISID {info.isid!r} in sysfs")
    settings.isid = isid
    settings.tsih = 0  # RFC 7143 6.3.5: reinstatement replaces the old session
    settings.cid = 0
    return settings


class KernelSteps:
    """The real RecoverySteps: netlink to iscsi_if, login to the target."""

    def __init__(self, initiator_name: str = "", initiator_alias: str = "") -> None:
        self.initiator_name = initiator_name
        self.initiator_alias = initiator_alias
        # sid -> what its last reinstatement logged in with: the further connections' login
        self._reinstated: dict[int, tuple[kernel_session.Node, LoginSettings, int]] = {}
        self._lock = threading.Lock()

    def connections(self, sid: int) -> list[int]:
        closed = kernel_session.closed_cids(sid)
        return [cid for cid in sysfs.connection_ids(sid) if cid not in closed]

    def add(self, sid: int, cids: list[int]) -> list[int]:
        with self._lock:
            reinstated = self._reinstated.pop(sid, None)
        if reinstated is None or not cids:
            return []
        node, settings, tsih = reinstated
        steps = connections.KernelConnectionSteps(node, settings.initiator_name, cids)
        portals = connections.record_portals(node)
        added = connections.add_connections(sid, cids, portals, settings, tsih, steps)
        present = sysfs.connection_ids(sid)
        left = [cid for cid in cids if cid not in added and cid in present]
        if left:
            with IscsiNetlink() as nl:
                for cid in left:  # stopped and not bound again: not left behind
                    kernel_session.destroy_connection(nl, sid, cid, None)
        return added

    def time2wait(self, sid: int) -> float:
        value = sysfs.read_str(f"{sysfs.session_dir(sid)}/def_time2wait")
        try:
            return float(int(value or "2"))
        except ValueError:
            return 2.0

    def stop(self, sid: int, cid: int) -> None:
        with IscsiNetlink() as nl:
            nl.stop_conn(sid, cid, Stop.RECOVER)
        kernel_session.close_socket(sid, cid)  # the target sees the old connection end
        log.info("connection%d:%d stopped for recovery", sid, cid)

    def alive(self, sid: int) -> bool:
        return not kernel_session.is_closing(sid) and sysfs.session_exists(sid)

    def reconnect(self, sid: int, cid: int, connected: Callable[[], None]) -> None:
        info = sysfs.session_info(sid)
        if info is None:
            raise IscsiError(Err.SESS_NOT_FOUND, f"session {sid} is gone")
        record = find_record(info)
        settings = reinstatement_settings(info, record, self.initiator_name, self.initiator_alias)
        settings.cid = cid  # the leading login's CID is the kernel connection it binds to
        node: kernel_session.Node = record or _SysfsNode(
            info.target, info.persistent_address, info.persistent_port, info.tpgt, info.iface
        )
        log.info(
            "session %d: logging in to %s %s:%d (reinstatement, ISID %s)",
            sid,
            info.target,
            node.address,
            node.port,
            info.isid,
        )
        t0 = time.monotonic()
        result = login(node.address, node.port, settings, on_connected=connected)
        t1 = time.monotonic()
        try:
            self._hand_over(sid, cid, node, result, settings.initiator_name)
        except BaseException:
            result.close()
            raise
        with self._lock:
            self._reinstated[sid] = (node, settings, result.tsih)
        log.debug(
            "session %d: login %.0f ms, handed to the kernel in %.0f ms",
            sid,
            (t1 - t0) * 1e3,
            (time.monotonic() - t1) * 1e3,
        )

    def _hand_over(
        self, sid: int, cid: int, node: kernel_session.Node, result: LoginResult, initiator: str
    ) -> None:
        with IscsiNetlink() as nl:
            if kernel_session.is_closing(sid):
                raise IscsiError(Err.SESS_NOT_FOUND, f"session {sid} is being logged out")
            nl.set_params(
                sid,
                [
                    (param, value, cid if is_conn else None)
                    for param, value, is_conn in kernel_session.session_params(
                        node, result, initiator
                    )
                    if value != "" and param in RENEGOTIATED
                ],
            )
            result.sock.setblocking(True)
            nl.bind_conn(
                sid, cid, result.sock.fileno(), result.exp_statsn, result.cmdsn, result.max_cmdsn
            )
            log.info("connection%d:%d bound to the new socket, starting", sid, cid)
            try:
                nl.start_conn(sid, cid)
            except IscsiError:
                _unbind(nl, sid, cid)
                raise
            kernel_session.replace_socket(sid, cid, result.sock)


def _unbind(nl: IscsiNetlink, sid: int, cid: int) -> None:
    """Give a bound but not started socket back, so that the next attempt can bind again."""
    try:
        nl.stop_conn(sid, cid, Stop.RECOVER)
    except IscsiError as exc:
        log.warning("connection%d:%d: STOP_CONN after a failed start: %s", sid, cid, exc.message)


class RecoveryManager:
    """Runs at most one recovery per session, each in its own thread (sessions never wait for
    each other). `conn_failed` is called from the event thread and returns at once."""

    def __init__(
        self,
        initiator_name: str = "",
        initiator_alias: str = "",
        backoff: Backoff | None = None,
        steps: RecoverySteps | None = None,
    ) -> None:
        self.backoff = backoff or Backoff()
        self.steps: RecoverySteps = steps or KernelSteps(initiator_name, initiator_alias)
        self._lock = threading.Lock()
        self._active: dict[int, threading.Thread] = {}
        self._phase: dict[int, ConnState] = {}  # where each recovery is (open-iscsi's names)
        self._stop = threading.Event()
        self._cancel: dict[int, threading.Event] = {}  # sid -> set when its recovery must end
        self.recovered: dict[int, int] = {}  # sid -> attempts of its last successful recovery
        self._not_before: dict[int, float] = {}  # sid -> monotonic time of the first reconnect
        self.on_done: Callable[[int, bool], None] | None = None

    def active(self, sid: int) -> bool:
        with self._lock:
            return sid in self._active

    def phase(self, sid: int) -> ConnState | None:
        """Where the recovery of `sid` is: CLEANUP_WAIT until its connection is stopped,
        TRANSPORT_WAIT while it waits and connects, IN_LOGIN from the login to the connection's
        start; None when no recovery of `sid` runs."""
        with self._lock:
            return self._phase.get(sid) if sid in self._active else None

    def _set_phase(self, sid: int, phase: ConnState) -> None:
        with self._lock:
            self._phase[sid] = phase

    def hold_off(self, sid: int, seconds: float) -> None:
        """The next recovery of `sid` reconnects no sooner than `seconds` from now (the
        target's DefaultTime2Wait when it says it drops the connection)."""
        with self._lock:
            self._not_before[sid] = time.monotonic() + max(0.0, seconds)

    def conn_failed(self, sid: int, cid: int, reason: str) -> bool:
        """Start recovering `sid` unless a recovery of it runs already; True if one started."""
        with self._lock:
            if self._stop.is_set() or sid in self._active:
                return False
            thread = threading.Thread(
                target=self._run, args=(sid, cid, reason), name=f"recovery-{sid}", daemon=True
            )
            self._active[sid] = thread
            self._cancel[sid] = threading.Event()
            self._phase[sid] = ConnState.CLEANUP_WAIT
        thread.start()
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """End every recovery (iscsid exits; the kernel's timer still runs)."""
        self._stop.set()
        with self._lock:
            threads = list(self._active.values())
            for event in self._cancel.values():
                event.set()
        for thread in threads:
            thread.join(timeout)

    def cancel(self, sid: int, timeout: float = 2.0) -> bool:
        """End the recovery of `sid` (it is being logged out): a wait for the target's
        Time2Wait or between attempts ends at once, a login in progress is not bound. Waits up
        to `timeout` s for it to end; True if none runs any more. A later session given the same
        SID by the kernel must not find this one's recovery still running."""
        with self._lock:
            event = self._cancel.get(sid)
            self._not_before.pop(sid, None)
        if event is not None:
            event.set()
        return self.wait(sid, timeout)

    def _waits(self, sid: int, seconds: float) -> bool:
        """Wait `seconds`; True if the recovery of `sid` must end instead."""
        with self._lock:
            event = self._cancel.get(sid)
        if event is None or self._stop.is_set():
            return True
        return event.wait(seconds)

    def wait(self, sid: int, timeout: float) -> bool:
        """Wait for the recovery of `sid` to end; True if none runs any more."""
        with self._lock:
            thread = self._active.get(sid)
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _run(self, sid: int, cid: int, reason: str) -> None:
        ok = False
        try:
            ok = self._recover(sid, cid, reason)
        except Exception:  # a bug must not kill iscsid's other work silently
            log.exception("session %d: recovery failed", sid)
        finally:
            with self._lock:
                self._active.pop(sid, None)
                self._phase.pop(sid, None)
                self._cancel.pop(sid, None)
            if self.on_done is not None:
                self.on_done(sid, ok)

    def _stop_all(self, sid: int, cids: list[int]) -> bool:
        """STOP_CONN(RECOVER) of every connection of `sid`; False if the session is gone."""
        for cid in cids:
            try:
                self.steps.stop(sid, cid)
            except IscsiError as exc:
                if exc.code == Err.SESS_NOT_FOUND:
                    log.info("session %d is gone: no recovery", sid)
                    return False
                log.warning("connection%d:%d: STOP_CONN(RECOVER): %s", sid, cid, exc.message)
        return True

    def _readd(self, sid: int, cids: list[int]) -> None:
        """The further connections of a reinstated session, logged in again."""
        if not cids:
            return
        try:
            added = self.steps.add(sid, cids)
        except (IscsiError, OSError) as exc:  # the session runs: it goes on with what it has
            log.warning("session %d: further connections not re-added: %s", sid, exc)
            return
        log.info("session %d: %d of %d further connections back", sid, len(added), len(cids))

    def _recover(self, sid: int, failed: int, reason: str) -> bool:
        log.warning("connection%d:%d error (%s): starting recovery", sid, failed, reason)
        t0 = time.monotonic()
        cids = self.steps.connections(sid) or [failed]
        cid, further = cids[0], cids[1:]  # the leading login reinstates on the first CID
        if not self._stop_all(sid, cids):
            return False
        self._set_phase(sid, ConnState.TRANSPORT_WAIT)
        t_stopped = time.monotonic()
        with self._lock:
            not_before = self._not_before.pop(sid, 0.0)
        if further:
            # Several connections ended at once: the target gets DefaultTime2Wait (RFC 7143
            # 13.15, at most MAX_TIME2WAIT) to close them all before the reinstatement. LIO
            # (Linux 6.1) walks the old session's connections while it still closes them and
            # oopses if a reinstatement arrives meanwhile.
            t2w = min(self.steps.time2wait(sid), MAX_TIME2WAIT)
            not_before = max(not_before, t_stopped + t2w)
        wait = not_before - time.monotonic()
        if wait > 0:
            log.info("connection%d:%d: waiting %.1f s (Time2Wait) to reconnect", sid, cid, wait)
            if self._waits(sid, wait):
                return False
        attempts = 0
        for delay in self.backoff.delays():
            if self._waits(sid, delay):
                return False
            if not self.steps.alive(sid):
                log.info("session %d was logged out or destroyed: recovery ends", sid)
                return False
            attempts += 1
            t_attempt = time.monotonic()
            try:
                self.steps.reconnect(sid, cid, lambda: self._set_phase(sid, ConnState.IN_LOGIN))
            except (IscsiError, OSError) as exc:
                why = exc.message if isinstance(exc, IscsiError) else str(exc)
                log.info("connection%d:%d: attempt %d failed: %s", sid, cid, attempts, why)
                self._set_phase(sid, ConnState.TRANSPORT_WAIT)
                continue
            self._readd(sid, further)
            self.recovered[sid] = attempts
            log.warning(
                "connection%d:%d is operational after recovery (%d attempts)", sid, cid, attempts
            )
            now = time.monotonic()
            log.info(
                "connection%d:%d: recovered in %.0f ms: STOP_CONN %.0f ms, back-off and "
                "failed tries %.0f ms, login and start %.0f ms",
                sid,
                cid,
                (now - t0) * 1e3,
                (t_stopped - t0) * 1e3,
                (t_attempt - t_stopped) * 1e3,
                (now - t_attempt) * 1e3,
            )
            return True
        return False  # not reached: the delays never end

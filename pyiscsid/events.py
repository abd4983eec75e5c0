"""iscsid's event service: what running sessions need from it while the kernel moves their data.

One thread listens on the iscsi_if "events" group: it answers the targets' NOP-In pings, sends
iscsid's own NOP-Out pings (node.conn[0].timeo.noop_out_interval/_timeout), carries out the
targets' Async Messages (pyiscsid.async_msg says what each one asks for), and hands connection
failures (CONN_ERROR, a ping left unanswered, a FAILED session nobody recovers) to the recovery
it was given (a recovery.RecoveryManager in iscsid). iscsid starts one and owns it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from pyiscsid import sysfs
from pyiscsid.async_msg import AsyncAction, action_of
from pyiscsid.errors import IscsiError
from pyiscsid.kernel_session import (
    ISCSID_ITT_BASE,
    is_closing,
    is_closing_conn,
    logout_pdu,
    logout_response_of,
    next_itt,
    rescan,
)
from pyiscsid.netlink import (
    ConnErrorEvent,
    Event,
    EventListener,
    EventsLost,
    IscsiNetlink,
    RecvPduEvent,
)
from pyiscsid.pdu import RSVD_TAG, NopIn, NopOut, peek_bhs
from pyiscsid.recordclass import recordclass
from pyiscsid.uapi import ConnError

log = logging.getLogger(__name__)


class Recovery(Protocol):
    """What the event service asks of a connection recovery (recovery.RecoveryManager)."""

    def conn_failed(self, sid: int, cid: int, reason: str) -> bool: ...
    def hold_off(self, sid: int, seconds: float) -> None: ...
    def active(self, sid: int) -> bool: ...
    def stop(self, timeout: float = 2.0) -> None: ...


class PduSender(Protocol):
    """What the event service sends PDUs through (netlink.IscsiNetlink)."""

    def send_pdu(self, sid: int, cid: int, pdu: bytes) -> None: ...


def nop_out_reply(pdu: bytes) -> bytes | None:
    """The NOP-Out answering `pdu` if it is a NOP-In that asks for one (TTT != 0xffffffff)."""
    nop = peek_bhs(pdu, NopIn)
    if nop is None or nop.ttt == RSVD_TAG:
        return None
    # RFC 7143 11.18: immediate, ITT reserved, the target's TTT and LUN echoed; the kernel
    # fills CmdSN (not advanced: immediate) and ExpStatSN.
    return NopOut(immediate=True, lun=nop.lun, itt=RSVD_TAG, ttt=nop.ttt).encode()


def nop_out_ping(itt: int) -> bytes:
    """iscsid's own ping: an immediate NOP-Out with ITT `itt` and TTT reserved (RFC 7143 11.18);
    the target must answer with a NOP-In of the same ITT."""
    return NopOut(immediate=True, itt=itt, ttt=RSVD_TAG).encode()


def nop_in_itt(pdu: bytes) -> int | None:
    """The ITT of `pdu` if it is a NOP-In answering one of iscsid's pings (bit 31 set)."""
    nop = peek_bhs(pdu, NopIn)
    if nop is not None and nop.itt != RSVD_TAG and nop.itt & ISCSID_ITT_BASE:
        return nop.itt
    return None


@recordclass
class PingState:
    """The NOP-Out schedule of one connection."""

    interval: float  # node.conn[0].timeo.noop_out_interval (sysfs recv_tmo); 0: no pings
    timeout: float  # node.conn[0].timeo.noop_out_timeout (sysfs ping_tmo)
    next_at: float  # monotonic time of the next ping
    itt: int | None = None  # the ping waiting for its answer
    sent_at: float = 0.0


# (sid, cid) -> (noop_out_interval, noop_out_timeout) of the connections to ping
PingSchedule = dict[tuple[int, int], tuple[float, float]]


class Pinger:
    """NOP-Out pings of running connections, each on its own schedule (a session with several
    connections pings every one); pure bookkeeping, the EventService does the I/O.

    `due(now, conns)` says which pings to send and which connections missed an answer;
    `answered(sid, cid, itt, now)` takes an answer. `conns` maps (sid, cid) -> (interval,
    timeout) for the connections of sessions that are LOGGED_IN and not under recovery.
    """

    def __init__(self) -> None:
        self.state: dict[tuple[int, int], PingState] = {}
        self.sent = 0
        self.answered_count = 0

    def due(
        self, now: float, conns: PingSchedule
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
        """([(sid, cid, itt) to send now], [(sid, cid) whose ping timed out])."""
        for key in list(self.state):
            if key not in conns:
                del self.state[key]  # gone, failed or recovering: start over when it is back
        send: list[tuple[int, int, int]] = []
        missed: list[tuple[int, int]] = []
        for key, (interval, timeout) in conns.items():
            st = self.state.get(key)
            if st is None or st.interval != interval:
                st = self.state[key] = PingState(interval, timeout, now + interval)
            st.timeout = timeout
            if interval <= 0:
                continue
            if st.itt is not None:
                if timeout > 0 and now - st.sent_at >= timeout:
                    missed.append(key)
                    del self.state[key]
                continue
            if now >= st.next_at:
                st.itt = next_itt()
                st.sent_at = now
                send.append((*key, st.itt))
                self.sent += 1
        return send, missed

    def answered(self, sid: int, cid: int, itt: int, now: float) -> bool:
        st = self.state.get((sid, cid))
        if st is None or st.itt != itt:
            return False
        st.itt = None
        st.next_at = now + st.interval
        self.answered_count += 1
        return True

    def unsent(self, sid: int, cid: int, now: float) -> None:
        """The ping of `sid`:`cid` could not be sent (a connection being added or closed):
        no answer is awaited; the next one goes an interval later."""
        st = self.state.get((sid, cid))
        if st is not None:
            st.itt = None
            st.next_at = now + st.interval


def ping_schedule(
    recovery: Recovery | None = None, pulses: list[sysfs.SessionPulse] | None = None
) -> PingSchedule:
    """The connections to ping and their timers, from sysfs: every connection of the sessions
    that are LOGGED_IN, not logged out of, not under recovery, but those being closed."""
    out: PingSchedule = {}
    for p in sysfs.session_pulses() if pulses is None else pulses:
        if p.state != "LOGGED_IN" or not p.cids or is_closing(p.sid):
            continue
        if recovery is not None and recovery.active(p.sid):
            continue
        for cid in p.cids:
            if not is_closing_conn(p.sid, cid):
                out[(p.sid, cid)] = (float(max(p.recv_tmo, 0)), float(max(p.ping_tmo, 0)))
    return out


def failed_sessions(pulses: list[sysfs.SessionPulse] | None = None) -> list[tuple[int, int]]:
    """(sid, cid) of the sessions sysfs shows FAILED: they need a recovery."""
    return [
        (p.sid, p.cids[0] if p.cids else 0)
        for p in (sysfs.session_pulses() if pulses is None else pulses)
        if p.state == "FAILED" and not is_closing(p.sid)
    ]


class EventService:
    """iscsid's listener on the kernel's "events" group, run in a thread of its own.

    Answers the targets' NOP-In pings (a target drops a connection whose pings go unanswered),
    sends iscsid's own NOP-Out pings, and hands connection failures (CONN_ERROR, a ping left
    unanswered, a FAILED session nobody recovers) to `recovery` (None: failures are only
    logged). Survives the module being absent or unloaded: it retries.
    """

    TICK = 1.0  # seconds between ping/FAILED-session checks

    def __init__(self, retry: float = 1.0, recovery: Recovery | None = None) -> None:
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

    def logging_out(self, sid: int) -> bool:
        """True while a logout the target asked for waits for its Logout Response."""
        return sid in self.async_logouts

    def run(self) -> None:
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

    def tick(self, nl: PduSender, now: float) -> None:
        """Send the pings that are due, fail connections whose ping went unanswered, start a
        recovery for FAILED sessions nobody recovers (events lost, or a previous iscsid's)."""
        if now < self._next_tick:
            return
        self._next_tick = now + self.TICK
        pulses = sysfs.session_pulses()
        send, missed = self.pinger.due(now, ping_schedule(self.recovery, pulses))
        for sid, cid, itt in send:
            try:
                nl.send_pdu(sid, cid, nop_out_ping(itt))
            except IscsiError as exc:
                log.debug("connection%d:%d: cannot send a NOP-Out: %s", sid, cid, exc.message)
                self.pinger.unsent(sid, cid, now)
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

    def _async_logout_done(self, event: RecvPduEvent) -> bool:
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

    def on_async(self, nl: PduSender, sid: int, cid: int, action: AsyncAction) -> None:
        """Carry out an async_msg.AsyncAction for connection sid:cid."""
        log.warning("connection%d:%d: %s", sid, cid, action.message)
        if action.kind == "logout":
            if sid in self.async_logouts or is_closing(sid):
                return
            itt = next_itt()
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
            threading.Thread(target=rescan, args=(sid,), name=f"rescan-{sid}", daemon=True).start()

    def handle(self, nl: PduSender, event: Event) -> None:
        if isinstance(event, RecvPduEvent):
            self._on_pdu(nl, event)
        elif isinstance(event, ConnErrorEvent):
            if is_closing_conn(event.sid, event.cid):
                return  # the target closes the connection after a logout
            error = event.error
            name = error.name if isinstance(error, ConnError) else str(error)
            log.warning("session %d: connection %d failed (%s)", event.sid, event.cid, name)
            self.conn_failed(event.sid, event.cid, name)
        elif isinstance(event, EventsLost):
            log.warning("kernel events were lost (socket buffer overrun)")
            self._next_tick = 0.0  # look at the sessions' states now

    def _on_pdu(self, nl: PduSender, event: RecvPduEvent) -> None:
        itt = nop_in_itt(event.pdu)
        if itt is not None:
            self.pinger.answered(event.sid, event.cid, itt, time.monotonic())
            return
        if self._async_logout_done(event):
            return
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

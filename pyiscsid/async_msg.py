"""Async Messages from a target in full feature phase (RFC 7143 11.9): what iscsid does about each.

The kernel hands every Async Message up as a RECV_PDU event; `action_of` reads one and says what
to do (pure: no I/O), and the event service (events.EventService) does it:

- 0 SCSI async event: logged with its sense data; "REPORTED LUNS DATA HAS CHANGED" (3F/0E) and
  "INQUIRY/capacity data changed" (3F/03, 2A/09) rescan the session.
- 1 logout request: a Logout (close the connection) within Parameter3 seconds, then connection
  recovery: a new login reinstates the session and the kernel re-issues what it kept (this is how
  targets move connections between portals; the login may be redirected).
- 2/3 the target drops this connection / all of them: recovery waits DefaultTime2Wait
  (Parameter2) before it reconnects.
- 4 parameter renegotiation: not supported (the values of the login stay), as in open-iscsi.
- 5 tasks of a LUN terminated, 248-255 vendor specific: logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyiscsid.pdu import AsyncMessage, peek_bhs

LOGOUT_GRACE = 1.0  # seconds: at least this long to get a Logout out when Parameter3 is 0
# The most a target may make us wait before reconnecting: DefaultTime2Wait's range (RFC 7143
# 13.15); Parameter2 is 16 bits and a target could otherwise keep the session away for 18 h.
MAX_TIME2WAIT = 3600
RESCAN_SENSE = {(0x3F, 0x0E), (0x3F, 0x03), (0x2A, 0x09)}


@dataclass(frozen=True)
class AsyncAction:
    """kind: "log", "rescan", "logout" (delay: Parameter3, seconds to log out in) or "drop"
    (delay: Time2Wait before reconnecting); message: what iscsid logs."""

    kind: str
    message: str
    delay: float = 0.0
    cid: int | None = None  # the connection a drop is about (None: all of them)


def _sense(data: bytes) -> tuple[int, int, int] | None:
    """(sense key, ASC, ASCQ) of an Async Message's data segment: a 2-byte SenseLength and the
    sense data (fixed or descriptor format), as in a SCSI Response (RFC 7143 11.4.7.2)."""
    if len(data) < 2:
        return None
    length = int.from_bytes(data[:2], "big")
    sense = data[2 : 2 + length]
    if len(sense) < 4:
        return None
    code = sense[0] & 0x7F
    if code in (0x72, 0x73):  # descriptor format
        return sense[1] & 0x0F, sense[2], sense[3]
    if code in (0x70, 0x71) and len(sense) >= 14:
        return sense[2] & 0x0F, sense[12], sense[13]
    return None


def action_of(pdu: bytes) -> AsyncAction | None:
    """What to do about `pdu` (BHS [+AHS] + data) if it is an Async Message, else None."""
    msg = peek_bhs(pdu, AsyncMessage)
    if msg is None:
        return None
    ahs = pdu[4] * 4
    data = pdu[48 + ahs :]
    event = msg.async_event
    if event == 0:
        sense = _sense(data)
        if sense is None:
            return AsyncAction("log", "SCSI asynchronous event without sense data")
        key, asc, ascq = sense
        text = f"SCSI asynchronous event: sense key {key:#x}, ASC/ASCQ {asc:02x}/{ascq:02x}"
        if (asc, ascq) in RESCAN_SENSE:
            return AsyncAction("rescan", text + ": rescanning")
        return AsyncAction("log", text)
    if event == 1:
        within = float(msg.parameter3)
        return AsyncAction(
            "logout",
            f"target requests logout within {msg.parameter3} seconds",
            max(within, LOGOUT_GRACE),
        )
    if event in (2, 3):
        what = f"connection {msg.parameter1}" if event == 2 else "all connections"
        return AsyncAction(
            "drop",
            f"target drops {what} (Time2Wait {msg.parameter2} s, Time2Retain {msg.parameter3} s)",
            float(min(msg.parameter2, MAX_TIME2WAIT)),
            msg.parameter1 if event == 2 else None,
        )
    if event == 4:
        return AsyncAction(
            "log", "target requests parameter renegotiation: not supported, values stay"
        )
    if event == 5:
        return AsyncAction("log", "target terminates all tasks of a logical unit")
    if event >= 248:
        return AsyncAction("log", f"vendor specific asynchronous event {msg.async_vcode:#x}")
    return AsyncAction("log", f"unknown asynchronous event {event}")

"""A session's state as iscsid reports it (`session_info`, printed by `iscsiadm -m session -P 1`).

open-iscsi's iscsid answers MGMT_IPC_SESSION_INFO with its connection's state and its session's
recovery stage (`conn->state`, `session->r_stage`); iscsiadm names the numbers. Its iscsid goes
through them so: a login is IN LOGIN until the connection is started, then LOGGED IN / NO CHANGE;
a logout (asked for by iscsiadm, or by the target in an Async Message) is IN LOGOUT; a failed
connection is CLEANUP WAIT with the session in REOPEN, TRANSPORT WAIT while it reconnects, IN
LOGIN while it logs in again, and LOGGED IN / NO CHANGE once it is back.
"""

from __future__ import annotations

from enum import IntEnum


class ConnState(IntEnum):
    """open-iscsi's iscsi_conn_state."""

    FREE = 0
    TRANSPORT_WAIT = 1
    IN_LOGIN = 2
    LOGGED_IN = 3
    IN_LOGOUT = 4
    LOGOUT_REQUESTED = 5
    CLEANUP_WAIT = 6


class SessionStage(IntEnum):
    """open-iscsi's session r_stage (the recovery stage)."""

    NO_CHANGE = 0
    CLEANUP = 1
    REOPEN = 2
    REDIRECT = 3


def iscsid_state(
    kernel_state: str,
    recovering: ConnState | None = None,
    handling: ConnState | None = None,
) -> tuple[ConnState, SessionStage]:
    """(connection state, session stage) of a session.

    `kernel_state`: the session's sysfs state (LOGGED_IN, FAILED, FREE); `recovering`: where
    its connection recovery is (None: none runs); `handling`: what iscsid does with it
    otherwise (IN_LOGIN while a login hands it to the kernel, IN_LOGOUT during a logout).
    """
    if recovering is not None:
        return recovering, SessionStage.REOPEN
    if handling is not None:
        return handling, SessionStage.NO_CHANGE
    if kernel_state == "LOGGED_IN":
        return ConnState.LOGGED_IN, SessionStage.NO_CHANGE
    if kernel_state == "FAILED":  # failed, its recovery about to start
        return ConnState.CLEANUP_WAIT, SessionStage.REOPEN
    return ConnState.FREE, SessionStage.NO_CHANGE  # created, not started yet, or stopped

"""Exit codes and messages of the iSCSI tools (open-iscsi's ISCSI_ERR_* table, 0-33).

Tools such as os-brick and the CSI drivers act on these numbers, so they must not change.
"""

from __future__ import annotations

from enum import IntEnum


class Err(IntEnum):
    SUCCESS = 0
    GENERIC = 1
    SESS_NOT_FOUND = 2
    NOMEM = 3
    TRANS = 4
    LOGIN = 5
    IDBM = 6
    INVAL = 7
    TRANS_TIMEOUT = 8
    INTERNAL = 9
    LOGOUT = 10
    PDU_TIMEOUT = 11
    TRANS_NOT_FOUND = 12
    ACCESS = 13
    TRANS_CAPS = 14
    SESS_EXISTS = 15
    INVALID_MGMT_REQ = 16
    ISNS_UNAVAILABLE = 17
    ISCSID_COMM_ERR = 18
    FATAL_LOGIN = 19
    ISCSID_NOTCONN = 20
    NO_OBJS_FOUND = 21
    SYSFS_LOOKUP = 22
    HOST_NOT_FOUND = 23
    LOGIN_AUTH_FAILED = 24
    ISNS_QUERY = 25
    ISNS_REG_FAILED = 26
    OP_NOT_SUPP = 27
    BUSY = 28
    AGAIN = 29
    UNKNOWN_DISCOVERY_TYPE = 30
    CHILD_TERMINATED = 31
    SESSION_NOT_CONNECTED = 32
    REQ_TIMEDOUT = 33


# The short text iscsiadm prints for each code (as open-iscsi's tools print it).
_MESSAGES = {
    Err.SUCCESS: "",
    Err.GENERIC: "unknown error",
    Err.SESS_NOT_FOUND: "session not found",
    Err.NOMEM: "no available memory",
    Err.TRANS: "encountered connection failure",
    Err.LOGIN: "encountered iSCSI login failure",
    Err.IDBM: "encountered iSCSI database failure",
    Err.INVAL: "invalid parameter",
    Err.TRANS_TIMEOUT: "connection timed out",
    Err.INTERNAL: "internal error",
    Err.LOGOUT: "encountered iSCSI logout failure",
    Err.PDU_TIMEOUT: "iSCSI PDU timed out",
    Err.TRANS_NOT_FOUND: (
        "iSCSI driver not found. Please make sure it is loaded, and retry the operation"
    ),
    Err.ACCESS: "daemon access denied",
    Err.TRANS_CAPS: "iSCSI driver does not support requested capability.",
    Err.SESS_EXISTS: "session exists",
    Err.INVALID_MGMT_REQ: "Unknown request",
    Err.ISNS_UNAVAILABLE: "iSNS service not supported",
    Err.ISCSID_COMM_ERR: "could not communicate to iscsid",
    Err.FATAL_LOGIN: "encountered non-retryable iSCSI login failure",
    Err.ISCSID_NOTCONN: "could not connect to iscsid",
    Err.NO_OBJS_FOUND: "no objects found",
    Err.SYSFS_LOOKUP: "sysfs lookup failure",
    Err.HOST_NOT_FOUND: "host not found",
    Err.LOGIN_AUTH_FAILED: "iSCSI login failed due to authorization failure",
    Err.ISNS_QUERY: "iSNS query failed",
    Err.ISNS_REG_FAILED: "iSNS registration failed",
    Err.OP_NOT_SUPP: "operation not supported",
    Err.BUSY: "device or resource in use",
    Err.AGAIN: "operation failed but retry may succeed",
    Err.UNKNOWN_DISCOVERY_TYPE: "unknown discovery type",
    Err.CHILD_TERMINATED: "child process terminated",
    Err.SESSION_NOT_CONNECTED: "target likely not connected",
    Err.REQ_TIMEDOUT: "iscsid request timed out",
}


def err_to_str(code: int) -> str:
    """The message for an exit code; unknown codes get a generic text."""
    try:
        return _MESSAGES[Err(code)]
    except ValueError:
        return f"unknown error code {code}"


class IscsiError(Exception):
    """An error with an open-iscsi exit code and a message for the administrator."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = Err(code)
        self.message = message or err_to_str(code)
        super().__init__(self.message)

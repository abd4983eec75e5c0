"""Names and numbers of the iscsi_if generic netlink family, read from kernel/iscsi_if.h.

The header is the one contract between the kernel modules and iscsid: this module feeds it to
cffi's parser (``ffi.cdef``) so no number is written twice. The header is looked for next to this
file (the copy an installed package carries as package data) and in ``../kernel/`` (the source
tree); ``PYISCSI_UAPI_HEADER`` overrides both.

Exposed:
  GENL_NAME, MCGRP_EVENTS (strings), GENL_VERSION (int)
  Cmd, Attr, Param, Stop, ConnError, SessionState, Stat (IntEnum; the header's prefix dropped:
  ``ISCSI_IF_CMD_CREATE_SESSION`` -> ``Cmd.CREATE_SESSION``, ``ISCSI_IF_EVENT_RECV_PDU`` ->
  ``Cmd.EVENT_RECV_PDU``); ATTR_MAX, PARAM_MAX, STAT_MAX, CMD_MAX (the ``__*_MAX`` markers).

The enums name their members (so that type checkers and readers see them); every value is the
header's (`auto()` looks it up): a member the header lacks is an error at import, and a unit test
(tests/unit/test_uapi.py) fails when the header has a member an enum does not name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from enum import IntEnum, auto
from pathlib import Path

from pyiscsid.errors import Err, IscsiError

HEADER_NAME = "iscsi_if.h"

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_STRING_DEFINE = re.compile(r'^\s*#\s*define\s+(\w+)\s+"([^"\\]*)"\s*$', re.M)


def header_candidates() -> list[Path]:
    """Where the header is looked for, in order."""
    here = Path(__file__).resolve().parent
    paths = []
    env = os.environ.get("PYISCSI_UAPI_HEADER")
    if env:
        paths.append(Path(env))
    paths += [here / HEADER_NAME, here.parent / "kernel" / HEADER_NAME]
    return paths


def find_header() -> Path:
    for path in header_candidates():
        if path.is_file():
            return path
    tried = ", ".join(map(str, header_candidates()))
    raise IscsiError(Err.INTERNAL, f"the kernel interface header {HEADER_NAME} is missing: {tried}")


class UapiHeader:
    """A parsed header: string #defines and every enum's name -> value."""

    def __init__(self, text: str) -> None:
        import cffi  # lazily: only the kernel paths pay for cffi

        self.strings: dict[str, str] = dict(_STRING_DEFINE.findall(_COMMENT.sub(" ", text)))
        body = _COMMENT.sub(" ", text)
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("#")]
        ffi = cffi.FFI()
        try:
            ffi.cdef("\n".join(lines))
        except cffi.CDefError as exc:
            raise IscsiError(Err.INTERNAL, f"cannot parse {HEADER_NAME}: {exc}") from exc
        self.enums: dict[str, dict[str, int]] = {}
        for tag in re.findall(r"\benum\s+(\w+)\s*\{", body):
            ctype = ffi.typeof(f"enum {tag}")
            self.enums[tag] = dict(sorted(ctype.relements.items(), key=lambda kv: kv[1]))

    def enum(self, tag: str) -> dict[str, int]:
        try:
            return self.enums[tag]
        except KeyError:
            raise IscsiError(Err.INTERNAL, f"{HEADER_NAME} has no enum {tag}") from None

    def string(self, name: str) -> str:
        try:
            return self.strings[name]
        except KeyError:
            raise IscsiError(Err.INTERNAL, f"{HEADER_NAME} has no #define {name}") from None


def header_values(values: dict[str, int], *prefixes: str) -> Callable[..., int]:
    """An IntEnum's _generate_next_value_: the value of `values`' member named by the first
    prefix that makes one with the enum member's name (IscsiError INTERNAL if none does)."""

    def value(name: str, _start: int, _count: int, _last_values: list[int]) -> int:
        for prefix in prefixes:
            if prefix + name in values:
                return values[prefix + name]
        raise IscsiError(Err.INTERNAL, f"{HEADER_NAME} has no {prefixes[0]}{name}")

    return value


def _max(values: dict[str, int]) -> int:
    markers = [v for k, v in values.items() if k.startswith("__") and k.endswith("_MAX")]
    return markers[0] if markers else max(values.values()) + 1


_hdr = UapiHeader(find_header().read_text())

GENL_NAME: str = _hdr.string("ISCSI_IF_GENL_NAME")
MCGRP_EVENTS: str = _hdr.string("ISCSI_IF_MCGRP_EVENTS")
GENL_VERSION: int = _hdr.enum("iscsi_if_version")["ISCSI_IF_GENL_VERSION"]


class Cmd(IntEnum):
    """Commands (user -> kernel) and events (kernel -> user, multicast)."""

    _generate_next_value_ = header_values(_hdr.enum("iscsi_if_cmd"), "ISCSI_IF_CMD_", "ISCSI_IF_")
    UNSPEC = auto()
    CREATE_SESSION = auto()
    DESTROY_SESSION = auto()
    CREATE_CONN = auto()
    DESTROY_CONN = auto()
    BIND_CONN = auto()
    START_CONN = auto()
    STOP_CONN = auto()
    SET_PARAM = auto()
    GET_PARAM = auto()
    SEND_PDU = auto()
    SCAN = auto()
    GET_STATS = auto()
    GET_SESSION = auto()
    EVENT_CONN_ERROR = auto()
    EVENT_RECV_PDU = auto()
    EVENT_SESSION_STATE = auto()
    EVENT_SESSION_DESTROYED = auto()
    DRAIN_CONN = auto()


class Attr(IntEnum):
    """Netlink attributes (their types: netlink.ATTR_TYPES)."""

    _generate_next_value_ = header_values(_hdr.enum("iscsi_if_attr"), "ISCSI_IF_ATTR_")
    UNSPEC = auto()
    TRANSPORT = auto()
    SID = auto()
    CID = auto()
    HOST_NO = auto()
    SOCK_FD = auto()
    CMDS_MAX = auto()
    QUEUE_DEPTH = auto()
    CMDSN = auto()
    EXP_STATSN = auto()
    PARAM = auto()
    VALUE = auto()
    PDU = auto()
    STOP_FLAG = auto()
    ERROR = auto()
    STATE = auto()
    CHANNEL = auto()
    ID = auto()
    LUN = auto()
    STATS = auto()
    PAD = auto()
    MAX_CMDSN = auto()
    TIMEOUT = auto()


class Param(IntEnum):
    """Session and connection parameters (SET_PARAM, GET_PARAM)."""

    _generate_next_value_ = header_values(_hdr.enum("iscsi_if_param"), "ISCSI_IF_PARAM_")
    MAX_RECV_DLENGTH = auto()
    MAX_XMIT_DLENGTH = auto()
    HDRDGST_EN = auto()
    DATADGST_EN = auto()
    CONN_ADDRESS = auto()
    CONN_PORT = auto()
    PERSISTENT_ADDRESS = auto()
    PERSISTENT_PORT = auto()
    PING_TMO = auto()
    RECV_TMO = auto()
    TARGET_NAME = auto()
    TPGT = auto()
    INITIATOR_NAME = auto()
    TARGET_ALIAS = auto()
    IFACE_NAME = auto()
    ISID = auto()
    TSIH = auto()
    INITIAL_R2T_EN = auto()
    IMM_DATA_EN = auto()
    FIRST_BURST = auto()
    MAX_BURST = auto()
    MAX_R2T = auto()
    PDU_INORDER_EN = auto()
    DATASEQ_INORDER_EN = auto()
    ERL = auto()
    DEF_TIME2WAIT = auto()
    DEF_TIME2RETAIN = auto()
    RECOVERY_TMO = auto()
    ABORT_TMO = auto()
    LU_RESET_TMO = auto()
    TGT_RESET_TMO = auto()
    USERNAME = auto()
    USERNAME_IN = auto()
    NETDEV_NAME = auto()
    HWADDRESS = auto()


class Stop(IntEnum):
    """How STOP_CONN stops a connection."""

    _generate_next_value_ = header_values(_hdr.enum("iscsi_if_stop"), "ISCSI_IF_STOP_")
    RECOVER = auto()
    TERM = auto()


class ConnError(IntEnum):
    """Why a connection failed (CONN_ERROR events)."""

    _generate_next_value_ = header_values(_hdr.enum("iscsi_if_err"), "ISCSI_IF_ERR_")
    NONE = auto()
    CONN_FAILED = auto()
    PROTO = auto()
    HDR_DGST = auto()
    DATA_DGST = auto()
    XMIT_FAILED = auto()
    BAD_R2T = auto()
    SCSI_EH = auto()
    NOP_TIMEOUT = auto()


class SessionState(IntEnum):
    """A session's state (GET_SESSION, SESSION_STATE events)."""

    _generate_next_value_ = header_values(_hdr.enum("iscsi_if_session_state"), "ISCSI_IF_SESSION_")
    LOGGED_IN = auto()
    FAILED = auto()
    FREE = auto()


class Stat(IntEnum):
    """Counters (GET_STATS)."""

    _generate_next_value_ = header_values(_hdr.enum("iscsi_if_stat"), "ISCSI_IF_STAT_")
    UNSPEC = auto()
    TXDATA_OCTETS = auto()
    RXDATA_OCTETS = auto()
    NOPTX_PDUS = auto()
    SCSICMD_PDUS = auto()
    TMFCMD_PDUS = auto()
    LOGIN_PDUS = auto()
    TEXT_PDUS = auto()
    DATAOUT_PDUS = auto()
    LOGOUT_PDUS = auto()
    SNACK_PDUS = auto()
    NOPRX_PDUS = auto()
    SCSIRSP_PDUS = auto()
    TMFRSP_PDUS = auto()
    TEXTRSP_PDUS = auto()
    DATAIN_PDUS = auto()
    LOGOUTRSP_PDUS = auto()
    R2T_PDUS = auto()
    ASYNC_PDUS = auto()
    REJECT_PDUS = auto()
    DIGEST_ERR = auto()
    TIMEOUT_ERR = auto()
    TX_SENDPAGE_FAILURES = auto()
    RX_DISCONTIGUOUS_HDR = auto()
    EH_ABORT_CNT = auto()


CMD_MAX: int = _max(_hdr.enum("iscsi_if_cmd"))
ATTR_MAX: int = _max(_hdr.enum("iscsi_if_attr"))
PARAM_MAX: int = _max(_hdr.enum("iscsi_if_param"))
STAT_MAX: int = _max(_hdr.enum("iscsi_if_stat"))

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
"""

from __future__ import annotations

import os
import re
from enum import IntEnum
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


def make_enum(name: str, values: dict[str, int], prefixes: tuple[str, ...]) -> type[IntEnum]:
    """An IntEnum from the header's names with the first matching prefix dropped.

    ``__..._MAX`` markers are left out (they are exported as plain ints).
    """
    members: dict[str, int] = {}
    for cname, value in values.items():
        if cname.startswith("__"):
            continue
        short = cname
        for prefix in prefixes:
            if cname.startswith(prefix):
                short = cname[len(prefix) :]
                break
        members[short] = value
    return IntEnum(name, members, module=__name__)  # type: ignore[return-value]


def _max(values: dict[str, int]) -> int:
    markers = [v for k, v in values.items() if k.startswith("__") and k.endswith("_MAX")]
    return markers[0] if markers else max(values.values()) + 1


_hdr = UapiHeader(find_header().read_text())

GENL_NAME: str = _hdr.string("ISCSI_IF_GENL_NAME")
MCGRP_EVENTS: str = _hdr.string("ISCSI_IF_MCGRP_EVENTS")
GENL_VERSION: int = _hdr.enum("iscsi_if_version")["ISCSI_IF_GENL_VERSION"]

Cmd = make_enum("Cmd", _hdr.enum("iscsi_if_cmd"), ("ISCSI_IF_CMD_", "ISCSI_IF_"))
Attr = make_enum("Attr", _hdr.enum("iscsi_if_attr"), ("ISCSI_IF_ATTR_",))
Param = make_enum("Param", _hdr.enum("iscsi_if_param"), ("ISCSI_IF_PARAM_",))
Stop = make_enum("Stop", _hdr.enum("iscsi_if_stop"), ("ISCSI_IF_STOP_",))
ConnError = make_enum("ConnError", _hdr.enum("iscsi_if_err"), ("ISCSI_IF_ERR_",))
SessionState = make_enum(
    "SessionState", _hdr.enum("iscsi_if_session_state"), ("ISCSI_IF_SESSION_",)
)
Stat = make_enum("Stat", _hdr.enum("iscsi_if_stat"), ("ISCSI_IF_STAT_",))

CMD_MAX: int = _max(_hdr.enum("iscsi_if_cmd"))
ATTR_MAX: int = _max(_hdr.enum("iscsi_if_attr"))
PARAM_MAX: int = _max(_hdr.enum("iscsi_if_param"))
STAT_MAX: int = _max(_hdr.enum("iscsi_if_stat"))

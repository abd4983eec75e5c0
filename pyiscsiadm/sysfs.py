"""Sessions as the kernel shows them under /sys/class/iscsi_session (the transport class layout).

The root is $PYISCSI_SYSFS (default /sys) so tests can point it at a fake tree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


def sysfs_root() -> Path:
    return Path(os.environ.get("PYISCSI_SYSFS") or "/sys")


@dataclass
class SessionInfo:
    sid: int
    target: str
    tpgt: int
    address: str  # current
    port: int
    persistent_address: str
    persistent_port: int
    iface: str = "default"
    transport: str = "tcp"
    state: str = "Unknown"
    host_no: int = -1
    recovery_tmo: int = -1
    abort_tmo: int = -1
    lu_reset_tmo: int = -1
    tgt_reset_tmo: int = -1


class SessionLookupError(Exception):
    """A session directory that cannot be read (message as open-iscsi prints it)."""


def _read(path: Path) -> str:
    return path.read_text(errors="replace").strip()


def _read_int(path: Path, default: int = -1) -> int:
    try:
        return int(_read(path))
    except (OSError, ValueError):
        return default


def read_session(sid: int) -> SessionInfo:
    """One session; SessionLookupError when its sysfs entries are missing."""
    root = sysfs_root() / "class"
    sdir = root / "iscsi_session" / f"session{sid}"
    try:
        target = _read(sdir / "targetname")
    except OSError:
        raise SessionLookupError("could not read session targetname: 5") from None
    conn_dirs = sorted((root / "iscsi_connection").glob(f"connection{sid}:*"))
    cdir = conn_dirs[0] if conn_dirs else sdir
    address = _try(cdir / "address")
    port = _read_int(cdir / "port")
    p_address = _try(cdir / "persistent_address") or address
    p_port = _read_int(cdir / "persistent_port", port)
    host_no = -1
    try:
        resolved = sdir.resolve()
        for part in resolved.parts:
            m = re.fullmatch(r"host(\d+)", part)
            if m:
                host_no = int(m.group(1))
    except OSError:
        pass
    return SessionInfo(
        sid=sid,
        target=target,
        tpgt=_read_int(sdir / "tpgt"),
        address=address,
        port=port,
        persistent_address=p_address,
        persistent_port=p_port,
        iface=_try(sdir / "ifacename") or "default",
        state=_try(sdir / "state") or "Unknown",
        host_no=host_no,
        recovery_tmo=_read_int(sdir / "recovery_tmo"),
        abort_tmo=_read_int(sdir / "abort_tmo"),
        lu_reset_tmo=_read_int(sdir / "lu_reset_tmo"),
        tgt_reset_tmo=_read_int(sdir / "tgt_reset_tmo"),
    )


def _try(path: Path) -> str:
    try:
        return _read(path)
    except OSError:
        return ""


def list_sessions() -> list[SessionInfo]:
    """Every readable session, by sid."""
    sdir = sysfs_root() / "class" / "iscsi_session"
    try:
        names = os.listdir(sdir)
    except OSError:
        return []
    sids = sorted(int(n[7:]) for n in names if re.fullmatch(r"session\d+", n))
    result = []
    for sid in sids:
        try:
            result.append(read_session(sid))
        except SessionLookupError:
            continue
    return result


def session_flat(s: SessionInfo) -> str:
    """`tcp: [1] 127.0.0.1:3260,1 iqn... (non-flash)` (brackets when the address has no dot)."""
    addr = s.persistent_address
    portal = f"{addr}:{s.persistent_port}" if "." in addr else f"[{addr}]:{s.persistent_port}"
    return f"{s.transport}: [{s.sid}] {portal},{s.tpgt} {s.target} (non-flash)"


def _portal(addr: str, port: int, tpgt: int) -> str:
    return f"{addr}:{port},{tpgt}" if "." in addr else f"[{addr}]:{port},{tpgt}"


def session_tree(sessions: list[SessionInfo], level: int) -> list[str]:
    """`-m session -P 1..3` (the parts our sessions can show)."""
    lines: list[str] = []
    prev: SessionInfo | None = None
    for s in sessions:
        if prev is None or prev.target != s.target:
            lines.append(f"Target: {s.target} (non-flash)")
            prev = None
        if prev is None or (prev.address, prev.port) != (s.address, s.port):
            lines.append(f"\tCurrent Portal: {_portal(s.address, s.port, s.tpgt)}")
            lines.append(
                f"\tPersistent Portal: {_portal(s.persistent_address, s.persistent_port, s.tpgt)}"
            )
        else:
            lines.append("")
        lines += [
            "\t\t**********",
            "\t\tInterface:",
            "\t\t**********",
            f"\t\tIface Name: {s.iface}",
            f"\t\tIface Transport: {s.transport}",
            f"\t\tSID: {s.sid}",
            "\t\tiSCSI Connection State: Unknown",
            f"\t\tiSCSI Session State: {s.state}",
            "\t\tInternal iscsid Session State: Unknown",
        ]
        if level >= 2:
            lines += [
                "\t\t*********",
                "\t\tTimeouts:",
                "\t\t*********",
                f"\t\tRecovery Timeout: {s.recovery_tmo}",
                f"\t\tTarget Reset Timeout: {s.tgt_reset_tmo}",
                f"\t\tLUN Reset Timeout: {s.lu_reset_tmo}",
                f"\t\tAbort Timeout: {s.abort_tmo}",
            ]
        if level >= 3 and s.host_no >= 0:
            lines += [
                "\t\t************************",
                "\t\tAttached SCSI devices:",
                "\t\t************************",
                f"\t\tHost Number: {s.host_no}\tState: running",
            ]
        prev = s
    return lines

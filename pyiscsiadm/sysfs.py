"""Sessions as the kernel shows them in sysfs (the iSCSI transport class layout).

What is read, relative to the root ($PYISCSI_SYSFS, default /sys), as open-iscsi 2.1.8 reads it:

    class/iscsi_session/sessionS/      targetname tpgt state ifacename initiatorname
                                       username password username_in password_in
                                       recovery_tmo abort_tmo lu_reset_tmo tgt_reset_tmo
                                       first_burst_len max_burst_len immediate_data
                                       initial_r2t max_outstanding_r2t
                                       device -> .../hostH/sessionS (the host number is the
                                       `hostH` component of the session's real path)
    class/iscsi_connection/connectionS:0/  address port persistent_address persistent_port
                                       header_digest data_digest max_recv_dlength
                                       max_xmit_dlength
    class/iscsi_host/hostH/            ipaddress hwaddress netdev initiatorname
    class/scsi_host/hostH/             proc_name (iscsi_tcp -> transport "tcp") state
    <session device>/targetH:0:T/H:0:T:L/   state, block/sdX (or a block:sdX link)
    module/scsi_transport_iscsi/version     (-P 3's first line; with module/iscsi_if instead:
                                       TRANSPORT_CLASS_VERSION, the layout iscsi_if follows)

Missing files read as "unknown" (-1, or the defaults open-iscsi uses), never as errors, except
a session without a readable targetname, which is skipped as open-iscsi skips it.
"""

from __future__ import annotations

import os
import re

UNKNOWN = "<empty>"  # open-iscsi's UNKNOWN_VALUE
DEFAULT = "default"  # libopeniscsiusr's default hwaddress/netdev/ipaddress

# Plain classes and path strings here: dataclasses and pathlib cost every iscsiadm a good part
# of its start-up under software emulation, and `-m session` is what tools call most.


def sysfs_root() -> str:
    return os.environ.get("PYISCSI_SYSFS") or "/sys"


class ScsiDevice:
    """One LUN under a session: `H:0:T:L`, its disk (sdX) if any, its state."""

    __slots__ = ("disk", "host_no", "lun", "state", "target")

    def __init__(
        self, host_no: int, target: int, lun: int, disk: str | None = None, state: str | None = None
    ) -> None:
        self.host_no, self.target, self.lun, self.disk, self.state = (
            host_no,
            target,
            lun,
            disk,
            state,
        )

    def __repr__(self) -> str:
        return (
            f"ScsiDevice({self.host_no}, {self.target}, {self.lun}, {self.disk!r}, {self.state!r})"
        )


# SessionInfo's attributes past the identity, with their defaults (-1: not known)
_SESSION_DEFAULTS: dict[str, object] = {
    "iface": "default",
    "transport": "tcp",
    "state": "Unknown",
    "host_no": -1,
    "recovery_tmo": -1,
    "abort_tmo": -1,
    "lu_reset_tmo": -1,
    "tgt_reset_tmo": -1,
    "username": "",
    "password": "",
    "username_in": "",
    "password_in": "",
    # the iface as the host shows it
    "initiatorname": "",
    "ipaddress": DEFAULT,
    "hwaddress": DEFAULT,
    "netdev": DEFAULT,
    # negotiated parameters
    "header_digest": -1,
    "data_digest": -1,
    "max_recv_dlength": -1,
    "max_xmit_dlength": -1,
    "first_burst_len": -1,
    "max_burst_len": -1,
    "immediate_data": -1,
    "initial_r2t": -1,
    "max_outstanding_r2t": -1,
    "session_dir": None,
}


class SessionInfo:
    """One session as sysfs shows it."""

    iface: str
    transport: str
    state: str
    host_no: int
    recovery_tmo: int
    abort_tmo: int
    lu_reset_tmo: int
    tgt_reset_tmo: int
    username: str
    password: str
    username_in: str
    password_in: str
    initiatorname: str
    ipaddress: str
    hwaddress: str
    netdev: str
    header_digest: int
    data_digest: int
    max_recv_dlength: int
    max_xmit_dlength: int
    first_burst_len: int
    max_burst_len: int
    immediate_data: int
    initial_r2t: int
    max_outstanding_r2t: int
    session_dir: str | None

    def __init__(
        self,
        sid: int,
        target: str,
        tpgt: int,
        address: str,  # current
        port: int,
        persistent_address: str,
        persistent_port: int,
        **attrs: object,
    ) -> None:
        self.sid = sid
        self.target = target
        self.tpgt = tpgt
        self.address = address
        self.port = port
        self.persistent_address = persistent_address
        self.persistent_port = persistent_port
        unknown = set(attrs) - set(_SESSION_DEFAULTS)
        if unknown:
            raise TypeError(f"SessionInfo: unknown attributes {sorted(unknown)}")
        for name, default in _SESSION_DEFAULTS.items():
            setattr(self, name, attrs.get(name, default))

    def __repr__(self) -> str:
        return f"SessionInfo(sid={self.sid}, target={self.target!r}, state={self.state!r})"


class SessionLookupError(Exception):
    """A session directory that cannot be read (message as open-iscsi prints it)."""


def _read(path: str) -> str:
    """One sysfs attribute (OSError if it cannot be read). Plain os calls: a `-m session -P 3`
    reads dozens of attributes a session, and a file object costs more than the
    read itself (a third of the command's time under software emulation)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        text = os.read(fd, 65536).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return "" if text == "(null)" else text


def _try(path: str, default: str = "") -> str:
    try:
        return _read(path)
    except OSError:
        return default


def _read_int(path: str, default: int = -1) -> int:
    text = _try(path)
    try:
        return int(text)
    except ValueError:
        return {"none": 0, "crc32c": 1, "yes": 1, "no": 0}.get(text.lower(), default)


def _host_no(sdir: str) -> int:
    try:
        resolved = os.path.realpath(sdir)
    except OSError:
        return -1
    host_no = -1
    for part in resolved.split("/"):
        m = re.fullmatch(r"host(\d+)", part)
        if m:
            host_no = int(m.group(1))
    return host_no


def read_session(sid: int, brief: bool = False) -> SessionInfo:
    """One session; SessionLookupError when its sysfs entries are missing. `brief`: only what
    names it (target, portals, iface), all a logout or a session count needs."""
    root = f"{sysfs_root()}/class"
    sdir = f"{root}/iscsi_session/session{sid}"
    try:
        target = _read(f"{sdir}/targetname")
    except OSError:
        raise SessionLookupError("could not read session targetname: 5") from None
    cdir = f"{root}/iscsi_connection/connection{sid}:0"
    if not os.path.isdir(cdir):
        try:
            names = os.listdir(f"{root}/iscsi_connection")
        except OSError:
            names = []
        conns = sorted(n for n in names if n.startswith(f"connection{sid}:"))
        cdir = f"{root}/iscsi_connection/{conns[0]}" if conns else sdir
    address = _try(f"{cdir}/address")
    port = _read_int(f"{cdir}/port")
    p_address = _try(f"{cdir}/persistent_address")
    p_port = _read_int(f"{cdir}/persistent_port")
    if address and not p_address:
        p_address = address
    elif p_address and not address:
        address = p_address
    if p_port == -1 and port != -1:
        p_port = port
    elif port == -1 and p_port != -1:
        port = p_port
    iface = _try(f"{sdir}/ifacename") or "default"
    if brief:
        return SessionInfo(sid, target, -1, address, port, p_address, p_port, iface=iface,
                           session_dir=sdir)  # fmt: skip
    host_no = _host_no(sdir)
    s = SessionInfo(
        sid=sid,
        target=target,
        tpgt=_read_int(f"{sdir}/tpgt"),
        address=address,
        port=port,
        persistent_address=p_address,
        persistent_port=p_port,
        iface=iface,
        state=_try(f"{sdir}/state") or "Unknown",
        host_no=host_no,
        recovery_tmo=_read_int(f"{sdir}/recovery_tmo"),
        abort_tmo=_read_int(f"{sdir}/abort_tmo"),
        lu_reset_tmo=_read_int(f"{sdir}/lu_reset_tmo"),
        tgt_reset_tmo=_read_int(f"{sdir}/tgt_reset_tmo"),
        username=_try(f"{sdir}/username"),
        password=_try(f"{sdir}/password"),
        username_in=_try(f"{sdir}/username_in"),
        password_in=_try(f"{sdir}/password_in"),
        initiatorname=_try(f"{sdir}/initiatorname"),
        header_digest=_read_int(f"{cdir}/header_digest"),
        data_digest=_read_int(f"{cdir}/data_digest"),
        max_recv_dlength=_read_int(f"{cdir}/max_recv_dlength"),
        max_xmit_dlength=_read_int(f"{cdir}/max_xmit_dlength"),
        first_burst_len=_read_int(f"{sdir}/first_burst_len"),
        max_burst_len=_read_int(f"{sdir}/max_burst_len"),
        immediate_data=_read_int(f"{sdir}/immediate_data"),
        initial_r2t=_read_int(f"{sdir}/initial_r2t"),
        max_outstanding_r2t=_read_int(f"{sdir}/max_outstanding_r2t"),
        session_dir=sdir,
    )
    if host_no >= 0:
        hdir = f"{root}/iscsi_host/host{host_no}"
        proc = _try(f"{root}/scsi_host/host{host_no}/proc_name")
        if proc:
            s.transport = proc.removeprefix("iscsi_")
        # empty when no iface binds the session to a NIC: open-iscsi prints "default" then
        s.hwaddress = _try(f"{hdir}/hwaddress") or DEFAULT
        s.netdev = _try(f"{hdir}/netdev") or DEFAULT
        s.ipaddress = _try(f"{hdir}/ipaddress", DEFAULT)
        if not s.initiatorname:
            s.initiatorname = _try(f"{hdir}/initiatorname")
    return s


def scsi_device_dirs(host_no: int) -> list[str]:
    """sysfs dirs of the SCSI devices (H:C:T:L) on host `host_no`."""
    root = os.path.join(sysfs_root(), "bus", "scsi", "devices")
    try:
        names = os.listdir(root)
    except OSError:
        return []
    prefix = f"{host_no}:"
    return sorted(
        os.path.join(root, n) for n in names if n.startswith(prefix) and n.count(":") == 3
    )


def has_connection(sid: int, cid: int) -> bool:
    return os.path.isdir(f"{sysfs_root()}/class/iscsi_connection/connection{sid}:{cid}")


def session_names() -> list[str]:
    """`sessionN` entries in alphabetical order, as open-iscsi's scandir(alphasort) lists them
    (session10 before session2)."""
    try:
        names = os.listdir(f"{sysfs_root()}/class/iscsi_session")
    except OSError:
        return []
    return sorted(n for n in names if re.fullmatch(r"session\d+", n))


def list_sessions(brief: bool = False) -> list[SessionInfo]:
    """Every readable session, in open-iscsi's order (see session_names); `brief`: see
    read_session."""
    result = []
    for name in session_names():
        try:
            result.append(read_session(int(name[7:]), brief))
        except SessionLookupError:
            continue
    return result


def host_state(host_no: int) -> str | None:
    text = _try(f"{sysfs_root()}/class/scsi_host/host{host_no}/state")
    return text or None


# iscsi_if lays out sysfs as this version of the in-kernel iSCSI transport class does, so -P 3
# names it where open-iscsi prints scsi_transport_iscsi's version.
TRANSPORT_CLASS_VERSION = "2.0-870"


def kernel_version() -> str | None:
    """The transport class version -P 3 prints first (None: no iSCSI module is loaded and the
    line is left out, as open-iscsi leaves it out)."""
    root = f"{sysfs_root()}/module"
    text = _try(f"{root}/scsi_transport_iscsi/version")
    if text:
        return text
    if os.path.isdir(f"{root}/iscsi_if"):
        return TRANSPORT_CLASS_VERSION
    return None


def _disk_of(ldir: str) -> str | None:
    try:
        entries = sorted(os.listdir(ldir))
    except OSError:
        return None
    for name in entries:
        if name.startswith("block:"):  # old kernels: a block:sdX link
            return name[6:]
        if name == "block":
            try:
                disks = sorted(os.listdir(f"{ldir}/block"))
            except OSError:
                return None
            return disks[0] if disks else None
    return None


def scsi_devices(s: SessionInfo) -> list[ScsiDevice]:
    """The LUNs of a session (`H:0:T:L` under its target directory), sorted by name."""
    if s.session_dir is None or s.host_no < 0:
        return []
    sdev = f"{s.session_dir}/device"
    if not os.path.exists(sdev):  # .../hostH/sessionS
        sdev = os.path.dirname(os.path.dirname(os.path.realpath(s.session_dir)))
    try:
        tnames = os.listdir(sdev)
    except OSError:
        tnames = []
    devices = []
    prefix = f"target{s.host_no}:0:"
    for tdir in sorted(f"{sdev}/{t}" for t in tnames if t.startswith(prefix)):
        try:
            names = sorted(os.listdir(tdir))
        except OSError:
            continue
        for name in names:
            m = re.fullmatch(r"(\d+):(\d+):(\d+):(\d+)", name)
            if m is None:
                continue
            ldir = f"{tdir}/{name}"
            devices.append(
                ScsiDevice(
                    int(m[1]),
                    int(m[3]),
                    int(m[4]),
                    _disk_of(ldir),
                    _try(f"{ldir}/state") or None,
                )
            )
    return devices


# -- output (open-iscsi's session_info.c) ------------------------------------------------------


def _portal(addr: str, port: int, tpgt: int) -> str:
    return f"{addr}:{port},{tpgt}" if "." in addr else f"[{addr}]:{port},{tpgt}"


def session_flat(s: SessionInfo) -> str:
    """`tcp: [1] 127.0.0.1:3260,1 iqn... (non-flash)` (brackets when the address has no dot)."""
    portal = _portal(s.persistent_address, s.persistent_port, s.tpgt)
    return f"{s.transport}: [{s.sid}] {portal} {s.target} (non-flash)"


# iscsid's states as `-P 1` names them (MGMT_IPC_SESSION_INFO's conn_state/session_state)
CONN_STATES = (
    "FREE",
    "TRANSPORT WAIT",
    "IN LOGIN",
    "LOGGED IN",
    "IN LOGOUT",
    "LOGOUT REQUESTED",
    "CLEANUP WAIT",
)
SESSION_STATES = ("NO CHANGE", "CLEANUP", "REOPEN", "REDIRECT")


def _or_unknown(text: str) -> str:
    return text if text else UNKNOWN


def _tmo(value: int) -> str:
    return str(value) if value >= 0 else UNKNOWN


def _state_name(names: tuple[str, ...], value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    return "Unknown"


def session_tree(
    sessions: list[SessionInfo],
    level: int,
    states: dict[int, tuple[object, object]] | None = None,
    show: bool = False,
) -> list[str]:
    """`-m session -P 1..3` lines, byte for byte as open-iscsi 2.1.8 prints them.

    `states` maps a sid to iscsid's (conn_state, session_state) numbers; a sid missing from it
    prints `Unknown` (iscsid did not answer). `show` (-S) prints the CHAP secrets.
    """
    states = states or {}
    lines: list[str] = []
    if level >= 3:
        version = kernel_version()
        if version:
            lines += [f"iSCSI Transport Class version {version}", "version 2.1.8"]
    prev: SessionInfo | None = None
    for s in sessions:
        if prev is None or prev.target != s.target:
            lines.append(f"Target: {s.target} (non-flash)")
            prev = None
        if (
            prev is None
            or not prev.address
            or not s.address
            or prev.port == 0
            or s.port == 0
            or (prev.address, prev.port) != (s.address, s.port)
        ):
            lines.append(f"\tCurrent Portal: {_portal(s.address, s.port, s.tpgt)}")
            lines.append(
                f"\tPersistent Portal: {_portal(s.persistent_address, s.persistent_port, s.tpgt)}"
            )
        else:
            lines.append("")
        ip = s.ipaddress
        lines += [
            "\t\t**********",
            "\t\tInterface:",
            "\t\t**********",
            f"\t\tIface Name: {_or_unknown(s.iface)}",
            f"\t\tIface Transport: {_or_unknown(s.transport)}",
            f"\t\tIface Initiatorname: {_or_unknown(s.initiatorname)}",
            f"\t\tIface IPaddress: {UNKNOWN if not ip else ip if '.' in ip else f'[{ip}]'}",
            f"\t\tIface HWaddress: {_or_unknown(s.hwaddress)}",
            f"\t\tIface Netdev: {_or_unknown(s.netdev)}",
            f"\t\tSID: {s.sid}",
        ]
        conn_state, sess_state = states.get(s.sid, (None, None))
        lines += [
            f"\t\tiSCSI Connection State: {_state_name(CONN_STATES, conn_state)}",
            f"\t\tiSCSI Session State: {s.state or 'Unknown'}",
            f"\t\tInternal iscsid Session State: {_state_name(SESSION_STATES, sess_state)}",
        ]
        if level >= 2:
            lines += [
                "\t\t*********",
                "\t\tTimeouts:",
                "\t\t*********",
                f"\t\tRecovery Timeout: {s.recovery_tmo}",
                f"\t\tTarget Reset Timeout: {_tmo(s.tgt_reset_tmo)}",
                f"\t\tLUN Reset Timeout: {_tmo(s.lu_reset_tmo)}",
                f"\t\tAbort Timeout: {_tmo(s.abort_tmo)}",
                "\t\t*****",
                "\t\tCHAP:",
                "\t\t*****",
                f"\t\tusername: {_or_unknown(s.username)}",
                f"\t\tpassword: {_or_unknown(s.password) if show else '********'}",
                f"\t\tusername_in: {_or_unknown(s.username_in)}",
                # open-iscsi labels the shown incoming secret "password" too
                f"\t\tpassword: {_or_unknown(s.password_in)}"
                if show
                else "\t\tpassword_in: ********",
            ]
            lines += _negotiated(s)
        if level >= 3:
            lines += _scsi_state(s)
        prev = s
    return lines


def _negotiated(s: SessionInfo) -> list[str]:
    lines = [
        "\t\t************************",
        "\t\tNegotiated iSCSI params:",
        "\t\t************************",
    ]
    digest = {0: "None"}
    yes_no = {0: "No"}
    for name, value, kind in (
        ("HeaderDigest", s.header_digest, "digest"),
        ("DataDigest", s.data_digest, "digest"),
        ("MaxRecvDataSegmentLength", s.max_recv_dlength, "int"),
        ("MaxXmitDataSegmentLength", s.max_xmit_dlength, "int"),
        ("FirstBurstLength", s.first_burst_len, "int"),
        ("MaxBurstLength", s.max_burst_len, "int"),
        ("ImmediateData", s.immediate_data, "bool"),
        ("InitialR2T", s.initial_r2t, "bool"),
        ("MaxOutstandingR2T", s.max_outstanding_r2t, "int"),
    ):
        if value == -1:
            continue
        if kind == "digest":
            text = digest.get(value, "CRC32C")
        elif kind == "bool":
            text = yes_no.get(value, "Yes")
        else:
            text = str(value)
        lines.append(f"\t\t{name}: {text}")
    return lines


def _scsi_state(s: SessionInfo) -> list[str]:
    lines = [
        "\t\t************************",
        "\t\tAttached SCSI devices:",
        "\t\t************************",
    ]
    if s.host_no < 0:
        return [*lines, "\t\tUnavailable"]
    lines.append(f"\t\tHost Number: {s.host_no}\tState: {host_state(s.host_no) or 'Unknown'}")
    for d in scsi_devices(s):
        lines.append(f"\t\tscsi{d.host_no} Channel 00 Id {d.target} Lun: {d.lun}")
        if d.disk is not None:
            lines.append(f"\t\t\tAttached scsi disk {d.disk}\t\tState: {d.state or 'Unknown'}")
    return lines

"""Sessions as the kernel shows them in sysfs (the iSCSI transport class layout), for iscsid and
iscsiadm alike.

What is read, relative to the root ($PYISCSI_SYSFS, default /sys), as open-iscsi 2.1.8 reads it:

    class/iscsi_session/sessionS/      targetname tpgt state ifacename initiatorname isid
                                       username password username_in password_in
                                       recovery_tmo abort_tmo lu_reset_tmo tgt_reset_tmo
                                       first_burst_len max_burst_len immediate_data
                                       initial_r2t max_outstanding_r2t
                                       device -> .../hostH/sessionS (the host number is the
                                       `hostH` component of the session's real path)
    class/iscsi_connection/connectionS:C/  address port persistent_address persistent_port
                                       header_digest data_digest max_recv_dlength
                                       max_xmit_dlength recv_tmo ping_tmo state
                                       (one directory per connection of the session,
                                       C = its CID; the first, lowest CID is the session's)
    class/iscsi_host/hostH/            ipaddress hwaddress netdev initiatorname
    class/scsi_host/hostH/             proc_name (iscsi_tcp -> transport "tcp") state
    <session device>/targetH:0:T/H:0:T:L/   state, block/sdX (or a block:sdX link)
    bus/scsi/devices/H:C:T:L/          type, block/sdX
    module/scsi_transport_iscsi/version     (-P 3's first line; with module/iscsi_if instead:
                                       TRANSPORT_CLASS_VERSION, the layout iscsi_if follows)

Missing files read as "unknown" (-1, or the defaults open-iscsi uses), never as errors, except
a session without a readable targetname, which is skipped as open-iscsi skips it.

Only `os` and plain path strings here: iscsiadm imports this module on its every start, and
tools call `iscsiadm -m session` often (pathlib, re, dataclasses and typing each cost it a good
part of its start-up under software emulation).
"""

from __future__ import annotations

import os

from pyiscsid.recordclass import recordclass

DEFAULT = "default"  # libopeniscsiusr's default iface, hwaddress, netdev and ipaddress
# iscsi_if lays out sysfs as this version of the in-kernel iSCSI transport class does, so -P 3
# names it where open-iscsi prints scsi_transport_iscsi's version.
TRANSPORT_CLASS_VERSION = "2.0-870"
_WORDS = {"none": 0, "crc32c": 1, "yes": 1, "no": 0}  # digests and booleans as words


def sysfs_root() -> str:
    return os.environ.get("PYISCSI_SYSFS") or "/sys"


def read_attr(path: str) -> str | None:
    """One sysfs attribute's text (the kernel's "(null)" reads as ""); None if it cannot be read.
    Plain os calls: a `-m session -P 3` reads dozens of attributes a session, and a file object
    costs more than the read itself (a third of the command's time under software emulation)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 65536).decode(errors="replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return "" if text == "(null)" else text


def read_str(path: str, default: str = "") -> str:
    text = read_attr(path)
    return default if text is None else text


def read_int(path: str, default: int = -1) -> int:
    """An attribute as a number: digits, or None/CRC32C/Yes/No as 0/1; `default` otherwise."""
    text = read_str(path)
    try:
        return int(text)
    except ValueError:
        return _WORDS.get(text.lower(), default)


class SessionLookupError(Exception):
    """A session directory that cannot be read (message as open-iscsi prints it)."""


@recordclass
class ScsiDevice:
    """One LUN under a session: `H:0:T:L`, its disk (sdX) if any, its state."""

    host_no: int
    target: int
    lun: int
    disk: str | None = None
    state: str | None = None


@recordclass
class SessionInfo:
    """One session as sysfs shows it (what iscsiadm prints, what a recovery logs in with).

    Numbers not known read -1; strings not known read "" (or open-iscsi's default).
    """

    sid: int
    target: str
    tpgt: int = -1
    address: str = ""  # the connection's current address (after any redirect)
    port: int = -1
    persistent_address: str = ""  # the node record's portal
    persistent_port: int = -1
    iface: str = DEFAULT
    transport: str = "tcp"
    state: str = "Unknown"  # LOGGED_IN, FAILED, FREE
    host_no: int = -1
    isid: str = ""  # 12 hex digits
    recovery_tmo: int = -1
    abort_tmo: int = -1
    lu_reset_tmo: int = -1
    tgt_reset_tmo: int = -1
    username: str = ""
    password: str = ""
    username_in: str = ""
    password_in: str = ""
    # the iface as the host shows it
    initiatorname: str = ""
    ipaddress: str = DEFAULT
    hwaddress: str = DEFAULT
    netdev: str = DEFAULT
    # negotiated parameters
    header_digest: int = -1
    data_digest: int = -1
    max_recv_dlength: int = -1
    max_xmit_dlength: int = -1
    first_burst_len: int = -1
    max_burst_len: int = -1
    immediate_data: int = -1
    initial_r2t: int = -1
    max_outstanding_r2t: int = -1
    session_dir: str | None = None


def session_dir(sid: int) -> str:
    return f"{sysfs_root()}/class/iscsi_session/session{sid}"


def connection_dir(sid: int, cid: int) -> str:
    return f"{sysfs_root()}/class/iscsi_connection/connection{sid}:{cid}"


def session_exists(sid: int) -> bool:
    return os.path.isdir(session_dir(sid))


def has_connection(sid: int, cid: int) -> bool:
    return os.path.isdir(connection_dir(sid, cid))


def _all_cids() -> dict[int, list[int]]:
    """sid -> its CIDs, in order, from one listing of the connection class."""
    try:
        names = os.listdir(f"{sysfs_root()}/class/iscsi_connection")
    except OSError:
        return {}
    out: dict[int, list[int]] = {}
    for n in names:
        sid, _, cid = n.removeprefix("connection").partition(":")
        if n.startswith("connection") and sid.isdecimal() and cid.isdecimal():
            out.setdefault(int(sid), []).append(int(cid))
    for cids in out.values():
        cids.sort()
    return out


def connection_ids(sid: int) -> list[int]:
    """The CIDs of session `sid`, in order ([] if it has none)."""
    return _all_cids().get(sid, [])


def all_connection_ids() -> dict[int, list[int]]:
    """sid -> its CIDs in order, for every session at once (one listing of the class)."""
    return _all_cids()


@recordclass
class ConnectionInfo:
    """One connection of a session as sysfs shows it (`iscsiadm -m session -P 1..3` prints the
    connections after the first one from these). Unknown numbers read -1, strings ""."""

    sid: int
    cid: int
    address: str = ""  # where the connection is connected (after any redirect)
    port: int = -1
    persistent_address: str = ""  # the portal it was made to
    persistent_port: int = -1
    state: str = ""  # the kernel's connection state: up, bound, failed, down ("" unknown)
    header_digest: int = -1
    data_digest: int = -1
    max_recv_dlength: int = -1
    max_xmit_dlength: int = -1


def read_connection(sid: int, cid: int) -> ConnectionInfo | None:
    """Connection `cid` of session `sid`; None when it is not (or no longer) in sysfs. A missing
    current or persistent portal reads as the other one, as read_session reads them."""
    cdir = connection_dir(sid, cid)
    if not os.path.isdir(cdir):
        return None
    address = read_str(f"{cdir}/address")
    port = read_int(f"{cdir}/port")
    p_address = read_str(f"{cdir}/persistent_address") or address
    p_port = read_int(f"{cdir}/persistent_port")
    if p_port == -1:
        p_port = port
    return ConnectionInfo(
        sid=sid,
        cid=cid,
        address=address or p_address,
        port=port if port != -1 else p_port,
        persistent_address=p_address,
        persistent_port=p_port,
        state=read_str(f"{cdir}/state"),
        header_digest=read_int(f"{cdir}/header_digest"),
        data_digest=read_int(f"{cdir}/data_digest"),
        max_recv_dlength=read_int(f"{cdir}/max_recv_dlength"),
        max_xmit_dlength=read_int(f"{cdir}/max_xmit_dlength"),
    )


def _first_connection_dir(sid: int, cids: list[int] | None = None) -> str:
    if cids is None:
        cdir = connection_dir(sid, 0)
        if os.path.isdir(cdir):
            return cdir
        cids = connection_ids(sid)
    return connection_dir(sid, cids[0] if cids else 0)


def _host_no(sdir: str) -> int:
    """The Scsi_Host number in a session directory's real path (-1 if none)."""
    host_no = -1
    for part in os.path.realpath(sdir).split("/"):
        if part.startswith("host") and part[4:].isdecimal():
            host_no = int(part[4:])
    return host_no


def session_host(sid: int) -> int:
    """The Scsi_Host number of session `sid` (-1 if unknown)."""
    sdir = session_dir(sid)
    return _host_no(sdir) if os.path.isdir(sdir) else -1


def read_session(sid: int, brief: bool = False) -> SessionInfo:
    """One session; SessionLookupError when its sysfs entries are missing. `brief`: only what
    names it (target, portals, iface), all a logout or a session count needs."""
    root = f"{sysfs_root()}/class"
    sdir = session_dir(sid)
    target = read_attr(f"{sdir}/targetname")
    if target is None:
        raise SessionLookupError("could not read session targetname: 5")
    cdir = _first_connection_dir(sid)
    if not os.path.isdir(cdir):
        cdir = sdir
    address = read_str(f"{cdir}/address")
    port = read_int(f"{cdir}/port")
    p_address = read_str(f"{cdir}/persistent_address")
    p_port = read_int(f"{cdir}/persistent_port")
    if address and not p_address:
        p_address = address
    elif p_address and not address:
        address = p_address
    if p_port == -1 and port != -1:
        p_port = port
    elif port == -1 and p_port != -1:
        port = p_port
    iface = read_str(f"{sdir}/ifacename") or DEFAULT
    if brief:
        return SessionInfo(sid, target, -1, address, port, p_address, p_port, iface,
                           session_dir=sdir)  # fmt: skip
    host_no = _host_no(sdir)
    s = SessionInfo(
        sid=sid,
        target=target,
        tpgt=read_int(f"{sdir}/tpgt"),
        address=address,
        port=port,
        persistent_address=p_address,
        persistent_port=p_port,
        iface=iface,
        state=read_str(f"{sdir}/state") or "Unknown",
        host_no=host_no,
        isid=read_str(f"{sdir}/isid"),
        recovery_tmo=read_int(f"{sdir}/recovery_tmo"),
        abort_tmo=read_int(f"{sdir}/abort_tmo"),
        lu_reset_tmo=read_int(f"{sdir}/lu_reset_tmo"),
        tgt_reset_tmo=read_int(f"{sdir}/tgt_reset_tmo"),
        username=read_str(f"{sdir}/username"),
        password=read_str(f"{sdir}/password"),
        username_in=read_str(f"{sdir}/username_in"),
        password_in=read_str(f"{sdir}/password_in"),
        initiatorname=read_str(f"{sdir}/initiatorname"),
        header_digest=read_int(f"{cdir}/header_digest"),
        data_digest=read_int(f"{cdir}/data_digest"),
        max_recv_dlength=read_int(f"{cdir}/max_recv_dlength"),
        max_xmit_dlength=read_int(f"{cdir}/max_xmit_dlength"),
        first_burst_len=read_int(f"{sdir}/first_burst_len"),
        max_burst_len=read_int(f"{sdir}/max_burst_len"),
        immediate_data=read_int(f"{sdir}/immediate_data"),
        initial_r2t=read_int(f"{sdir}/initial_r2t"),
        max_outstanding_r2t=read_int(f"{sdir}/max_outstanding_r2t"),
        session_dir=sdir,
    )
    if host_no >= 0:
        hdir = f"{root}/iscsi_host/host{host_no}"
        proc = read_str(f"{root}/scsi_host/host{host_no}/proc_name")
        if proc:
            s.transport = proc.removeprefix("iscsi_")
        # empty when no iface binds the session to a NIC: open-iscsi prints "default" then
        s.hwaddress = read_str(f"{hdir}/hwaddress") or DEFAULT
        s.netdev = read_str(f"{hdir}/netdev") or DEFAULT
        s.ipaddress = read_str(f"{hdir}/ipaddress", DEFAULT)
        if not s.initiatorname:
            s.initiatorname = read_str(f"{hdir}/initiatorname")
    return s


def session_info(sid: int) -> SessionInfo | None:
    """read_session(sid), None if there is no such session."""
    try:
        return read_session(sid)
    except SessionLookupError:
        return None


def session_names() -> list[str]:
    """`sessionN` entries in alphabetical order, as open-iscsi's scandir(alphasort) lists them
    (session10 before session2)."""
    try:
        names = os.listdir(f"{sysfs_root()}/class/iscsi_session")
    except OSError:
        return []
    return sorted(n for n in names if n.startswith("session") and n[7:].isdecimal())


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


# -- what iscsid reads often: identities for each login, states and ping timers every second --


def _session_entries() -> list[tuple[int, int]]:
    """(sid, inode of its sysfs entry) of every session, in SID order. sysfs never gives a
    new entry the inode of a removed one soon, so the pair names one session's lifetime."""
    try:
        with os.scandir(f"{sysfs_root()}/class/iscsi_session") as it:
            found = [
                (int(e.name[7:]), e.inode())
                for e in it
                if e.name.startswith("session") and e.name[7:].isdecimal()
            ]
    except OSError:
        return []
    return sorted(found)


@recordclass
class SessionIdentity:
    """What names a session: the few sysfs attributes a login checks before it makes one."""

    sid: int
    target: str
    persistent_address: str
    persistent_port: int
    iface: str
    isid: str


# (sid, inode) -> identity: what names a session does not change while it exists. A login asks
# for every session's identity; without the cache, N logins at once read 5N files each. Threads
# replace the dict whole, never change it: no lock needed.
_identities: dict[tuple[int, int], SessionIdentity] = {}


def session_identities() -> list[SessionIdentity]:
    """Every session's target, persistent portal, iface and ISID, by SID: five reads for a
    session not seen before, none for one already known (a login asks this under its node
    lock). A session whose parameters are not all set yet is read again next time."""
    global _identities
    entries = _session_entries()
    known = dict(_identities)
    out = []
    all_cids: dict[int, list[int]] | None = None
    for key in entries:
        ident = known.get(key)
        if ident is None:
            if all_cids is None:
                all_cids = _all_cids()
            sid = key[0]
            sess, conn = session_dir(sid), _first_connection_dir(sid, all_cids.get(sid, []))
            ident = SessionIdentity(
                sid,
                read_str(f"{sess}/targetname"),
                read_str(f"{conn}/persistent_address"),
                read_int(f"{conn}/persistent_port"),
                read_str(f"{sess}/ifacename"),
                read_str(f"{sess}/isid"),
            )
            if ident.target and ident.persistent_address and ident.isid:
                known[key] = ident
        out.append(ident)
    live = set(entries)
    _identities = {k: v for k, v in known.items() if k in live}
    return out


@recordclass
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
    for sid, _inode in _session_entries():
        cids = all_cids.get(sid, [])
        conn = _first_connection_dir(sid, cids)
        out.append(
            SessionPulse(
                sid,
                read_str(f"{session_dir(sid)}/state"),
                cids,
                read_int(f"{conn}/recv_tmo", 5),
                read_int(f"{conn}/ping_tmo", 5),
            )
        )
    return out


# -- hosts and LUNs --------------------------------------------------------------------------


def host_state(host_no: int) -> str | None:
    return read_str(f"{sysfs_root()}/class/scsi_host/host{host_no}/state") or None


def kernel_version() -> str | None:
    """The transport class version -P 3 prints first (None: no iSCSI module is loaded and the
    line is left out, as open-iscsi leaves it out)."""
    root = f"{sysfs_root()}/module"
    text = read_str(f"{root}/scsi_transport_iscsi/version")
    if text:
        return text
    if os.path.isdir(f"{root}/iscsi_if"):
        return TRANSPORT_CLASS_VERSION
    return None


def _is_lun(name: str) -> bool:
    parts = name.split(":")
    return len(parts) == 4 and all(p.isdecimal() for p in parts)


def scsi_device_dirs(host_no: int) -> list[str]:
    """sysfs dirs of the SCSI devices (H:C:T:L) on host `host_no`, by name."""
    root = f"{sysfs_root()}/bus/scsi/devices"
    try:
        names = os.listdir(root)
    except OSError:
        return []
    prefix = f"{host_no}:"
    return [f"{root}/{n}" for n in sorted(names) if n.startswith(prefix) and n.count(":") == 3]


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
            if not _is_lun(name):
                continue
            host, _channel, target, lun = (int(p) for p in name.split(":"))
            ldir = f"{tdir}/{name}"
            devices.append(
                ScsiDevice(host, target, lun, _disk_of(ldir), read_str(f"{ldir}/state") or None)
            )
    return devices

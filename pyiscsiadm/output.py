"""Text formats of iscsiadm, byte-identical to open-iscsi 2.1.8 (parsers depend on them).

Pure functions from records/sessions to lines; no I/O here except `error`/`info`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

TYPE_CHECKING = False  # typing is not imported at run time: iscsiadm starts faster
if TYPE_CHECKING:
    from typing import Protocol, TypeVar

    from pyiscsid.sysfs import ConnectionInfo, ScsiDevice, SessionInfo

    class NodeLike(Protocol):
        target: str
        address: str
        port: int
        tpgt: int
        iface: str
        record_id: str

    N = TypeVar("N", bound=NodeLike)

PROG = "iscsiadm"
UNKNOWN = "<empty>"  # open-iscsi's UNKNOWN_VALUE


def error(message: str) -> None:
    """open-iscsi's log_error: `iscsiadm: message` on stderr."""
    raw_error(f"{PROG}: {message}")


def raw_error(line: str) -> None:
    """A line on stderr as it is (libopeniscsiusr's messages carry no `iscsiadm:` prefix)."""
    sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def info(message: str) -> None:
    """open-iscsi's log_info: the bare message on stdout."""
    sys.stdout.write(message + "\n")


def portal_text(address: str, port: int) -> str:
    """`10.0.0.1:3260`; anything without a dot in brackets (`[::1]:3260`), as open-iscsi does."""
    if "." in address:
        return f"{address}:{port}"
    return f"[{address}]:{port}"


def _ids(rec: NodeLike, ids: bool) -> str:
    return f"[{rec.record_id}] " if ids else ""


def node_flat(rec: NodeLike, ids: bool = False) -> str:
    """One line of `iscsiadm -m node`: the tpgt printed unsigned (-1 -> 4294967295)."""
    return (
        f"{_ids(rec, ids)}{portal_text(rec.address, rec.port)},{rec.tpgt & 0xFFFFFFFF} {rec.target}"
    )


def discovered_flat(rec: NodeLike, ids: bool = False) -> str:
    """One line of discovery output: `127.0.0.1:3260,1 iqn...` (signed tpgt)."""
    return f"{_ids(rec, ids)}{portal_text(rec.address, rec.port)},{rec.tpgt} {rec.target}"


def node_tree(recs: Iterable[NodeLike], ids: bool = False) -> list[str]:
    """`-P 1`: Target / tab Portal / two tabs Iface Name, grouping consecutive records."""
    lines: list[str] = []
    last: NodeLike | None = None
    for rec in recs:
        if last is None or last.target != rec.target:
            lines.append(f"Target: {rec.target}")
            last = None
        if last is None or (last.address, last.port) != (rec.address, rec.port):
            lines.append(f"\tPortal: {portal_text(rec.address, rec.port)},{rec.tpgt}")
        lines.append(f"\t\tIface Name: {rec.iface}" + (f" [{rec.record_id}]" if ids else ""))
        last = rec
    return lines


def sort_nodes(recs: Iterable[N]) -> list[N]:
    """open-iscsi's listing order: target, then the `addr,port,tpgt` directory name, then iface."""
    return sorted(
        recs, key=lambda r: (r.target.encode(), f"{r.address},{r.port},{r.tpgt}".encode(), r.iface)
    )


def iface_text(
    iface: str, transport: str = "tcp", hwaddress: str = "", ipaddress: str = "", netdev: str = ""
) -> str:
    """The iface part of `New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] ...]`
    (open-iscsi's iface_fmt)."""
    return f"{transport}:[hw={hwaddress},ip={ipaddress},net_if={netdev},iscsi_if={iface}]"


def new_node(rec: NodeLike, params: dict[str, str] | None = None) -> str:
    """`New iSCSI node [...] added`; `params`: the record's keys, for its iface binding."""
    where = f"{rec.address},{rec.port},{rec.tpgt} {rec.target}"
    p = params or {}
    iface = iface_text(
        rec.iface,
        p.get("iface.transport_name") or "tcp",
        p.get("iface.hwaddress", ""),
        p.get("iface.ipaddress", ""),
        p.get("iface.net_ifacename", ""),
    )
    return f"New iSCSI node [{iface} {where}] added"


def login_target(iface: str, target: str, address: str, port: int) -> str:
    return f"[iface: {iface}, target: {target}, portal: {address},{port}]"


def session_target(sid: int, target: str, address: str, port: int) -> str:
    return f"[sid: {sid}, target: {target}, portal: {address},{port}]"


# The login/logout lines of open-iscsi 2.1.8, in one place (the VM tier reuses them).
# stdout (log_info):
def logging_in(iface: str, target: str, address: str, port: int) -> str:
    return f"Logging in to {login_target(iface, target, address, port)}"


def login_ok(iface: str, target: str, address: str, port: int) -> str:
    return f"Login to {login_target(iface, target, address, port)} successful."


def logging_out(sid: int, target: str, address: str, port: int) -> str:
    return f"Logging out of session {session_target(sid, target, address, port)}"


def logout_ok(sid: int, target: str, address: str, port: int) -> str:
    return f"Logout of {session_target(sid, target, address, port)} successful."


def stats_banner(sid: int, target: str, address: str, port: int) -> str:
    return f"Stats for session {session_target(sid, target, address, port)}"


# One connection of a multi-connection session (`-r SID:CID`): open-iscsi's session lines with
# the CID after the SID.
def connection_target(sid: int, cid: int, target: str, address: str, port: int) -> str:
    return f"[sid: {sid}, cid: {cid}, target: {target}, portal: {address},{port}]"


def logging_out_connection(sid: int, cid: int, target: str, address: str, port: int) -> str:
    return f"Logging out of connection {connection_target(sid, cid, target, address, port)}"


def logout_connection_ok(sid: int, cid: int, target: str, address: str, port: int) -> str:
    return f"Logout of {connection_target(sid, cid, target, address, port)} successful."


def logout_connection_failed(sid: int, cid: int, target: str, address: str, port: int) -> str:
    return f"Could not logout of {connection_target(sid, cid, target, address, port)}."


def connection_stats_banner(sid: int, cid: int, target: str, address: str, port: int) -> str:
    return f"Stats for connection {connection_target(sid, cid, target, address, port)}"


# stderr (log_error/log_warning, printed with the `iscsiadm: ` prefix by `error`):
def login_failed(iface: str, target: str, address: str, port: int) -> str:
    return f"Could not login to {login_target(iface, target, address, port)}."


def logout_failed(sid: int, target: str, address: str, port: int) -> str:
    return f"Could not logout of {session_target(sid, target, address, port)}."


def sessions_present(iface: str, requested: int, present: int) -> str:
    """open-iscsi's warning when a node already has its node.session.nr_sessions sessions."""
    plural = "" if requested == 1 else "s"
    return f"{iface}: {requested} session{plural} requested, but {present} already present."


LOGIN_ALL_FAILED = "Could not log into all portals"
LOGOUT_ALL_FAILED = "Could not logout of all requested sessions"
NO_MATCHING_SESSIONS = "No matching sessions found"
NO_ACTIVE_SESSIONS = "No active sessions."

# -s: the counters open-iscsi prints under "iSCSI SNMP:", in its order; any other counter of
# the reply is a transport's own and goes under "iSCSI Extended:".
SNMP_STATS = (
    "txdata_octets",
    "rxdata_octets",
    "noptx_pdus",
    "scsicmd_pdus",
    "tmfcmd_pdus",
    "login_pdus",
    "text_pdus",
    "dataout_pdus",
    "logout_pdus",
    "snack_pdus",
    "noprx_pdus",
    "scsirsp_pdus",
    "tmfrsp_pdus",
    "textrsp_pdus",
    "datain_pdus",
    "logoutrsp_pdus",
    "r2t_pdus",
    "async_pdus",
    "rjt_pdus",
    "digest_err",
    "timeout_err",
)


def stats_lines(counters: dict[str, int]) -> list[str]:
    """The body of `-m session -s` from a `stats` reply's counters (missing ones print 0)."""
    lines = ["iSCSI SNMP:"]
    lines += [f"\t{name}: {int(counters.get(name, 0))}" for name in SNMP_STATS]
    extended = [(k, v) for k, v in counters.items() if k not in SNMP_STATS]
    if extended:
        lines.append("iSCSI Extended:")
        lines += [f"\t{name}: {int(value)}" for name, value in extended]
    return lines


def discovery_list(address: str, port: int, type_: str) -> str:
    return f"{address}:{port} via {'isns' if type_ == 'isns' else 'sendtargets'}"


def discovery_tree(
    discoveries: Sequence[tuple[str, int, Sequence[NodeLike]]],
    static: Sequence[NodeLike],
) -> list[str]:
    """`iscsiadm -m discovery -P 1`: sections SENDTARGETS, iSNS, STATIC, FIRMWARE."""
    lines = ["SENDTARGETS:"]
    for address, port, nodes in discoveries:
        lines.append(f"DiscoveryAddress: {address},{port}")
        lines.extend(node_tree(nodes))
    if not discoveries:
        lines.append("No targets found.")
    lines += ["iSNS:", "No targets found.", "STATIC:"]
    lines.extend(node_tree(static) if static else ["No targets found."])
    lines += ["FIRMWARE:", "No targets found."]
    return lines


# -- sessions (open-iscsi's session_info.c) ---------------------------------------------------


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
    version: str | None = None,
    luns: dict[int, tuple[str | None, list[ScsiDevice]]] | None = None,
    connections: dict[int, list[ConnectionInfo]] | None = None,
) -> list[str]:
    """`-m session -P 1..3` lines, byte for byte as open-iscsi 2.1.8 prints them.

    `states` maps a sid to iscsid's (conn_state, session_state) numbers; a sid missing from it
    prints `Unknown` (iscsid did not answer). `show` (-S) prints the CHAP secrets. For -P 3:
    `version` is the transport class version (None: the line is left out), `luns` maps a sid
    to its host's state and its LUNs.

    `connections` maps a sid to its connections after the first (multi-connection sessions):
    the first connection's lines are where open-iscsi prints them (`s` holds its portals and
    parameters); each further one gets a block of its own (connection_block) after the
    session's other lines and before `Attached SCSI devices`. Without further connections the
    output is open-iscsi's, byte for byte.
    """
    states = states or {}
    luns = luns or {}
    connections = connections or {}
    lines: list[str] = []
    if level >= 3 and version:
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
        lines += _interface(s)
        conn_state, sess_state = states.get(s.sid, (None, None))
        lines += [
            f"\t\tiSCSI Connection State: {_state_name(CONN_STATES, conn_state)}",
            f"\t\tiSCSI Session State: {s.state or 'Unknown'}",
            f"\t\tInternal iscsid Session State: {_state_name(SESSION_STATES, sess_state)}",
        ]
        if level >= 2:
            lines += _timeouts_and_chap(s, show)
            lines += _negotiated(s)
        for c in connections.get(s.sid, []):
            lines += connection_block(c, s.tpgt, level)
        if level >= 3:
            lines += _scsi_state(s, *luns.get(s.sid, (None, [])))
        prev = s
    return lines


# the kernel's connection state (sysfs `state` of connectionS:C) as iscsid's connection state
# names it: what `iSCSI Connection State` says of the connections after the first one, for
# which iscsid's session_info has no state of its own (see pyiscsid/states.py)
KERNEL_CONN_STATES = {
    "up": "LOGGED IN",
    "bound": "IN LOGIN",  # bound to its socket, logging in, not started yet
    "failed": "CLEANUP WAIT",  # as iscsid names a session whose connection failed
    "down": "FREE",
}


def connection_block(c: ConnectionInfo, tpgt: int, level: int) -> list[str]:
    """The connection-scope lines of a further connection of a session (`-P 1..3`):

            *****************
            Connection CID: 1
            *****************
            Current Portal: 10.0.0.2:3260,1
            Persistent Portal: 10.0.0.2:3260,1
            iSCSI Connection State: LOGGED IN
            HeaderDigest: None                  (these four from -P 2 on)
            DataDigest: None
            MaxRecvDataSegmentLength: 262144
            MaxXmitDataSegmentLength: 262144

    all indented by two tabs, as the session's other lines: a parser that starts a session at
    `Target:`, at a one-tab `Current Portal:` or at `SID:` keeps it in the same session. The
    title is framed by stars of its length, as open-iscsi frames its sections."""
    title = f"Connection CID: {c.cid}"
    stars = "\t\t" + "*" * len(title)
    lines = [
        stars,
        f"\t\t{title}",
        stars,
        f"\t\tCurrent Portal: {_portal(c.address, c.port, tpgt)}",
        f"\t\tPersistent Portal: {_portal(c.persistent_address, c.persistent_port, tpgt)}",
        f"\t\tiSCSI Connection State: {KERNEL_CONN_STATES.get(c.state, 'Unknown')}",
    ]
    if level >= 2:
        lines += _connection_params(
            c.header_digest, c.data_digest, c.max_recv_dlength, c.max_xmit_dlength
        )
    return lines


def session_iface_name(s: SessionInfo) -> str:
    """The `Iface Name:` of a session. As libopeniscsiusr 2.1.8 names the iface of a software
    iSCSI host: the session's ifacename, except for a host bound by hwaddress, which it names
    TRANSPORT.HWADDRESS.ipv4|ipv6.0 (the form hardware iSCSI hosts' ifaces have)."""
    if s.hwaddress and s.hwaddress != "default":
        family = "ipv4" if "." in s.ipaddress or ":" not in s.ipaddress else "ipv6"
        return f"{s.transport}.{s.hwaddress}.{family}.0"
    return s.iface


def _interface(s: SessionInfo) -> list[str]:
    ip = s.ipaddress
    return [
        "\t\t**********",
        "\t\tInterface:",
        "\t\t**********",
        f"\t\tIface Name: {_or_unknown(session_iface_name(s))}",
        f"\t\tIface Transport: {_or_unknown(s.transport)}",
        f"\t\tIface Initiatorname: {_or_unknown(s.initiatorname)}",
        f"\t\tIface IPaddress: {UNKNOWN if not ip else ip if '.' in ip else f'[{ip}]'}",
        f"\t\tIface HWaddress: {_or_unknown(s.hwaddress)}",
        f"\t\tIface Netdev: {_or_unknown(s.netdev)}",
        f"\t\tSID: {s.sid}",
    ]


def _timeouts_and_chap(s: SessionInfo, show: bool) -> list[str]:
    return [
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
        f"\t\tpassword: {_or_unknown(s.password_in)}" if show else "\t\tpassword_in: ********",
    ]


def _negotiated(s: SessionInfo) -> list[str]:
    return [
        "\t\t************************",
        "\t\tNegotiated iSCSI params:",
        "\t\t************************",
        *_connection_params(s.header_digest, s.data_digest, s.max_recv_dlength, s.max_xmit_dlength),
        *_params(
            (
                ("FirstBurstLength", s.first_burst_len, "int"),
                ("MaxBurstLength", s.max_burst_len, "int"),
                ("ImmediateData", s.immediate_data, "bool"),
                ("InitialR2T", s.initial_r2t, "bool"),
                ("MaxOutstandingR2T", s.max_outstanding_r2t, "int"),
            )
        ),
    ]


def _connection_params(header: int, data: int, recv: int, xmit: int) -> list[str]:
    """The negotiated parameters that are a connection's own (RFC 7143 13: the digests and
    MaxRecvDataSegmentLength, each way)."""
    return _params(
        (
            ("HeaderDigest", header, "digest"),
            ("DataDigest", data, "digest"),
            ("MaxRecvDataSegmentLength", recv, "int"),
            ("MaxXmitDataSegmentLength", xmit, "int"),
        )
    )


def _params(values: tuple[tuple[str, int, str], ...]) -> list[str]:
    """`name: value` lines (digests None/CRC32C, booleans No/Yes); unknown (-1) ones left out."""
    lines = []
    digest = {0: "None"}
    yes_no = {0: "No"}
    for name, value, kind in values:
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


def _scsi_state(s: SessionInfo, host_state: str | None, devices: list[ScsiDevice]) -> list[str]:
    lines = [
        "\t\t************************",
        "\t\tAttached SCSI devices:",
        "\t\t************************",
    ]
    if s.host_no < 0:
        return [*lines, "\t\tUnavailable"]
    lines.append(f"\t\tHost Number: {s.host_no}\tState: {host_state or 'Unknown'}")
    for d in devices:
        lines.append(f"\t\tscsi{d.host_no} Channel 00 Id {d.target} Lun: {d.lun}")
        if d.disk is not None:
            lines.append(f"\t\t\tAttached scsi disk {d.disk}\t\tState: {d.state or 'Unknown'}")
    return lines


USAGE = "".join(
    line + "\n"
    for line in (
        "iscsiadm -m discoverydb [-hV] [-d debug_level] [-P printlevel] [-t type -p ip:port "
        "-I ifaceN ... [-Dl]] | [[-p ip:port -t type] [-o operation] [-n name] [-v value] "
        "[-lD]] ",
        "iscsiadm -m discovery [-hV] [-d debug_level] [-P printlevel] [-t type -p ip:port "
        "-I ifaceN ... [-l]] | [[-p ip:port] [-l | -D]] [-W]",
        "iscsiadm -m node [-hV] [-d debug_level] [-P printlevel] [-L all,manual,automatic,"
        "onboot] [-W] [-U all,manual,automatic,onboot] [-S] [[-T targetname -p ip:port "
        "-I ifaceN] [-l | -u | -R | -s]] [[-o operation ] [-n name] [-v value]]",
        "iscsiadm -m session [-hV] [-d debug_level] [-P printlevel] [-r sessionid | sysfsdir "
        "[-R | -u | -s] [-o operation] [-n name] [-v value]]",
        "iscsiadm -m iface [-hV] [-d debug_level] [-P printlevel] [-I ifacename | -H "
        "hostno|MAC] [[-o operation ] [-n name] [-v value]] [-C ping [-a ip] [-b packetsize] "
        "[-c count] [-i interval]]",
        "iscsiadm -m fw [-d debug_level] [-l] [-W] [[-n name] [-v value]]",
        "iscsiadm -m host [-P printlevel] [-H hostno|MAC] [[-C chap [-x chap_tbl_idx]] | "
        "[-C flashnode [-A portal_type] [-x flashnode_idx]] | [-C stats]] [[-o operation] "
        "[-n name] [-v value]] ",
        "iscsiadm -k priority",
    )
)

SEED_USAGE = """\
pyiscsi extensions (the seed's syntax):
  -r, --record ID       select a node or discovery record by its id (6 hex digits, [] optional)
  --ids                 prefix listings with the record id: [02f611] 10.0.0.1:3260,1 iqn...
  -m node -o new -p ip[:port]   (no -T) run SendTargets discovery against that portal and
                        add one record per target portal found, printing
                        `new iSCSI node record added: [ID]` for each
  -m discovery -p ip[:port] -o new|update|delete|show -n NAME -v VALUE
                        manage a discovery record (as discoverydb mode does); a later
                        `-m discovery -t st -p ip[:port]` reuses its settings (e.g. CHAP)
  -m node -o nonpersistent -r ID -n NAME -v VALUE
                        print the record with the values changed, without saving it
  -m session -r SID:CID -u
                        log out of connection CID of session SID only (the session's
                        other connections carry on)
"""

"""Text formats of iscsiadm, byte-identical to open-iscsi 2.1.8 (parsers depend on them).

Pure functions from records/sessions to lines; no I/O here except `error`/`info`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

TYPE_CHECKING = False  # typing is not imported at run time: iscsiadm starts faster
if TYPE_CHECKING:
    from typing import Protocol, TypeVar

    class NodeLike(Protocol):
        target: str
        address: str
        port: int
        tpgt: int
        iface: str
        record_id: str

    N = TypeVar("N", bound=NodeLike)

PROG = "iscsiadm"


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


def iface_text(iface: str) -> str:
    """The iface part of `New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] ...]`."""
    return f"tcp:[hw=,ip=,net_if=,iscsi_if={iface}]"


def new_node(rec: NodeLike) -> str:
    where = f"{rec.address},{rec.port},{rec.tpgt} {rec.target}"
    return f"New iSCSI node [{iface_text(rec.iface)} {where}] added"


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
"""

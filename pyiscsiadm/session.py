"""iscsiadm -m session: list sessions from sysfs, show their records, log out, rescan, stats."""

from __future__ import annotations

import os
import sys

from pyiscsiadm import output
from pyiscsiadm.common import (
    LOGIN_TIMEOUT,
    Env,
    Exit,
    fail,
    iscsid_request,
    logout_sessions,
    report_error,
    session_matches,
)
from pyiscsid import sysfs
from pyiscsid.errors import Err

TYPE_CHECKING = False  # typing is not imported at run time: iscsiadm starts faster
if TYPE_CHECKING:
    from pyiscsid.ipc import Reply


def run(env: Env) -> int:
    o = env.opts
    if o.sid is not None:
        try:
            s = sysfs.read_session(o.sid)
        except sysfs.SessionLookupError as e:
            output.error(str(e))
            raise fail(f"Could not get session info for sid {o.sid}", Err.SYSFS_LOOKUP) from None
        if o.cid is not None and not sysfs.has_connection(o.sid, o.cid):
            raise fail(
                f"Could not get connection info for sid {o.sid} cid {o.cid}", Err.SYSFS_LOOKUP
            )
        # SID:CID: logging out of one connection of a multi-connection session closes that
        # connection only; of a session's last connection, the session (RFC 7143 11.14), with
        # the session's lines. Any other operation acts on the session SID.
        if o.logout:
            if o.cid is not None and sysfs.connection_ids(o.sid) != [o.cid]:
                return logout_connection(s, o.cid)
            return logout_sessions([s])
        if o.rescan:
            return rescan([s])
        if o.stats:
            return stats([s])
        if o.op_names and o.op_names != ["show"]:
            raise fail("operation is not supported.")
        if o.info_level > 0:
            return print_sessions([s], o.info_level, o.show)
        return show_records(env, s)
    if "new" in o.op_names:
        raise fail("session mode: Operation 'new' only allowed with specific session IDs")
    if o.logout or o.rescan or o.stats:
        sessions = [s for s in sysfs.list_sessions(brief=o.logout) if session_matches(s, o)]
        if not sessions:
            if o.logout:
                raise fail(output.NO_MATCHING_SESSIONS, Err.NO_OBJS_FOUND)
            raise fail("No session found.", Err.NO_OBJS_FOUND)
        if o.logout:
            return logout_sessions(sessions)
        return rescan(sessions) if o.rescan else stats(sessions)
    sessions = sysfs.list_sessions()
    if not sessions:
        raise fail(output.NO_ACTIVE_SESSIONS, Err.NO_OBJS_FOUND)
    return print_sessions(sessions, o.info_level, o.show)


def show_records(env: Env, s: sysfs.SessionInfo) -> int:
    """`-m session -r SID` (no -P): the node record(s) the session was made from."""
    recs = env.db.find_nodes(
        target=s.target, address=s.persistent_address, port=s.persistent_port, iface=s.iface
    )
    if not recs:
        raise fail("No records found", Err.NO_OBJS_FOUND)
    out = []
    for rec in recs:
        text = rec.dump(show=env.opts.show)
        out.append(text if text.endswith("\n") else text + "\n")
    print("".join(out), end="")
    return 0


def iscsid_states(sid: int) -> tuple[object, object]:
    """iscsid's (conn_state, session_state) numbers for a session; (None, None) when it does not
    know the session or cannot be reached (its messages are printed, as open-iscsi does)."""
    code, reply = iscsid_request("session_info", sid=sid)
    if code:
        return None, None
    return reply.get("conn_state"), reply.get("session_state")


def print_sessions(sessions: list[sysfs.SessionInfo], level: int, show: bool = False) -> int:
    if level in (-1, 0):
        lines = [output.session_flat(s) for s in sessions]
    elif level in (1, 2, 3):
        states = {s.sid: iscsid_states(s.sid) for s in sessions}
        version, luns = None, {}
        connections = further_connections(sessions)
        if level == 3:
            version = sysfs.kernel_version()
            luns = {
                s.sid: (sysfs.host_state(s.host_no), sysfs.scsi_devices(s))
                for s in sessions
                if s.host_no >= 0
            }
        lines = output.session_tree(sessions, level, states, show, version, luns, connections)
    else:
        raise fail(f"Invalid info level {level}. Try 0 - 3.")
    print("\n".join(lines))
    return 0


def further_connections(
    sessions: list[sysfs.SessionInfo],
) -> dict[int, list[sysfs.ConnectionInfo]]:
    """sid -> the connections of that session after the first (lowest CID, whose portals and
    parameters the SessionInfo holds), in CID order; sessions with one connection are left out.
    A connection that goes away meanwhile is left out too."""
    out: dict[int, list[sysfs.ConnectionInfo]] = {}
    all_cids = sysfs.all_connection_ids()
    for s in sessions:
        conns = [sysfs.read_connection(s.sid, cid) for cid in all_cids.get(s.sid, [])[1:]]
        found = [c for c in conns if c is not None]
        if found:
            out[s.sid] = found
    return out


def logout_connection(s: sysfs.SessionInfo, cid: int) -> int:
    """`-r SID:CID --logout` of a session with other connections: iscsid's `logout {sid, cid}`
    closes that connection only (its tasks complete, then a Logout "close the connection"). The
    lines are open-iscsi's session logout lines with the CID after the SID."""
    c = sysfs.read_connection(s.sid, cid)
    address = c.persistent_address if c and c.persistent_address else s.persistent_address
    port = c.persistent_port if c and c.persistent_port != -1 else s.persistent_port
    where = (s.sid, cid, s.target, address, port)
    output.info(output.logging_out_connection(*where))
    sys.stdout.flush()
    code, _reply = iscsid_request("logout", timeout=LOGIN_TIMEOUT, sid=s.sid, cid=cid)
    if code == 0:
        output.info(output.logout_connection_ok(*where))
        return 0
    output.error(output.logout_connection_failed(*where))
    report_error(code)
    return code


def rescan(sessions: list[sysfs.SessionInfo]) -> int:
    rc = 0
    for s in sessions:
        output.info(
            f"Rescanning session [sid: {s.sid}, target: {s.target}, portal: "
            f"{s.persistent_address},{s.persistent_port}]"
        )
        # as open-iscsi: every known LUN re-reads its capacity and inquiry data, then the host
        # is scanned for new LUNs
        for dev in sysfs.scsi_device_dirs(s.host_no):
            try:
                with open(os.path.join(dev, "rescan"), "w") as f:
                    f.write("1")
            except OSError:
                continue  # a LUN going away meanwhile
        scan = f"{sysfs.sysfs_root()}/class/scsi_host/host{s.host_no}/scan"
        try:
            with open(scan, "w") as f:
                f.write("- - -")
        except OSError:
            output.error(f"Could not rescan session sid {s.sid}.")
            rc = rc or int(Err.SYSFS_LOOKUP)
    return rc


def _counters(reply: Reply) -> dict[str, int]:
    raw = reply.get("stats")
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}


def _connection_counters(reply: Reply) -> list[tuple[int, dict[str, int]]]:
    """(cid, counters) of each connection of a `stats` reply's "connections", in CID order;
    entries without an integer cid are left out."""
    raw = reply.get("connections")
    if not isinstance(raw, list):
        return []
    out = []
    for entry in raw:
        if isinstance(entry, dict):
            cid = entry.get("cid")
            if isinstance(cid, int) and not isinstance(cid, bool):
                out.append((cid, _counters(entry)))
    return sorted(out, key=lambda e: e[0])


def stats(sessions: list[sysfs.SessionInfo]) -> int:
    """`-s`: iscsid's `stats {sid}` reply printed as open-iscsi prints MGMT_IPC_SESSION_STATS:
    the session's counters ("stats", the total over its connections); with several
    "connections", then each connection's, in CID order, under a banner of its own."""
    for s in sessions:
        code, reply = iscsid_request("stats", sid=s.sid)
        if code:
            report_error(code)
            raise Exit(code)
        output.info(output.stats_banner(s.sid, s.target, s.persistent_address, s.port))
        lines = output.stats_lines(_counters(reply))
        per_connection = _connection_counters(reply)
        if len(per_connection) > 1:
            for cid, counters in per_connection:
                c = sysfs.read_connection(s.sid, cid)
                address = c.persistent_address if c and c.persistent_address else None
                port = c.port if c and c.port != -1 else s.port
                banner = output.connection_stats_banner(
                    s.sid, cid, s.target, address or s.persistent_address, port
                )
                lines += [banner, *output.stats_lines(counters)]
        print("\n".join(lines))
    return 0

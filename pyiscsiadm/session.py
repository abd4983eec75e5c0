"""iscsiadm -m session: list sessions from sysfs, log out, rescan, stats."""

from __future__ import annotations

from pyiscsiadm import output, sysfs
from pyiscsiadm.common import Env, Exit, fail, logout_sessions, session_matches
from pyiscsid.errors import Err


def run(env: Env) -> int:
    o = env.opts
    if o.sid is not None:
        try:
            s = sysfs.read_session(o.sid)
        except sysfs.SessionLookupError as e:
            output.error(str(e))
            raise fail(f"Could not get session info for sid {o.sid}", Err.SYSFS_LOOKUP) from None
        if o.logout:
            return logout_sessions([s])
        if o.rescan:
            return rescan([s])
        if o.stats:
            return stats([s])
        if o.op_names and o.op_names != ["show"]:
            raise fail("operation is not supported.")
        return print_sessions([s], o.info_level)
    if "new" in o.op_names:
        raise fail("session mode: Operation 'new' only allowed with specific session IDs")
    if o.logout or o.rescan or o.stats:
        sessions = [s for s in sysfs.list_sessions() if session_matches(s, o)]
        if not sessions:
            if o.logout:
                raise fail("No matching sessions found", Err.NO_OBJS_FOUND)
            raise fail("No session found.", Err.NO_OBJS_FOUND)
        if o.logout:
            return logout_sessions(sessions)
        return rescan(sessions) if o.rescan else stats(sessions)
    sessions = sysfs.list_sessions()
    if not sessions:
        raise fail("No active sessions.", Err.NO_OBJS_FOUND)
    return print_sessions(sessions, o.info_level)


def print_sessions(sessions: list[sysfs.SessionInfo], level: int) -> int:
    if level in (-1, 0):
        lines = [sysfs.session_flat(s) for s in sessions]
    elif level in (1, 2, 3):
        lines = sysfs.session_tree(sessions, level)
    else:
        raise fail(f"Invalid info level {level}. Try 0 - 3.")
    print("\n".join(lines))
    return 0


def rescan(sessions: list[sysfs.SessionInfo]) -> int:
    rc = 0
    for s in sessions:
        output.info(
            f"Rescanning session [sid: {s.sid}, target: {s.target}, portal: "
            f"{s.persistent_address},{s.persistent_port}]"
        )
        scan = sysfs.sysfs_root() / "class" / "scsi_host" / f"host{s.host_no}" / "scan"
        try:
            scan.write_text("- - -")
        except OSError:
            output.error(f"Could not rescan session sid {s.sid}.")
            rc = rc or int(Err.SYSFS_LOOKUP)
    return rc


def stats(sessions: list[sysfs.SessionInfo]) -> int:
    from pyiscsid import ipc
    from pyiscsid.errors import IscsiError

    for s in sessions:
        try:
            reply = ipc.request("stats", sid=s.sid)
        except IscsiError as e:
            output.error(e.message)
            raise Exit(e.code) from None
        if reply["code"]:
            raise fail(f"Could not get stats for sid {s.sid}: {reply['message']}", reply["code"])
        output.info(
            f"Stats for session [sid: {s.sid}, target: {s.target}, portal: "
            f"{s.persistent_address},{s.persistent_port}]"
        )
        for key, value in reply.get("stats", {}).items():
            output.info(f"\t{key}: {value}")
    return 0

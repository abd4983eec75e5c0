"""iscsiadm -m node: list, show, new, update, delete, login/logout (open-iscsi's exec_node_op)."""

from __future__ import annotations

from pyiscsiadm import output
from pyiscsiadm.common import (
    Env,
    Exit,
    fail,
    in_use,
    login_records,
    logout_sessions,
    session_matches,
)
from pyiscsid.errors import Err, IscsiError, err_to_str

TYPE_CHECKING = False  # typing is not imported at run time: iscsiadm starts faster
if TYPE_CHECKING:
    from pyiscsid.records import NodeRecord

STARTUP_MODES = ("all", "manual", "automatic", "onboot")
# node mode's port when -p gives none, for records and sessions alike (open-iscsi's)
ISCSI_LISTEN_PORT = 3260


def run(env: Env) -> int:
    o = env.opts
    if o.iface is not None and o.iface != "default":
        from pyiscsiadm.iface import lookup

        if lookup(env, o.iface) is None:
            raise fail(f"Could not read iface info for {o.iface}.", Err.NOMEM)
    if o.login_all is not None:
        return login_all(env, o.login_all)
    if o.logout_all is not None:
        return logout_all(o.logout_all)
    ops = o.op_names
    if ops == ["new"]:
        return op_new(env)
    if o.rescan or o.stats:
        return session_action(env)
    if o.login and o.logout:
        raise fail("Invalid parameters. Both login and logout passed in")
    if (o.login or o.logout) and ops:
        raise fail("Invalid parameters. Login/logout and op passed in")
    selective = bool(o.targetname or o.portal or o.iface or o.record_id)
    if not o.login and not o.logout and not ops and not selective:
        return list_nodes(env)
    if o.login:
        recs = matched(env)
        rc = login_records(recs)
        if rc:
            output.error("Could not log into all portals")
        return rc
    if o.logout:
        from pyiscsid import sysfs

        sessions = [
            s for s in sysfs.list_sessions(brief=True) if session_matches(s, o, ISCSI_LISTEN_PORT)
        ]
        if not sessions:
            raise fail("No matching sessions found", Err.NO_OBJS_FOUND)
        return logout_sessions(sessions)
    if not ops or ops == ["show"]:
        return show(env)
    if len(ops) != 1:
        raise fail("operation is not supported.")
    if ops[0] == "update":
        return update(env)
    if ops[0] == "delete":
        return delete(env)
    if ops[0] == "nonpersistent":
        return nonpersistent(env)
    raise fail("operation is not supported.")


def list_nodes(env: Env) -> int:
    o = env.opts
    if o.info_level not in (-1, 0, 1):
        raise fail(f"Invalid info level {o.info_level}. Try 0 or 1.")
    recs = output.sort_nodes(env.db.nodes())
    if not recs:
        raise fail("No records found", Err.NO_OBJS_FOUND)
    if o.info_level == 1:
        lines = output.node_tree(recs, o.ids)
    else:
        lines = [output.node_flat(r, o.ids) for r in recs]
    print("\n".join(lines))
    return 0


def matched(env: Env, verbose: bool = True) -> list[NodeRecord]:
    """The records -T/-p/-I/-r select; `No records found` (21) when there are none."""
    o = env.opts
    recs = env.db.find_nodes(
        target=o.targetname or None,
        address=o.portal.address if o.portal is not None else None,
        port=(o.portal.port if o.portal.port != -1 else ISCSI_LISTEN_PORT)
        if o.portal is not None
        else None,
        iface=o.iface or None,
        record_id=o.record_id or None,
    )
    tpgt = env.opts.portal.tpgt if env.opts.portal is not None else -1
    if tpgt != -1:
        recs = [r for r in recs if r.tpgt == tpgt]
    if not recs:
        if verbose:
            output.error("No records found")
        raise Exit(Err.NO_OBJS_FOUND)
    return output.sort_nodes(recs)


def show(env: Env) -> int:
    recs = matched(env)
    out = []
    for rec in recs:
        text = rec.dump(show=env.opts.show)
        out.append(text if text.endswith("\n") else text + "\n")
    print("".join(out), end="")
    return 0


def _check_params(env: Env) -> list[tuple[str, str]]:
    """verify_node_params: name/value pairs present, names known, identity ones refused."""
    from pyiscsid.records import canonical_name

    o = env.opts
    if not o.params:
        raise fail("update requires name and value")
    checked = []
    for name, value in o.params:
        try:
            canonical = canonical_name(name)
        except IscsiError:
            output.error(f"Cannot modify {name}. Invalid param name.")
            output.error(f"Could not execute operation on all records: {err_to_str(Err.INVAL)}")
            raise Exit(Err.INVAL) from None
        if canonical.startswith("iface.") and canonical != "iface.initiatorname":
            raise fail(f"Cannot modify {name}. Use iface mode to update this value.")
        if canonical.startswith("discovery."):
            output.error(f"Cannot modify {name}. Invalid param name.")
            output.error(f"Could not execute operation on all records: {err_to_str(Err.INVAL)}")
            raise Exit(Err.INVAL)
        checked.append((canonical, value))
    return checked


def _apply(recs: list[NodeRecord], params: list[tuple[str, str]]) -> None:
    for rec in recs:
        for name, value in params:
            try:
                rec.set(name, value)
            except IscsiError as e:
                output.error(e.message)
                output.error(f"Could not execute operation on all records: {err_to_str(e.code)}")
                raise Exit(e.code) from None


def update(env: Env) -> int:
    params = _check_params(env)
    with env.db.transaction():
        recs = matched(env)
        _apply(recs, params)
        for rec in recs:
            env.db.save_node(rec)
    return 0


def nonpersistent(env: Env) -> int:
    """The seed's `-o nonpersistent`: show the records with -n/-v applied, save nothing."""
    params = _check_params(env) if env.opts.params else []
    recs = matched(env)
    _apply(recs, params)
    print("".join(r.dump(show=env.opts.show).rstrip("\n") + "\n" for r in recs), end="")
    return 0


def delete(env: Env) -> int:
    from pyiscsid import sysfs

    sessions = sysfs.list_sessions(brief=True)
    with env.db.transaction():
        for rec in matched(env):
            refusal = in_use(rec, sessions)
            if refusal:
                raise fail(refusal, Err.SESS_EXISTS)
            env.db.delete_node(rec.record_id)
    return 0


def op_new(env: Env) -> int:
    o = env.opts
    from pyiscsid.records import NodeRecord

    if o.portal is None:
        if o.targetname and env.db.find_nodes(target=o.targetname):
            return 0  # open-iscsi re-adds the target's existing portals: nothing new
        raise fail(
            "Error while adding record: a portal is needed (-p ip[:port]) to add a node record"
        )
    port = o.portal.port if o.portal.port != -1 else ISCSI_LISTEN_PORT
    if not o.targetname:
        return new_from_sendtargets(env, o.portal.address, port)
    from pyiscsiadm.iface import bind, lookup

    iface = lookup(env, o.iface) if o.iface else None
    try:
        rec = NodeRecord.new(
            o.targetname, o.portal.address, port, o.portal.tpgt, o.iface or "default", env.config
        )
        bind(rec, iface)
        for name, value in o.params:
            rec.set(name, value)
        rec = env.db.add_node(rec)
    except IscsiError as e:
        raise fail(f"Error while adding record: {e.message}", e.code) from None
    output.info(output.new_node(rec, rec.params))
    return 0


def new_from_sendtargets(env: Env, address: str, port: int) -> int:
    """The seed's `-o new -p PORTAL` without -T: discover that portal, add what it reports."""
    from pyiscsiadm.discovery import run_sendtargets

    recs = run_sendtargets(env, address, port, persist=True)
    for rec in recs:
        output.info(f"new iSCSI node record added: [{rec.record_id}]")
    return 0


def login_all(env: Env, mode: str) -> int:
    if mode not in STARTUP_MODES:
        output.error(f"Invalid loginall option {mode}.")
        print("Try `iscsiadm --help' for more information.", file=__import__("sys").stderr)
        raise Exit(Err.INVAL)
    recs = output.sort_nodes(env.db.nodes())
    if mode != "all":
        recs = [r for r in recs if r.get("node.startup") == mode]
    if not recs:
        raise fail("No records found", Err.NO_OBJS_FOUND)
    rc = login_records(recs)
    if rc:
        output.error("Could not log into all portals")
    return rc


def logout_all(mode: str) -> int:
    import sys

    from pyiscsid import sysfs

    if mode not in STARTUP_MODES:
        output.error(f"Invalid logoutall option {mode}.")
        print("Try `iscsiadm --help' for more information.", file=sys.stderr)
        raise Exit(Err.INVAL)
    sessions = sysfs.list_sessions(brief=True)
    if mode != "all":
        from pyiscsid.db import Database

        startup = {
            (r.target, r.address.lower(), r.port): r.get("node.startup") for r in Database().nodes()
        }
        sessions = [
            s
            for s in sessions
            if startup.get((s.target, s.persistent_address.lower(), s.persistent_port)) == mode
        ]
    if not sessions:
        raise fail("No matching sessions found", Err.NO_OBJS_FOUND)
    return logout_sessions(sessions)


def session_action(env: Env) -> int:
    """-R (rescan) / -s (stats) on the sessions of the selected records."""
    from pyiscsid import sysfs

    sessions = [s for s in sysfs.list_sessions() if session_matches(s, env.opts, ISCSI_LISTEN_PORT)]
    if not sessions:
        raise fail("No session found.", Err.NO_OBJS_FOUND)
    from pyiscsiadm.session import rescan, stats

    return rescan(sessions) if env.opts.rescan else stats(sessions)

"""iscsiadm -m iface: iface records (open-iscsi 2.1.8's exec_iface_op).

An iface names the way a session's connection goes: `iface.net_ifacename` (the network device
it leaves by, SO_BINDTODEVICE), `iface.hwaddress` (the device with that MAC address) and
`iface.ipaddress` (the source address it is bound to). The built-in ifaces `default` (iSCSI over
TCP, the kernel's routing picks the NIC) and `iser` always exist and cannot be changed; the
others are records in the database (`iface.db`, see pyiscsid/db.py), listed before the built-in
ones as open-iscsi lists its /etc/iscsi/ifaces files. Node records made through an iface
(`-m discovery ... -I NAME`, `-m node -o new ... -I NAME`) carry a copy of its iface.* keys;
`-o update` changes the iface and those copies, `-o delete` deletes the iface and the node
records bound to it that no session uses (as csi-driver-iscsi relies on to clean up).

Messages and exit codes are open-iscsi's, including its quirks: `-o update` and the parameter
part of `-o new` report their errors but exit 0, and the messages name /etc/iscsi/ifaces.
"""

from __future__ import annotations

from pyiscsiadm import output
from pyiscsiadm.common import Env, fail, in_use
from pyiscsid.errors import Err, IscsiError, err_to_str

TYPE_CHECKING = False  # typing is not imported at run time: iscsiadm starts faster
if TYPE_CHECKING:
    from pyiscsid.records import IfaceRecord, NodeRecord
    from pyiscsid.sysfs import SessionInfo

IFACE_CONFIG_DIR = "/etc/iscsi/ifaces"  # where open-iscsi keeps them; its messages name it
EINVAL = 22  # open-iscsi returns errno's EINVAL for `-o new` without -I


def run(env: Env) -> int:
    o = env.opts
    name = o.iface
    if len(o.ifaces) > 1:
        output.error(f"iface mode only accepts one interface. Using the first one {name}.")
    ops = o.op_names
    if len(ops) > 1:
        return int(Err.INVAL)  # open-iscsi: an op it has no case for, without a message
    op = ops[0] if ops else "show"
    if op == "new":
        return _new(env, name)
    if op == "delete":
        return _delete(env, name)
    if op == "update":
        return _update(env, name)
    if op != "show":
        return int(Err.INVAL)
    if o.info_level in (-1, 0):
        return _show(env, name)
    if o.info_level == 1:
        return _tree(env, name)
    raise fail(f"Invalid info level {o.info_level}. Try 0 - 1.")


def lookup(env: Env, name: str) -> IfaceRecord | None:
    """The iface of that name, built-in or a record; None if there is none."""
    from pyiscsid.records import IfaceRecord

    return IfaceRecord.builtin(name) or env.db.find_iface(name)


def all_ifaces(env: Env) -> list[IfaceRecord]:
    """The iface records by name, then the built-in ifaces (open-iscsi's listing order)."""
    from pyiscsid.records import BUILTIN_IFACES, IfaceRecord

    builtin = [IfaceRecord.builtin(n) for n in BUILTIN_IFACES]
    return env.db.ifaces() + [i for i in builtin if i is not None]


def _no_such_iface(name: str) -> int:
    # libopeniscsiusr's words, as it looks for an iface file of that name
    output.raw_error(
        f"iSCSI ERROR: Failed to open {IFACE_CONFIG_DIR}/{name} using read mode: "
        "2 No such file or directory # idbm.c:_idbm_recs_read():834"
    )
    return int(Err.IDBM)


def _show(env: Env, name: str | None) -> int:
    if name is None:
        for each in all_ifaces(env):
            output.info(each.flat())
        return 0
    iface = lookup(env, name)
    if iface is None:
        return _no_such_iface(name)
    print(iface.dump(), end="")
    return 0


def _tree(env: Env, name: str | None) -> int:
    """`-P 1`: each iface and the node records bound to it (nothing when there are none)."""
    nodes = output.sort_nodes(env.db.nodes())
    if not nodes:
        return 0
    if name is not None:
        iface = lookup(env, name)
        if iface is None:
            return _no_such_iface(name)
        names = [name]
    else:
        names = [i.name for i in all_ifaces(env)]
    lines: list[str] = []
    for iface_name in names:
        lines.append(f"Iface: {iface_name}")
        last = None
        for rec in nodes:
            if rec.iface != iface_name:
                continue
            if last is None or last != rec.target:
                lines.append(f"\tTarget: {rec.target}")
            lines.append(f"\t\tPortal: {output.portal_text(rec.address, rec.port)},{rec.tpgt}")
            last = rec.target
    print("\n".join(lines))
    return 0


def _sessions_using(name: str) -> list[SessionInfo]:
    from pyiscsid import sysfs

    return [s for s in sysfs.list_sessions(brief=True) if s.iface == name]


def _new(env: Env, name: str | None) -> int:
    from pyiscsid.records import IfaceRecord

    if name is None:
        output.error("Could not add interface. No interface passed in.")
        return EINVAL
    if IfaceRecord.builtin(name) is not None:
        output.error(
            f"iface {name} is a special interface and is not stored in {IFACE_CONFIG_DIR}."
        )
        output.error(f"Could not create new interface {name}.")
        return int(Err.INVAL)
    if env.db.find_iface(name) is not None and _sessions_using(name):
        output.error(f"Could not create new interface {name}.")
        return int(Err.SESS_EXISTS)
    iface = IfaceRecord(name)  # a new iface, or the old one reset to the defaults
    env.db.save_iface(iface)
    param_update(env, iface, env.opts.params)  # its result is not the command's (open-iscsi)
    output.info(f"New interface {name} added")
    return 0


def _update(env: Env, name: str | None) -> int:
    if name is None or not env.opts.params:
        raise fail("Update requires name, value, and iface.")
    iface = lookup(env, name)
    if iface is None:
        raise fail(f"Could not read iface info for {name}.")
    param_update(env, iface, env.opts.params)  # its result is not the command's (open-iscsi)
    return 0


def _check_binding(iface: IfaceRecord, params: list[tuple[str, str]]) -> None:
    """open-iscsi's verify_iface_params: the name and the kind of binding cannot change."""
    from pyiscsid.records import IFACE_HWADDRESS, IFACE_NETDEV

    for key, _value in params:
        if key == "iface.iscsi_ifacename":
            raise IscsiError(
                Err.INVAL,
                "Can not update iface.iscsi_ifacename. Delete it, and then create a new one.",
            )
        if iface.bound_by_hwaddress and key == IFACE_NETDEV:
            raise IscsiError(
                Err.INVAL,
                "Can not update interface binding from hwaddress to net_ifacename. "
                "You must delete the interface and create a new one",
            )
        if iface.bound_by_netdev and key == IFACE_HWADDRESS:
            raise IscsiError(
                Err.INVAL,
                "Can not update interface binding from net_ifacename to hwaddress. "
                "You must delete the interface and create a new one",
            )


def param_update(env: Env, iface: IfaceRecord, params: list[tuple[str, str]]) -> int:
    """Set -n/-v values on an iface and on the node records bound to it, in one transaction;
    `NAME updated.` or the reason it was not (0 or the error code)."""
    if _sessions_using(iface.name):
        output.error(
            "Updating iface while iscsi sessions are using it. You must logout the running "
            "sessions then log back in for the new settings to take affect."
        )
    try:
        _check_binding(iface, params)
        if iface.is_builtin:
            raise IscsiError(
                Err.INVAL, f"iface {iface.name} is a special interface and cannot be modified."
            )
        for key, _value in params:
            param = iface.param(key)
            if not param.modifiable:
                raise IscsiError(
                    Err.INVAL,
                    f"Cannot modify {key}. It is used to look up the record and cannot be changed.",
                )
        with env.db.transaction():
            for key, value in params:
                iface.set(key, value)
            env.db.save_iface(iface)
            for rec in env.db.find_nodes(iface=iface.name):
                for key, _value in params:
                    rec.params[key] = iface.params[key]
                env.db.save_node(rec)
    except IscsiError as e:
        output.error(e.message)
        output.error(f"Could not update iface {iface.name}: {err_to_str(e.code)}")
        return int(e.code)
    output.info(f"{iface.name} updated.")
    return 0


def _delete(env: Env, name: str | None) -> int:
    if name is None:
        raise fail("Could not delete interface. No interface passed in.")
    iface = lookup(env, name)
    if iface is None:
        output.error(f"Could not read iface info for {name}.")
        raise fail(f"Could not delete iface {name}: {err_to_str(Err.INVAL)}")
    code = delete_bound_nodes(env, name)
    if not code:
        if iface.is_builtin:
            output.error(f"iface {name} is a special interface and cannot be deleted.")
            code = int(Err.INVAL)
        elif not env.db.delete_iface(name):
            code = int(Err.IDBM)
    if code:
        output.error(f"Could not delete iface {name}: {err_to_str(code)}")
        return code
    output.info(f"{name} unbound and deleted.")
    return 0


def delete_bound_nodes(env: Env, name: str) -> int:
    """Delete the node records bound to iface `name` that no session uses; SESS_EXISTS (the
    refusals printed) if a session uses one, else 0."""
    from pyiscsid import sysfs

    sessions = sysfs.list_sessions(brief=True)
    code = 0
    with env.db.transaction():
        for rec in env.db.find_nodes(iface=name):
            refusal = in_use(rec, sessions)
            if refusal:
                output.error(refusal)
                code = int(Err.SESS_EXISTS)
                continue
            env.db.delete_node(rec.record_id)
    return code


def node_iface(env: Env, name: str) -> IfaceRecord | None:
    """The iface a node or discovery command's -I names (None: no such iface)."""
    return lookup(env, name)


def bind(rec: NodeRecord, iface: IfaceRecord | None) -> NodeRecord:
    """A new node record bound to an iface other than `default` (its iface.* keys copied)."""
    if iface is not None and iface.name != "default":
        rec.apply_iface(iface)
    return rec

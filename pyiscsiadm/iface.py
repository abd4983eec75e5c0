"""iscsiadm -m iface: the built-in ifaces, as open-iscsi 2.1.8 shows them (its iface_mode).

There are no iface records of our own yet: `default` (iSCSI over TCP, the kernel's routing picks
the NIC) and `iser` (open-iscsi's other built-in one, which this initiator cannot log in through)
are the ifaces there are. `-o delete` of a built-in iface deletes the node records bound to it
that no session uses, then refuses to delete the iface itself, as open-iscsi does (and as
csi-driver-iscsi relies on to clean up after a failed attach).
"""

from __future__ import annotations

from pyiscsiadm import output
from pyiscsiadm.common import Env, fail
from pyiscsid.errors import Err, err_to_str

BUILTIN = {"default": "tcp", "iser": "iser"}  # iface name -> transport name


def run(env: Env) -> int:
    o = env.opts
    ops = o.op_names
    if ops in ([], ["show"]):
        return _show(o.iface)
    if ops == ["delete"]:
        return _delete(env, o.iface)
    raise fail(
        "iface mode: only the built-in ifaces (default, iser) exist; they cannot be changed.",
        Err.OP_NOT_SUPP,
    )


def _show(name: str | None) -> int:
    if name is None:
        for iface, transport in BUILTIN.items():
            output.info(f"{iface} {transport},<empty>,<empty>,<empty>,<empty>")
        return 0
    if name not in BUILTIN:
        # libopeniscsiusr's words, as it looks for an iface file of that name
        output.raw_error(
            f"iSCSI ERROR: Failed to open /etc/iscsi/ifaces/{name} using read mode: "
            "2 No such file or directory # idbm.c:_idbm_recs_read():834"
        )
        return int(Err.IDBM)
    from pyiscsid.records import iface_dump

    print(iface_dump(name, BUILTIN[name]), end="")
    return 0


def _delete(env: Env, name: str | None) -> int:
    if name is None:
        raise fail("Could not delete interface. No interface passed in.")
    if name not in BUILTIN:
        raise fail(f"Could not delete iface {name}: {err_to_str(Err.INVAL)}")
    from pyiscsiadm.node import in_use
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
    if not code:
        output.error(f"iface {name} is a special interface and cannot be deleted.")
        code = int(Err.INVAL)
    output.error(f"Could not delete iface {name}: {err_to_str(code)}")
    return code

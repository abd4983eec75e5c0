"""iscsiadm's entry point: parse, dispatch to a mode, turn errors into open-iscsi exit codes.

`iscsiadm -V` prints exactly `iscsiadm version 2.1.8` (the open-iscsi release whose formats
we reproduce; tools compare that string). Modes are imported only when used so that
`iscsiadm -m session` starts fast.
"""

from __future__ import annotations

import sys

from pyiscsiadm import output
from pyiscsiadm.args import UsageError, parse
from pyiscsiadm.common import Env, Exit
from pyiscsid.errors import Err, IscsiError

VERSION = "2.1.8"
TRY_HELP = "Try `iscsiadm --help' for more information."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        code = run(argv)
    except Exit as e:
        code = e.code
    except IscsiError as e:
        output.error(e.message)
        code = int(e.code)
    except KeyboardInterrupt:
        code = int(Err.GENERIC)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return code


def run(argv: list[str]) -> int:
    try:
        opts = parse(argv)
    except UsageError as e:
        for line in e.lines:
            output.error(line)
        if e.try_help:
            print(TRY_HELP, file=sys.stderr)
        return e.code
    if opts.version:
        print(f"iscsiadm version {VERSION}")
        return 0
    if opts.help:
        print(output.USAGE, end="")
        print(output.SEED_USAGE, end="")
        return 0
    if opts.killiscsid is not None:
        return kill_iscsid()
    if not opts.mode:
        print(TRY_HELP, file=sys.stderr)
        return int(Err.INVAL)
    env = Env(opts)
    try:
        return dispatch(env)
    finally:
        env.close()


def dispatch(env: Env) -> int:
    mode = env.opts.mode
    if mode == "node":
        from pyiscsiadm import node

        return node.run(env)
    if mode in ("discovery", "discoverydb"):
        from pyiscsiadm import discovery

        return discovery.run(env)
    if mode == "session":
        from pyiscsiadm import session

        return session.run(env)
    if mode == "fw":
        output.error(f"Could not get list of targets from firmware. (err {int(Err.NO_OBJS_FOUND)})")
        return int(Err.NO_OBJS_FOUND)
    if mode == "host":
        from pyiscsid import sysfs

        if not sysfs.list_sessions(brief=True):
            output.error("No iSCSI hosts.")
            return int(Err.NO_OBJS_FOUND)
        output.error("host mode is not supported by this initiator.")
        return int(Err.OP_NOT_SUPP)
    from pyiscsiadm import iface

    return iface.run(env)


def kill_iscsid() -> int:
    from pyiscsid import ipc

    try:
        reply = ipc.request("stop", timeout=10.0)
        code = ipc.reply_code(reply)
    except IscsiError as e:
        if e.code == Err.ISCSID_NOTCONN:
            output.error(e.message)
        code = int(e.code)
    if code:
        from pyiscsiadm.common import report_error

        report_error(code)
        output.error(
            "Could not stop iscsid. Trying sending iscsid SIGTERM or SIGKILL signals manually"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What iscsid does once when it starts, from the persistent database (the seed's "automatically
re-start discovery at startup, based on the contents of persistent iSCSI database").

1. Rediscovery: every SendTargets discovery record with `discovery.startup = automatic` is asked
   again; new targets and portals become node records, existing records keep what the user set
   (db.apply_sendtargets), exactly as `iscsiadm -m discovery -t st -p ...` does.
2. Automatic login: every node record with `node.startup = automatic` gets its
   `node.session.nr_sessions` sessions, logins of different nodes in parallel. Sessions the
   kernel already has (a restarted iscsid took them over) count: nothing is logged in twice.

Failures are logged and do not stop iscsid: a target that is down at boot is not a reason for the
daemon to die.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pyiscsid.errors import Err, IscsiError, err_to_str

if TYPE_CHECKING:
    from pyiscsid.ipc import Reply, Request
    from pyiscsid.records import NodeRecord

    Login = Callable[[Request], Reply]

log = logging.getLogger(__name__)


def rediscover(config: dict[str, str], initiator: tuple[str, str]) -> int:
    """SendTargets again through every discovery record set to start automatically, through
    each iface record of the tcp transport (the built-in `default` when there is none), as
    `iscsiadm -m discovery` without -I does; the number of node records it produced or
    updated."""
    from pyiscsid.db import Database
    from pyiscsid.discovery import sendtargets
    from pyiscsid.records import IfaceRecord, discovery_login_settings

    with Database() as db:
        drecs = [
            d
            for d in db.discoveries()
            if d.type == "sendtargets" and d.get("discovery.startup") == "automatic"
        ]
        ifaces = [i for i in db.ifaces() if i.transport == "tcp"] or [IfaceRecord("default")]
    found = 0
    for drec, iface in ((d, i) for d in drecs for i in ifaces):
        where = f"{drec.address}:{drec.port}"
        if iface.name != "default":
            where += f" (iface {iface.name})"
        try:
            settings = discovery_login_settings(drec, *initiator, iface)
            targets = sendtargets(drec.address, drec.port, settings)
            with Database() as db:
                found += len(db.apply_sendtargets(drec, targets, config, [iface]))
        except IscsiError as e:
            log.error("startup rediscovery through %s failed: %s", where, e.message)
        except OSError as e:
            log.error("startup rediscovery through %s failed: %s", where, e)
        else:
            log.info("startup rediscovery through %s: %d target(s)", where, len(targets))
    return found


def automatic_nodes() -> list[NodeRecord]:
    from pyiscsid.db import Database

    with Database() as db:
        return [r for r in db.nodes() if r.get("node.startup") == "automatic"]


def login_node(login: Login, rec: NodeRecord, sessions: int) -> int:
    """Up to `sessions` logins of one node (each makes one session, SESS_EXISTS once it has
    them all); the number of sessions made."""
    made = 0
    for _ in range(sessions):
        try:
            login({"record_id": rec.record_id})
        except IscsiError as e:
            if e.code != Err.SESS_EXISTS:
                log.error(
                    "startup login to %s %s failed: %s",
                    rec.target,
                    rec.portal,
                    e.message or err_to_str(e.code),
                )
            break
        made += 1
    return made


def run(
    login: Login,
    config: dict[str, str],
    initiator: tuple[str, str],
    nr_sessions: Callable[[NodeRecord], int],
) -> int:
    """Rediscovery, then the automatic logins in parallel; the number of sessions made."""
    try:
        rediscover(config, initiator)
        recs = automatic_nodes()
    except IscsiError as e:  # an unreadable database: say so, keep serving
        log.error("startup: cannot read the database: %s", e.message)
        return 0
    made = [0] * len(recs)

    def one(i: int, rec: NodeRecord) -> None:
        made[i] = login_node(login, rec, nr_sessions(rec))

    threads = [
        threading.Thread(target=one, args=(i, rec), name=f"startup-{rec.record_id}", daemon=True)
        for i, rec in enumerate(recs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if recs:
        log.info("startup: %d session(s) for %d automatic node(s)", sum(made), len(recs))
    return sum(made)

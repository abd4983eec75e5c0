"""What every iscsiadm mode shares: the lazily opened database and config, exit handling,
and logging in/out through iscsid (open-iscsi's messages, in its order)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pyiscsiadm import output
from pyiscsiadm.args import Options
from pyiscsid.errors import Err, IscsiError, err_to_str

if TYPE_CHECKING:
    from pyiscsiadm.sysfs import SessionInfo
    from pyiscsid.db import Database
    from pyiscsid.records import NodeRecord

LOGIN_TIMEOUT = 300.0  # seconds iscsiadm waits for iscsid to finish one login (with retries)


class Exit(Exception):
    """Stop with this exit code (messages were printed already)."""

    def __init__(self, code: int) -> None:
        self.code = int(code)
        super().__init__(code)


def fail(message: str, code: int = Err.INVAL) -> Exit:
    """Print `iscsiadm: message` and return the Exit to raise."""
    output.error(message)
    return Exit(code)


class Env:
    """The command line plus the database and config, opened on first use."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self._db: Database | None = None
        self._config: dict[str, str] | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            from pyiscsid.db import Database

            self._db = Database()
        return self._db

    @property
    def config(self) -> dict[str, str]:
        if self._config is None:
            from pyiscsid.config import load_config

            self._config = load_config()
        return self._config

    def initiator(self) -> tuple[str, str]:
        from pyiscsid.config import initiator_name

        return initiator_name()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def report_error(code: int) -> None:
    """open-iscsi's `initiator reported error (N - text)`."""
    output.error(f"initiator reported error ({int(code)} - {err_to_str(code)})")


def _request(op: str, timeout: float, **args: Any) -> tuple[int, str, dict[str, Any]]:
    """(code, message to print or "", reply) of one iscsid request."""
    from pyiscsid import ipc

    try:
        reply = ipc.request(op, timeout=timeout, **args)
    except IscsiError as e:
        shown = e.message if e.code == Err.ISCSID_NOTCONN else ""
        return int(e.code), shown, {}
    return int(reply["code"]), "", reply


def _submit_failure() -> tuple[int, str] | None:
    """Whether iscsid can be reached at all (checked before each asynchronous login)."""
    import socket

    from pyiscsid import ipc

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(ipc.socket_path())
    except OSError as e:
        return int(Err.ISCSID_NOTCONN), f"can not connect to iSCSI daemon ({ipc.connect_errno(e)})!"
    finally:
        sock.close()
    return None


def login_records(recs: Iterable[NodeRecord], ignore_exists: bool = False) -> int:
    """Log in to each record through iscsid; return the first error code (0 if all worked).

    As open-iscsi's asynchronous logins: "Logging in to" for each record as it is submitted
    (a submission that fails is reported at once), then one result per submitted record in
    order. The requests run concurrently.
    """
    recs = list(recs)
    results: dict[int, tuple[int, str, dict[str, Any]]] = {}
    threads: dict[int, threading.Thread] = {}
    rc = 0

    def run(i: int, rec: NodeRecord) -> None:
        results[i] = _request("login", LOGIN_TIMEOUT, record_id=rec.record_id)

    def show(rec: NodeRecord, code: int) -> int:
        where = output.login_target(rec.iface, rec.target, rec.address, rec.port)
        if code == 0 or (ignore_exists and code == Err.SESS_EXISTS):
            output.info(f"Login to {where} successful.")
            return 0
        output.error(f"Could not login to {where}.")
        report_error(code)
        return code

    for i, rec in enumerate(recs):
        where = output.login_target(rec.iface, rec.target, rec.address, rec.port)
        output.info(f"Logging in to {where}")
        sys.stdout.flush()
        failed = _submit_failure()
        if failed is not None:
            output.error(failed[1])
            code = show(rec, failed[0])
            rc = rc or code
            continue
        threads[i] = threading.Thread(target=run, args=(i, rec), daemon=True)
        threads[i].start()
    for i, rec in enumerate(recs):
        if i not in threads:
            continue
        threads[i].join()
        code, message, _reply = results[i]
        if message:
            output.error(message)
        code = show(rec, code)
        rc = rc or code
    return rc


def logout_sessions(sessions: Iterable[SessionInfo]) -> int:
    """Log out of each session through iscsid (open-iscsi's messages); first error code."""
    sessions = list(sessions)
    rc = 0
    for s in sessions:
        output.info(
            "Logging out of session "
            + output.session_target(s.sid, s.target, s.persistent_address, s.persistent_port)
        )
    for s in sessions:
        code, message, _ = _request("logout", LOGIN_TIMEOUT, sid=s.sid)
        if message:
            output.error(message)
        where = output.session_target(s.sid, s.target, s.persistent_address, s.persistent_port)
        if code == 0:
            output.info(f"Logout of {where} successful.")
        else:
            output.error(f"Could not logout of {where}.")
            report_error(code)
            rc = rc or code
    if rc:
        output.error("Could not logout of all requested sessions")
    return rc


def session_matches(s: SessionInfo, opts: Options) -> bool:
    """Whether a session matches -T/-p/-I (open-iscsi's __iscsi_match_session)."""
    if opts.targetname and s.target != opts.targetname:
        return False
    if opts.portal is not None:
        if s.persistent_address.lower() != opts.portal.address.strip("[]").lower():
            return False
        if opts.portal.port != -1 and s.persistent_port != opts.portal.port:
            return False
    return not (opts.iface and s.iface != opts.iface)

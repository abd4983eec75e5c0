"""What every iscsiadm mode shares: the lazily opened database and config, exit handling,
and logging in/out through iscsid (open-iscsi's messages, in its order)."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterable

from pyiscsiadm import output
from pyiscsiadm.args import Options
from pyiscsid.errors import Err, IscsiError, err_to_str

TYPE_CHECKING = False  # typing is not imported at run time: iscsiadm starts faster
if TYPE_CHECKING:
    from pyiscsid.db import Database
    from pyiscsid.ipc import Reply
    from pyiscsid.records import NodeRecord
    from pyiscsid.sysfs import SessionInfo

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


NOT_RUNNING = (
    "iscsid is not running. Could not start it up automatically using the startup command in "
    "the iscsid.conf iscsid.startup setting. Please check that the file exists or that your "
    "init scripts have started iscsid."
)
STARTUP_WAIT = 5.0  # seconds to wait for the socket after running iscsid.startup


def _connect_error() -> OSError | None:
    """None when iscsid accepts a connection on its socket, else the connect error."""
    import socket

    from pyiscsid import ipc

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(ipc.socket_path())
    except OSError as e:
        return e
    finally:
        sock.close()
    return None


def _startup_command() -> str | None:
    try:
        from pyiscsid.config import load_config

        return load_config().get("iscsid.startup") or None
    except IscsiError:
        return None


def reach_iscsid(start: bool = True) -> int:
    """0 when iscsid answers; else print open-iscsi's messages and return ISCSID_NOTCONN.

    As open-iscsi: when nothing listens and `start`, run iscsid.conf's `iscsid.startup`
    command (or say that there is none) and try again; then `can not connect to iSCSI
    daemon (errno)!`.
    """
    import time

    from pyiscsid import ipc

    err = _connect_error()
    if err is None:
        return 0
    if start and ipc.connect_errno(err) == errno.ECONNREFUSED:
        command = _startup_command()
        if command is None:
            output.error(NOT_RUNNING)
        else:
            import subprocess

            try:
                subprocess.run(command, shell=True, check=False, timeout=STARTUP_WAIT)
            except (OSError, subprocess.SubprocessError) as e:
                output.error(f"Could not execute '{command}' (err {getattr(e, 'errno', 0)})")
            deadline = time.monotonic() + STARTUP_WAIT
            while (err := _connect_error()) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            if err is None:
                return 0
    output.error(f"can not connect to iSCSI daemon ({ipc.connect_errno(err)})!")
    return int(Err.ISCSID_NOTCONN)


def iscsid_request(
    op: str, timeout: float = 30.0, start: bool = True, **args: object
) -> tuple[int, Reply]:
    """(code, reply) of one iscsid request; unreachable-daemon messages are printed here."""
    from pyiscsid import ipc

    code = reach_iscsid(start)
    if code:
        return code, {}
    try:
        reply = ipc.request(op, timeout=timeout, **args)
    except IscsiError as e:
        if e.code == Err.ISCSID_NOTCONN:
            output.error(e.message)
        return int(e.code), {}
    return ipc.reply_code(reply), reply


BATCH = 1024  # records (sessions) a login_many (logout_many) request carries at most


def _many(op: str, key: str, items: list[str] | list[int]) -> list[tuple[int, Reply]]:
    """(code, reply) for each item of a login_many/logout_many request, in order. iscsid runs
    them all at once; when the request itself fails, every item gets its code."""
    from pyiscsid import ipc

    out: list[tuple[int, Reply]] = []
    for start in range(0, len(items), BATCH):
        chunk = items[start : start + BATCH]
        try:
            reply = ipc.request(op, LOGIN_TIMEOUT, **{key: chunk})
        except IscsiError as e:
            if e.code == Err.ISCSID_NOTCONN:
                output.error(e.message)
            reply = {"code": int(e.code)}
        code = ipc.reply_code(reply)
        results = reply.get("results")
        if code or not isinstance(results, list) or len(results) != len(chunk):
            out += [(code or int(Err.ISCSID_COMM_ERR), {})] * len(chunk)
            continue
        for r in results:
            if isinstance(r, dict) and isinstance(r.get("code"), int):
                out.append((ipc.reply_code(r), r))
            else:
                out.append((int(Err.ISCSID_COMM_ERR), {}))
    return out


def login_records(recs: Iterable[NodeRecord]) -> int:
    """Log in to each record through iscsid; return the first error code (0 if all worked).

    As open-iscsi's asynchronous logins: a record that already has its nr_sessions sessions is
    skipped with a warning (SESS_EXISTS, 15); "Logging in to" for each other record as it is
    submitted (a submission that fails is reported at once), then one result per submitted
    record in order. iscsid runs the logins at once (one login_many request).
    """
    from collections import Counter

    from pyiscsid import sysfs
    from pyiscsid.records import nr_sessions

    rc = 0

    def show(rec: NodeRecord, code: int) -> int:
        where = (rec.iface, rec.target, rec.address, rec.port)
        if code == 0:
            output.info(output.login_ok(*where))
            return 0
        output.error(output.login_failed(*where))
        report_error(code)
        return code

    present = Counter(
        (s.target, s.persistent_address.lower(), s.persistent_port, s.iface)
        for s in sysfs.list_sessions(brief=True)
    )
    submitted: list[NodeRecord] = []
    reachable = False
    for rec in recs:
        wanted = nr_sessions(rec)
        have = present[(rec.target, rec.address.strip("[]").lower(), rec.port, rec.iface)]
        if have >= wanted:
            output.error(output.sessions_present(rec.iface, wanted, have))
            rc = rc or int(Err.SESS_EXISTS)
            continue
        for _ in range(wanted - have):  # one "Logging in to", one session, each
            output.info(output.logging_in(rec.iface, rec.target, rec.address, rec.port))
            sys.stdout.flush()
            failed = 0 if reachable else reach_iscsid()
            if failed:
                code = show(rec, failed)
                rc = rc or code
                break
            reachable = True
            submitted.append(rec)
    if submitted:
        results = _many("login_many", "record_ids", [r.record_id for r in submitted])
        for rec, (code, _reply) in zip(submitted, results, strict=True):
            code = show(rec, code)
            rc = rc or code
    return rc


def logout_sessions(sessions: Iterable[SessionInfo]) -> int:
    """Log out of each session through iscsid (open-iscsi's messages); first error code.
    iscsid logs out of them all at once (one logout_many request)."""
    sessions = list(sessions)
    rc = 0
    for s in sessions:
        output.info(output.logging_out(s.sid, s.target, s.persistent_address, s.persistent_port))
    sys.stdout.flush()
    code = reach_iscsid()
    results: list[tuple[int, Reply]]
    if code:
        results = [(code, {})] * len(sessions)
    else:
        results = _many("logout_many", "sids", [s.sid for s in sessions])
    for s, (code, _reply) in zip(sessions, results, strict=True):
        where = (s.sid, s.target, s.persistent_address, s.persistent_port)
        if code == 0:
            output.info(output.logout_ok(*where))
        else:
            output.error(output.logout_failed(*where))
            report_error(code)
            rc = rc or code
    if rc:
        output.error(output.LOGOUT_ALL_FAILED)
    return rc


def session_matches(s: SessionInfo, opts: Options, default_port: int = -1) -> bool:
    """Whether a session matches -T/-p/-I (open-iscsi's __iscsi_match_session). A portal
    without a port matches any port, or only `default_port` (node mode: 3260, as open-iscsi)."""
    if opts.targetname and s.target != opts.targetname:
        return False
    if opts.portal is not None:
        if s.persistent_address.lower() != opts.portal.address.strip("[]").lower():
            return False
        port = opts.portal.port if opts.portal.port != -1 else default_port
        if port != -1 and s.persistent_port != port:
            return False
    return not (opts.iface and s.iface != opts.iface)


def in_use(rec: NodeRecord, sessions: list[SessionInfo]) -> str | None:
    """open-iscsi's refusal to delete a record a session uses (None: no session uses it)."""
    for s in sessions:
        if (
            s.target == rec.target
            and s.persistent_address.lower() == rec.address.lower()
            and s.persistent_port == rec.port
            and (s.iface or "default") == rec.iface
        ):
            return (
                f"This command will remove the record [iface: {rec.iface}, target: "
                f"{rec.target}, portal: {rec.address},{rec.port}], but a session is using "
                "it. Logout session then rerun command to remove record."
            )
    return None

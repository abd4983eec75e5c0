"""iscsid: the daemon that logs in, owns the sessions' control side and answers iscsiadm.

`iscsid [-c config] [-i initiatorname] [-f] [-d level] [-u uid] [-g gid] [-n] [-p pidfile]
[-h] [-v]`. Requests (pyiscsid.ipc): `ping`, `login {record_id}`, `login_many {record_ids}`,
`logout {sid}`, `logout_many {sids}`, `list_sessions`, `session_info {sid}`, `stats {sid}`,
`stop`.
The kernel side: pyiscsid.kernel_session starts and stops sessions, pyiscsid.sysfs reads them,
and the event service (pyiscsid.events) with its connection recovery (pyiscsid.recovery) keeps
them running; `serve` wires the two. Without the iscsi_if module a login is answered with
TRANS_NOT_FOUND (12).
"""

from __future__ import annotations

import contextlib
import dataclasses
import getopt
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from pyiscsid import sysfs
from pyiscsid.errors import Err, IscsiError
from pyiscsid.states import ConnState, SessionStage, iscsid_state

if TYPE_CHECKING:
    from pyiscsid.events import EventService
    from pyiscsid.ipc import Reply, Request
    from pyiscsid.login import LoginResult
    from pyiscsid.records import NodeRecord
    from pyiscsid.recovery import RecoveryManager
    from pyiscsid.settings import LoginSettings

T = TypeVar("T")

VERSION = "2.1.8"
DEFAULT_PIDFILE = "/run/iscsid.pid"
PROG = "iscsid"

log = logging.getLogger("iscsid")

USAGE = """\
Usage: iscsid [OPTION]
Open-iSCSI initiator daemon.
  -c, --config=[path]     Execute using the config file ($ISCSID_CONFIG or /etc/iscsid.conf).
  -i, --initiatorname=[path]     read initiatorname from file (/etc/iscsi/initiatorname.iscsi).
  -f, --foreground        Make the program run in the foreground
  -d, --debug debuglevel  Print debugging information
  -u, --uid=uid           Run as uid, default is current user
  -g, --gid=gid           Run as gid, default is current user group
  -n, --no-pid-file       Do not use a pid file
  -p, --pid=pidfile       Use pid file (default $ISCSID_PIDFILE or /run/iscsid.pid).
  -h, --help              Display this help and exit
  -v, --version           Display version and exit
"""

_LONG = ["config=", "initiatorname=", "foreground", "debug=", "uid=", "gid=", "no-pid-file",
         "pid=", "help", "version"]  # fmt: skip


@dataclasses.dataclass
class DaemonOptions:
    config: str | None = None
    initiatorname: str | None = None
    foreground: bool = False
    debug: int = 0
    uid: int | None = None
    gid: int | None = None
    pidfile: str | None = None  # None: no pid file
    startup: bool = True  # rediscovery and automatic logins at start (ISCSID_NO_STARTUP=1: off)


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> DaemonOptions | str:
    """The options, or "help"/"version" when those were asked for. Raises UsageError."""
    try:
        opts, extra = getopt.gnu_getopt(argv, "c:i:fd:u:g:np:hv", _LONG)
    except getopt.GetoptError as e:
        opt = e.opt or ""
        if e.msg.endswith("requires argument"):
            raise UsageError(f"option requires an argument -- '{opt}'") from None
        if len(opt) == 1:
            raise UsageError(f"invalid option -- '{opt}'") from None
        raise UsageError(f"unrecognized option '--{opt}'") from None
    if extra:
        raise UsageError(f"unexpected argument '{extra[0]}'")
    o = DaemonOptions(
        pidfile=os.environ.get("ISCSID_PIDFILE") or DEFAULT_PIDFILE,
        startup=os.environ.get("ISCSID_NO_STARTUP", "") in ("", "0"),
    )
    for name, value in opts:
        if name in ("-h", "--help"):
            return "help"
        if name in ("-v", "--version"):
            return "version"
        if name in ("-c", "--config"):
            o.config = value
        elif name in ("-i", "--initiatorname"):
            o.initiatorname = value
        elif name in ("-f", "--foreground"):
            o.foreground = True
        elif name in ("-d", "--debug"):
            o.debug = _number(value, "debug level")
        elif name in ("-u", "--uid"):
            o.uid = _number(value, "uid")
        elif name in ("-g", "--gid"):
            o.gid = _number(value, "gid")
        elif name in ("-n", "--no-pid-file"):
            o.pidfile = None
        elif name in ("-p", "--pid"):
            o.pidfile = value
    return o


def _number(text: str, what: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise UsageError(f"invalid {what} '{text}'") from None


def kernel_available() -> bool:
    """True if the kernel side can be used: pyiscsid.kernel_session imports (pyroute2, cffi)
    and the iscsi_if module is loaded."""
    try:
        from pyiscsid import kernel_session
    except ImportError:
        return False
    try:
        return kernel_session.available()
    except Exception as e:  # a missing netlink family or library: no kernel side
        log.debug("kernel interface unavailable: %s", e)
        return False


class IsidAllocator:
    """ISIDs for new sessions: open-iscsi's OUI-format prefix 00 023d, then a 24-bit qualifier
    that no session to the same target has, in sysfs or in a login still under way (RFC 7143
    4.4.3: the same ISID to the same target would reinstate, i.e. replace, that session)."""

    PREFIX = bytes.fromhex("00023d")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: set[tuple[str, bytes]] = set()

    @contextlib.contextmanager
    def reserve(self, target: str, sessions: list[sysfs.SessionIdentity]) -> Iterator[bytes]:
        used = set()
        for s in sessions:
            if s.target == target:
                with contextlib.suppress(ValueError):
                    used.add(bytes.fromhex(s.isid))
        with self._lock:
            used |= {isid for t, isid in self._in_flight if t == target}
            isid = next(
                c for q in range(1 << 24) if (c := self.PREFIX + q.to_bytes(3, "big")) not in used
            )
            self._in_flight.add((target, isid))
        try:
            yield isid
        finally:
            with self._lock:
                self._in_flight.discard((target, isid))


class Iscsid:
    """The request handlers. Logins of one node are serialised so two `--login`s of the same
    node make one session (the second gets SESS_EXISTS). `events` and `recovery` are the event
    service and connection recovery `serve` started (None: there is no kernel side), asked
    for a session's state."""

    def __init__(self, opts: DaemonOptions) -> None:
        from pyiscsid.config import initiator_name, load_config

        self.opts = opts
        self.config = load_config(opts.config)
        self.initiator_name, self.initiator_alias = initiator_name(opts.initiatorname)
        self._node_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.stop_requested = threading.Event()
        self.isids = IsidAllocator()
        self.events: EventService | None = None
        self.recovery: RecoveryManager | None = None

    def handle(self, op: str, args: Request, _peer: object) -> Reply:
        handler: Callable[[Request], Reply] | None = getattr(self, f"op_{op}", None)
        if handler is None:
            raise IscsiError(Err.INVALID_MGMT_REQ, f"Unknown request '{op}'")
        return handler(args)

    def op_ping(self, _args: Request) -> Reply:
        return {"version": VERSION, "pid": os.getpid()}

    def op_stop(self, _args: Request) -> Reply:
        self.stop_requested.set()
        return {}

    def op_list_sessions(self, _args: Request) -> Reply:
        """`list_sessions` -> {"sessions": [sysfs.SessionInfo's fields, by SID]}."""
        if not kernel_available():
            return {"sessions": []}
        sessions = sorted(sysfs.list_sessions(), key=lambda s: s.sid)
        return {"sessions": [vars(s) for s in sessions]}

    def _session_sid(self, args: Request) -> int:
        """The sid of a request about a session the kernel has."""
        sid = args.get("sid")
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise IscsiError(Err.INVALID_MGMT_REQ, "the request needs a sid")
        if not kernel_available() or not sysfs.session_exists(sid):
            raise IscsiError(Err.SESS_NOT_FOUND, f"no session {sid}")
        return sid

    def op_session_info(self, args: Request) -> Reply:
        """`session_info {sid}` -> {"conn_state": int, "session_state": int}: open-iscsi's
        numbers, which `-m session -P 1` names (pyiscsid.states)."""
        conn_state, stage = self.session_state(self._session_sid(args))
        return {"conn_state": int(conn_state), "session_state": int(stage)}

    def session_state(self, sid: int) -> tuple[ConnState, SessionStage]:
        """Session `sid` as iscsid sees it: its kernel state, its recovery, a login or a
        logout (iscsiadm's or the target's) under way."""
        from pyiscsid import kernel_session

        recovering = self.recovery.phase(sid) if self.recovery is not None else None
        handling = kernel_session.handling(sid)
        if handling is None and self.events is not None and self.events.logging_out(sid):
            handling = ConnState.IN_LOGOUT
        kernel_state = sysfs.read_str(f"{sysfs.session_dir(sid)}/state")
        return iscsid_state(kernel_state, recovering, handling)

    def op_stats(self, args: Request) -> Reply:
        """`stats {sid}` -> {"stats": {counter: int}, "connections": [{"cid": int, "stats":
        {counter: int}}, ...]}: the session's total (each counter summed over its connections)
        and each connection's own, the counters named as `iscsiadm -m session -s` prints them
        (pyiscsiadm.output.SNMP_STATS, then the transport's own, e.g. tx_sendpage_failures).
        Filled by kernel_session.connection_stats(sid) (GET_STATS of each connection)."""
        from pyiscsid import kernel_session

        return stats_reply(kernel_session.connection_stats(self._session_sid(args)))

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._node_locks.setdefault(key, threading.Lock())

    def op_login(self, args: Request) -> Reply:
        """`login {record_id}`: one more session of the node (see login_record)."""
        record_id = args.get("record_id")
        if not isinstance(record_id, str):
            raise IscsiError(Err.INVALID_MGMT_REQ, "login needs a record_id")
        from pyiscsid.db import Database

        with Database() as db:
            recs = db.find_nodes(record_id=record_id)
        if not recs:
            raise IscsiError(Err.NO_OBJS_FOUND, f"no node record [{record_id}]")
        return {"sid": self.login_record(recs[0])}

    def op_login_many(self, args: Request) -> Reply:
        """`login_many {record_ids}`: one more session of each node, all at once, the records
        read in one go -> {"results": [login's reply for each id, in order]} (an id may come
        twice: two sessions of that node)."""
        ids = args.get("record_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise IscsiError(Err.INVALID_MGMT_REQ, "login_many needs a list of record_ids")
        from pyiscsid.db import Database

        with Database() as db:
            found = db.nodes_by_id(list(dict.fromkeys(ids)))

        def one(record_id: str) -> Reply:
            rec = found.get(record_id)
            if rec is None:
                raise IscsiError(Err.NO_OBJS_FOUND, f"no node record [{record_id}]")
            return {"sid": self.login_record(rec)}

        return {"results": concurrently(one, ids)}

    def login_record(self, rec: NodeRecord) -> int:
        """One more session of node record `rec`, if it has fewer than its
        node.session.nr_sessions (else SESS_EXISTS, 15); its SID. Logins of one node are
        serialised; each session gets an ISID no other session to that target has."""
        from pyiscsid import kernel_session, records

        t0 = time.monotonic()
        if not kernel_available():
            raise IscsiError(Err.TRANS_NOT_FOUND)
        transport = rec.get("iface.transport_name") or "tcp"
        if transport != "tcp":  # iface iser, say: no transport of that name here
            raise IscsiError(Err.TRANS_NOT_FOUND, f"no {transport} transport (iface {rec.iface})")
        with self._lock_for(f"{rec.target}\0{rec.address.lower()}\0{rec.port}\0{rec.iface}"):
            sessions = sysfs.session_identities()
            present = sum(
                1
                for s in sessions
                if s.target == rec.target
                and s.persistent_address.lower() == rec.address.lower()
                and s.persistent_port == rec.port
                and (s.iface or "default") == rec.iface
            )
            if present >= records.nr_sessions(rec):
                raise IscsiError(Err.SESS_EXISTS)
            from pyiscsid.login import login_retrying

            settings = records.login_settings(rec, self.initiator_name, self.initiator_alias)
            with self.isids.reserve(rec.target, sessions) as isid:
                settings.isid = isid
                log.info("login to %s %s (ISID %s)", rec.target, rec.portal, isid.hex())
                t1 = time.monotonic()
                result = login_retrying(rec.address, rec.port, settings, log=log.info)
                t2 = time.monotonic()
                try:
                    sid = kernel_session.start_session(rec, result, settings.initiator_name)
                except BaseException:
                    result.close()
                    raise
            log.info("session %d: logged in to %s %s", sid, rec.target, rec.portal)
            add_further_connections(sid, rec, result, settings)
        log.debug(
            "session %d: %.0f ms in all: %.0f ms before the login, %.0f ms the login",
            sid,
            (time.monotonic() - t0) * 1e3,
            (t1 - t0) * 1e3,
            (t2 - t1) * 1e3,
        )
        return sid

    def op_logout(self, args: Request) -> Reply:
        """`logout {sid}`: log out of the session; `logout {sid, cid}`: close that connection
        alone (the session's others carry on; its only one: the session is logged out)."""
        sid = args.get("sid")
        if not isinstance(sid, int) or isinstance(sid, bool):
            raise IscsiError(Err.INVALID_MGMT_REQ, "logout needs a sid")
        if not kernel_available():
            raise IscsiError(Err.SESS_NOT_FOUND, f"no session {sid}")
        from pyiscsid import kernel_session

        cid = args.get("cid")
        if cid is not None:
            return self._close_connection(sid, cid)
        if self.recovery is not None and not self.recovery.cancel(sid):
            log.warning("session %d: its recovery is still running", sid)
        kernel_session.stop_session(sid)
        log.info("session %d: logged out", sid)
        return {}

    def _close_connection(self, sid: int, cid: object) -> Reply:
        from pyiscsid import kernel_session

        if not isinstance(cid, int) or isinstance(cid, bool):
            raise IscsiError(Err.INVALID_MGMT_REQ, "the cid of a logout must be a number")
        if cid not in sysfs.connection_ids(sid):
            raise IscsiError(Err.SESS_NOT_FOUND, f"no connection {sid}:{cid}")
        if self.recovery is not None and self.recovery.active(sid):
            raise IscsiError(Err.BUSY, f"session {sid} is being recovered")
        kernel_session.close_connection(sid, cid)
        log.info("connection%d:%d: logged out", sid, cid)
        return {}

    def op_logout_many(self, args: Request) -> Reply:
        """`logout_many {sids}`: log out of every session at once -> {"results": [logout's
        reply for each sid, in order]}."""
        sids = args.get("sids")
        if not isinstance(sids, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sids
        ):
            raise IscsiError(Err.INVALID_MGMT_REQ, "logout_many needs a list of sids")
        return {"results": concurrently(lambda sid: self.op_logout({"sid": sid}), sids)}


def stats_reply(per_connection: dict[int, dict[str, int]]) -> Reply:
    """The reply of `stats`: the total as "stats" (what callers before MC/S read), then each
    connection's counters by CID."""
    from pyiscsid.kernel_session import sum_stats

    return {
        "stats": sum_stats(per_connection.values()),
        "connections": [
            {"cid": cid, "stats": per_connection[cid]} for cid in sorted(per_connection)
        ],
    }


def add_further_connections(
    sid: int, rec: NodeRecord, leading: LoginResult, settings: LoginSettings
) -> None:
    """The further connections of a new session (MC/S, connections.add_further); a failure is
    logged, never the login's."""
    from pyiscsid import connections

    try:
        connections.add_further(sid, rec, leading, settings)
    except Exception:  # the session runs with its leading connection: that is a login
        log.exception("session %d: adding further connections failed", sid)


def concurrently(fn: Callable[[T], Reply], items: list[T]) -> list[Reply]:
    """fn(item) for every item, each on a thread of its own; each one's reply in item order:
    {"code": 0, "message": "", **fn(item)}, or the code and message of the IscsiError it raised
    (any other exception: INTERNAL)."""
    results: list[Reply] = [{} for _ in items]

    def run(i: int) -> None:
        try:
            results[i] = {"code": 0, "message": "", **fn(items[i])}
        except IscsiError as e:
            results[i] = {"code": int(e.code), "message": e.message}
        except Exception as e:  # a bug must not leave a hole in the answer
            log.exception("request for %r failed", items[i])
            results[i] = {"code": int(Err.INTERNAL), "message": f"internal error: {e}"}

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _setup_logging(foreground: bool, debug: int) -> None:
    level = logging.DEBUG if debug > 0 else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    handler: logging.Handler
    if foreground:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("iscsid: %(message)s"))
    else:
        try:
            handler = logging.handlers.SysLogHandler(address="/dev/log")
        except OSError:
            handler = logging.NullHandler()
        handler.setFormatter(logging.Formatter("iscsid: %(message)s"))
    root.addHandler(handler)


def _daemonize() -> int | None:
    """Fork into the background. Returns the write end of a pipe the child reports its startup
    on (b"0" ok, else a message) in the child; the parent waits for it and exits."""
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            status = f.read()
        if status == b"0":
            os._exit(0)
        sys.stderr.write(status.decode(errors="replace") or "iscsid: failed to start\n")
        os._exit(1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    return w


def _write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


# iscsid is long-lived and logs in to many targets at once: import everything a login, a
# recovery or a discovery needs before the first request, not in N request threads that then
# queue on the import lock (under software emulation that was half of a 8-target -L all).
_PRELOAD = ("pyiscsid.pdu", "pyiscsid.pduio", "pyiscsid.negotiation", "pyiscsid.chap",
            "pyiscsid.login", "pyiscsid.discovery", "pyiscsid.records", "pyiscsid.db",
            "pyiscsid.kernel_session", "pyiscsid.netlink", "pyiscsid.uapi",
            "pyiscsid.recovery", "pyiscsid.events", "pyiscsid.startup")  # fmt: skip


def preload() -> None:
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError as e:  # e.g. no pyroute2: that part stays unavailable
            log.debug("cannot preload %s: %s", name, e)


def privilege_refusal(opts: DaemonOptions, kernel_interface: bool) -> str | None:
    """Why -u cannot be honoured, or None. The iscsi_if commands need CAP_NET_ADMIN
    (GENL_ADMIN_PERM), the database holds CHAP secrets readable by root only and a scan
    writes root-only sysfs files: with the kernel interface in use iscsid stays root."""
    if opts.uid is None or opts.uid == os.getuid():
        return None
    if kernel_interface:
        return (
            f"cannot run as uid {opts.uid}: the iscsi_if kernel interface needs CAP_NET_ADMIN "
            "(its netlink commands are GENL_ADMIN_PERM) and root for the database and SCSI "
            "scans; run iscsid as root, without -u"
        )
    return None


def drop_privileges(opts: DaemonOptions) -> None:
    """-g then -u (supplementary groups dropped with the group when we can)."""
    if opts.gid is not None:
        if os.getuid() == 0:
            os.setgroups([])
        os.setgid(opts.gid)
    if opts.uid is not None and opts.uid != os.getuid():
        os.setuid(opts.uid)


def start_event_service(daemon: Iscsid) -> None:
    """Start the event service of `daemon` with its connection recovery; the sessions already
    in the kernel (a previous iscsid's) are taken over: pinged and recovered as its own."""
    from pyiscsid.events import EventService
    from pyiscsid.recovery import RecoveryManager

    taken_over = sysfs.session_identities()
    daemon.recovery = RecoveryManager(daemon.initiator_name, daemon.initiator_alias)
    daemon.events = EventService(recovery=daemon.recovery).start()
    for s in taken_over:
        log.info("session %d: taken over (%s %s:%d)", s.sid, s.target,
                 s.persistent_address, s.persistent_port)  # fmt: skip


def serve(opts: DaemonOptions, ready_fd: int | None = None) -> int:
    from pyiscsid import systemd
    from pyiscsid.ipc import IpcServer

    def report(message: str) -> None:
        if ready_fd is not None:
            os.write(ready_fd, message.encode())
            os.close(ready_fd)
        elif message != "0":
            sys.stderr.write(message)

    with_kernel = kernel_available()
    refusal = privilege_refusal(opts, with_kernel)
    if refusal:
        report(f"{PROG}: {refusal}\n")
        return int(Err.INVAL)
    try:
        daemon = Iscsid(opts)
        server = IpcServer(daemon.handle, sock=systemd.listen_socket())
    except IscsiError as e:
        report(f"{PROG}: {e.message}\n")
        return int(e.code)
    except OSError as e:
        report(f"{PROG}: cannot start: {e}\n")
        return int(Err.GENERIC)
    try:
        if opts.pidfile:
            _write_pidfile(opts.pidfile)
        drop_privileges(opts)
    except OSError as e:
        server.close()
        report(f"{PROG}: cannot start: {e}\n")
        return int(Err.GENERIC)
    preload()

    def on_signal(_signo: int, _frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signo, _frame: systemd.reload_in_background(daemon))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def watch_stop() -> None:
        daemon.stop_requested.wait()
        server.stop()

    threading.Thread(target=watch_stop, daemon=True).start()
    # Sessions a previous iscsid left in the kernel need their pings and recovery too.
    if with_kernel:
        start_event_service(daemon)
    log.info("iscsid %s ready on %s (initiator %s)", VERSION, server.path, daemon.initiator_name)
    report("0")
    systemd.notify(
        f"READY=1\nMAINPID={os.getpid()}\nSTATUS=ready, initiator {daemon.initiator_name}"
    )
    if with_kernel and opts.startup:
        from pyiscsid import startup
        from pyiscsid.records import nr_sessions

        threading.Thread(
            target=startup.run,
            args=(
                daemon.op_login,
                daemon.config,
                (daemon.initiator_name, daemon.initiator_alias),
                nr_sessions,
            ),
            name="startup",
            daemon=True,
        ).start()
    try:
        server.serve_forever()
    finally:
        systemd.notify("STOPPING=1")
        server.close()
        if daemon.events is not None:
            daemon.events.stop()
        if opts.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(opts.pidfile)
        log.info("iscsid exiting")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parsed = parse_args(argv)
    except UsageError as e:
        sys.stderr.write(f"{PROG}: {e}\nTry `{PROG} --help' for more information.\n")
        return 1
    if parsed == "help":
        sys.stdout.write(USAGE)
        return 0
    if parsed == "version":
        sys.stdout.write(f"{PROG} version {VERSION}\n")
        return 0
    assert isinstance(parsed, DaemonOptions)
    if parsed.config is not None:
        os.environ["ISCSID_CONFIG"] = parsed.config
    _setup_logging(parsed.foreground, parsed.debug)
    ready_fd = None if parsed.foreground else _daemonize()
    return serve(parsed, ready_fd)


if __name__ == "__main__":
    sys.exit(main())

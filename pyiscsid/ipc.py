"""iscsiadm <-> iscsid requests: one JSON object each way over a unix stream socket.

Wire format: the client sends one JSON object (`{"op": "login", ...}`) followed by a newline,
the server answers with one JSON object (`{"code": 0, "message": "", ...}`) and a newline, then
closes the connection. `code` is an open-iscsi exit code (`pyiscsid.errors.Err`).

Requests and their reply fields (besides `code` and `message`):

    ping                  -> {"version": "2.1.8", "pid": int}
    login {record_id}     -> {"sid": int}
    login_many {record_ids: [str]}  -> {"results": [login's reply ({"code", "message", "sid"})
                             for each id, in order]}: the logins run at once
    logout {sid}          -> {}
    logout {sid, cid}     -> {}: closes that connection alone (Logout reason 1); the session's
                             only connection: the session is logged out; SESS_NOT_FOUND (2)
                             for no such connection, BUSY (28) while the session recovers
    logout_many {sids: [int]}       -> {"results": [logout's reply for each sid, in order]}
    list_sessions         -> {"sessions": [sysfs.SessionInfo as a dict, by SID]}
    session_info {sid}    -> {"conn_state": int, "session_state": int}, open-iscsi's numbers
                             (conn: 0 FREE, 1 TRANSPORT WAIT, 2 IN LOGIN, 3 LOGGED IN,
                             4 IN LOGOUT, 5 LOGOUT REQUESTED, 6 CLEANUP WAIT; session: 0 NO
                             CHANGE, 1 CLEANUP, 2 REOPEN, 3 REDIRECT); SESS_NOT_FOUND (2) for
                             a session iscsid does not know
    stats {sid}           -> {"stats": {counter name: int}}: the names `iscsiadm -m session
                             -s` prints (txdata_octets, rxdata_octets, noptx_pdus, ...,
                             timeout_err: pyiscsiadm.output.SNMP_STATS), then any transport
                             counters (tx_sendpage_failures, rx_discontiguous_hdr,
                             eh_abort_cnt), printed under "iSCSI Extended:" in reply order;
                             the session's total (summed over its connections), and
                             "connections": [{"cid": int, "stats": {...}}, ...] by CID
    stop                  -> {}

The socket path is $ISCSID_SOCKET, default /run/iscsid.sock; under systemd's socket activation
(iscsid.socket) iscsid serves the socket it is handed instead (pyiscsid.systemd). Only peers
running as root or as the daemon's own uid are served (SO_PEERCRED).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import socket
import struct
import threading
import time

from pyiscsid.errors import Err, IscsiError
from pyiscsid.recordclass import recordclass

TYPE_CHECKING = False  # typing is not imported at run time: iscsiadm starts faster
if TYPE_CHECKING:
    from collections.abc import Callable

    # JSON objects: a request's arguments, a reply's fields
    Request = dict[str, object]
    Reply = dict[str, object]

DEFAULT_SOCKET = "/run/iscsid.sock"
MAX_MESSAGE = 1024 * 1024  # a request or a reply larger than this is refused
DEFAULT_TIMEOUT = 30.0  # seconds for an ordinary request (login passes its own)
READ_TIMEOUT = 5.0  # seconds the server waits for a client to finish its request
CONNECT_TIMEOUT = 10.0  # seconds a client waits for room in the daemon's listen queue


def socket_path() -> str:
    """The control socket path ($ISCSID_SOCKET or /run/iscsid.sock)."""
    return os.environ.get("ISCSID_SOCKET") or DEFAULT_SOCKET


def _read_message(sock: socket.socket, deadline_s: float | None) -> bytes:
    """Read up to a newline (or EOF), at most MAX_MESSAGE bytes."""
    sock.settimeout(deadline_s)
    buf = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_MESSAGE:
            raise ValueError(f"message larger than {MAX_MESSAGE} bytes")
        if b"\n" in chunk:
            break
    line, _, _ = bytes(buf).partition(b"\n")
    return line


def connect_errno(e: OSError) -> int:
    """The errno iscsiadm reports for a failed connect: a missing socket file counts as
    ECONNREFUSED (111), as with open-iscsi's abstract socket when no daemon listens."""
    if e.errno in (None, errno.ENOENT):
        return errno.ECONNREFUSED
    return e.errno


def _connect(sock: socket.socket, path: str, timeout: float) -> None:
    """Connect to the daemon's socket. A full listen queue (many iscsiadm at once, a daemon
    busy with logins) fails a Unix connect at once with EAGAIN: that is retried until
    `timeout`, as a TCP connect would wait for the listener."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(path)
            return
        except BlockingIOError as e:
            if time.monotonic() + delay >= deadline:
                raise IscsiError(
                    Err.ISCSID_NOTCONN, f"can not connect to iSCSI daemon ({connect_errno(e)})!"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        except OSError as e:
            raise IscsiError(
                Err.ISCSID_NOTCONN, f"can not connect to iSCSI daemon ({connect_errno(e)})!"
            ) from None


def request(op: str, timeout: float = DEFAULT_TIMEOUT, **args: object) -> Reply:
    """Send one request to iscsid and return its reply (a dict with at least `code`, `message`).

    The reply's `code` is not turned into an exception: callers report per-request failures
    in their own words. Raises IscsiError(ISCSID_NOTCONN) when no daemon listens,
    IscsiError(REQ_TIMEDOUT) when it does not answer within `timeout` seconds and
    IscsiError(ISCSID_COMM_ERR) when the answer is not a valid reply.
    """
    path = socket_path()
    payload = json.dumps({"op": op, **args}).encode() + b"\n"
    if len(payload) > MAX_MESSAGE:
        raise IscsiError(Err.INVAL, f"request {op!r} too large")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _connect(sock, path, min(timeout, CONNECT_TIMEOUT))
        try:
            sock.settimeout(timeout)
            sock.sendall(payload)
            line = _read_message(sock, timeout)
        except TimeoutError:
            raise IscsiError(Err.REQ_TIMEDOUT) from None
        except (OSError, ValueError) as e:
            raise IscsiError(Err.ISCSID_COMM_ERR, f"could not communicate to iscsid: {e}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("code"), int):
        raise IscsiError(Err.ISCSID_COMM_ERR, "could not communicate to iscsid: bad reply")
    reply.setdefault("message", "")
    return reply


def reply_code(reply: Reply) -> int:
    """The `code` of a reply `request` returned (it checked that there is one)."""
    code = reply["code"]
    return code if isinstance(code, int) else int(Err.ISCSID_COMM_ERR)


@recordclass
class PeerCred:
    """Who is on the other end of a connection (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


def peer_cred(sock: socket.socket) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


if TYPE_CHECKING:
    # handler(op, args, peer) -> reply fields; raise IscsiError to answer with its code.
    Handler = Callable[[str, Request, PeerCred], Reply]


def error_reply(code: int, message: str = "") -> Reply:
    err = IscsiError(code, message)
    return {"code": int(err.code), "message": err.message}


class IpcServer:
    """The daemon side: accept connections, read one bounded request, dispatch, reply.

    Each connection is served on its own thread so a long login does not hold up `ping` or
    `list_sessions`; the handler must be thread-safe. Malformed requests get an
    INVALID_MGMT_REQ reply; handler exceptions other than IscsiError get INTERNAL.
    """

    def __init__(
        self, handler: Handler, path: str | None = None, sock: socket.socket | None = None
    ) -> None:
        self.path = path or socket_path()
        self.handler = handler
        self._uid = os.getuid()
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        # `sock`: a socket already listening, handed over by systemd (socket activation,
        # pyiscsid.systemd); its path is systemd's, neither bound nor removed here
        self._owns_path = sock is None
        if sock is not None:
            self.sock = sock
            self.sock.setblocking(False)
            if path is None:  # the address systemd listens on, '@name' for an abstract one
                name = sock.getsockname()
                name = name.decode(errors="replace") if isinstance(name, bytes) else name
                self.path = "@" + name[1:] if name.startswith("\0") else name
            return
        with contextlib.suppress(FileNotFoundError):
            # a stale socket of a dead daemon; a live one would answer
            if self._alive():
                raise IscsiError(Err.BUSY, f"iscsid already running on {self.path}")
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(old)
        self.sock.listen(socket.SOMAXCONN)
        self.sock.setblocking(False)  # handle_one drains the queue until EAGAIN

    def _alive(self) -> bool:
        if not os.path.exists(self.path):
            raise FileNotFoundError(self.path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(self.path)
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def stop(self) -> None:
        """Make serve_forever return (safe from a signal handler or another thread)."""
        self._stop.set()

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.sock], [], [], poll_interval)
            except InterruptedError:
                continue
            if ready and not self._stop.is_set():
                self.handle_one()

    def handle_one(self) -> None:
        """Accept every waiting connection and serve each on its own thread."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setblocking(True)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._threads.add(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                reply = self._dispatch(conn)
                data = json.dumps(reply).encode() + b"\n"
                with contextlib.suppress(OSError):
                    conn.settimeout(READ_TIMEOUT)
                    conn.sendall(data)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _dispatch(self, conn: socket.socket) -> Reply:
        try:
            peer = peer_cred(conn)
        except OSError:
            return error_reply(Err.ACCESS)
        if peer.uid not in (0, self._uid):
            return error_reply(Err.ACCESS)
        try:
            line = _read_message(conn, READ_TIMEOUT)
            req = json.loads(line)
        except (OSError, ValueError) as e:
            return error_reply(Err.INVALID_MGMT_REQ, f"Unknown request: {e}")
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return error_reply(Err.INVALID_MGMT_REQ, "Unknown request: no op")
        op = req.pop("op")
        try:
            fields = self.handler(op, req, peer)
        except IscsiError as e:
            return {"code": int(e.code), "message": e.message}
        except Exception as e:  # a bug in a handler must not kill the daemon
            return error_reply(Err.INTERNAL, f"internal error: {type(e).__name__}: {e}")
        return {"code": 0, "message": "", **fields}

    def close(self, join_timeout: float = 2.0) -> None:
        """Stop listening, remove the socket file, wait briefly for requests in flight."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._owns_path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(join_timeout)

    def __enter__(self) -> IpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

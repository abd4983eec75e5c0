"""iscsid under systemd, without libsystemd: readiness, socket activation and reload.

- Readiness (iscsid.service, Type=notify): `notify("READY=1")` sends a datagram to the unix
  socket named by $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'), the
  sd_notify(3) protocol. Without $NOTIFY_SOCKET it does nothing.
- Socket activation (iscsid.socket): `listen_socket()` is the listening socket systemd passed as
  fd 3 (sd_listen_fds(3): $LISTEN_PID is our pid, $LISTEN_FDS the number of fds from 3 on); None
  when iscsid was started without one, and it binds its own ($ISCSID_SOCKET).
- Reload (ExecReload, SIGHUP): `reload(daemon)` re-reads iscsid.conf and the initiator name and
  tells systemd (RELOADING=1, then READY=1). What iscsid does next uses them: new logins log in
  with the new initiator name; the automatic logins and rediscovery at start are not run again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
from typing import Any

log = logging.getLogger("iscsid")

SD_LISTEN_FDS_START = 3


def _notify_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other kinds systemd may name are not for us


def notify(state: str) -> bool:
    """Send `state` ("READY=1", "STATUS=...", several lines at once) to systemd's notify socket.
    False when there is none or the message could not be sent (iscsid runs on regardless)."""
    value = os.environ.get("NOTIFY_SOCKET", "")
    address = _notify_address(value) if value else None
    if address is None:
        if value:
            log.debug("NOTIFY_SOCKET=%s: not a unix socket, not notified", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as e:
        log.debug("cannot notify %s: %s", value, e)
        return False
    return True


def listen_fds(unset_environment: bool = True) -> list[int]:
    """The fds systemd passed to this process (sd_listen_fds): [] unless $LISTEN_PID is our pid
    and $LISTEN_FDS a count. The variables are removed so that nothing iscsid starts sees them;
    the fds get FD_CLOEXEC."""
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))
    for fd in fds:
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
    return fds


def _is_listening_unix_stream(fd: int) -> bool:
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
        probe = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with probe:
        try:
            accepting = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:
            return False
        return (
            probe.family == socket.AF_UNIX and probe.type == socket.SOCK_STREAM and bool(accepting)
        )


def listen_socket() -> socket.socket | None:
    """The unix stream socket systemd passed, already listening; None when none was passed.
    Raises OSError when fds were passed but none of them is such a socket (a unit that gives
    iscsid the wrong kind of socket must fail, not make iscsid bind a path of its own)."""
    fds = listen_fds()
    if not fds:
        return None
    for fd in fds:
        if _is_listening_unix_stream(fd):
            return socket.socket(fileno=fd)
    raise OSError(f"systemd passed {len(fds)} fd(s), none of them a listening unix stream socket")


def reload(daemon: Any) -> bool:
    """Re-read iscsid.conf (-c / $ISCSID_CONFIG) and the initiator name (-i) into `daemon` (an
    Iscsid: its config, initiator_name, initiator_alias). A file that does not parse leaves
    everything as it was (logged). True when the new settings were taken."""
    from pyiscsid.config import initiator_name, load_config
    from pyiscsid.errors import IscsiError

    notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        config = load_config(daemon.opts.config)
        name, alias = initiator_name(daemon.opts.initiatorname)
    except IscsiError as e:
        log.error("reload: %s; the previous settings stay", e.message)
        notify(f"READY=1\nSTATUS=reload failed: {e.message}")
        return False
    daemon.config = config
    daemon.initiator_name, daemon.initiator_alias = name, alias
    log.info("reloaded the configuration (%d settings), initiator %s", len(config), name)
    notify(f"READY=1\nSTATUS=ready, initiator {name}")
    return True


def reload_in_background(daemon: Any) -> None:
    """reload(daemon) on a thread of its own: safe to call from a signal handler."""
    threading.Thread(target=reload, args=(daemon,), name="reload", daemon=True).start()

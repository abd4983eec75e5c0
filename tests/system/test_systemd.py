"""iscsid under systemd's protocols, exercised for real on the host (no kernel module needed):

- readiness: iscsid started with NOTIFY_SOCKET pointing at a datagram socket of the test's own
  sends READY=1 once its control socket accepts requests; SIGHUP re-reads iscsid.conf and the
  initiator name (RELOADING=1, READY=1); SIGTERM: STOPPING=1, exit 0;
- socket activation: `systemd-socket-activate -l PATH iscsid -f` holds PATH with no iscsid
  running; the first iscsiadm request through PATH starts iscsid on that socket (fd 3,
  LISTEN_FDS) and is answered by it; iscsid leaves the socket file, which is systemd's, alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyiscsid import systemd

BIN = Path(sys.executable).parent
IQN = "iqn.2026-12.test:systemd"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    e.update(
        ISCSI_DB_DIR=str(tmp_path / "db"),
        ISCSID_SOCKET=str(tmp_path / "iscsid.sock"),
        ISCSID_CONFIG=str(tmp_path / "iscsid.conf"),
        ISCSI_INITIATORNAME_FILE=str(tmp_path / "initiatorname.iscsi"),
        PYISCSI_SYSFS=str(tmp_path / "sys"),  # no sessions
    )
    (tmp_path / "initiatorname.iscsi").write_text("InitiatorName=iqn.2026-12.test:first\n")
    (tmp_path / "iscsid.conf").write_text("node.startup = manual\n")
    return e


def adm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "iscsiadm"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def ping(env: dict[str, str], timeout: float = 5.0) -> dict:
    """pyiscsid.ipc.request("ping") through env's ISCSID_SOCKET, in a child (the env differs)."""
    code = (
        "import json, sys; from pyiscsid import ipc; "
        f"print(json.dumps(ipc.request('ping', timeout={timeout})))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    import json

    return json.loads(r.stdout)


class Notifications:
    """A datagram socket iscsid notifies (NOTIFY_SOCKET), a path or an abstract name."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.address = address

    def next(self, timeout: float = 30.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def close(self) -> None:
        self.sock.close()


def _fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


@pytest.fixture(params=["path", "abstract"])
def notifications(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Notifications]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@pyiscsi-{os.getpid()}"
    n = Notifications(address)
    yield n
    n.close()


def test_ready_after_the_socket_accepts_then_reload_and_stop(
    env: dict[str, str], notifications: Notifications, tmp_path: Path
) -> None:
    d = subprocess.Popen(
        [str(BIN / "iscsid"), "-f", "-n"],
        env={**env, "NOTIFY_SOCKET": notifications.address},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = _fields(notifications.next())
        # READY=1 is the first message, and the control socket takes requests by then
        assert ready["READY"] == "1", ready
        assert ready["MAINPID"] == str(d.pid)
        assert "iqn.2026-12.test:first" in ready["STATUS"]
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(env["ISCSID_SOCKET"])  # listening already: no retry, no wait
        probe.close()
        assert ping(env)["pid"] == d.pid

        # ExecReload: SIGHUP re-reads the initiator name (and iscsid.conf)
        (tmp_path / "initiatorname.iscsi").write_text("InitiatorName=iqn.2026-12.test:second\n")
        d.send_signal(signal.SIGHUP)
        assert _fields(notifications.next())["RELOADING"] == "1"
        again = _fields(notifications.next())
        assert again["READY"] == "1" and "iqn.2026-12.test:second" in again["STATUS"], again
        # a file that does not parse: the previous settings stay, iscsid runs on
        (tmp_path / "iscsid.conf").write_text("this is not a setting\n")
        d.send_signal(signal.SIGHUP)
        assert _fields(notifications.next())["RELOADING"] == "1"
        failed = _fields(notifications.next())
        assert failed["READY"] == "1" and failed["STATUS"].startswith("reload failed"), failed
        assert ping(env)["pid"] == d.pid

        d.send_signal(signal.SIGTERM)
        assert _fields(notifications.next())["STOPPING"] == "1"
        assert d.wait(20) == 0
        assert not os.path.exists(env["ISCSID_SOCKET"])  # its own socket: removed
    finally:
        if d.poll() is None:
            d.kill()
        _out, err = d.communicate()
    assert "reloaded the configuration" in err and "initiator iqn.2026-12.test:second" in err
    assert "the previous settings stay" in err


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing"
)
def test_socket_activation_starts_iscsid_on_the_first_request(env: dict[str, str]) -> None:
    path = env["ISCSID_SOCKET"]
    created = adm(env, "-m", "node", "-o", "new", "-T", IQN, "-p", "127.0.0.1:3260")
    assert created.returncode == 0, created.stderr
    # systemd-socket-activate hands the command only the variables named with -E (as a unit
    # names them with Environment=)
    names = ("ISCSI_DB_DIR", "ISCSID_CONFIG", "ISCSI_INITIATORNAME_FILE", "PYISCSI_SYSFS", "PATH")
    setenv = [f"-E{name}={env[name]}" for name in names]
    sa = subprocess.Popen(
        ["systemd-socket-activate", "-l", path, *setenv, str(BIN / "iscsid"), "-f", "-n"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert sa.poll() is None, sa.stderr.read() if sa.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        inode = os.stat(path).st_ino
        time.sleep(0.3)
        assert "python" not in _exe(sa.pid), "iscsid started before any request"

        # The first request through the socket starts iscsid, which answers it: a login,
        # refused by iscsid itself as no iscsi_if module is loaded here (12)
        r = adm(env, "-m", "node", "-T", IQN, "-p", "127.0.0.1:3260", "--login")
        where = f"[iface: default, target: {IQN}, portal: 127.0.0.1,3260]"
        assert (r.returncode, r.stdout) == (12, f"Logging in to {where}\n"), r.stderr
        assert "initiator reported error (12 - iSCSI driver not found" in r.stderr
        assert "python" in _exe(sa.pid)  # systemd-socket-activate exec'd iscsid
        info = ping(env)
        assert (info["pid"], info["version"]) == (sa.pid, "2.1.8")
        assert os.stat(path).st_ino == inode  # served on the socket it was handed

        assert adm(env, "-k", "0").returncode == 0
        assert sa.wait(20) == 0
        assert os.stat(path).st_ino == inode  # not iscsid's to remove
    finally:
        if sa.poll() is None:
            sa.kill()
        _out, err = sa.communicate()
    assert f"ready on {path}" in err


def test_no_daemon_and_no_socket_is_still_exit_20(env: dict[str, str]) -> None:
    adm(env, "-m", "node", "-o", "new", "-T", IQN, "-p", "127.0.0.1:3260")
    r = adm(env, "-m", "node", "-T", IQN, "-p", "127.0.0.1:3260", "--login")
    assert r.returncode == 20
    assert "iscsiadm: can not connect to iSCSI daemon (111)!\n" in r.stderr


def test_listen_fds_are_only_for_the_pid_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ  # never handed on
    assert systemd.listen_socket() is None


def test_a_passed_fd_that_is_not_a_listening_socket_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # fd 3 as systemd would pass it: here a datagram socket, not a listening stream socket
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    saved = os.dup(3) if _fd_open(3) else None
    try:
        os.dup2(dgram.fileno(), 3)
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
        monkeypatch.setenv("LISTEN_FDS", "1")
        with pytest.raises(OSError, match="none of them a listening unix stream socket"):
            systemd.listen_socket()
    finally:
        if saved is not None:
            os.dup2(saved, 3)
            os.close(saved)
        else:
            os.close(3)
        dgram.close()


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_notify_without_a_socket_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.notify("READY=1") is False

"""A real tgtd (Debian's `tgt`) on 127.0.0.1, started on a free port for one test module."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Tgtd:
    """One tgtd process with its own control port, portal and backing files."""

    _next_control = 40 + os.getpid() % 1000

    def __init__(self, host: str = "127.0.0.1") -> None:
        if shutil.which("tgtd") is None:
            raise RuntimeError("tgtd not installed: run `make setup`")
        self.host = host
        self.port = free_port(host)
        Tgtd._next_control += 1
        self.control = Tgtd._next_control
        self.dir = Path(tempfile.mkdtemp(prefix="tgtd-"))
        self._tid = 0
        log = open(self.dir / "tgtd.log", "wb")
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(self.control), "--iscsi", f"portal={self.portal}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()  # tgtd has its own descriptor now
        self._wait_listening()

    @property
    def portal(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tgtd exited: {(self.dir / 'tgtd.log').read_text()}")
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                # the management socket comes up after the portal; probe it too
                if self._adm_ok("--mode", "sys", "--op", "show"):
                    return
            time.sleep(0.05)
        raise RuntimeError("tgtd did not start listening")

    def _adm_ok(self, *args: str) -> bool:
        r = subprocess.run(
            ["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args],
            capture_output=True,
        )
        return r.returncode == 0

    def adm(self, *args: str) -> str:
        r = subprocess.run(
            ["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"tgtadm {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def add_target(self, name: str, size_mb: int = 16, luns: int = 1) -> int:
        """Create a target with `luns` file-backed LUNs open to every initiator; return its tid."""
        self._tid += 1
        tid = str(self._tid)
        self.adm("--mode", "target", "--op", "new", "--tid", tid, "--targetname", name)
        for lun in range(1, luns + 1):
            img = self.dir / f"t{tid}-lun{lun}.img"
            with open(img, "wb") as f:
                f.truncate(size_mb << 20)
            self.adm(
                "--mode", "logicalunit", "--op", "new", "--tid", tid,
                "--lun", str(lun), "--backing-store", str(img),
            )  # fmt: skip
        self.adm("--mode", "target", "--op", "bind", "--tid", tid, "--initiator-address", "ALL")
        return self._tid

    def add_portal(self, portal: str) -> None:
        """Listen on one more portal (`ip:port`, IPv6 in brackets)."""
        self.adm("--mode", "portal", "--op", "new", "--param", f"portal={portal}")

    def add_chap(self, tid: int, user: str, secret: str, outgoing: bool = False) -> None:
        """Require CHAP on a target; `outgoing` sets the target's own (mutual) credentials."""
        self.adm("--mode", "account", "--op", "new", "--user", user, "--password", secret)
        args = ["--mode", "account", "--op", "bind", "--tid", str(tid), "--user", user]
        if outgoing:
            args.append("--outgoing")
        self.adm(*args)

    def set_param(self, tid: int, name: str, value: str) -> None:
        """Set a session parameter the target proposes/accepts (e.g. HeaderDigest)."""
        self.adm(
            "--mode", "target", "--op", "update", "--tid", str(tid),
            "--name", name, "--value", value,
        )  # fmt: skip

    def stop(self) -> None:
        # tgtd ignores SIGTERM while targets exist: SIGKILL it.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

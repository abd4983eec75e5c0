"""Run the hostile-target cases (or the fuzzer) against an initiator, inside the VM guest.

    hostile_run.py --initiator ours|inkernel --out FILE.json [--cases a,b,...]
                   [--fuzz SECONDS --seed N]

The initiator is already up (hostile.sh: our modules and iscsid, or Debian's open-iscsi with
the in-kernel iscsi_tcp); `ADM` names its iscsiadm. For each case: a fresh target
(hostile_target.Target, in this process) on its own port and IQN, a node record with a 5 s
replacement timeout and 2 s NOP-Out pings, a login, the case's I/O at TRIGGER_LBA in a thread
(O_DIRECT, 4 s SCSI command timeout), then: what the I/O returned (right data, an error,
wrong data, or nothing within 60 s), whether the session came back and I/O flows again, the
logout (its exit code and time), the kernel log of the case, and whether iscsid still runs.
Each case is a JSON object in the output list; `ok` is the verdict for our initiator.

The fuzz mode logs in again and again to a target whose PDUs are mutated from seed N, N+1, ...
(one seed a session) until SECONDS are over, with the same checks after every session.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import mmap
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hostile_target as H

ADM = os.environ.get("ADM", "iscsiadm")
IQN = "iqn.2026-12.test:hostile"
BAD = re.compile(
    r"Oops|BUG|WARNING|general protection|soft lockup|hung_task|blocked for more than|"
    r"refcount_t|list_add|list_del|KASAN|UBSAN|Call Trace|RIP:|kmemleak"
)
IO_TIMEOUT = 60.0
CMD_TIMEOUT = 4  # /sys/block/sdX/device/timeout


class Kmsg:
    """The kernel log from now on, read record by record from /dev/kmsg."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def new(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten records: go on
                    continue
                raise
            text = rec.decode(errors="replace")
            out.append(text.split(";", 1)[-1].rstrip("\n"))


def adm(*args: str, timeout: float = 120) -> tuple[int, str, float]:
    t0 = time.monotonic()
    try:
        p = subprocess.run([ADM, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout} s", time.monotonic() - t0
    return p.returncode, (p.stdout + p.stderr).strip(), time.monotonic() - t0


def session_of(iqn: str) -> Path | None:
    for s in Path("/sys/class/iscsi_session").glob("session*"):
        with contextlib.suppress(OSError):
            if (s / "targetname").read_text().strip() == iqn:
                return s
    return None


def session_state(s: Path | None) -> str:
    if s is None:
        return "gone"
    try:
        return (s / "state").read_text().strip()
    except OSError:
        return "gone"


def disk_of(s: Path, timeout: float) -> str | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for b in s.glob("device/target*/*:*:*:*/block/*"):
            dev = Path("/dev") / b.name
            if dev.exists():
                return str(dev)
        time.sleep(0.1)
    return None


def wait_for(pred: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


class Io:
    """The case's I/O in a thread: outcome ok / error: ERRNO / wrong / short / hang."""

    def __init__(self, dev: str, kind: str) -> None:
        self.dev, self.kind = dev, kind
        self.outcome = "hang"
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            self.outcome = self._io()
        except OSError as e:
            self.outcome = f"error: {errno.errorcode.get(e.errno or 0, e.errno)}"
        self.seconds = round(time.monotonic() - t0, 2)

    def _io(self) -> str:
        if self.kind == "fuzz":
            return self._fuzz_io()
        if self.kind == "mcs":
            return self._parallel_io()
        if self.kind == "after":
            fd = os.open(self.dev, os.O_RDONLY | os.O_DIRECT)
            try:
                return read_check(fd, 4096 * H.SECTOR, H.pattern(4096, 128))
            finally:
                os.close(fd)
        off = H.TRIGGER_LBA * H.SECTOR
        size = 1 << 20 if self.kind == "bigwrite" else H.IO_BYTES
        fd = os.open(self.dev, os.O_RDWR | os.O_DIRECT)
        try:
            if self.kind in ("write", "bigwrite"):
                data = os.urandom(size)
                wbuf = mmap.mmap(-1, size)
                wbuf.write(data)
                n = os.pwritev(fd, [wbuf], off)
                if n != size:
                    return f"short: {n}"
                expect = data
            else:
                expect = H.pattern(H.TRIGGER_LBA, size // H.SECTOR)
            out = read_check(fd, off, expect)
            if self.kind == "read2" and out == "ok":  # a second read, elsewhere
                out = read_check(fd, 4096 * H.SECTOR, H.pattern(4096, 128))
            return out
        finally:
            os.close(fd)

    def _fuzz_io(self, ops: int = 12) -> str:
        """Reads of sectors never written (their pattern known) and writes read back, in turn;
        the first outcome that is not "ok" ends it."""
        fd = os.open(self.dev, os.O_RDWR | os.O_DIRECT)
        try:
            for i in range(ops):
                if i % 2 == 0:
                    lba = 4096 + (i * 128) % 4096
                    out = read_check(fd, lba * H.SECTOR, H.pattern(lba, 128))
                else:
                    out = write_check(fd, (H.TRIGGER_LBA + (i * 128) % 8064) * H.SECTOR)
                if out != "ok":
                    return out
            return "ok"
        finally:
            os.close(fd)

    def _parallel_io(self, threads: int = 8, ops: int = 4) -> str:
        """`threads` writers at once, each writing 64 KiB blocks of its own and reading each
        back: commands on every connection of the session, the window full."""
        outcomes: list[str] = []

        def worker(t: int) -> None:
            fd = os.open(self.dev, os.O_RDWR | os.O_DIRECT)
            try:
                for i in range(ops):
                    out = write_check(fd, (H.TRIGGER_LBA + (t * ops + i) * 128) * H.SECTOR)
                    if out != "ok":
                        outcomes.append(out)
                        return
            except OSError as e:
                outcomes.append(f"error: {errno.errorcode.get(e.errno or 0, e.errno)}")
            finally:
                os.close(fd)

        workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return outcomes[0] if outcomes else "ok"


def write_check(fd: int, off: int) -> str:
    """IO_BYTES of random data written at `off` and read back."""
    data = os.urandom(H.IO_BYTES)
    wbuf = mmap.mmap(-1, H.IO_BYTES)
    wbuf.write(data)
    n = os.pwritev(fd, [wbuf], off)
    return read_check(fd, off, data) if n == H.IO_BYTES else f"short: {n}"


def read_check(fd: int, off: int, expect: bytes) -> str:
    buf = mmap.mmap(-1, len(expect))
    buf.write(b"\xee" * len(expect))  # what a skipped range would still hold
    n = os.preadv(fd, [buf], off)
    if n != len(expect):
        return f"short: {n}"
    return "ok" if buf[:] == expect else "wrong"


NODE_DEFAULTS = {  # hostile.sh puts them in iscsid.conf; -o new must have taken them
    "node.session.timeo.replacement_timeout": "5",
    "node.conn[0].timeo.noop_out_interval": "2",
    "node.conn[0].timeo.noop_out_timeout": "2",
}


def set_node(iqn: str, portal: str, digests: bool, mcs: bool = False) -> None:
    rc, out, _ = adm("-m", "node", "-T", iqn, "-p", portal)
    shown = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    for name, value in NODE_DEFAULTS.items():
        if shown.get(name) != value:
            raise SystemExit(f"the node record has {name} = {shown.get(name)}, not {value}")
    updates = []
    if digests:
        updates += [("node.conn[0].iscsi.HeaderDigest", "CRC32C"),
                    ("node.conn[0].iscsi.DataDigest", "CRC32C")]  # fmt: skip
    if mcs:  # ask for two connections: the target's answer to the second is the case
        updates.append(("node.session.iscsi.MaxConnections", "2"))
    for name, value in updates:
        rc, out, _ = adm("-m", "node", "-T", iqn, "-p", portal, "-o", "update",
                         "-n", name, "-v", value)  # fmt: skip
        if rc:
            raise SystemExit(f"cannot set {name}: {out}")


def connections_up(s: Path | None) -> int:
    """How many connections of session `s` are up (sysfs)."""
    if s is None:
        return 0
    sid = s.name.removeprefix("session")
    n = 0
    for c in Path("/sys/class/iscsi_connection").glob(f"connection{sid}:*"):
        with contextlib.suppress(OSError):
            n += (c / "state").read_text().strip() == "up"
    return n


def iscsid_alive() -> bool:
    pid = os.environ.get("ISCSID_PID")
    if pid:
        return Path(f"/proc/{pid}").exists()
    return subprocess.run(["pidof", "iscsid"], capture_output=True).returncode == 0


def run_one(name: str, target: H.Target, kmsg: Kmsg, io_kind: str, digests: bool,
            recover: bool, port: int, conns: int = 0) -> dict[str, object]:  # fmt: skip
    """One case; `conns`: the connections the session must have (MC/S cases), 0 for any."""
    iqn = f"{IQN}:{name.replace('_', '-')}"
    portal = f"127.0.0.1:{port}"
    r: dict[str, object] = {"case": name}
    rc, out, _ = adm("-m", "node", "-o", "new", "-T", iqn, "-p", portal)
    if rc:
        raise SystemExit(f"-o new: {out}")
    set_node(iqn, portal, digests, conns > 0)
    rc, out, secs = adm("-m", "node", "-T", iqn, "-p", portal, "--login", timeout=60)
    r["login_rc"] = rc
    s = session_of(iqn)
    if conns:  # MC/S: all up (login2: the further one failed alone, the leading one goes on)
        if conns > 1:
            wait_for(lambda: connections_up(s) >= conns, 10)
        r["conns"] = connections_up(s)
    dev = disk_of(s, 15) if s is not None and rc == 0 else None
    r["disk"] = bool(dev)
    if dev and io_kind != "none":
        with contextlib.suppress(OSError):
            Path(f"/sys/block/{Path(dev).name}/device/timeout").write_text(str(CMD_TIMEOUT))
        io = Io(dev, io_kind)
        limit = IO_TIMEOUT * (3 if io_kind == "fuzz" else 1)  # 12 operations, not one
        io.wait(limit)
        r["io"], r["io_s"] = io.outcome, io.seconds if io.outcome != "hang" else limit
    else:
        r["io"] = "none" if io_kind == "none" else "no disk"
    # the session comes back, or has ended
    wait_for(lambda: session_state(session_of(iqn)) in ("LOGGED_IN", "gone", "FREE"), 15)
    r["state"] = session_state(session_of(iqn))
    if r["state"] == "LOGGED_IN" and dev and os.path.exists(dev):
        after = Io(dev, "after")  # I/O flows again (in a thread: it may hang too)
        after.wait(30)
        r["after"] = after.outcome
    syncs = target.syncs
    r["devstate"] = "none"
    if dev:
        with contextlib.suppress(OSError):
            r["devstate"] = Path(f"/sys/block/{Path(dev).name}/device/state").read_text().strip()
    rc, out, secs = adm("-m", "node", "-T", iqn, "-p", portal, "--logout", timeout=90)
    # a disk with its write cache on is flushed before the logout, if the session is up
    r["flushed"] = target.syncs > syncs
    r["logout_rc"], r["logout_s"] = rc, round(secs, 2)
    if rc not in (0, 21):
        r["logout_out"] = out[-300:]
    r["gone"] = wait_for(lambda: session_of(iqn) is None, 10)
    adm("-m", "node", "-o", "delete", "-T", iqn, "-p", portal)
    time.sleep(0.3)
    log = kmsg.new()
    r["dmesg_bad"] = [line for line in log if BAD.search(line)][:5]
    r["iscsid"] = iscsid_alive()
    r["sync_failed"] = [line for line in log if "Synchronize Cache" in line and "failed" in line]
    ok_io = r["io"] in ("ok", "none") or str(r["io"]).startswith("error")
    if r.get("after") == "wrong":  # the read after the case: wrong data is never fine
        ok_io = False
    if (
        r["state"] == "LOGGED_IN"
        and r["devstate"] == "running"
        and (r["sync_failed"] or not r["flushed"])
    ):
        ok_io = False
    if recover:
        ok_io = r["io"] == "ok"
    if conns and (r["login_rc"] != 0 or r["conns"] != conns):
        ok_io = False
    if target.mcs:  # one CmdSN window over both connections, and both carried commands
        r["cmds_per_conn"] = dict(target.cmds_per_conn)
        r["violations"] = target.mcs_problems()[:5]
        if r["io"] != "ok" or r["violations"] or len(target.cmds_per_conn) < conns:
            ok_io = False
    r["ok"] = bool(ok_io and not r["dmesg_bad"] and r["iscsid"] and r["gone"]
                   and r["logout_rc"] in (0, 21))  # fmt: skip
    return r


def run_cases(names: list[str], out: Path, base_port: int) -> int:
    kmsg = Kmsg()
    results: list[dict[str, object]] = []
    failed = 0
    for i, name in enumerate(names):
        case = H.CASES[name]
        port = base_port + i
        target = H.Target(case, port=port)
        t0 = time.monotonic()
        try:
            conns = 1 if case.trigger == "login2" else case.conns if case.conns > 1 else 0
            r = run_one(name, target, kmsg, case.io, case.digests, case.recover, port, conns)
        finally:
            target.close()
        r["seconds"] = round(time.monotonic() - t0, 1)
        r["fired"] = target.fired
        r["recover_expected"] = case.recover
        results.append(r)
        failed += not r["ok"]
        print(json.dumps(r), flush=True)
        out.write_text(json.dumps(results, indent=1))
    return failed


def run_fuzz(seconds: float, seed: int, rate: float, out: Path, port: int) -> int:
    kmsg = Kmsg()
    end = time.monotonic() + seconds
    sessions: list[dict[str, object]] = []
    failed = 0
    n = 0
    while time.monotonic() < end:
        s = seed + n
        fz = H.Fuzzer(s, rate)
        target = H.Target(port=port, fuzz=fz)
        try:
            r = run_one(f"fuzz-{s}", target, kmsg, "fuzz", n % 3 == 2, False, port)
        finally:
            target.close()
        r.update(seed=s, sent=fz.sent, mutated=fz.mutated, mutations=fz.log[:20])
        # a fuzzed session may fail any way but these: wrong data, a hang, the kernel log
        r["ok"] = (r["io"] not in ("wrong", "hang") and not str(r["io"]).startswith("short")
                   and r.get("after") != "wrong"
                   and not r["dmesg_bad"] and r["iscsid"] and r["gone"])  # fmt: skip
        sessions.append(r)
        failed += not r["ok"]
        print(json.dumps({k: r[k] for k in ("seed", "io", "state", "logout_rc", "sent",
                                             "mutated", "ok")}), flush=True)  # fmt: skip
        out.write_text(json.dumps(sessions, indent=1))
        n += 1
        port += 1
    return failed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--initiator", choices=["ours", "inkernel"], required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", default="all")
    ap.add_argument("--fuzz", type=float, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.08)
    ap.add_argument("--port", type=int, default=3400)
    a = ap.parse_args()
    if not Path("/sys/module/sd_mod").exists():
        subprocess.run(["modprobe", "sd_mod"], check=True)
    if a.fuzz:
        failed = run_fuzz(a.fuzz, a.seed, a.rate, a.out, a.port)
    else:
        if a.cases == "all":
            names = list(H.CASES)
        elif a.cases == "all-but-known-crash":
            names = [n for n, c in H.CASES.items() if not c.kills_inkernel]
        else:
            names = a.cases.split(",")
        failed = run_cases(names, a.out, a.port)
    print(f"{failed} failed", flush=True)
    sys.exit(1 if failed and a.initiator == "ours" else 0)


if __name__ == "__main__":
    main()

"""OpenStack os-brick driven as Nova and Cinder drive it, in the guest of tests/vm/e2e/osbrick.sh.

    .venv-osbrick/bin/python osbrick_attach.py --initiator IQN --base IQN_PREFIX --out DIR

Runs with the os-brick venv's Python (not the project's: os-brick and its oslo libraries are
installed unmodified from PyPI there), in-process as root: the privsep contexts are put in
in-process mode, so neither a privsep daemon nor the root helper ('sudo', which must never run)
is used. `iscsiadm` is whatever comes first in PATH (osbrick.sh puts ours there and binds it over
/usr/sbin/iscsiadm as well).

Cases, in this order (targets made by osbrick.sh, portal 127.0.0.1:3260):
  props    get_connector_properties(): the initiator name of /etc/iscsi/initiatorname.iscsi
  plain    connect_volume (no CHAP) to BASE-plain LUN 0, 1 MiB written and read back with
           O_DIRECT, the udev by-path link, get_volume_paths, disconnect_volume
  chap     the same with auth_method CHAP to BASE-chap (its ACL requires CHAP)
  badchap  a wrong CHAP secret to BASE-chap: connect_volume raises, nothing stays logged in
  twolun   BASE-two LUN 0 and LUN 1: the second attach reuses the session, I/O on both, detach
           LUN 0 (the session stays, LUN 1 still reads back), detach LUN 1 (the session goes)

Each result is a `key=value` line appended to DIR/results.txt (`CASE=ok`, or `CASE=FAIL ...`
with what differed); os-brick's own log (DEBUG) goes to DIR/osbrick.log. The data written is
`random.Random("osbrick-" + KEY).randbytes(1 MiB)` so that the host side can recompute its
SHA-256.
Exit code 0 when every case passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import logging
import mmap
import os
import random
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

PORTAL = "127.0.0.1:3260"
ROOT_HELPER = "sudo"  # what Nova passes; in-process privsep must never run it
CHAP_USER = "osbrick"
CHAP_SECRET = "osbricksecret1"
CHAP_WRONG = "notthesecret1"
IO_SIZE = 1 << 20
IO_OFFSET = 1 << 20

log = logging.getLogger("osbrick_attach")


class Results:
    """The key=value lines of DIR/results.txt, and the mismatches of the case running."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mismatches: list[str] = []

    def put(self, key: str, value: object) -> None:
        text = str(value).replace("\n", " | ")
        with self.path.open("a") as f:
            f.write(f"{key}={text}\n")
        print(f"{key}={text}", flush=True)
        log.info("result %s=%s", key, text)

    def expect(self, key: str, actual: object, expected: object) -> None:
        """Record actual; a difference from expected fails the case (after the case has run on)."""
        self.put(key, actual)
        if actual != expected:
            self.mismatches.append(f"{key}: {actual!r} != {expected!r}")


class LoginFailures(logging.Handler):
    """Exit codes of os-brick's "Failed to login iSCSI target ..." warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.codes: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Failed to login iSCSI target") and isinstance(
            record.args, dict
        ):
            self.codes.append(int(record.args["err"]))


# --- the system as seen from outside os-brick -----------------------------------------------------


def sessions_to(iqn: str) -> list[str]:
    """SIDs of the iSCSI sessions to iqn (sysfs)."""
    sids = []
    for s in sorted(glob.glob("/sys/class/iscsi_session/session*")):
        try:
            if Path(s, "targetname").read_text().strip() == iqn:
                sids.append(s.rsplit("session", 1)[1])
        except OSError:
            continue
    return sids


def all_sessions() -> int:
    return len(glob.glob("/sys/class/iscsi_session/session*"))


def disk_name(path: str) -> str:
    return os.path.basename(os.path.realpath(path))


def sid_of_disk(dev: str) -> str:
    """The session a disk hangs under, from its sysfs path (.../sessionS/targetH:0:0/...)."""
    m = re.search(r"/session(\d+)/", os.path.realpath(f"/sys/block/{disk_name(dev)}"))
    return m.group(1) if m else "none"


def disk_size(dev: str) -> int:
    return int(Path(f"/sys/block/{disk_name(dev)}/size").read_text()) * 512


def disk_exists(dev: str) -> str:
    return "present" if os.path.exists(f"/sys/block/{disk_name(dev)}") else "absent"


def sysfs_wwid(dev: str) -> str:
    return Path(f"/sys/block/{disk_name(dev)}/device/wwid").read_text().strip()


def by_path(iqn: str, lun: int) -> str:
    return f"/dev/disk/by-path/ip-{PORTAL}-iscsi-{iqn}-lun-{lun}"


def link_target(link: str) -> str:
    """Where a udev link points (after udev has settled), or 'absent'."""
    settle()
    return os.path.realpath(link) if os.path.lexists(link) else "absent"


def settle() -> None:
    subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)


def node_rc(iqn: str) -> int:
    """Exit code of `iscsiadm -m node -T iqn -p PORTAL` (21: no record)."""
    return subprocess.run(
        ["iscsiadm", "-m", "node", "-T", iqn, "-p", PORTAL], capture_output=True, check=False
    ).returncode


def node_value(iqn: str, name: str) -> str:
    out = subprocess.run(
        ["iscsiadm", "-m", "node", "-T", iqn, "-p", PORTAL],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        key, _, value = line.partition(" = ")
        if key == name:
            return value
    return "missing"


def seed_of(key: str) -> str:
    """The seed of the data written to a volume (plain, chap, lun0, lun1)."""
    return f"osbrick-{key}"


def pattern(seed: str) -> bytes:
    return random.Random(seed).randbytes(IO_SIZE)


def direct_read(dev: str) -> str:
    """SHA-256 of IO_SIZE bytes at IO_OFFSET, read with O_DIRECT."""
    buf = mmap.mmap(-1, IO_SIZE)  # page aligned, as O_DIRECT wants
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        n = os.preadv(fd, [buf], IO_OFFSET)
    finally:
        os.close(fd)
    return hashlib.sha256(buf[:n]).hexdigest()


def direct_write_read(dev: str, seed: str) -> str:
    """Write the seed's pattern with O_DIRECT, fsync, read it back (O_DIRECT): its SHA-256."""
    buf = mmap.mmap(-1, IO_SIZE)
    buf[:] = pattern(seed)
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        n = os.pwritev(fd, [buf], IO_OFFSET)
        os.fsync(fd)
    finally:
        os.close(fd)
    if n != IO_SIZE:
        raise OSError(f"short write to {dev}: {n}")
    return direct_read(dev)


def sha(seed: str) -> str:
    return hashlib.sha256(pattern(seed)).hexdigest()


# --- the cases ------------------------------------------------------------------------------------


class Driver:
    def __init__(self, res: Results, initiator: str, base: str, connector_mod: Any) -> None:
        self.res = res
        self.initiator = initiator
        self.base = base
        self.connector_mod = connector_mod  # os_brick.initiator.connector
        self.failures = LoginFailures()
        logging.getLogger("os_brick").addHandler(self.failures)

    def connector(self) -> Any:
        # What Nova's LibvirtISCSIVolumeDriver does (device_scan_attempts: num_volume_scan_tries)
        return self.connector_mod.InitiatorConnector.factory(
            "ISCSI", ROOT_HELPER, use_multipath=False, device_scan_attempts=5
        )

    @staticmethod
    def props(iqn: str, lun: int, volume: str, **auth: str) -> dict[str, Any]:
        """connection_info['data'] as Cinder's LVM/LIO driver hands it to Nova."""
        return {
            "target_discovered": False,
            "target_portal": PORTAL,
            "target_iqn": iqn,
            "target_lun": lun,
            "volume_id": volume,
            "encrypted": False,
            "access_mode": "rw",
            "qos_specs": None,
            **auth,
        }

    def case_props(self) -> None:
        r = self.res
        props = self.connector_mod.get_connector_properties(
            ROOT_HELPER, "127.0.0.1", multipath=False, enforce_multipath=False
        )
        log.info("connector properties: %s", props)
        r.expect("props_initiator", props.get("initiator"), self.initiator)
        r.expect("props_multipath", props.get("multipath"), False)
        r.expect("props_ip", props.get("ip"), "127.0.0.1")

    def attach(self, key: str, conn: Any, props: dict[str, Any]) -> dict[str, str]:
        t0 = time.monotonic()
        info = conn.connect_volume(props)
        self.res.put(f"t_{key}_attach_ms", int((time.monotonic() - t0) * 1000))
        return info

    def attached_checks(
        self, key: str, conn: Any, props: dict[str, Any], info: dict[str, str], size: int
    ) -> None:
        """What must hold while a volume is attached: os-brick's result, the disk, its udev links,
        get_volume_paths, one session, the data written and read back."""
        r = self.res
        iqn, lun = props["target_iqn"], props["target_lun"]
        dev = info["path"]
        r.put(f"{key}_path", dev)
        r.expect(f"{key}_type", info["type"], "block")
        r.put(f"{key}_wwn", info["scsi_wwn"])
        r.put(f"{key}_sysfs_wwid", sysfs_wwid(dev))
        r.expect(f"{key}_byid", link_target(f"/dev/disk/by-id/scsi-{info['scsi_wwn']}"), dev)
        r.expect(f"{key}_size", disk_size(dev), size)
        r.expect(f"{key}_bypath", link_target(by_path(iqn, lun)), dev)
        r.expect(f"{key}_volume_paths", conn.get_volume_paths(props), [by_path(iqn, lun)])
        r.expect(f"{key}_sessions_attached", len(sessions_to(iqn)), 1)
        r.put(f"{key}_sid", sid_of_disk(dev))
        r.expect(f"{key}_sha256", direct_write_read(dev, seed_of(key)), sha(seed_of(key)))

    def detach_checks(
        self, key: str, conn: Any, props: dict[str, Any], info: dict[str, str], sessions: int
    ) -> None:
        """disconnect_volume; then the disk and its link are gone, `sessions` remain to the
        target (0: logged out and the node record deleted)."""
        r = self.res
        iqn = props["target_iqn"]
        t0 = time.monotonic()
        conn.disconnect_volume(props, info)
        r.put(f"t_{key}_detach_ms", int((time.monotonic() - t0) * 1000))
        r.expect(f"{key}_disk_after", disk_exists(info["path"]), "absent")
        r.expect(f"{key}_bypath_after", link_target(by_path(iqn, props["target_lun"])), "absent")
        r.expect(f"{key}_sessions_after", len(sessions_to(iqn)), sessions)
        if sessions == 0:
            r.expect(f"{key}_node_rc", node_rc(iqn), 21)

    def volume_case(self, key: str, iqn: str, size: int, **auth: str) -> None:
        conn = self.connector()
        props = self.props(iqn, 0, f"vol-{key}", **auth)
        info = self.attach(key, conn, props)
        try:
            self.attached_checks(key, conn, props, info, size)
            if auth:
                for name in ("authmethod", "username"):
                    value = node_value(iqn, f"node.session.auth.{name}")
                    self.res.put(f"{key}_node_auth_{name}", value)
        except BaseException:
            # do not leave it attached to the next case
            conn.disconnect_volume(props, info, force=True, ignore_errors=True)
            raise
        self.detach_checks(key, conn, props, info, 0)

    def case_plain(self) -> None:
        self.volume_case("plain", f"{self.base}-plain", 16 << 20)

    def case_chap(self) -> None:
        self.volume_case(
            "chap",
            f"{self.base}-chap",
            12 << 20,
            auth_method="CHAP",
            auth_username=CHAP_USER,
            auth_password=CHAP_SECRET,
        )

    def case_badchap(self) -> None:
        r = self.res
        iqn = f"{self.base}-chap"
        conn = self.connector()
        props = self.props(
            iqn,
            0,
            "vol-badchap",
            auth_method="CHAP",
            auth_username=CHAP_USER,
            auth_password=CHAP_WRONG,
        )
        self.failures.codes.clear()
        t0 = time.monotonic()
        try:
            info = conn.connect_volume(props)
        except Exception as e:
            r.put("t_badchap_refused_ms", int((time.monotonic() - t0) * 1000))
            r.expect("badchap_exc", type(e).__name__, "VolumeDeviceNotFound")
        else:
            r.expect("badchap_exc", f"none: attached {info}", "VolumeDeviceNotFound")
            conn.disconnect_volume(props, info, force=True, ignore_errors=True)
        # os-brick logs in once per try (3 tries: its retry decorator); iscsiadm's exit code 24
        # is ISCSI_ERR_LOGIN_AUTH_FAILED
        r.expect("badchap_login_rcs", ",".join(map(str, self.failures.codes)), "24,24,24")
        r.expect("badchap_sessions", all_sessions(), 0)
        r.expect("badchap_node_rc", node_rc(iqn), 21)
        r.expect("badchap_disks", len(glob.glob("/sys/block/sd*")), 0)

    def case_twolun(self) -> None:
        r = self.res
        iqn = f"{self.base}-two"
        conn = self.connector()
        p0 = self.props(iqn, 0, "vol-two-0")
        p1 = self.props(iqn, 1, "vol-two-1")
        attached: list[tuple[dict[str, Any], dict[str, str]]] = []
        try:
            i0 = self.attach("lun0", conn, p0)
            attached.append((p0, i0))
            self.attached_checks("lun0", conn, p0, i0, 20 << 20)
            # the second attach finds the session of the first one (no second login)
            i1 = self.attach("lun1", conn, p1)
            attached.append((p1, i1))
            self.attached_checks("lun1", conn, p1, i1, 8 << 20)
            r.expect("two_same_session", sid_of_disk(i1["path"]), sid_of_disk(i0["path"]))
            r.expect("two_distinct_disks", i0["path"] != i1["path"], True)
            # each LUN still holds its own data after the other one was written
            r.expect("two_lun0_reread", direct_read(i0["path"]), sha(seed_of("lun0")))
            attached.remove((p0, i0))
            self.detach_checks("lun0", conn, p0, i0, 1)
            r.expect("two_lun1_after_lun0_detach", direct_read(i1["path"]), sha(seed_of("lun1")))
            r.expect("two_lun1_bypath_kept", link_target(by_path(iqn, 1)), i1["path"])
            attached.remove((p1, i1))
            self.detach_checks("lun1", conn, p1, i1, 0)
        finally:
            for p, i in reversed(attached):  # a failure: do not leave them to the next case
                conn.disconnect_volume(p, i, force=True, ignore_errors=True)


def run_case(res: Results, name: str, fn: Callable[[], None]) -> bool:
    res.mismatches = []
    log.info("===== case %s", name)
    t0 = time.monotonic()
    try:
        fn()
    except Exception as e:
        log.error("case %s: %s\n%s", name, e, traceback.format_exc())
        res.mismatches.append(f"{type(e).__name__}: {e}")
    res.put(f"t_{name}_ms", int((time.monotonic() - t0) * 1000))
    res.put(name, "FAIL " + "; ".join(res.mismatches) if res.mismatches else "ok")
    return not res.mismatches


def setup_logging(out: Path) -> None:
    handler = logging.FileHandler(out / "osbrick.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # os-brick's own lines, the commands it runs (processutils) and this driver's
    for name in ("os_brick", "oslo_concurrency.processutils", "osbrick_attach"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--initiator", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    setup_logging(args.out)
    res = Results(args.out / "results.txt")

    t0 = time.monotonic()
    import os_brick
    from os_brick import privileged
    from os_brick.initiator import connector
    from os_brick.initiator import utils as initiator_utils
    from oslo_concurrency import lockutils
    from oslo_config import cfg

    # os-brick's `grep -F node.session.scan /sbin/iscsiadm` probe ran at that import
    res.put("manual_scan_probe", initiator_utils.ISCSI_SUPPORTS_MANUAL_SCAN)
    # In-process root: privileged functions run here, not through a privsep daemon (which would
    # start with the root helper).
    privileged.default.set_client_mode(False)
    privileged.brick_privsep_hide_output.set_client_mode(False)
    # A service's start-up: its configuration (lock_path for os-brick's external locks), then
    # os_brick.setup().
    lockutils.set_defaults(lock_path="/run/osbrick-locks")
    cfg.CONF([], project="pyiscsi-osbrick", default_config_files=[])
    os_brick.setup(cfg.CONF)
    res.put("t_import_ms", int((time.monotonic() - t0) * 1000))
    res.put("osbrick_version", version("os-brick"))

    d = Driver(res, args.initiator, args.base, connector)
    ok = True
    for name in ("props", "plain", "chap", "badchap", "twolun"):
        ok &= run_case(res, name, getattr(d, f"case_{name}"))
    res.put("manual_scan_used", initiator_utils.ISCSI_SUPPORTS_MANUAL_SCAN)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

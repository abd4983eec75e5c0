"""OpenStack os-brick against our stack, in the VM (one boot; tests/vm/e2e/osbrick.sh sets the
guest up, tests/vm/e2e/osbrick_attach.py drives os-brick): os-brick unmodified from PyPI (in
.venv-osbrick, made by `make setup`), in-process as root, with our kernel modules, iscsid and
iscsiadm, LIO targets in the guest and systemd-udevd making the /dev/disk links.

Cases: the connector properties (our initiator name); attach without CHAP, data written and read
back, detach; the same with CHAP; a wrong CHAP secret refused with nothing left logged in; two
LUNs of one target on one session, detached one after the other; the udev by-path and by-id links
of every attached disk pointing at the disk os-brick returned.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path

import pytest

from .harness import VmResult, parse_results, run_in_vm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "vm" / "e2e" / "osbrick.sh"
OSBRICK_PYTHON = ROOT / ".venv-osbrick" / "bin" / "python"

pytestmark = pytest.mark.vm

OSBRICK_VERSION = "7.1.1"  # the Makefile's OSBRICK_VERSION
INITIATOR = "iqn.2026-11.test:osbrick-host"
BASE = "iqn.2003-01.org.linux-iscsi.vm:osbrick"
PORTAL = "127.0.0.1:3260"
IO_SIZE = 1 << 20
# key: (target, LUN, size, the unit serial osbrick.sh gives the LUN); osbrick-KEY seeds its data
VOLUMES = {
    "plain": (f"{BASE}-plain", 0, 16 << 20, "a1a1a1a1-5eed-4bad-8000-000000000001"),
    "chap": (f"{BASE}-chap", 0, 12 << 20, "c2c2c2c2-5eed-4bad-8000-000000000002"),
    "lun0": (f"{BASE}-two", 0, 20 << 20, "d3d3d3d3-5eed-4bad-8000-000000000003"),
    "lun1": (f"{BASE}-two", 1, 8 << 20, "e4e4e4e4-5eed-4bad-8000-000000000004"),
}
CASES = ("props", "plain", "chap", "badchap", "twolun", "done")


def expected_sha256(key: str) -> str:
    """What osbrick_attach.py wrote to a volume: random.Random("osbrick-KEY").randbytes(1 MiB)."""
    return hashlib.sha256(random.Random(f"osbrick-{key}").randbytes(IO_SIZE)).hexdigest()


def expected_wwn(serial: str) -> str:
    """The WWN as udev and os-brick spell it ('3' for NAA) of a LIO LUN with this unit serial:
    NAA 6, LIO's IEEE company ID 0x001405, then the first 25 hex digits of the serial."""
    return "36001405" + re.sub(r"[^0-9a-f]", "", serial.lower())[:25]


def log_section(log: str, case: str) -> str:
    """os-brick's log lines of one case of osbrick_attach.py."""
    start = log.index(f"===== case {case}\n")
    end = log.find("===== case ", start + 1)
    return log[start : end if end >= 0 else len(log)]


def message(line: str) -> str:
    """A log line without its date: 'LEVEL logger message'."""
    return line.split(" ", 2)[2]


@pytest.fixture(scope="module")
def osbrick_run(modules: None) -> tuple[VmResult, dict[str, str], str]:
    if not OSBRICK_PYTHON.exists():
        reason = f"{OSBRICK_PYTHON} is missing: `make setup` (or `make osbrick-venv`) makes it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    result = run_in_vm(SCRIPT, timeout=900)  # ≈2 min on an idle host; TCG slows with load
    res = parse_results(result.out_dir)
    log_path = result.out_dir / "osbrick.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    return result, res, log


def test_osbrick(
    osbrick_run: tuple[VmResult, dict[str, str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    result, res, log = osbrick_run
    tail = result.output[-6000:]
    for key in CASES:
        assert res.get(key) == "ok", f"{key}: {res.get(key)!r}\n{tail}"
    result.check()  # exit code 0 and a clean dmesg
    assert res["osbrick_version"] == OSBRICK_VERSION

    # our iscsid and iscsiadm, and no root helper
    assert res["iscsid"] == f"{ROOT}/.venv/bin/python {ROOT}/.venv/bin/iscsid -f -d 1"
    assert res["sudo_called"] == "no"

    # 1. connector properties
    assert res["props_initiator"] == INITIATOR
    assert res["props_multipath"] == "False"

    # 2., 3., 6. attach (no CHAP, CHAP), data, udev links, detach
    for key in ("plain", "chap", "lun0", "lun1"):
        iqn, lun, size, serial = VOLUMES[key]
        dev = res[f"{key}_path"]
        assert re.fullmatch(r"/dev/sd[a-z]+", dev), dev
        assert res[f"{key}_type"] == "block"
        assert res[f"{key}_size"] == str(size)
        assert res[f"{key}_wwn"] == expected_wwn(serial)
        assert res[f"{key}_sysfs_wwid"] == "naa." + expected_wwn(serial)[1:]
        assert res[f"{key}_byid"] == dev
        assert res[f"{key}_bypath"] == dev
        link = f"/dev/disk/by-path/ip-{PORTAL}-iscsi-{iqn}-lun-{lun}"
        assert res[f"{key}_volume_paths"] == repr([link])
        assert res[f"{key}_sessions_attached"] == "1"
        assert res[f"{key}_sha256"] == expected_sha256(key)
        assert res[f"{key}_disk_after"] == "absent"
        assert res[f"{key}_bypath_after"] == "absent"
    for key in ("plain", "chap", "lun1"):  # the last volume of its target: logged out, no node
        assert res[f"{key}_sessions_after"] == "0"
        assert res[f"{key}_node_rc"] == "21"
    assert res["chap_node_auth_authmethod"] == "CHAP"
    assert res["chap_node_auth_username"] == "osbrick"

    # 4. two LUNs, one session: one login, LUN 0 detached with the session kept
    assert res["two_same_session"] == res["lun0_sid"] == res["lun1_sid"]
    assert res["lun0_path"] != res["lun1_path"]
    assert res["two_lun0_reread"] == expected_sha256("lun0")
    assert res["lun0_sessions_after"] == "1"
    assert res["two_lun1_after_lun0_detach"] == expected_sha256("lun1")
    assert res["two_lun1_bypath_kept"] == res["lun1_path"]
    twolun = log_section(log, "twolun")
    two = re.escape(f"{BASE}-two -p {PORTAL}")
    assert len(re.findall(rf"Running cmd \(subprocess\): iscsiadm -m node -T {two} --login$",
                          twolun, re.M)) == 1, "not one login for the two LUNs"  # fmt: skip
    assert len(re.findall(rf"Running cmd \(subprocess\): iscsiadm -m node -T {two} --logout$",
                          twolun, re.M)) == 1, "not one logout for the two LUNs"  # fmt: skip

    # 5. a wrong CHAP secret: three tries (os-brick's retry), each login refused with exit 24
    assert res["badchap_exc"] == "VolumeDeviceNotFound"
    assert res["badchap_login_rcs"] == "24,24,24"
    assert res["badchap_sessions"] == "0"
    assert res["badchap_node_rc"] == "21"
    assert res["badchap_disks"] == "0"

    # nothing left behind
    for key in ("leftover_sessions", "leftover_disks", "leftover_nodes"):
        assert res[key] == "0", f"{key}: {res[key]}"

    plain = log_section(log, "plain")
    wanted = (
        "Trying to connect to iSCSI portal",
        "<== connect_volume: return",
        "Remove SCSI device",
        "Disconnecting from:",
        "<== disconnect_volume: return",
    )
    lines = [message(next(line for line in plain.splitlines() if w in line))[:160] for w in wanted]
    with capsys.disabled():
        print(
            f"\n[vm os-brick {res['osbrick_version']}] import {res['t_import_ms']} ms; "
            f"attach/detach ms: plain {res['t_plain_attach_ms']}/{res['t_plain_detach_ms']}, "
            f"chap {res['t_chap_attach_ms']}/{res['t_chap_detach_ms']}, "
            f"LUN 0 {res['t_lun0_attach_ms']}/{res['t_lun0_detach_ms']}, "
            f"LUN 1 {res['t_lun1_attach_ms']}/{res['t_lun1_detach_ms']}; "
            f"wrong CHAP refused in {res['t_badchap_refused_ms']} ms; "
            f"boot {result.boot_seconds} s; manual scan probe {res['manual_scan_probe']}"
        )
        for line in lines:
            print(f"  {line}")

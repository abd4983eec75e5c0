"""VM tier for the kernel modules alone: kdrive.py drives iscsi_if/iscsi_tcp over netlink.

bringup.sh: netlink error cases, login/bind/start/scan, sysfs + udev path_id, 32 MiB
O_DIRECT written and read back, a 32-byte CDB (extended-CDB AHS), fio verify at queue
depth 64 against a CmdSN window of 16, connection recovery with I/O in flight, logout,
destroy with I/O outstanding, the owner process killed, rmmod refused then clean. Run in
the default mode (with the in-kernel initiator's MB/s in the same boot) and with CRC32C
digests and solicited-only writes (MaxOutstandingR2T=4).
eh.sh: SCSI error handling against a SIGSTOPped tgtd, with and without recovery.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from vm.harness import VmResult, run_in_vm, vm_available

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(vm_available() is not None, reason=str(vm_available())),
    pytest.mark.usefixtures("modules"),
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def _results(r: VmResult) -> dict[str, str]:
    path = r.out_dir / "results.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines if "=" in line)


BRINGUP_PASSES = [
    "modules loaded",
    "netlink error cases",
    "sysfs layout (udev path_id: ip-127.0.0.1:3260-iscsi-"
    "iqn.2003-01.org.linux-iscsi.vm:kbringup-lun-0)",
    "32 MiB written and read back identical",
    "buffered I/O",
    "32-byte CDB through the AHS: ",
    "fio randwrite QD64 (window 16), 512 B-256 KiB, crc32c verified",
    "connection recovery with I/O in flight",
    "logout: disk and session gone",
    "destroy with I/O outstanding",
    "process killed: session alive, rmmod refused",
    "session torn down by another process",
    "modules unloaded",
]


def _check_bringup(r: VmResult) -> dict[str, str]:
    r.check()
    passed = [ln.removeprefix("PASS: ") for ln in r.output.splitlines() if ln.startswith("PASS: ")]
    for want in BRINGUP_PASSES:
        assert any(p.startswith(want) for p in passed), want
    res = _results(r)
    assert res.get("done") == "1"
    return res


def test_bringup_default_mode() -> None:
    res = _check_bringup(run_in_vm(HERE / "bringup.sh", timeout=600))
    print(
        f"\nour modules: dd 1 MiB O_DIRECT write {res['write_mbs']} MB/s, read "
        f"{res['read_mbs']} MB/s; in-kernel initiator, same boot: write "
        f"{res.get('inkernel_write_mbs', '-')} read {res.get('inkernel_read_mbs', '-')} MB/s"
    )
    assert float(res["write_mbs"]) > 0 and float(res["read_mbs"]) > 0


def test_bringup_digests_and_solicited_writes() -> None:
    r = run_in_vm(
        HERE / "bringup.sh",
        "nocompare",
        "lio:HeaderDigest=CRC32C",
        "lio:DataDigest=CRC32C",
        "login:HeaderDigest=CRC32C",
        "login:DataDigest=CRC32C",
        "lio:ImmediateData=No",
        "login:ImmediateData=No",
        "lio:MaxOutstandingR2T=4",
        "login:MaxOutstandingR2T=4",
        "lio:MaxBurstLength=65536",
        "login:MaxBurstLength=65536",
        timeout=600,
    )
    _check_bringup(r)
    assert "'HeaderDigest': 'CRC32C'" in r.output
    assert "'MaxOutstandingR2T': '4'" in r.output
    stats = dict(
        ln.split(" ", 1)
        for ln in r.output.splitlines()
        if ln.endswith(tuple("0123456789")) and ln.split(" ", 1)[0].endswith(("_pdus", "_err"))
    )
    assert int(stats["r2t_pdus"]) > 0
    assert int(stats["digest_err"]) == 0


def test_error_handling() -> None:
    r = run_in_vm(HERE / "eh.sh", timeout=600).check()
    assert "PASS: EH + recovery: I/O completed, data intact, device running" in r.output
    assert "PASS: no recovery: I/O failed after the replacement timeout, no hang" in r.output
    assert "task management function 1 got no response" in r.dmesg
    assert _results(r).get("done") == "1"

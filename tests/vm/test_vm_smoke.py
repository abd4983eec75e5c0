"""VM tier: the harness itself, and login + O_DIRECT I/O with Debian's open-iscsi (baseline)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from vm.harness import RC_DMESG, RC_TIMEOUT, VM_DIR, VmResult, run_in_vm, vm_available

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(vm_available() is not None, reason=str(vm_available())),
]

GUEST = VM_DIR / "guest"
ZERO_8M_SHA256 = hashlib.sha256(bytes(8 << 20)).hexdigest()


def results(r: VmResult) -> dict[str, str]:
    lines = (r.out_dir / "results.txt").read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines)


@pytest.fixture(scope="module")
def smoke() -> VmResult:
    return run_in_vm(GUEST / "smoke.sh", timeout=300).check()


def test_boot_is_quick_and_dmesg_clean(smoke: VmResult) -> None:
    assert smoke.boot_seconds is not None and smoke.boot_seconds < 60
    assert "Run /init as init process" in smoke.dmesg
    # the in-kernel initiator made a host: the full dmesg came back
    assert "scsi host" in smoke.dmesg
    assert smoke.dmesg_problems == ""
    assert (smoke.out_dir / "dmesg.txt").read_text() == smoke.dmesg


@pytest.mark.parametrize("tag", ["lio", "tgt"])
def test_odirect_data_reads_back(smoke: VmResult, tag: str) -> None:
    res = results(smoke)
    assert re.fullmatch(r"[0-9a-f]{64}", res["data.sha256"])
    assert res[f"{tag}.read.sha256"] == res["data.sha256"]
    # the 8 MiB before the write offset are still the fresh disk's zeros
    assert res[f"{tag}.head.sha256"] == ZERO_8M_SHA256
    assert res[f"{tag}.size"] == str(64 << 20)
    assert float(res[f"{tag}.write_mbs"]) > 0 and float(res[f"{tag}.read_mbs"]) > 0
    assert re.search(rf"^BASELINE {tag} in-kernel iscsi_tcp: .* MB/s", smoke.output, re.M)


def test_logout_and_unload(smoke: VmResult) -> None:
    res = results(smoke)
    assert res["sessions_left"] == "0"
    assert res["modules_left"] == "0"
    assert res["done"] == "1"
    assert "Logout of [sid: 2, target: iqn.2026-11.test:tgt, portal: 127.0.0.1,3261]" in (
        smoke.output
    )


def test_exit_code_args_and_dmesg_warning_reach_the_host(tmp_path: Path) -> None:
    script = tmp_path / "guest.sh"  # /tmp on the host: run-vm must bring it along
    script.write_text(
        'printf "<%s>" "$@" > "$VM_OUT/args"; echo "pwd=$PWD"; touch /etc/x /var/x /root/x\n'
        'echo "WARNING: planted by the harness test" > /dev/kmsg; exit 0\n'
    )
    r = run_in_vm(script, "a b", "", "c'd", timeout=120)
    assert r.rc == RC_DMESG, r.harness_log
    assert (r.out_dir / "args").read_text() == "<a b><><c'd>"
    assert "pwd=/work/main" in r.output or f"pwd={VM_DIR.parent.parent}" in r.output
    assert "WARNING: planted by the harness test" in r.dmesg_problems
    assert "dmesg holds kernel warnings" in r.harness_log


def test_script_exit_code_and_hang(tmp_path: Path) -> None:
    script = tmp_path / "rc.sh"
    script.write_text("echo to-stdout; echo to-stderr >&2; exit 7\n")
    r = run_in_vm(script, timeout=120)
    assert r.rc == 7
    assert r.output == "to-stdout\nto-stderr\n"
    hang = tmp_path / "hang.sh"
    hang.write_text("echo before-hang; sleep 1000\n")
    r = run_in_vm(hang, timeout=45)  # boot takes 6-20 s under TCG, more on a loaded host
    assert r.rc == RC_TIMEOUT
    assert r.timed_out
    assert r.output == "before-hang\n"
    assert "TIMEOUT" in r.harness_log

"""End-to-end in the VM: our kernel modules, our iscsid and iscsiadm, LIO and tgtd targets, real
data (tests/vm/e2e/datapath.sh does the work in the guest; this side builds the modules, boots,
and checks what came back). Prints the dd MB/s of our modules next to the in-kernel initiator's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .harness import parse_results, run_in_vm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "vm" / "e2e" / "datapath.sh"

pytestmark = pytest.mark.vm


def test_datapath_end_to_end(modules: None, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_in_vm(SCRIPT, timeout=600)
    res = parse_results(result.out_dir)
    result.check()
    assert res.get("fail") is None, res["fail"]
    for key in ("session_listing", "stats", "data", "logout", "orphan_teardown", "done"):
        assert res.get(key) == "ok", f"{key}: {res.get(key)!r}\n{result.output[-3000:]}"
    session = (result.out_dir / "session.txt").read_text()
    sid_lines = re.findall(
        r"^tcp: \[(\d+)\] 127\.0\.0\.1:(3260|3261),1 (\S+) \(non-flash\)$", session, re.M
    )
    assert len(sid_lines) == 2, session
    assert "PASS" in result.output
    rates = {k: float(res[k]) for k in res if k.endswith("_MBps")}
    assert set(rates) == {
        "ours_write_MBps",
        "ours_read_MBps",
        "inkernel_write_MBps",
        "inkernel_read_MBps",
    }
    assert all(v > 0 for v in rates.values()), rates
    with capsys.disabled():
        print(
            "\n[vm datapath] 1 MiB O_DIRECT dd against LIO ramdisk, same boot (MB/s): "
            f"ours write {rates['ours_write_MBps']:.1f} read {rates['ours_read_MBps']:.1f}; "
            f"in-kernel write {rates['inkernel_write_MBps']:.1f} "
            f"read {rates['inkernel_read_MBps']:.1f}; "
            f"login {res.get('login_seconds', '?')} s; boot {result.boot_seconds} s"
        )

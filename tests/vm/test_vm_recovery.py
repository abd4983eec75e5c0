"""Connection recovery in the VM (one boot): our modules and iscsid against an LIO ramdisk whose
portal group goes away and comes back (tests/vm/e2e/recovery.sh does the work in the guest).

1. fio with crc32c verification across a 10 s outage: no errors, same SID, recovery logged;
   prints the longest completion latency fio saw (the pause the application saw).
2. An outage longer than a 5 s replacement timeout: I/O fails in bounded time, new I/O fails
   fast, the session comes back by itself when the target returns and new data verifies.
"""

from __future__ import annotations

import re

import pytest

from .harness import parse_results, run_in_vm
from .test_vm_datapath import SCRIPT as _DATAPATH

SCRIPT = _DATAPATH.parent / "recovery.sh"

pytestmark = pytest.mark.vm


def test_recovery_end_to_end(modules: None, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_in_vm(SCRIPT, timeout=420)
    res = parse_results(result.out_dir)
    tail = result.output[-4000:]
    assert res.get("fail") is None, f"{res['fail']}\n{tail}"
    result.check()
    for key in ("fio_outage", "replacement_timeout", "done"):
        assert res.get(key) == "ok", f"{key}: {res.get(key)!r}\n{tail}"
    # 1. the outage cost fio a pause, not an error
    assert res["fio_errors"] == "0"
    assert int(res["fio_written_bytes"]) == 48 << 20
    assert int(res["fio_verified_bytes"]) == 48 << 20
    assert int(res["t1_outage_ms"]) >= 10_000
    line = (result.out_dir / "recovery-line.txt").read_text()
    assert re.search(r"connection\d+:0 is operational after recovery \(\d+ attempts\)", line)
    pause_ms = int(res["fio_max_clat_ms"])
    assert pause_ms >= 9_000, "fio never waited for the outage: was it writing?"
    # 2. past the replacement timeout: bounded failure, fast failure, then back by itself
    assert int(res["t2_io_failed_after_ms"]) < 15_000
    assert int(res["t2_new_io_failed_after_ms"]) < 3_000
    # 3. a silently stalled target: the NOP-Out ping timeout finds it, recovery follows
    assert res.get("nop_timeout") == "ok", f"nop_timeout: {res.get('nop_timeout')!r}\n{tail}"
    assert int(res["t3_detected_ms"]) < 12_000
    with capsys.disabled():
        print(
            f"\n[vm recovery] 10 s portal group outage: longest fio completion {pause_ms} ms, "
            f"session back {res['t1_back_after_target_ms']} ms after the target; "
            f"5 s replacement timeout: I/O failed after {res['t2_io_failed_after_ms']} ms, "
            f"new I/O after {res['t2_new_io_failed_after_ms']} ms, "
            f"back {res['t2_back_after_target_ms']} ms after the target"
        )

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
    _check_parity(result.out_dir)
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


def _normalise(text: str) -> str:
    """-P output with what differs between two logins (SID, host and disk names) masked."""
    text = re.sub(r"^(\t\tSID: )\d+$", r"\1N", text, flags=re.M)
    text = re.sub(r"^(\t\tHost Number: )\d+", r"\1N", text, flags=re.M)
    text = re.sub(r"^(\t\tscsi)\d+ ", r"\1N ", text, flags=re.M)
    return re.sub(r"(Attached scsi disk )sd[a-z]+", r"\1sdX", text)


def _stats(text: str) -> dict[str, dict[str, int]]:
    """`-s` output as {section: {counter: value}} (the first line, the session's, dropped)."""
    sections: dict[str, dict[str, int]] = {}
    current: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        if line.startswith("\t"):
            name, value = line.strip().split(": ")
            current[name] = int(value)
        else:
            current = sections.setdefault(line, {})
    return sections


def _check_parity(out: Path) -> None:
    """Our iscsiadm and open-iscsi's, each over its own data path, on the same LIO target after
    the same login and I/O (datapath.sh's parity_capture): -P 1 and -P 3 identical but for the
    SID, host and disk names; -s with the same sections and counters, counted the same way."""
    for level in (1, 3):
        ours = (out / f"ours-P{level}.txt").read_text()
        theirs = (out / f"inkernel-P{level}.txt").read_text()
        assert _normalise(ours) == _normalise(theirs), f"-P {level}:\n{ours}\n---\n{theirs}"
    ours_s = _stats((out / "ours-stats.txt").read_text())
    theirs_s = _stats((out / "inkernel-stats.txt").read_text())
    assert list(ours_s) == ["iSCSI SNMP:", "iSCSI Extended:"], ours_s
    assert [list(v) for v in ours_s.values()] == [list(v) for v in theirs_s.values()]
    for side, st in (("ours", ours_s), ("in-kernel", theirs_s)):
        snmp = st["iSCSI SNMP:"]
        # every command answered: status in a SCSI Response or in the last Data-In (phase collapse)
        assert snmp["scsirsp_pdus"] == snmp["scsicmd_pdus"], (side, snmp)
        # octets are whole PDUs on the wire: 48-byte headers plus the 1 MiB written and read
        sent = 48 * (snmp["scsicmd_pdus"] + snmp["dataout_pdus"] + snmp["noptx_pdus"])
        assert snmp["txdata_octets"] >= sent + 1048576, (side, snmp)
        assert snmp["rxdata_octets"] >= 48 * snmp["datain_pdus"] + 1048576, (side, snmp)
    ours_cmds = ours_s["iSCSI SNMP:"]["scsicmd_pdus"]
    theirs_cmds = theirs_s["iSCSI SNMP:"]["scsicmd_pdus"]
    assert abs(ours_cmds - theirs_cmds) <= max(8, theirs_cmds // 10), (ours_s, theirs_s)

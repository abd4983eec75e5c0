"""The hostile-target tier: our data path against a target that logs in correctly and then
misbehaves during I/O, one case per misbehaviour (tests/vm/e2e/hostile_target.CASES), then a
bounded run of the PDU fuzzer (the same target mutating the PDUs it sends, from fixed seeds),
all in one VM boot (tests/vm/e2e/hostile.sh, hostile_run.py).

Every case must end with: the I/O either right or failed (never wrong data with success, never
a hang), the session recovered or ended cleanly, a working logout, iscsid alive, no kernel
warning in the case's log, and both modules unloading at the end. The cases the in-kernel
initiator recovers from must complete the I/O with the right data (replacement_timeout 5).

`make fuzz SECONDS=N SEED=S` runs the fuzzer alone for longer; `make hostile-compare` runs the
cases against the in-kernel initiator too, for the side-by-side table (report only).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from .harness import parse_results, run_in_vm
from .test_vm_datapath import SCRIPT as _DATAPATH

SCRIPT = _DATAPATH.parent / "hostile.sh"
FUZZ_SECONDS = int(os.environ.get("HOSTILE_FUZZ_SECONDS", "150"))
FUZZ_SEED = int(os.environ.get("HOSTILE_FUZZ_SEED", "1000"))

pytestmark = pytest.mark.vm


def _case_names() -> list[str]:
    path = SCRIPT.parent / "hostile_target.py"
    spec = importlib.util.spec_from_file_location("hostile_target", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return list(mod.CASES)


def _load(path: Path) -> list[dict[str, object]]:
    return json.loads(path.read_text()) if path.exists() else []


def test_hostile_targets(modules: None, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_in_vm(SCRIPT, "ours", "all", str(FUZZ_SECONDS), str(FUZZ_SEED),
                       timeout=600 + 3 * FUZZ_SECONDS + 600)  # fmt: skip
    res = parse_results(result.out_dir)
    tail = result.output[-6000:]
    cases = _load(result.out_dir / "hostile-ours.json")
    fuzz = _load(result.out_dir / "fuzz-ours.json")
    assert [c["case"] for c in cases] == _case_names(), tail
    bad = [c for c in cases if not c["ok"]]
    assert not bad, "\n".join(json.dumps(c) for c in bad) + "\n" + tail
    # never wrong data with success, whatever the case expects otherwise
    assert not [c["case"] for c in cases if c["io"] == "wrong"]
    for c in cases:  # the target really misbehaved (a case that never fires tests nothing)
        assert c["fired"], f"{c['case']} never triggered"
    assert fuzz, f"no fuzz session ran\n{tail}"
    fbad = [f for f in fuzz if not f["ok"]]
    assert not fbad, "\n".join(json.dumps(f) for f in fbad) + "\n" + tail
    mutated = sum(int(f["mutated"]) for f in fuzz)  # type: ignore[call-overload]
    assert mutated >= len(fuzz), "the fuzzer mutated almost nothing"
    assert res.get("unload") == "ok" and res.get("done") == "ok", tail
    result.check()
    with capsys.disabled():
        outcomes: dict[str, int] = {}
        for c in cases:
            key = "ok" if c["io"] in ("ok", "none") else str(c["io"]).split(":")[0]
            outcomes[key] = outcomes.get(key, 0) + 1
        slowest = max(cases, key=lambda c: float(c["logout_s"]))  # type: ignore[arg-type]
        sent = sum(int(f["sent"]) for f in fuzz)  # type: ignore[call-overload]
        print(
            f"\n[vm hostile] {len(cases)} cases passed (I/O {outcomes}); slowest logout "
            f"{slowest['logout_s']} s ({slowest['case']}); fuzz: {len(fuzz)} sessions, seeds "
            f"{FUZZ_SEED}-{FUZZ_SEED + len(fuzz) - 1}, {sent} PDUs sent, {mutated} mutated"
        )

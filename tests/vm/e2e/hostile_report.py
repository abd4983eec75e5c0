"""The side-by-side table of the hostile-target cases: the in-kernel initiator and ours.

    hostile_report.py INKERNEL.json OURS.json > table.md

Each row: the case, what the target does, then for each initiator what the I/O returned and
when (for the cases that break the connection: the recovery as the application saw it), whether
the session came back, and the logout time. "not run" marks a case left out of a run (the
in-kernel initiator's known crash).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hostile_target as H


def cell(r: dict[str, object] | None) -> str:
    if r is None:
        return "not run"
    io = str(r["io"])
    if r.get("io_s") is not None and io not in ("none", "no disk"):
        io += f" in {r['io_s']} s"
    back = {"LOGGED_IN": "up", "gone": "ended", "FREE": "ended"}.get(str(r["state"]), r["state"])
    extra = "" if r.get("ok") else " **fails**"
    return f"{io}, {back}, logout {r['logout_s']} s{extra}"


def main() -> None:
    inkernel = {r["case"]: r for r in json.loads(Path(sys.argv[1]).read_text())}
    ours = {r["case"]: r for r in json.loads(Path(sys.argv[2]).read_text())}
    print("| case | the target | in-kernel (open-iscsi 2.1.8) | ours |")
    print("|---|---|---|---|")
    for name, case in H.CASES.items():
        ik = inkernel.get(name)
        if ik is None and case.kills_inkernel:
            ik_cell = "kills the guest (NULL dereference; not run)"
        else:
            ik_cell = cell(ik)
        print(f"| {name} | {case.doc} | {ik_cell} | {cell(ours.get(name))} |")
    for who, rs in (("in-kernel", inkernel), ("ours", ours)):
        passed = sum(1 for r in rs.values() if r.get("ok"))
        print(f"\n{who}: {passed} of {len(rs)} run cases pass the tier's checks")


if __name__ == "__main__":
    main()

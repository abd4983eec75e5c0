"""iscsid as a daemon over the sessions' lives, in the VM (one boot; tests/vm/e2e/session_life.sh
does the work in the guest): parallel logins of four targets, nr_sessions with distinct ISIDs,
--rescan of a new LUN, kill -9 of iscsid during I/O and the takeover by a new one, automatic
login and rediscovery at start, a target's Async Message logout request, -u refused."""

from __future__ import annotations

import pytest

from .harness import parse_results, run_in_vm
from .test_vm_datapath import SCRIPT as _DATAPATH

SCRIPT = _DATAPATH.parent / "session_life.sh"

pytestmark = pytest.mark.vm

CASES = ("pidfile", "login_all", "nr_sessions", "rescan", "takeover", "startup",
         "async_logout", "uid_refused", "dead_portal", "done")  # fmt: skip


def test_session_life(modules: None, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_in_vm(SCRIPT, timeout=500)
    res = parse_results(result.out_dir)
    tail = result.output[-4000:]
    assert res.get("fail") is None, f"{res['fail']}\n{tail}"
    result.check()
    for key in CASES:
        assert res.get(key) == "ok", f"{key}: {res.get(key)!r}\n{tail}"
    assert res["nr_sessions_isids"] == "00023d000000 00023d000001"
    async_log = (result.out_dir / "async.log").read_text().splitlines()
    logins = [line for line in async_log if line.startswith("login ")]
    assert len(logins) == 2 and logins[1].endswith(" tsih=0"), async_log
    assert logins[0].split()[2] == logins[1].split()[2], "the re-login changed the ISID"
    assert "logout 0 reason=1 cid=0" in async_log
    with capsys.disabled():
        print(
            f"\n[vm session life] 4 targets -L all: {res['t_login_all_ms']} ms; automatic login "
            f"after iscsid start: {res['t_autologin_ms']} ms; boot {result.boot_seconds} s"
        )

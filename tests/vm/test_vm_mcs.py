"""Multi-connection sessions in the VM (one boot; tests/vm/e2e/mcs.sh does the work in the guest).

LIO target with two portals in one portal group and MaxConnections=4:
1. a login asking for 4 connections gets 4 (our sysfs, LIO's sockets), spread over both portals;
   fio crc32c verify at QD32 with mixed sizes; every connection carried commands and Data-In;
2. `-m session -r SID:3 --logout` while fio verify runs: 0 errors, 3 left on both sides;
3. LIO's end of the connections to the second portal killed while fio verify runs: session
   recovery (ERL 0), 0 errors, all three connections back, same SID;
4. CHAP, mutual CHAP, header and data digests on both connections of a second target;
5. tgtd (MaxConnections=1) asked for 4: one connection, no error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .harness import parse_results, run_in_vm
from .test_vm_datapath import SCRIPT as _DATAPATH

SCRIPT = _DATAPATH.parent / "mcs.sh"

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def run(modules: None) -> Iterator[tuple[Any, dict[str, str]]]:
    result = run_in_vm(SCRIPT, timeout=600)
    yield result, parse_results(result.out_dir)


def _check(run: tuple[Any, dict[str, str]], *keys: str) -> dict[str, str]:
    result, res = run
    tail = result.output[-4000:]
    assert res.get("fail") is None, f"{res['fail']}\n{tail}"
    for key in keys:
        assert res.get(key) == "ok", f"{key}: {res.get(key)!r}\n{tail}"
    return res


def test_four_connections_carry_verified_io(run: tuple[Any, dict[str, str]]) -> None:
    res = _check(run, "mcs_login")
    assert res["conns_up"] == "0 1 2 3"
    assert res["lio_conns_1"] == "4"
    # in turn over the portal group's two portals
    assert [res[f"conn{c}_address"] for c in range(4)] == ["127.0.0.1", "127.0.0.2"] * 2
    assert res["mixed_fio_errors"] == "0"
    assert int(res["mixed_fio_written"]) == 96 << 20
    assert int(res["mixed_fio_verified"]) > 0
    cmds = [int(res[f"c1_conn{c}_cmds"]) for c in range(4)]
    assert all(n > 100 for n in cmds), cmds
    out = run[0].out_dir
    p3 = (out / "session-P3.txt").read_text()
    assert p3.count("iSCSI Connection State: LOGGED IN") == 4, p3
    assert [f"Connection CID: {c}" in p3 for c in range(1, 4)] == [True] * 3, p3
    stats = (out / "session-stats.txt").read_text()
    assert stats.count("Stats for connection [sid: ") == 4, stats
    assert stats.count("scsicmd_pdus") == 5, stats  # the total and each connection


def test_one_connection_closes_under_io(run: tuple[Any, dict[str, str]]) -> None:
    res = _check(run, "close_conn")
    assert res["lio_conns_2"] == "3"
    assert res["close_fio_errors"] == "0"
    assert int(res["close_fio_written"]) == 64 << 20


def test_killed_connection_recovers_the_session(run: tuple[Any, dict[str, str]]) -> None:
    res = _check(run, "recovery", "logout_all")
    assert res["kill_fio_errors"] == "0"
    assert int(res["kill_fio_written"]) == 64 << 20
    assert int(res["t3_all_back_ms"]) < 30_000


def test_chap_and_digests_on_every_connection(run: tuple[Any, dict[str, str]]) -> None:
    _check(run, "chap_digests")


def test_target_with_one_connection(run: tuple[Any, dict[str, str]]) -> None:
    _check(run, "tgtd_one", "done")
    run[0].check()  # exit 0, dmesg clean

"""iscsid's session bookkeeping without a kernel: ISIDs of new sessions, -u/-g, startup logins."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyiscsid import startup
from pyiscsid.daemon import DaemonOptions, IsidAllocator, privilege_refusal
from pyiscsid.db import Database
from pyiscsid.errors import Err, IscsiError
from pyiscsid.records import NodeRecord, nr_sessions


@dataclass
class S:
    target_name: str
    isid: str


def test_isids_unique_per_target_and_in_flight() -> None:
    a = IsidAllocator()
    existing = [S("iqn.t:a", "00023d000000"), S("iqn.t:a", "00023d000002"), S("iqn.t:b", "zz")]
    with a.reserve("iqn.t:a", existing) as first, a.reserve("iqn.t:a", existing) as second:
        assert first == bytes.fromhex("00023d000001")
        assert second == bytes.fromhex("00023d000003")
    # another target may use the first qualifier; released reservations are free again
    with a.reserve("iqn.t:b", existing) as other:
        assert other == bytes.fromhex("00023d000000")
    with a.reserve("iqn.t:a", existing) as again:
        assert again == bytes.fromhex("00023d000001")


def test_isid_reservations_from_threads_never_collide() -> None:
    a = IsidAllocator()
    got: list[bytes] = []
    inside = threading.Barrier(8)

    def one() -> None:
        with a.reserve("iqn.t:a", []) as isid:
            got.append(isid)
            inside.wait(5)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [bytes.fromhex("00023d") + i.to_bytes(3, "big") for i in range(8)]


def test_startup_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiscsid.daemon import parse_args

    monkeypatch.delenv("ISCSID_NO_STARTUP", raising=False)
    assert parse_args(["-f"]).startup is True
    monkeypatch.setenv("ISCSID_NO_STARTUP", "1")
    assert parse_args(["-f"]).startup is False
    monkeypatch.setenv("ISCSID_NO_STARTUP", "0")
    assert parse_args(["-f"]).startup is True


def test_uid_refused_with_the_kernel_interface_only() -> None:
    import os

    me = os.getuid()
    assert privilege_refusal(DaemonOptions(uid=None), True) is None
    assert privilege_refusal(DaemonOptions(uid=me), True) is None
    why = privilege_refusal(DaemonOptions(uid=me + 4242), True)
    assert why is not None and "CAP_NET_ADMIN" in why and f"uid {me + 4242}" in why
    assert privilege_refusal(DaemonOptions(uid=me + 4242), False) is None


def _node(db: Database, target: str, startup_mode: str, sessions: int = 1) -> NodeRecord:
    rec = NodeRecord.new(target, "127.0.0.1", 3260, 1)
    rec.set("node.startup", startup_mode)
    rec.set("node.session.nr_sessions", str(sessions))
    return db.add_node(rec)


def test_automatic_nodes_get_their_sessions(db_dir: Path) -> None:
    with Database() as db:
        auto = _node(db, "iqn.t:auto", "automatic", sessions=2)
        _node(db, "iqn.t:manual", "manual")
        down = _node(db, "iqn.t:down", "automatic")
    calls: list[str] = []
    made: dict[str, int] = {}
    lock = threading.Lock()

    def login(args: dict[str, Any]) -> dict[str, Any]:
        rid = args["record_id"]
        with lock:
            calls.append(rid)
            if rid == down.record_id:
                raise IscsiError(Err.TRANS_TIMEOUT, "no answer")
            if made.get(rid, 0) >= 2:
                raise IscsiError(Err.SESS_EXISTS)
            made[rid] = made.get(rid, 0) + 1
        return {"sid": len(calls)}

    assert startup.run(login, {}, ("iqn.i:x", ""), nr_sessions) == 2
    assert sorted(calls) == sorted([auto.record_id, auto.record_id, down.record_id])


def test_startup_with_a_corrupt_database_keeps_going(
    db_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_dir.mkdir()
    (db_dir / "node.db").write_bytes(b"not a database" * 100)
    (db_dir / "discovery.db").write_bytes(b"not a database" * 100)
    assert startup.run(lambda a: {}, {}, ("iqn.i:x", ""), nr_sessions) == 0
    assert "startup: cannot read the database" in caplog.text

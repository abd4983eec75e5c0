"""iscsid's session bookkeeping without a kernel: ISIDs of new sessions, -u/-g, startup logins."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
    target: str
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


def _iscsid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from pyiscsid.daemon import Iscsid

    (tmp_path / "initiatorname.iscsi").write_text("InitiatorName=iqn.2026-12.test:i\n")
    monkeypatch.setenv("ISCSI_INITIATORNAME_FILE", str(tmp_path / "initiatorname.iscsi"))
    monkeypatch.setenv("ISCSID_CONFIG", str(tmp_path / "absent.conf"))
    return Iscsid(DaemonOptions())


def test_login_many_reads_once_and_logs_in_at_once(
    db_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Database() as db:
        a = _node(db, "iqn.t:a", "manual", sessions=2)
        b = _node(db, "iqn.t:b", "manual")
        down = _node(db, "iqn.t:down", "manual")
    d = _iscsid(tmp_path, monkeypatch)
    sids = iter(range(10, 20))
    lock = threading.Lock()

    def login_record(rec: NodeRecord) -> int:
        together.wait()  # every login waits for the others: they run at once
        if rec.target == "iqn.t:down":
            raise IscsiError(Err.TRANS_TIMEOUT, "no answer")
        with lock:
            return next(sids)

    monkeypatch.setattr(d, "login_record", login_record)
    ids = [a.record_id, b.record_id, "abcdef", a.record_id, down.record_id]
    together = threading.Barrier(4, timeout=5)  # "abcdef" has no record: it never logs in
    results = d.op_login_many({"record_ids": ids})["results"]
    assert [r["code"] for r in results] == [0, 0, Err.NO_OBJS_FOUND, 0, Err.TRANS_TIMEOUT]
    assert sorted(r["sid"] for r in results if r["code"] == 0) == [10, 11, 12]
    assert results[2]["message"] == "no node record [abcdef]"
    assert results[4] == {"code": Err.TRANS_TIMEOUT, "message": "no answer"}
    with pytest.raises(IscsiError) as bad:
        d.op_login_many({"record_ids": "abcdef"})
    assert bad.value.code == Err.INVALID_MGMT_REQ


def test_logout_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _iscsid(tmp_path, monkeypatch)

    def logout(args: dict[str, Any]) -> dict[str, Any]:
        if args["sid"] == 7:
            raise IscsiError(Err.SESS_NOT_FOUND, "no session 7")
        return {}

    monkeypatch.setattr(d, "op_logout", logout)
    assert d.op_logout_many({"sids": [3, 7, 4]})["results"] == [
        {"code": 0, "message": ""},
        {"code": Err.SESS_NOT_FOUND, "message": "no session 7"},
        {"code": 0, "message": ""},
    ]
    for bad in ([True], ["3"], 3):
        with pytest.raises(IscsiError):
            d.op_logout_many({"sids": bad})


class _GatedSteps:
    """RecoverySteps that stop where the test says: before the STOP_CONN is done, before the
    TCP connection is up, and after it (logging in)."""

    def __init__(self) -> None:
        self.go = {k: threading.Event() for k in ("stopped", "connected", "logged_in")}
        self.at = {k: threading.Event() for k in ("stopping", "connecting", "logging_in")}

    def stop(self, sid: int, cid: int) -> None:
        self.at["stopping"].set()
        self.go["stopped"].wait(5)

    def alive(self, sid: int) -> bool:
        return True

    def reconnect(self, sid: int, cid: int, connected: Callable[[], None]) -> None:
        self.at["connecting"].set()
        self.go["connected"].wait(5)
        connected()
        self.at["logging_in"].set()
        self.go["logged_in"].wait(5)

    def time2wait(self, sid: int) -> float:
        return 0.0

    def connections(self, sid: int) -> list[int]:
        return [0]

    def add(self, sid: int, cids: list[int]) -> list[int]:
        return cids


def test_session_info_answers_the_sessions_real_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open-iscsi's numbers for what the session goes through (iscsiadm -P 1 prints them)."""
    from pyiscsid import daemon
    from pyiscsid import kernel_session as ks
    from pyiscsid.events import EventService
    from pyiscsid.recovery import Backoff, RecoveryManager
    from pyiscsid.states import ConnState

    sdir = tmp_path / "sys" / "class" / "iscsi_session" / "session4"
    sdir.mkdir(parents=True)
    (sdir / "state").write_text("LOGGED_IN\n")
    monkeypatch.setenv("PYISCSI_SYSFS", str(tmp_path / "sys"))
    monkeypatch.setattr(daemon, "kernel_available", lambda: True)
    d = _iscsid(tmp_path, monkeypatch)
    steps = _GatedSteps()
    d.recovery = RecoveryManager(backoff=Backoff(0.01, 0.01), steps=steps)
    d.events = EventService(recovery=d.recovery)

    def info() -> tuple[int, int]:
        reply = d.op_session_info({"sid": 4})
        return reply["conn_state"], reply["session_state"]

    assert info() == (3, 0)  # LOGGED IN, NO CHANGE
    (sdir / "state").write_text("FAILED\n")
    assert info() == (6, 2)  # CLEANUP WAIT, REOPEN: the recovery is about to start
    d.recovery.conn_failed(4, 0, "CONN_FAILED")
    assert steps.at["stopping"].wait(5)
    assert info() == (6, 2)  # CLEANUP WAIT until the connection is stopped
    steps.go["stopped"].set()
    assert steps.at["connecting"].wait(5)
    assert info() == (1, 2)  # TRANSPORT WAIT, REOPEN
    steps.go["connected"].set()
    assert steps.at["logging_in"].wait(5)
    assert info() == (2, 2)  # IN LOGIN, REOPEN
    (sdir / "state").write_text("LOGGED_IN\n")
    steps.go["logged_in"].set()
    assert d.recovery.wait(4, 5)
    assert info() == (3, 0)  # recovered
    ks._set_handling(4, ConnState.IN_LOGOUT)
    try:
        assert info() == (4, 0)  # IN LOGOUT: iscsiadm logs out
    finally:
        ks._set_handling(4, None)
    d.events.async_logouts[4] = (0, 0x80000001, 1e9)
    assert info() == (4, 0)  # IN LOGOUT: the target asked for it
    del d.events.async_logouts[4]
    (sdir / "state").write_text("FREE\n")
    assert info() == (0, 0)  # FREE: created, not started
    with pytest.raises(IscsiError) as gone:
        d.op_session_info({"sid": 5})
    assert gone.value.code == Err.SESS_NOT_FOUND


def test_logout_of_one_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`logout {sid, cid}` closes that connection alone; an unknown one is SESS_NOT_FOUND; no
    cid: the whole session, as before."""
    from pyiscsid import daemon, sysfs
    from pyiscsid import kernel_session as ks

    monkeypatch.setattr(daemon, "kernel_available", lambda: True)
    monkeypatch.setattr(sysfs, "connection_ids", lambda sid: [0, 1, 2] if sid == 4 else [])
    closed: list[tuple[int, int]] = []
    stopped: list[int] = []
    monkeypatch.setattr(ks, "close_connection", lambda sid, cid: closed.append((sid, cid)))
    monkeypatch.setattr(ks, "stop_session", lambda sid: stopped.append(sid))
    d = _iscsid(tmp_path, monkeypatch)
    assert d.op_logout({"sid": 4, "cid": 2}) == {}
    assert closed == [(4, 2)] and stopped == []
    for sid, cid, code in ((4, 3, Err.SESS_NOT_FOUND), (5, 0, Err.SESS_NOT_FOUND),
                           (4, "1", Err.INVALID_MGMT_REQ)):  # fmt: skip
        with pytest.raises(IscsiError) as exc:
            d.op_logout({"sid": sid, "cid": cid})
        assert exc.value.code == code
    assert d.op_logout({"sid": 4}) == {}
    assert stopped == [4] and closed == [(4, 2)]

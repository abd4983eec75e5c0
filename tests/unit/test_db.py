"""The persistent database: layout, records, discovery updates, concurrency, crashes, damage."""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from pyiscsid.db import Database
from pyiscsid.errors import Err, IscsiError
from pyiscsid.records import DiscoveryRecord, IfaceRecord, NodeRecord, node_record_id
from pyiscsid.settings import DiscoveredTarget, TargetPortal

T1 = "iqn.2003-01.org.example:t1"
T2 = "iqn.2003-01.org.example:t2"


def _find_python313() -> str | None:
    candidates = sorted(glob.glob("/root/.pyenv/versions/3.13*/bin/python3.13"))
    candidates.append(shutil.which("python3.13") or "")
    for exe in candidates:
        if (
            exe
            and subprocess.run([exe, "-c", "import dbm.sqlite3"], capture_output=True).returncode
            == 0
        ):
            return exe
    return None


PY313 = _find_python313()


@pytest.fixture
def db(tmp_path) -> Database:
    return Database(tmp_path / "iscsi")


def node(target=T1, address="10.0.0.1", port=3260, **kw) -> NodeRecord:
    return NodeRecord.new(target, address, port, **kw)


def test_empty_database_creates_nothing(tmp_path):
    d = Database(tmp_path / "none")
    assert d.nodes() == []
    assert d.discoveries() == []
    assert d.find_nodes(target=T1) == []
    assert d.find_discovery("10.0.0.1", 3260) is None
    assert not (tmp_path / "none").exists()


def test_default_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("ISCSI_DB_DIR", str(tmp_path / "env"))
    assert Database().directory == str(tmp_path / "env")
    monkeypatch.delenv("ISCSI_DB_DIR")
    assert str(Database().directory) == "/var/db/iscsi"


def test_files_and_modes(db):
    old = os.umask(0)
    try:
        db.add_node(node())
    finally:
        os.umask(old)
    assert stat.S_IMODE(Path(db.directory).stat().st_mode) == 0o700
    for name in ("node.db", "discovery.db", "iface.db"):
        path = Path(db.directory) / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes()[:16] == b"SQLite format 3\0"


def test_dbm_sqlite3_layout(db):
    rec = db.add_node(node())
    db.close()
    with sqlite3.connect(Path(db.directory) / "node.db") as conn:
        schema = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'Dict'").fetchone()[0]
        rows = conn.execute("SELECT key, value FROM Dict").fetchall()
    assert " ".join(schema.split()) == (
        "CREATE TABLE Dict (key BLOB UNIQUE NOT NULL, value BLOB NOT NULL)"
    )
    assert rows == [(rec.record_id.encode(), rec.to_json())]
    assert type(rows[0][0]) is bytes and type(rows[0][1]) is bytes


@pytest.mark.skipif(PY313 is None, reason="no python3.13 on this machine")
def test_python313_dbm_reads_files(db):
    n1 = db.add_node(node())
    n2 = db.add_node(node(T2, "fe80::1"))
    d1 = db.save_discovery(DiscoveryRecord.new("10.0.0.1", 3260))
    db.save_iface(IfaceRecord("iface0", {"iface.net_ifacename": "eth1"}))
    db.close()
    script = (
        "import dbm, json, sys\n"
        "out = {}\n"
        "for name in ('node.db', 'discovery.db', 'iface.db'):\n"
        "    path = sys.argv[1] + '/' + name\n"
        "    assert dbm.whichdb(path) == 'dbm.sqlite3', dbm.whichdb(path)\n"
        "    with dbm.open(path, 'r') as d:\n"
        "        out[name] = {k.decode(): json.loads(d[k]) for k in d.keys()}\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run(
        [PY313, "-c", script, str(db.directory)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert sorted(out["node.db"]) == sorted([n1.record_id, n2.record_id])
    assert out["node.db"][n2.record_id]["address"] == "fe80::1"
    assert out["node.db"][n1.record_id]["params"]["node.name"] == T1
    assert list(out["discovery.db"]) == [d1.record_id]
    assert out["iface.db"]["iface0"]["params"]["iface.net_ifacename"] == "eth1"
    # and our files are still ours afterwards (no WAL conversion by a read-only open)
    assert Database(db.directory).nodes() == sorted([n1, n2], key=lambda r: r.target)


def test_add_find_save_delete(db):
    a = db.add_node(node(T2, "10.0.0.2"))
    b = db.add_node(node(T1, "10.0.0.2"))
    c = db.add_node(node(T1, "10.0.0.1"))
    assert a.record_id == node_record_id(T2, "10.0.0.2", 3260, "default")
    assert [r.record_id for r in db.nodes()] == [c.record_id, b.record_id, a.record_id]
    assert db.find_nodes(target=T1, address="10.0.0.2") == [b]
    assert db.find_nodes(address="[10.0.0.2]", port=3260) == [b, a]
    assert db.find_nodes(record_id=f"[{c.record_id.upper()}]") == [c]
    assert db.find_nodes(iface="other") == []
    assert db.find_nodes(port=3261) == []

    b.set("node.startup", "automatic")
    b.set("node.session.auth.password", "pw")
    db.save_node(b)
    again = Database(db.directory).find_nodes(record_id=b.record_id)[0]
    assert again.get("node.startup") == "automatic"
    assert again.get("node.session.auth.password") == "pw"
    assert again.dump(show=True) == b.dump(show=True)

    db.delete_node(a.record_id)
    assert [r.record_id for r in db.nodes()] == [c.record_id, b.record_id]
    with pytest.raises(IscsiError) as info:
        db.delete_node(a.record_id)
    assert info.value.code == Err.NO_OBJS_FOUND


def test_nodes_by_id(db):
    assert db.nodes_by_id(["abcdef"]) == {}  # no database yet
    recs = [db.add_node(node(f"iqn.2003-01.org.example:n{i}")) for i in range(600)]
    ids = [r.record_id for r in recs]
    found = db.nodes_by_id([*ids, "abcdef"])  # more than one query's worth of ids
    assert found == {r.record_id: r for r in recs}
    assert db.nodes_by_id([f"[{ids[3].upper()}]"]) == {ids[3]: recs[3]}
    with pytest.raises(IscsiError) as info:
        db.nodes_by_id(["not-an-id"])
    assert info.value.code == Err.INVAL


def test_add_same_identity_overwrites(db):
    first = db.add_node(node())
    first_id = first.record_id
    second = node()
    second.set("node.startup", "onboot")
    db.add_node(second)
    assert second.record_id == first_id
    assert len(db.nodes()) == 1
    assert db.nodes()[0].get("node.startup") == "onboot"
    other_iface = db.add_node(node(iface="iface1"))
    assert other_iface.record_id != first_id
    assert len(db.nodes()) == 2


def test_record_id_collision_probes(db):
    rec = node()
    wanted = node_record_id(T1, "10.0.0.1", 3260, "default")
    squatter = node(T2)
    squatter.record_id = wanted  # pretend another identity hashed to the same id
    db.save_node(squatter)
    db.add_node(rec)
    assert rec.record_id == node_record_id(T1, "10.0.0.1", 3260, "default", attempt=1)
    assert {r.record_id for r in db.nodes()} == {wanted, rec.record_id}
    db.add_node(node())  # finds the probed record again
    assert len(db.nodes()) == 2


def test_discovery_records(db):
    d = db.save_discovery(DiscoveryRecord.new("10.0.0.1", 3260))
    assert len(d.record_id) == 6
    d.set("discovery.sendtargets.auth.authmethod", "CHAP")
    same = db.save_discovery(d)
    assert same.record_id == d.record_id
    found = db.find_discovery("10.0.0.1", 3260)
    assert found == d
    assert found.get("discovery.sendtargets.auth.authmethod") == "CHAP"
    assert db.find_discovery("10.0.0.1", 3261) is None
    e = db.save_discovery(DiscoveryRecord.new("[fe80::1]", 3260))
    assert [r.record_id for r in db.discoveries()] == [d.record_id, e.record_id]
    db.delete_discovery(e.record_id)
    assert db.discoveries() == [d]
    with pytest.raises(IscsiError) as info:
        db.delete_discovery(e.record_id)
    assert info.value.code == Err.NO_OBJS_FOUND


def targets(*entries) -> list[DiscoveredTarget]:
    return [
        DiscoveredTarget(name, [TargetPortal(a, p, t) for a, p, t in portals])
        for name, portals in entries
    ]


def test_apply_sendtargets_keeps_user_settings(db):
    disc = DiscoveryRecord.new("10.0.0.1", 3260)
    config = {"node.startup": "automatic", "node.conn[0].timeo.login_timeout": "15"}
    reply = targets(
        (T2, [("10.0.0.1", 3260, 1), ("fe80::1", 3260, 1)]),
        (T1, [("10.0.0.1", 3260, 2)]),
    )
    got = db.apply_sendtargets(disc, reply, config)
    assert [(r.target, r.portal, r.tpgt) for r in got] == [
        (T2, "10.0.0.1:3260", 1),
        (T2, "[fe80::1]:3260", 1),
        (T1, "10.0.0.1:3260", 2),
    ]
    assert disc.record_id and db.discoveries() == [disc]
    for rec in db.nodes():
        assert rec.get("node.startup") == "automatic"
        assert rec.get("node.conn[0].timeo.login_timeout") == "15"
        assert rec.get("node.discovery_address") == "10.0.0.1"
        assert rec.get("node.discovery_port") == "3260"
        assert rec.get("node.discovery_type") == "send_targets"

    # a node made by hand is not this discovery's to delete
    manual = db.add_node(node(T1, "10.9.9.9"))

    # the user changes settings on one node
    t1 = db.find_nodes(target=T1, address="10.0.0.1")[0]
    t1.set("node.startup", "manual")
    t1.set("node.session.auth.authmethod", "CHAP")
    t1.set("node.session.auth.username", "me")
    db.save_node(t1)

    # rediscovery: T1 moved to tpgt 5, T2 lost its IPv6 portal, a new target T3 appears
    reply2 = targets(
        (T1, [("10.0.0.1", 3260, 5)]),
        (T2, [("10.0.0.1", 3260, 1)]),
        ("iqn.2003-01.org.example:t3", [("10.0.0.1", 3260, 1)]),
    )
    got2 = db.apply_sendtargets(DiscoveryRecord.new("10.0.0.1", 3260), reply2, config)
    assert [r.target for r in got2] == [T1, T2, "iqn.2003-01.org.example:t3"]
    t1_after = db.find_nodes(record_id=t1.record_id)[0]
    assert t1_after.tpgt == 5
    assert t1_after.get("node.startup") == "manual"
    assert t1_after.get("node.session.auth.authmethod") == "CHAP"
    assert t1_after.get("node.session.auth.username") == "me"
    assert [(r.target, r.portal) for r in db.nodes()] == [
        (T1, "10.0.0.1:3260"),
        (T1, "10.9.9.9:3260"),
        (T2, "10.0.0.1:3260"),
        ("iqn.2003-01.org.example:t3", "10.0.0.1:3260"),
    ]
    assert len(db.discoveries()) == 1

    # deleting the discovery record deletes what it found, not the manual node
    db.delete_discovery(db.discoveries()[0].record_id)
    assert db.nodes() == [manual]


def test_apply_sendtargets_is_one_transaction(db, monkeypatch):
    db.add_node(node())
    bad = targets((T1, [("10.0.0.1", 3260, 1)]), (T2, [("not an address", 3260, 1)]))
    with pytest.raises(IscsiError):
        db.apply_sendtargets(DiscoveryRecord.new("10.0.0.1", 3260), bad)
    assert db.discoveries() == []
    assert [r.tpgt for r in db.nodes()] == [-1]


def test_nested_transaction_rolls_back(db):
    keep = db.add_node(node())
    with pytest.raises(RuntimeError), db.transaction():
        db.add_node(node(T2))
        db.delete_node(keep.record_id)
        raise RuntimeError("abort")
    assert db.nodes() == [keep]


def _adder(directory: str, prefix: str, count: int) -> None:
    d = Database(directory)
    for i in range(count):
        d.add_node(NodeRecord.new(f"iqn.2003-01.org.example:{prefix}{i}", "10.0.0.1", 3260))
    d.close()


def test_two_processes_add_concurrently(tmp_path):
    directory = str(tmp_path / "db")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_adder, args=(directory, p, 200)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = {r.target for r in Database(directory).nodes()}
    expected = {f"iqn.2003-01.org.example:{p}{i}" for p in "ab" for i in range(200)}
    assert names == expected


def _crasher(directory: str, keep_id: str, ready) -> None:
    d = Database(directory)
    # tiny page cache: changed pages spill into the file before COMMIT, as in a big transaction
    d._connect().execute("PRAGMA main.cache_size = 1")
    with d.transaction():
        d.delete_node(keep_id)
        for i in range(50):
            d.add_node(NodeRecord.new(f"iqn.2003-01.org.example:x{i}", "10.0.0.1", 3260))
        rec = d.find_nodes()[0]
        rec.set("node.startup", "automatic")
        d.save_node(rec)
        ready.send(True)
        signal.pause()  # killed here, in the middle of the transaction


def test_killed_writer_leaves_old_content(db):
    keep = db.add_node(node())
    db.save_discovery(DiscoveryRecord.new("10.0.0.1", 3260))
    db.close()
    committed = (Path(db.directory) / "node.db").read_bytes()
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=_crasher, args=(str(db.directory), keep.record_id, child_end))
    proc.start()
    assert parent_end.poll(30), "writer never got into its transaction"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    # the file holds half a transaction: the hot journal must undo it on the next open
    assert (Path(db.directory) / "node.db-journal").exists()
    assert (Path(db.directory) / "node.db").read_bytes() != committed  # torn on disk
    after = Database(db.directory)
    assert after.nodes() == [keep]
    assert after.nodes()[0].get("node.startup") == "manual"
    assert len(after.discoveries()) == 1
    after.add_node(node(T2))
    assert len(after.nodes()) == 2
    assert not (Path(db.directory) / "node.db-journal").exists()
    with sqlite3.connect(Path(db.directory) / "node.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("name", ["node.db", "discovery.db", "iface.db"])
def test_corrupt_file(db, name):
    db.add_node(node())
    db.save_discovery(DiscoveryRecord.new("10.0.0.1", 3260))
    db.close()
    path = Path(db.directory) / name
    junk = bytes(range(256)) * 16 + os.urandom(4096)
    path.write_bytes(junk)
    for action in (
        lambda d: d.nodes(),
        lambda d: d.discoveries(),
        lambda d: d.add_node(node(T2)),
        lambda d: d.save_discovery(DiscoveryRecord.new("10.0.0.2", 3260)),
    ):
        with pytest.raises(IscsiError) as info:
            action(Database(db.directory))
        assert info.value.code == Err.IDBM
        assert str(path) in info.value.message
    assert path.read_bytes() == junk


def test_corrupt_record_value(db):
    rec = db.add_node(node())
    db.close()
    with sqlite3.connect(Path(db.directory) / "node.db") as conn:
        conn.execute("UPDATE Dict SET value = CAST('{broken' AS BLOB)")
    with pytest.raises(IscsiError) as info:
        Database(db.directory).nodes()
    assert info.value.code == Err.IDBM
    assert rec.record_id in info.value.message
    assert "node.db" in info.value.message


def test_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(IscsiError) as info:
        Database(blocker / "db").add_node(node())
    assert info.value.code == Err.IDBM
    assert str(blocker) in info.value.message


def test_database_paths(tmp_path):
    d = Database(Path(tmp_path))
    assert d.node_path == str(tmp_path / "node.db")
    assert d.discovery_path == str(tmp_path / "discovery.db")

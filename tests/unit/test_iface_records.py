"""iface records: validation, dumps, the flat listing, binding of node records, and their place
in the database (iface.db, keyed by name, the dbm.sqlite3 layout)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from pyiscsid.db import Database
from pyiscsid.errors import Err, IscsiError
from pyiscsid.records import (
    DiscoveryRecord,
    IfaceRecord,
    NodeRecord,
    check_iface_name,
    iface_dump,
    login_settings,
)
from pyiscsid.settings import DiscoveredTarget, TargetPortal

T1 = "iqn.2003-01.org.example:t1"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(tmp_path / "db")
    yield d
    d.close()


def test_names() -> None:
    assert check_iface_name("iface0") == "iface0"
    assert check_iface_name("x" * 64) == "x" * 64
    for bad in ("", "x" * 65, "a/b", ".", "..", "a b", "a\nb"):
        with pytest.raises(IscsiError) as exc:
            IfaceRecord(bad)
        assert exc.value.code == Err.INVAL


def test_new_iface_dump_is_the_builtin_form() -> None:
    rec = IfaceRecord("iface0")
    assert rec.dump() == iface_dump("iface0", "tcp")
    assert rec.flat() == "iface0 tcp,<empty>,<empty>,<empty>,<empty>"
    rec.set("iface.net_ifacename", "eth1")
    rec.set("iface.ipaddress", "10.0.0.5")
    rec.set("iface.initiatorname", "iqn.2005-03.org.test:other")
    assert rec.flat() == "iface0 tcp,<empty>,10.0.0.5,eth1,iqn.2005-03.org.test:other"
    assert "iface.net_ifacename = eth1\n" in rec.dump()
    assert "iface.ipv6_autocfg" not in rec.dump()
    assert "iface.ipv6_autocfg = <empty>\n" in IfaceRecord("ipv6-one").dump()


def test_set_refuses_unknown_and_identity_keys() -> None:
    rec = IfaceRecord("iface0")
    with pytest.raises(IscsiError, match="Invalid param name"):
        rec.set("bogus.name", "1")
    with pytest.raises(IscsiError, match="used to look up the record"):
        rec.set("iface.iscsi_ifacename", "other")
    with pytest.raises(IscsiError):
        rec.set("iface.mtu", "70000")


def test_builtin() -> None:
    assert IfaceRecord.builtin("default") == IfaceRecord("default")
    iser = IfaceRecord.builtin("iser")
    assert iser is not None and iser.transport == "iser" and iser.is_builtin
    assert IfaceRecord.builtin("iface0") is None


def test_binding_kinds() -> None:
    rec = IfaceRecord("a", {"iface.hwaddress": "default", "iface.net_ifacename": "eth0"})
    assert (rec.bound_by_hwaddress, rec.bound_by_netdev) == (False, True)
    rec = IfaceRecord("b", {"iface.hwaddress": "52:54:00:12:34:56"})
    assert (rec.bound_by_hwaddress, rec.bound_by_netdev) == (True, False)


def test_node_record_carries_the_binding_to_its_login() -> None:
    iface = IfaceRecord(
        "iface1",
        {
            "iface.net_ifacename": "eth1",
            "iface.ipaddress": "10.0.0.5",
            "iface.initiatorname": "iqn.2005-03.org.test:iface1",
        },
    )
    rec = NodeRecord.new(T1, "10.0.0.1", 3260, 1)
    rec.apply_iface(iface)
    assert rec.iface == "iface1" and rec.get("iface.iscsi_ifacename") == "iface1"
    assert rec.iface_record() == iface
    back = NodeRecord.from_json(rec.to_json())
    s = login_settings(back, "iqn.2005-03.org.test:host")
    assert (s.iface_name, s.netdev, s.hwaddress, s.source_address) == (
        "iface1",
        "eth1",
        "",
        "10.0.0.5",
    )
    assert s.initiator_name == "iqn.2005-03.org.test:iface1"
    plain = login_settings(NodeRecord.new(T1, "10.0.0.1", 3260, 1), "iqn.2005-03.org.test:host")
    assert (plain.iface_name, plain.netdev, plain.hwaddress, plain.source_address) == (
        "default",
        "",
        "",
        "",
    )


def test_iface_db(db: Database) -> None:
    assert db.ifaces() == [] and db.find_iface("iface0") is None
    b = IfaceRecord("iface1", {"iface.net_ifacename": "eth1"})
    a = IfaceRecord("Iface0", {"iface.hwaddress": "52:54:00:12:34:56"})
    db.save_iface(b)
    db.save_iface(a)
    assert db.ifaces() == [a, b]  # byte order: upper case first, as alphasort in C
    assert db.find_iface("iface1") == b
    b.set("iface.ipaddress", "10.0.0.7")
    db.save_iface(b)
    assert Database(db.directory).find_iface("iface1") == b
    assert db.delete_iface("iface1") is True
    assert db.delete_iface("iface1") is False
    assert db.ifaces() == [a]
    db.close()
    path = Path(db.directory) / "iface.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key, value FROM Dict").fetchall()
    assert rows == [(b"Iface0", a.to_json())]


def test_older_database_without_iface_db(db: Database) -> None:
    db.add_node(NodeRecord.new(T1, "10.0.0.1", 3260, 1))
    db.close()
    (Path(db.directory) / "iface.db").unlink()
    again = Database(db.directory)
    assert again.ifaces() == [] and len(again.nodes()) == 1
    again.save_iface(IfaceRecord("iface0"))
    assert [i.name for i in again.ifaces()] == ["iface0"]


def test_sendtargets_through_ifaces(db: Database) -> None:
    disc = DiscoveryRecord.new("10.0.0.1", 3260)
    reply = [DiscoveredTarget(T1, [TargetPortal("10.0.0.1", 3260, 1)])]
    i0 = IfaceRecord("iface0", {"iface.net_ifacename": "eth0"})
    i1 = IfaceRecord("iface1", {"iface.net_ifacename": "eth1"})
    got = db.apply_sendtargets(disc, reply, None, [i0, i1])
    assert [(r.iface, r.get("iface.net_ifacename")) for r in got] == [
        ("iface0", "eth0"),
        ("iface1", "eth1"),
    ]
    # rediscovery through iface0 only keeps iface1's record; a record the reply no longer names
    # is deleted only for the ifaces discovered through
    db.apply_sendtargets(disc, [], None, [i0])
    assert [r.iface for r in db.nodes()] == ["iface1"]

"""iscsid's startup rediscovery against a real tgtd: discovery records set to start
automatically are asked again, and what the user set on existing nodes stays."""

from __future__ import annotations

from pathlib import Path

from tgt import Tgtd

from pyiscsid.db import Database
from pyiscsid.records import DiscoveryRecord
from pyiscsid.startup import rediscover

INITIATOR = ("iqn.2026-11.test:startup", "")


def test_rediscovery_adds_new_targets_and_keeps_settings(tgtd: Tgtd, db_dir: Path) -> None:
    tgtd.add_target("iqn.2026-11.test:one")
    auto = DiscoveryRecord.new("127.0.0.1", tgtd.port)
    auto.set("discovery.startup", "automatic")
    with Database() as db:
        db.save_discovery(auto)
    assert rediscover({}, INITIATOR) == 1
    with Database() as db:
        (one,) = db.find_nodes(target="iqn.2026-11.test:one")
        one.set("node.startup", "automatic")
        db.save_node(one)
    tgtd.add_target("iqn.2026-11.test:two")
    assert rediscover({}, INITIATOR) == 2
    with Database() as db:
        assert db.find_nodes(target="iqn.2026-11.test:one")[0].get("node.startup") == "automatic"
        assert db.find_nodes(target="iqn.2026-11.test:two")[0].get("node.startup") == "manual"


def test_manual_records_are_left_alone_and_a_dead_portal_is_logged(
    tgtd: Tgtd, db_dir: Path, caplog
) -> None:
    tgtd.add_target("iqn.2026-11.test:one")
    manual = DiscoveryRecord.new("127.0.0.1", tgtd.port)
    dead = DiscoveryRecord.new("127.0.0.1", 1)
    dead.set("discovery.startup", "automatic")
    dead.set("discovery.sendtargets.timeo.login_timeout", "2")
    with Database() as db:
        db.save_discovery(manual)
        db.save_discovery(dead)
    assert rediscover({}, INITIATOR) == 0
    with Database() as db:
        assert db.nodes() == []
    assert "startup rediscovery through 127.0.0.1:1 failed" in caplog.text

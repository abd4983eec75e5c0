"""pyiscsid.sysfs against a tree laid out like the iSCSI transport class's (iscsid's reads;
iscsiadm's are checked byte for byte in test_cli_session_output.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyiscsid import events
from pyiscsid import kernel_session as ks
from pyiscsid import sysfs as sysfs_

IQN = "iqn.2003-01.org.linux-iscsi.vm:ram"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sys_ = tmp_path / "sys"
    dev = tmp_path / "dev"
    dev.mkdir()
    monkeypatch.setenv("PYISCSI_SYSFS", str(sys_))
    monkeypatch.setattr(ks, "DEV", str(dev))
    host = sys_ / "devices" / "platform" / "host4"
    sess = host / "session2"
    (sys_ / "class" / "iscsi_session").mkdir(parents=True)
    (sys_ / "class" / "iscsi_connection").mkdir(parents=True)
    sdir = sess / "iscsi_session" / "session2"
    for k, v in {
        "targetname": IQN,
        "tpgt": "1",
        "initiatorname": "iqn.2026-11.test:init",
        "ifacename": "default",
        "isid": "00023d000001",
        "tsih": "4660",
        "state": "LOGGED_IN",
        "recovery_tmo": "120",
    }.items():
        _write(sdir / k, v)
    (sdir / "device").symlink_to(os.path.relpath(sess, sdir))
    (sys_ / "class" / "iscsi_session" / "session2").symlink_to(sdir)
    cdir = sess / "connection2:0" / "iscsi_connection" / "connection2:0"
    for k, v in {
        "address": "10.0.0.9",
        "port": "3261",
        "persistent_address": "127.0.0.1",
        "persistent_port": "3260",
        "header_digest": "None",
    }.items():
        _write(cdir / k, v)
    (sys_ / "class" / "iscsi_connection" / "connection2:0").symlink_to(cdir)
    lun = sess / "target4:0:0" / "4:0:0:0"
    _write(lun / "type", "0")
    (lun / "block" / "sdb").mkdir(parents=True)
    ctl = sess / "target4:0:0" / "4:0:0:1"
    _write(ctl / "type", "12")  # a RAID controller LUN: no block device expected
    (sys_ / "bus" / "scsi" / "devices").mkdir(parents=True)
    (sys_ / "bus" / "scsi" / "devices" / "4:0:0:0").symlink_to(lun)
    (sys_ / "bus" / "scsi" / "devices" / "4:0:0:1").symlink_to(ctl)
    (sys_ / "bus" / "scsi" / "devices" / "target4:0:0").mkdir()  # not a LUN
    return tmp_path


def test_list_sessions_from_sysfs(sysfs: Path) -> None:
    (s,) = sysfs_.list_sessions()
    assert s.sid == 2
    assert s.host_no == 4
    assert (s.target, s.tpgt) == (IQN, 1)
    assert (s.address, s.port) == ("10.0.0.9", 3261)
    assert (s.persistent_address, s.persistent_port) == ("127.0.0.1", 3260)
    assert (s.iface, s.initiatorname) == ("default", "iqn.2026-11.test:init")
    assert (s.isid, s.state) == ("00023d000001", "LOGGED_IN")
    assert s.recovery_tmo == 120
    assert s.header_digest == 0
    assert sysfs_.connection_ids(2) == [0]
    assert sysfs_.session_host(2) == 4
    assert [os.path.basename(d) for d in sysfs_.scsi_device_dirs(4)] == ["4:0:0:0", "4:0:0:1"]
    assert sysfs_.session_info(2) == s
    assert sysfs_.session_info(3) is None
    assert sysfs_.session_exists(2) and not sysfs_.session_exists(3)


def test_identities_and_pulses_read_only_what_they_need(sysfs: Path) -> None:
    assert sysfs_.session_identities() == [
        sysfs_.SessionIdentity(2, IQN, "127.0.0.1", 3260, "default", "00023d000001")
    ]
    cdir = sysfs / "sys" / "class" / "iscsi_connection" / "connection2:0"
    _write(cdir / "recv_tmo", "7")
    _write(cdir / "ping_tmo", "3")
    (pulse,) = sysfs_.session_pulses()
    assert pulse == sysfs_.SessionPulse(2, "LOGGED_IN", [0], 7, 3)
    assert events.ping_schedule() == {(2, 0): (7.0, 3.0)}
    assert events.failed_sessions() == []
    _write(sysfs / "sys" / "class" / "iscsi_session" / "session2" / "state", "FAILED")
    assert events.ping_schedule() == {}
    assert events.failed_sessions() == [(2, 0)]


def test_identities_cached_for_a_sessions_lifetime(sysfs: Path) -> None:
    link = sysfs / "sys" / "class" / "iscsi_session" / "session2"
    sdir = link.resolve()
    sysfs_._identities = {}
    assert [i.target for i in sysfs_.session_identities()] == [IQN]
    _write(sdir / "targetname", "iqn.2026-12.test:other")
    assert [i.target for i in sysfs_.session_identities()] == [IQN]  # same session: no read
    # the session goes, a new one gets its number (a new sysfs entry): read again
    link.unlink()
    assert sysfs_.session_identities() == []
    link.symlink_to(sdir)
    assert [i.target for i in sysfs_.session_identities()] == ["iqn.2026-12.test:other"]
    # a session whose parameters are not set yet is not remembered as it is
    link.unlink()
    assert sysfs_.session_identities() == []  # (a test file system may reuse the inode at once)
    _write(sdir / "targetname", "")
    link.symlink_to(sdir)
    assert [i.target for i in sysfs_.session_identities()] == [""]
    _write(sdir / "targetname", IQN)
    assert [i.target for i in sysfs_.session_identities()] == [IQN]


def test_wait_for_disks(sysfs: Path) -> None:
    assert ks.wait_for_disks(4, 0.1) == ["4:0:0:0"]  # /dev/sdb not there yet
    (sysfs / "dev" / "sdb").touch()
    assert ks.wait_for_disks(4, 0.1) == []
    assert ks.wait_for_disks(9, 0.1) == []


def test_no_sysfs_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYISCSI_SYSFS", str(tmp_path))
    assert sysfs_.list_sessions() == []
    assert sysfs_.connection_ids(1) == []
    assert sysfs_.session_host(1) == -1
    assert sysfs_.session_identities() == []
    assert sysfs_.session_pulses() == []


def test_the_reader_imports_the_standard_library_only() -> None:
    """iscsiadm reads sysfs on every start, iscsid every second: os and the record helper."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from pyiscsid import sysfs\n"
        "sysfs.list_sessions()\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    new = ["__future__", "pyiscsid", "pyiscsid.recordclass", "pyiscsid.sysfs"]
    assert proc.stdout == f"{new}\n"

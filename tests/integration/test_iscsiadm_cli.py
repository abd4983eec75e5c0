"""The real `.venv/bin/iscsiadm` (and iscsid) against a real tgtd: exact output, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
A = "iqn.2001-04.com.example:a"
B = "iqn.2001-04.com.example:b"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        ISCSI_DB_DIR=str(tmp_path / "db"),
        ISCSID_SOCKET=str(tmp_path / "iscsid.sock"),
        ISCSID_PIDFILE=str(tmp_path / "iscsid.pid"),
        ISCSID_CONFIG=str(tmp_path / "iscsid.conf"),
        ISCSI_INITIATORNAME_FILE=str(tmp_path / "initiatorname.iscsi"),
        PYISCSI_SYSFS=str(tmp_path / "sys"),  # no sessions
    )
    (tmp_path / "initiatorname.iscsi").write_text("InitiatorName=iqn.2005-03.org.test:init\n")
    return e


def adm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "iscsiadm"), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def two(tgtd):
    tgtd.add_target(A)
    tgtd.add_target(B)
    return tgtd


def test_discovery_and_listings(env, two):
    p = two.portal
    r = adm(env, "-m", "discovery", "-t", "st", "-p", p)
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"{p},1 {A}\n{p},1 {B}\n"
    r = adm(env, "-m", "discovery")
    assert (r.returncode, r.stdout) == (0, f"{p} via sendtargets\n")
    r = adm(env, "-m", "node")
    assert (r.returncode, r.stdout) == (0, f"{p},1 {A}\n{p},1 {B}\n")
    r = adm(env, "-m", "node", "-P", "1")
    tree = f"Target: {A}\n\tPortal: {p},1\n\t\tIface Name: default\n"
    tree += f"Target: {B}\n\tPortal: {p},1\n\t\tIface Name: default\n"
    assert (r.returncode, r.stdout) == (0, tree)
    r = adm(env, "-m", "discovery", "-P", "1")
    assert r.stdout == (
        f"SENDTARGETS:\nDiscoveryAddress: {p.replace(':', ',')}\n{tree}"
        "iSNS:\nNo targets found.\nSTATIC:\nNo targets found.\nFIRMWARE:\nNo targets found.\n"
    )
    r = adm(env, "-m", "discovery", "-p", p, "-o", "show")
    assert r.returncode == 0
    assert r.stdout.startswith("# BEGIN RECORD 2.1.8\ndiscovery.startup = manual\n")
    assert r.stdout.endswith("# END RECORD\n")
    # the seed's syntax: --ids and -r
    r = adm(env, "-m", "node", "--ids")
    lines = r.stdout.splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == [f"{p},1 {A}", f"{p},1 {B}"]
    rid = lines[1][1:7]
    assert lines[1].startswith(f"[{rid}] ") and len(rid) == 6
    r = adm(env, "-m", "node", "-r", f"[{rid}]")
    assert r.returncode == 0
    assert f"node.name = {B}\n" in r.stdout and r.stdout.count("# BEGIN RECORD") == 1


def test_record_dump_update_delete(env, two):
    p = two.portal
    assert adm(env, "-m", "discovery", "-t", "st", "-p", p).returncode == 0
    sel = ["-m", "node", "-T", A, "-p", p]
    r = adm(env, *sel, "-o", "update", "-n", "node.session.auth.password", "-v", "s3cret!")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    alias = "node.cnx[0].iscsi.MaxRecvDataSegmentLength"
    r = adm(env, *sel, "-o", "update", "-n", alias, "-v", "65536")
    assert r.returncode == 0
    r = adm(env, *sel)
    assert r.returncode == 0
    assert r.stdout.startswith(f"# BEGIN RECORD 2.1.8\nnode.name = {A}\nnode.tpgt = 1\n")
    assert "node.session.auth.password = ********\n" in r.stdout
    assert "node.conn[0].iscsi.MaxRecvDataSegmentLength = 65536\n" in r.stdout
    assert "node.session.auth.password = s3cret!\n" in adm(env, *sel, "-S").stdout
    r = adm(env, *sel, "-o", "update", "-n", "node.bogus", "-v", "1")
    assert r.returncode == 7
    assert r.stderr == (
        "iscsiadm: Cannot modify node.bogus. Invalid param name.\n"
        "iscsiadm: Could not execute operation on all records: invalid parameter\n"
    )
    r = adm(env, *sel, "-o", "update", "-n", "node.startup", "-v", "bogus")
    assert r.returncode == 7 and "node.startup" in r.stderr
    r = adm(env, *sel, "-o", "update", "-n", "node.startup")
    assert (r.returncode, r.stderr) == (7, "iscsiadm: update requires name and value\n")
    r = adm(env, *sel, "-o", "delete")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert adm(env, "-m", "node").stdout == f"{p},1 {B}\n"
    r = adm(env, *sel)
    assert (r.returncode, r.stderr) == (21, "iscsiadm: No records found\n")
    r = adm(env, *sel, "-o", "update", "-n", "node.startup", "-v", "manual")
    assert (r.returncode, r.stderr) == (21, "iscsiadm: No records found\n")


def test_op_new_both_syntaxes(env, two):
    r = adm(env, "-m", "node")
    assert (r.returncode, r.stdout, r.stderr) == (21, "", "iscsiadm: No records found\n")
    r = adm(env, "-m", "node", "-T", "iqn.x", "-p", "[::1]:3261", "-o", "new")
    assert r.returncode == 0
    assert (
        r.stdout
        == "New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] ::1,3261,-1 iqn.x] added\n"
    )
    assert adm(env, "-m", "node").stdout == "[::1]:3261,4294967295 iqn.x\n"
    # seed: -o new with only a portal discovers it and adds what it finds
    r = adm(env, "-m", "node", "-o", "new", "-p", two.portal)
    assert r.returncode == 0
    ids = adm(env, "-m", "node", "--ids", "-P", "0").stdout
    added = r.stdout.splitlines()
    assert len(added) == 2
    for line in added:
        assert line.startswith("new iSCSI node record added: [") and line[30:36] in ids


def test_rediscovery_keeps_user_settings(env, two):
    p = two.portal
    adm(env, "-m", "discovery", "-t", "st", "-p", p)
    sel = ["-m", "node", "-T", A, "-p", p]
    assert adm(env, *sel, "-o", "update", "-n", "node.startup", "-v", "automatic").returncode == 0
    r = adm(env, "-m", "discovery", "-t", "st", "-p", p)
    assert r.returncode == 0
    assert "node.startup = automatic\n" in adm(env, *sel).stdout
    assert "node.startup = manual\n" in adm(env, "-m", "node", "-T", B).stdout


def test_dead_portal(env, tgtd, tmp_path):
    """With reopen_max 0 in iscsid.conf: one attempt, no wait (the default count is tested in
    test_reference_outputs)."""
    from tgt import free_port

    Path(env["ISCSID_CONFIG"]).write_text("discovery.sendtargets.reopen_max = 0\n")
    port = free_port()
    start = time.monotonic()
    r = adm(env, "-m", "discovery", "-t", "st", "-p", f"127.0.0.1:{port}")
    assert time.monotonic() - start < 3
    assert (r.returncode, r.stdout) == (11, "")
    assert r.stderr == (
        "iscsiadm: cannot make connection to 127.0.0.1: Connection refused\n"
        "iscsiadm: connection login retries (reopen_max) 0 exceeded\n"
        "iscsiadm: Could not perform SendTargets discovery: iSCSI PDU timed out\n"
    )


def test_discovery_record_settings_are_reused(env, tgtd):
    """Discovery CHAP settings live in the discovery record and survive rediscovery.

    tgtd does not authenticate discovery sessions (it accepts CHAP or None there), so the
    wrong-secret exit code 24 cannot be provoked with it; the login module's CHAP tests cover it.
    """
    tgtd.add_target(A)
    p = tgtd.portal
    r = adm(env, "-m", "discovery", "-p", p, "-o", "new")
    addr, port = p.rsplit(":", 1)
    assert (r.returncode, r.stdout) == (0, f"New discovery record for [{addr},{port}] added.\n")
    upd = ["-m", "discovery", "-p", p, "-o", "update", "-n"]
    for name, value in (
        ("authmethod", "CHAP"),
        ("username", "user1"),
        ("password", "pw12345678901"),
    ):
        r = adm(env, *upd, f"discovery.sendtargets.auth.{name}", "-v", value)
        assert (r.returncode, r.stderr) == (0, "")
    r = adm(env, *upd, "discovery.bogus", "-v", "1")
    assert r.returncode == 7 and r.stderr.startswith("iscsiadm: ")
    r = adm(env, "-m", "discovery", "-t", "st", "-p", p)
    assert (r.returncode, r.stdout) == (0, f"{p},1 {A}\n")
    r = adm(env, "-m", "discovery", "-p", p)
    assert "discovery.sendtargets.auth.authmethod = CHAP\n" in r.stdout
    assert "discovery.sendtargets.auth.password = ********\n" in r.stdout
    assert (
        "discovery.sendtargets.auth.password = pw12345678901\n"
        in adm(env, "-m", "discovery", "-p", p, "-S").stdout
    )
    r = adm(env, "-m", "discovery", "-p", p, "-o", "delete")
    assert (r.returncode, r.stderr) == (0, "")
    assert adm(env, "-m", "discovery").returncode == 21
    assert adm(env, "-m", "node").returncode == 21  # its nodes went with it


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["-m", "foo"], "iscsiadm: mode -1 is not yet supported\n"),
        ([], "Try `iscsiadm --help' for more information.\n"),
        (["-m", "node", "-o", "bogus"], "iscsiadm: can not recognize operation: 'bogus'\n"),
        (["-m", "node", "-P", "5"], "iscsiadm: Invalid info level 5. Try 0 or 1.\n"),
        (["-m", "discovery", "-t", "st"],
         "iscsiadm: Please specify portal as <ipaddr>[:<ipport>]\n"),
        (["-m", "node", "-l", "-u"],
         "iscsiadm: Invalid parameters. Both login and logout passed in\n"),
        (["-m", "discovery", "-p", "10.9.9.9"],
         "iscsiadm: Discovery record [10.9.9.9,3260] not found!\n"),
    ],
)  # fmt: skip
def test_bad_command_lines(env, args, err):
    r = adm(env, *args)
    assert (r.returncode, r.stdout, r.stderr) == (7, "", err)


def test_no_sessions_and_no_discovery(env):
    r = adm(env, "-m", "session")
    assert (r.returncode, r.stderr) == (21, "iscsiadm: No active sessions.\n")
    r = adm(env, "-m", "discovery")
    assert (r.returncode, r.stdout, r.stderr) == (21, "", "")


NOT_RUNNING = (
    "iscsiadm: iscsid is not running. Could not start it up automatically using the startup "
    "command in the iscsid.conf iscsid.startup setting. Please check that the file exists or "
    "that your init scripts have started iscsid.\n"
)


def test_login_without_iscsid(env, two):
    p = two.portal
    adm(env, "-m", "discovery", "-t", "st", "-p", p)
    r = adm(env, "-m", "node", "-T", A, "-p", p, "--login")
    where = f"[iface: default, target: {A}, portal: 127.0.0.1,{two.port}]"
    assert r.returncode == 20
    assert r.stdout == f"Logging in to {where}\n"
    assert r.stderr == (
        NOT_RUNNING + "iscsiadm: can not connect to iSCSI daemon (111)!\n"
        f"iscsiadm: Could not login to {where}.\n"
        "iscsiadm: initiator reported error (20 - could not connect to iscsid)\n"
        "iscsiadm: Could not log into all portals\n"
    )


def test_iscsid_startup_command_is_run(env, two, tmp_path):
    """iscsid.conf's iscsid.startup starts the daemon when nothing listens (open-iscsi's
    iscsid_startup); the login then reaches it (and fails with 12: no kernel module here)."""
    p = two.portal
    adm(env, "-m", "discovery", "-t", "st", "-p", p)
    Path(env["ISCSID_CONFIG"]).write_text(f"iscsid.startup = {BIN / 'iscsid'}\n")
    try:
        r = adm(env, "-m", "node", "-T", A, "-p", p, "--login")
        where = f"[iface: default, target: {A}, portal: 127.0.0.1,{two.port}]"
        assert (r.returncode, r.stdout) == (12, f"Logging in to {where}\n")
        assert r.stderr.startswith(f"iscsiadm: Could not login to {where}.\n")
    finally:
        assert adm(env, "-k", "0").returncode == 0
        deadline = time.monotonic() + 10
        while os.path.exists(env["ISCSID_SOCKET"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_login_with_iscsid_without_kernel(env, two, tmp_path):
    p = two.portal
    adm(env, "-m", "discovery", "-t", "st", "-p", p)
    d = subprocess.Popen(
        [str(BIN / "iscsid"), "-f"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(env["ISCSID_PIDFILE"]):
            assert d.poll() is None, d.stderr.read() if d.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert Path(env["ISCSID_PIDFILE"]).read_text() == f"{d.pid}\n"
        r = adm(env, "-m", "node", "-L", "all")
        wa = f"[iface: default, target: {A}, portal: 127.0.0.1,{two.port}]"
        wb = f"[iface: default, target: {B}, portal: 127.0.0.1,{two.port}]"
        assert r.returncode == 12
        assert r.stdout == f"Logging in to {wa}\nLogging in to {wb}\n"
        msg = (
            "initiator reported error (12 - iSCSI driver not found. Please make sure it is "
            "loaded, and retry the operation)"
        )
        assert r.stderr == (
            f"iscsiadm: Could not login to {wa}.\niscsiadm: {msg}\n"
            f"iscsiadm: Could not login to {wb}.\niscsiadm: {msg}\n"
            "iscsiadm: Could not log into all portals\n"
        )
        assert adm(env, "-k", "0").returncode == 0
        assert d.wait(10) == 0
    finally:
        if d.poll() is None:
            d.kill()
            d.wait()
    assert not os.path.exists(env["ISCSID_SOCKET"])
    assert not os.path.exists(env["ISCSID_PIDFILE"])


def test_iscsid_version_and_sigterm(env):
    r = subprocess.run([str(BIN / "iscsid"), "-v"], capture_output=True, text=True, env=env)
    assert (r.returncode, r.stdout) == (0, "iscsid version 2.1.8\n")
    r = subprocess.run([str(BIN / "iscsid"), "-x"], capture_output=True, text=True, env=env)
    assert (r.returncode, r.stderr) == (
        1, "iscsid: invalid option -- 'x'\nTry `iscsid --help' for more information.\n"
    )  # fmt: skip
    # daemonised: the parent returns once the socket is up; SIGTERM removes socket and pid file
    r = subprocess.run([str(BIN / "iscsid")], capture_output=True, text=True, env=env, timeout=20)
    assert r.returncode == 0, r.stderr
    pid = int(Path(env["ISCSID_PIDFILE"]).read_text())
    assert os.path.exists(env["ISCSID_SOCKET"])
    os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while os.path.exists(env["ISCSID_SOCKET"]) or os.path.exists(env["ISCSID_PIDFILE"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)

"""`iscsiadm -m session` outputs from a fake sysfs tree, byte for byte against the captures of
open-iscsi 2.1.8 (tests/data/openiscsi 27-31, 33, 34/38 formats).

The tree is laid out as the in-kernel transport class lays it out (see pyiscsid/sysfs.py),
with the values the capture's session showed. States that come from iscsid (connection state,
internal session state) and the statistics come from a real IpcServer on a temporary socket
answering as iscsid does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from vm.harness import parse_capture

from pyiscsiadm import output
from pyiscsiadm.main import main
from pyiscsid import sysfs
from pyiscsid.errors import Err, IscsiError
from pyiscsid.ipc import IpcServer

CAPTURES = Path(__file__).parents[1] / "data" / "openiscsi"
INITIATOR = "iqn.2026-11.test:vm-initiator"
T1 = "iqn.2026-11.test:t1"


def capture(nn: str):  # type: ignore[no-untyped-def]
    return parse_capture(next(CAPTURES.glob(f"{nn}-*.txt")))


def _write(path: Path, files: dict[str, object]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (path / name).write_text(f"{value}\n")


def add_session(
    root: Path,
    sid: int,
    host: int,
    target: str,
    address: str = "127.0.0.1",
    port: int = 3260,
    luns: dict[int, str | None] | None = None,
) -> None:
    """One session as the kernel shows it: the device hierarchy under devices/platform/hostH
    and the class links, with the values of the capture's session (27-31)."""
    luns = {0: None, 1: "sda"} if luns is None else luns
    hostdir = root / "devices" / "platform" / f"host{host}"
    sessdev = hostdir / f"session{sid}"
    sdir = sessdev / "iscsi_session" / f"session{sid}"
    _write(
        sdir,
        {
            "targetname": target,
            "tpgt": 1,
            "state": "LOGGED_IN",
            "ifacename": "default",
            "initiatorname": INITIATOR,
            "username": "(null)",
            "password": "(null)",
            "username_in": "(null)",
            "password_in": "(null)",
            "recovery_tmo": 120,
            "abort_tmo": 15,
            "lu_reset_tmo": 30,
            "tgt_reset_tmo": 30,
            "first_burst_len": 65536,
            "max_burst_len": 262144,
            "immediate_data": 1,
            "initial_r2t": 1,
            "max_outstanding_r2t": 1,
        },
    )
    (sdir / "device").symlink_to(sessdev)
    cdir = sessdev / f"connection{sid}:0" / "iscsi_connection" / f"connection{sid}:0"
    _write(
        cdir,
        {
            "address": address,
            "port": port,
            "persistent_address": address,
            "persistent_port": port,
            "header_digest": 0,
            "data_digest": 0,
            "max_recv_dlength": 262144,
            "max_xmit_dlength": 8192,
        },
    )
    _write(hostdir / "iscsi_host" / f"host{host}", {"ipaddress": address, "initiatorname": ""})
    (hostdir / "iscsi_host" / f"host{host}" / "hwaddress").unlink(missing_ok=True)
    _write(hostdir / "scsi_host" / f"host{host}", {"proc_name": "iscsi_tcp", "state": "running"})
    for lun, disk in luns.items():
        ldir = sessdev / f"target{host}:0:0" / f"{host}:0:0:{lun}"
        _write(ldir, {"state": "running"})
        if disk:
            (ldir / "block" / disk).mkdir(parents=True)
    for cls, name, real in (
        ("iscsi_session", f"session{sid}", sdir),
        ("iscsi_connection", f"connection{sid}:0", cdir),
        ("iscsi_host", f"host{host}", hostdir / "iscsi_host" / f"host{host}"),
        ("scsi_host", f"host{host}", hostdir / "scsi_host" / f"host{host}"),
    ):
        (root / "class" / cls).mkdir(parents=True, exist_ok=True)
        (root / "class" / cls / name).symlink_to(real)
    _write(root / "module" / "scsi_transport_iscsi", {"version": "2.0-870"})


class FakeIscsid:
    """iscsid's replies for the session requests (a real IpcServer on a temporary socket)."""

    def __init__(self) -> None:
        self.stats: dict[int, dict[str, int]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.knows_sessions = True

    def handle(self, op: str, args: dict[str, Any], _peer: object) -> dict[str, Any]:
        self.requests.append((op, args))
        if op == "session_info" and self.knows_sessions:
            return {"conn_state": 3, "session_state": 0}
        if op == "stats":
            return {"stats": self.stats[args["sid"]]}
        raise IscsiError(Err.SESS_NOT_FOUND)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, FakeIscsid]]:
    root = tmp_path / "sys"
    root.mkdir()
    monkeypatch.setenv("PYISCSI_SYSFS", str(root))
    monkeypatch.setenv("ISCSI_DB_DIR", str(tmp_path / "db"))
    monkeypatch.setenv("ISCSID_CONFIG", str(tmp_path / "iscsid.conf"))
    sock = str(tmp_path / "iscsid.sock")
    monkeypatch.setenv("ISCSID_SOCKET", sock)
    daemon = FakeIscsid()
    server = IpcServer(daemon.handle, sock)
    import threading

    t = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    t.start()
    try:
        yield root, daemon
    finally:
        server.close()
        t.join(2)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str, int]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return out, err, code


@pytest.mark.parametrize(
    ("nn", "argv"),
    [
        ("27", ["-m", "session"]),
        ("28", ["-m", "session", "-P", "1"]),
        ("29", ["-m", "session", "-P", "2"]),
        ("30", ["-m", "session", "-P", "3"]),
    ],
)
def test_session_listings_match_captures(fake, capsys, nn, argv) -> None:
    root, _ = fake
    add_session(root, 1, 0, T1)
    want = capture(nn)
    assert run(capsys, *argv) == (want.stdout, want.stderr, want.exit)


@pytest.mark.parametrize(("nn", "level"), [("28", "1"), ("30", "3")])
def test_iscsi_if_layout_matches_captures(fake, capsys, nn, level) -> None:
    """As our iscsi_if module lays sysfs out: module/iscsi_if instead of scsi_transport_iscsi,
    and an empty hwaddress and netdev when no iface binds the session to a NIC. -P 1 and -P 3
    still print open-iscsi's lines (the transport class version, `default`)."""
    root, _ = fake
    add_session(root, 1, 0, T1)
    (root / "module" / "scsi_transport_iscsi" / "version").unlink()
    (root / "module" / "scsi_transport_iscsi").rmdir()
    (root / "module" / "iscsi_if").mkdir()
    host = root / "class" / "iscsi_host" / "host0"
    (host / "hwaddress").write_text("\n")
    (host / "netdev").write_text("\n")
    want = capture(nn)
    assert run(capsys, "-m", "session", "-P", level) == (want.stdout, want.stderr, want.exit)


def test_four_sessions_listing(fake, capsys) -> None:
    """37: four sessions, sorted as sysfs lists them."""
    root, _ = fake
    sessions = [
        (2, "iqn.2026-11.test:t3", "127.0.0.1"),
        (3, "iqn.2026-11.test:t2", "127.0.0.1"),
        (4, T1, "127.0.0.2"),
        (5, T1, "127.0.0.1"),
    ]
    for sid, target, addr in sessions:
        add_session(root, sid, sid - 1, target, addr, luns={})
    want = capture("37")
    assert run(capsys, "-m", "session") == (want.stdout, want.stderr, want.exit)


def test_session_order_is_alphabetical_like_scandir(fake, capsys) -> None:
    root, _ = fake
    for sid in (2, 10):
        add_session(root, sid, sid, f"iqn.2026-11.test:s{sid}", luns={})
    out, _, code = run(capsys, "-m", "session")
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()] == ["[10]", "[2]"]


def test_tree_groups_sessions_of_one_target_and_portal(fake, capsys) -> None:
    """A second session to the same target and portal: an empty line instead of the portals."""
    root, _ = fake
    add_session(root, 1, 0, T1, luns={})
    add_session(root, 2, 1, T1, luns={})
    out, _, _ = run(capsys, "-m", "session", "-P", "1")
    lines = out.split("\n")
    assert lines[0] == f"{T1} (non-flash)".join(["Target: ", ""])
    assert lines.count("Target: iqn.2026-11.test:t1 (non-flash)") == 1
    assert lines[1:3] == [
        "\tCurrent Portal: 127.0.0.1:3260,1",
        "\tPersistent Portal: 127.0.0.1:3260,1",
    ]
    second = lines.index("\t\tSID: 2")
    assert lines[second - 10] == ""


def test_show_prints_secrets_with_open_iscsis_label(fake, capsys) -> None:
    root, _ = fake
    add_session(root, 1, 0, T1, luns={})
    sdir = root / "class" / "iscsi_session" / "session1"
    (sdir / "username").write_text("u1\n")
    (sdir / "password").write_text("secret1\n")
    out, _, _ = run(capsys, "-m", "session", "-P", "2", "-S")
    assert "\t\tusername: u1\n\t\tpassword: secret1\n\t\tusername_in: <empty>\n" in out
    # open-iscsi 2.1.8 labels the incoming secret "password" when it shows it
    assert "\t\tusername_in: <empty>\n\t\tpassword: <empty>\n" in out
    out, _, _ = run(capsys, "-m", "session", "-P", "2")
    assert "\t\tpassword: ********\n\t\tusername_in: <empty>\n\t\tpassword_in: ********\n" in out


def test_missing_values_print_as_open_iscsi(fake, capsys) -> None:
    """No negotiated values, no timeouts, no host state, iscsid does not know the session."""
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    sdir = root / "class" / "iscsi_session" / "session1"
    for name in ("tgt_reset_tmo", "first_burst_len", "immediate_data"):
        (sdir / name).unlink()
    (root / "class" / "scsi_host" / "host0" / "state").unlink()
    (root / "module" / "scsi_transport_iscsi" / "version").unlink()
    daemon.knows_sessions = False
    out, err, code = run(capsys, "-m", "session", "-P", "3")
    assert (err, code) == ("", 0)
    assert out.startswith("Target: ")  # no version lines
    assert "\t\tiSCSI Connection State: Unknown\n" in out
    assert "\t\tInternal iscsid Session State: Unknown\n" in out
    assert "\t\tTarget Reset Timeout: <empty>\n" in out
    assert "FirstBurstLength" not in out and "ImmediateData" not in out
    assert "\t\tInitialR2T: Yes\n" in out
    assert out.endswith("\t\tHost Number: 0\tState: Unknown\n")


def test_tree_without_iscsid(fake, capsys, monkeypatch, tmp_path) -> None:
    root, _ = fake
    add_session(root, 1, 0, T1, luns={})
    monkeypatch.setenv("ISCSID_SOCKET", str(tmp_path / "none.sock"))
    out, err, code = run(capsys, "-m", "session", "-P", "1")
    assert code == 0
    assert "\t\tiSCSI Connection State: Unknown\n\t\tiSCSI Session State: LOGGED_IN\n" in out
    assert err == (
        "iscsiadm: iscsid is not running. Could not start it up automatically using the "
        "startup command in the iscsid.conf iscsid.startup setting. Please check that the file "
        "exists or that your init scripts have started iscsid.\n"
        "iscsiadm: can not connect to iSCSI daemon (111)!\n"
    )


def test_stats_match_capture(fake, capsys) -> None:
    """31: the `stats {sid}` reply printed as open-iscsi prints MGMT_IPC_SESSION_STATS."""
    root, daemon = fake
    add_session(root, 1, 0, T1)
    want = capture("31")
    counters: dict[str, int] = {}
    section = ""
    for line in want.stdout.splitlines()[1:]:
        if not line.startswith("\t"):
            section = line
            continue
        name, value = line.strip().split(": ")
        counters[name] = int(value)
    assert section == "iSCSI Extended:" and "eh_abort_cnt" in counters
    daemon.stats[1] = counters
    assert run(capsys, "-m", "session", "-r", "1", "-s") == (want.stdout, want.stderr, want.exit)
    assert daemon.requests[-1] == ("stats", {"sid": 1})


def test_stats_without_extended_counters(fake, capsys) -> None:
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    daemon.stats[1] = {"scsicmd_pdus": 7}
    out, err, code = run(capsys, "-m", "session", "-s")
    assert (err, code) == ("", 0)
    lines = out.splitlines()
    assert lines[0] == f"Stats for session [sid: 1, target: {T1}, portal: 127.0.0.1,3260]"
    assert lines[1] == "iSCSI SNMP:" and len(lines) == 2 + len(output.SNMP_STATS)
    assert "\tscsicmd_pdus: 7" in lines and "\ttxdata_octets: 0" in lines


def test_session_exists_matches_capture(fake, capsys) -> None:
    """33: a node that already has its nr_sessions sessions is not logged in again (15)."""
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    from pyiscsid.db import Database
    from pyiscsid.records import NodeRecord

    with Database() as db:
        db.add_node(NodeRecord.new(T1, "127.0.0.1", 3260, 1))
    want = capture("33")
    argv = ["-m", "node", "-T", T1, "-p", "127.0.0.1:3260", "--login"]
    assert run(capsys, *argv) == (want.stdout, want.stderr, want.exit)
    assert daemon.requests == []  # nothing was asked of iscsid


def test_session_record_dump(fake, capsys) -> None:
    """32: `-m session -r SID` prints the node record the session belongs to."""
    root, _ = fake
    add_session(root, 1, 0, T1, luns={})
    from pyiscsid.db import Database
    from pyiscsid.records import NodeRecord

    # the two values where Debian's iscsid.conf differs from open-iscsi's built-in defaults
    conf = {"node.session.initial_login_retry_max": "8", "node.conn[0].timeo.login_timeout": "15"}
    with Database() as db:
        rec = NodeRecord.new(T1, "127.0.0.1", 3260, 1, config=conf)
        rec.set_discovery("127.0.0.1", 3260, "send_targets")
        db.add_node(rec)
    want = capture("32")
    assert run(capsys, "-m", "session", "-r", "1") == (want.stdout, want.stderr, want.exit)


def test_login_logout_lines() -> None:
    """The formats 26/34/36/38/41 show, kept in one place for the VM tier."""
    where = ("default", T1, "127.0.0.1", 3260)
    c26 = capture("26")
    assert c26.stdout == f"{output.logging_in(*where)}\n{output.login_ok(*where)}\n"
    c34 = capture("34")
    s = (1, T1, "127.0.0.1", 3260)
    assert c34.stdout == f"{output.logging_out(*s)}\n{output.logout_ok(*s)}\n"
    c41 = capture("41")
    chap = ("default", "iqn.2026-11.test:chap", "127.0.0.1", 3262)
    assert c41.stderr.splitlines()[0] == f"iscsiadm: {output.login_failed(*chap)}"
    assert c41.stderr.splitlines()[2] == f"iscsiadm: {output.LOGIN_ALL_FAILED}"
    assert output.sessions_present("default", 2, 1) == (
        "default: 2 sessions requested, but 1 already present."
    )


def test_sysfs_reader_defaults(fake) -> None:
    root, _ = fake
    add_session(root, 1, 0, T1)
    s = sysfs.read_session(1)
    assert (s.host_no, s.transport, s.hwaddress, s.netdev, s.ipaddress) == (
        0,
        "tcp",
        "default",
        "default",
        "127.0.0.1",
    )
    assert s.username == "" and s.password == ""  # "(null)" reads as unset
    assert [(d.lun, d.disk, d.state) for d in sysfs.scsi_devices(s)] == [
        (0, None, "running"),
        (1, "sda", "running"),
    ]
    # the brief read (logouts, login's session count) has what names the session, no more
    (brief,) = sysfs.list_sessions(brief=True)
    assert (brief.sid, brief.target, brief.persistent_address, brief.persistent_port) == (
        1,
        T1,
        "127.0.0.1",
        3260,
    )
    assert (brief.iface, brief.host_no, brief.state) == ("default", -1, "Unknown")


def test_node_mode_portal_without_port_means_3260(fake, capsys) -> None:
    """-m node -p IP (no port) is IP:3260 for sessions as for records, as in open-iscsi
    (csi-driver-iscsi logs out and rescans with -p IP)."""
    root, _ = fake
    add_session(root, 1, 0, T1, port=3261)
    out, err, code = run(capsys, "-m", "node", "-T", T1, "-p", "127.0.0.1", "--logout")
    assert (out, err, code) == ("", "iscsiadm: No matching sessions found\n", 21)


def _iface_session(
    root: Path, sid: int, host: int, iface: str, netdev: str, hwaddress: str
) -> None:
    """A session to T1 through an iface, as iscsi_if shows it: the session's ifacename, the
    host's netdev and hwaddress (empty: not bound that way)."""
    add_session(root, sid, host, T1, luns={})
    sdir = root / "class" / "iscsi_session" / f"session{sid}"
    (sdir / "ifacename").write_text(f"{iface}\n")
    hdir = root / "class" / "iscsi_host" / f"host{host}"
    (hdir / "netdev").write_text(f"{netdev}\n")
    (hdir / "hwaddress").write_text(f"{hwaddress}\n")


def test_session_through_iface_matches_capture(fake, capsys) -> None:
    """92: the iface, netdev and address of a session through iface0 (bound to lo)."""
    root, _ = fake
    _iface_session(root, 12, 11, "iface0", "lo", "")
    want = capture("92")
    assert run(capsys, "-m", "session", "-P", "1") == (want.stdout, want.stderr, want.exit)


def test_session_bound_by_hwaddress_is_named_as_libopeniscsiusr_names_it(fake, capsys) -> None:
    """A host bound by hwaddress: libopeniscsiusr 2.1.8 names its iface TRANSPORT.HWADDRESS.
    ipv4.0 in -P 1 (open-iscsi itself cannot bind to lo's MAC, so there is no capture of it)."""
    root, _ = fake
    _iface_session(root, 3, 2, "iface1", "", "52:54:00:12:34:56")
    out, err, code = run(capsys, "-m", "session", "-P", "1")
    assert (err, code) == ("", 0)
    assert "\t\tIface Name: tcp.52:54:00:12:34:56.ipv4.0\n" in out
    assert "\t\tIface HWaddress: 52:54:00:12:34:56\n\t\tIface Netdev: default\n" in out


def test_iface_operations_while_a_session_uses_it(fake, capsys) -> None:
    """93-95: an update warns, a delete and a new are refused (exit 15), as open-iscsi."""
    root, _ = fake
    assert run(capsys, "-m", "iface", "-I", "iface0", "-o", "new")[2] == 0
    run(
        capsys,
        "-m",
        "iface",
        "-I",
        "iface0",
        "-o",
        "update",
        "-n",
        "iface.net_ifacename",
        "-v",
        "lo",
    )
    for target in (T1, "iqn.2026-11.test:t2"):
        out, err, code = run(
            capsys, "-m", "node", "-o", "new", "-T", target, "-p", "127.0.0.1:3260", "-I", "iface0"
        )
        assert code == 0, err
    _iface_session(root, 12, 11, "iface0", "lo", "")
    for nn in ("93", "94", "95"):
        want = capture(nn)
        argv = want.command.split()[1:]
        assert (nn, run(capsys, *argv)) == (nn, (want.stdout, want.stderr, want.exit))
    # 94 deleted the record no session used, and kept the one in use
    out, _, _ = run(capsys, "-m", "node")
    assert out == f"127.0.0.1:3260,4294967295 {T1}\n"

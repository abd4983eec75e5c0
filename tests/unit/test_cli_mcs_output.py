"""`iscsiadm -m session` with multi-connection sessions (issue 11), from a fake sysfs tree and a
real IpcServer answering as iscsid does (the fixtures of test_cli_session_output).

With one connection everything prints as open-iscsi 2.1.8 prints it (the captures); with more,
the lines of the first connection stay where they are and each further connection gets a block
`Connection CID: N` (-P 1..3), its own counters under `Stats for connection [...]` (-s), and
`-r SID:CID --logout` asks iscsid to close that connection only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_cli_session_output import INITIATOR, T1, add_session, capture

from pyiscsiadm import output
from pyiscsiadm.args import UsageError, parse
from pyiscsiadm.main import main
from pyiscsid import sysfs
from pyiscsid.errors import Err, IscsiError
from pyiscsid.ipc import IpcServer


class FakeIscsid:
    """iscsid's replies: session_info, stats (with per-connection counters), logout(s)."""

    def __init__(self) -> None:
        self.stats: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.logout_error: int = 0

    def handle(self, op: str, args: dict[str, Any], _peer: object) -> dict[str, Any]:
        self.requests.append((op, args))
        if op == "session_info":
            return {"conn_state": 3, "session_state": 0}
        if op == "stats":
            return self.stats[args["sid"]]
        if op == "logout":
            if self.logout_error:
                raise IscsiError(Err(self.logout_error))
            return {}
        if op == "logout_many":
            return {"results": [{"code": 0, "message": ""} for _ in args["sids"]]}
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
    t = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    t.start()
    try:
        yield root, daemon
    finally:
        server.stop()
        t.join(2)
        server.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str, int]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return out, err, code


def add_connection(
    root: Path,
    sid: int,
    cid: int,
    address: str = "127.0.0.2",
    port: int = 3261,
    state: str | None = "up",
    params: tuple[int, int, int, int] = (1, 1, 65536, 262144),
) -> None:
    """A further connection of session `sid`, as the kernel shows it: its device under the
    session's, and the class link. `params`: header digest, data digest, max_recv_dlength,
    max_xmit_dlength."""
    sessdev = Path(sysfs.session_dir(sid)).resolve().parents[1]
    cdir = sessdev / f"connection{sid}:{cid}" / "iscsi_connection" / f"connection{sid}:{cid}"
    cdir.mkdir(parents=True)
    values: dict[str, object] = {
        "address": address,
        "port": port,
        "persistent_address": address,
        "persistent_port": port,
        "header_digest": ("None", "CRC32C")[params[0]],
        "data_digest": ("None", "CRC32C")[params[1]],
        "max_recv_dlength": params[2],
        "max_xmit_dlength": params[3],
    }
    if state is not None:
        values["state"] = state
    for name, value in values.items():
        (cdir / name).write_text(f"{value}\n")
    (root / "class" / "iscsi_connection" / f"connection{sid}:{cid}").symlink_to(cdir)


def remove_connection(root: Path, sid: int, cid: int) -> None:
    (root / "class" / "iscsi_connection" / f"connection{sid}:{cid}").unlink()


# CID 1 of session 1 as -P 1 and -P 2/3 print it
BLOCK_P1 = (
    "\t\t*****************\n"
    "\t\tConnection CID: 1\n"
    "\t\t*****************\n"
    "\t\tCurrent Portal: 127.0.0.2:3261,1\n"
    "\t\tPersistent Portal: 127.0.0.2:3261,1\n"
    "\t\tiSCSI Connection State: LOGGED IN\n"
)
BLOCK_P2 = BLOCK_P1 + (
    "\t\tHeaderDigest: CRC32C\n"
    "\t\tDataDigest: CRC32C\n"
    "\t\tMaxRecvDataSegmentLength: 65536\n"
    "\t\tMaxXmitDataSegmentLength: 262144\n"
)
DEVICES = "\t\t************************\n\t\tAttached SCSI devices:\n"


# -- -P 0..3 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("nn", "level"), [("27", "0"), ("28", "1"), ("29", "2"), ("30", "3")])
def test_one_connection_prints_as_open_iscsi(fake, capsys, nn, level) -> None:
    """The captures, byte for byte, with the connection's sysfs `state` present too."""
    root, _ = fake
    add_session(root, 1, 0, T1)
    (root / "class" / "iscsi_connection" / "connection1:0" / "state").write_text("up\n")
    want = capture(nn)
    assert run(capsys, "-m", "session", "-P", level) == (want.stdout, want.stderr, want.exit)


def test_two_connections_p3(fake, capsys) -> None:
    """-P 3: the capture's lines (those of CID 0 where they are), then CID 1's block, before
    the attached SCSI devices."""
    root, _ = fake
    add_session(root, 1, 0, T1)
    add_connection(root, 1, 1)
    want = capture("30")
    at = want.stdout.index(DEVICES)
    expected = want.stdout[:at] + BLOCK_P2 + want.stdout[at:]
    assert run(capsys, "-m", "session", "-P", "3") == (expected, "", 0)
    # the whole output, literally, so that the layout the man page shows cannot drift
    assert expected == (
        "iSCSI Transport Class version 2.0-870\n"
        "version 2.1.8\n"
        f"Target: {T1} (non-flash)\n"
        "\tCurrent Portal: 127.0.0.1:3260,1\n"
        "\tPersistent Portal: 127.0.0.1:3260,1\n"
        "\t\t**********\n"
        "\t\tInterface:\n"
        "\t\t**********\n"
        "\t\tIface Name: default\n"
        "\t\tIface Transport: tcp\n"
        f"\t\tIface Initiatorname: {INITIATOR}\n"
        "\t\tIface IPaddress: 127.0.0.1\n"
        "\t\tIface HWaddress: default\n"
        "\t\tIface Netdev: default\n"
        "\t\tSID: 1\n"
        "\t\tiSCSI Connection State: LOGGED IN\n"
        "\t\tiSCSI Session State: LOGGED_IN\n"
        "\t\tInternal iscsid Session State: NO CHANGE\n"
        "\t\t*********\n"
        "\t\tTimeouts:\n"
        "\t\t*********\n"
        "\t\tRecovery Timeout: 120\n"
        "\t\tTarget Reset Timeout: 30\n"
        "\t\tLUN Reset Timeout: 30\n"
        "\t\tAbort Timeout: 15\n"
        "\t\t*****\n"
        "\t\tCHAP:\n"
        "\t\t*****\n"
        "\t\tusername: <empty>\n"
        "\t\tpassword: ********\n"
        "\t\tusername_in: <empty>\n"
        "\t\tpassword_in: ********\n"
        "\t\t************************\n"
        "\t\tNegotiated iSCSI params:\n"
        "\t\t************************\n"
        "\t\tHeaderDigest: None\n"
        "\t\tDataDigest: None\n"
        "\t\tMaxRecvDataSegmentLength: 262144\n"
        "\t\tMaxXmitDataSegmentLength: 8192\n"
        "\t\tFirstBurstLength: 65536\n"
        "\t\tMaxBurstLength: 262144\n"
        "\t\tImmediateData: Yes\n"
        "\t\tInitialR2T: Yes\n"
        "\t\tMaxOutstandingR2T: 1\n"
        "\t\t*****************\n"
        "\t\tConnection CID: 1\n"
        "\t\t*****************\n"
        "\t\tCurrent Portal: 127.0.0.2:3261,1\n"
        "\t\tPersistent Portal: 127.0.0.2:3261,1\n"
        "\t\tiSCSI Connection State: LOGGED IN\n"
        "\t\tHeaderDigest: CRC32C\n"
        "\t\tDataDigest: CRC32C\n"
        "\t\tMaxRecvDataSegmentLength: 65536\n"
        "\t\tMaxXmitDataSegmentLength: 262144\n"
        "\t\t************************\n"
        "\t\tAttached SCSI devices:\n"
        "\t\t************************\n"
        "\t\tHost Number: 0\tState: running\n"
        "\t\tscsi0 Channel 00 Id 0 Lun: 0\n"
        "\t\tscsi0 Channel 00 Id 0 Lun: 1\n"
        "\t\t\tAttached scsi disk sda\t\tState: running\n"
    )


@pytest.mark.parametrize(("nn", "level", "block"), [("28", "1", BLOCK_P1), ("29", "2", BLOCK_P2)])
def test_two_connections_p1_p2(fake, capsys, nn, level, block) -> None:
    """-P 1 (portals and state) and -P 2 (and the connection's negotiated parameters): the
    block comes after everything the level prints of the session."""
    root, _ = fake
    add_session(root, 1, 0, T1)
    add_connection(root, 1, 1)
    want = capture(nn)
    assert run(capsys, "-m", "session", "-P", level) == (want.stdout + block, "", 0)


def test_p0_lists_a_session_once(fake, capsys) -> None:
    root, _ = fake
    add_session(root, 1, 0, T1)
    add_connection(root, 1, 1)
    want = capture("27")
    assert run(capsys, "-m", "session") == (want.stdout, want.stderr, want.exit)


def test_connections_in_cid_order_with_their_kernel_states(fake, capsys) -> None:
    """CIDs in numeric order (2 before 10); the kernel's connection state named as iscsid names
    connection states; a connection without a readable state is Unknown."""
    root, _ = fake
    add_session(root, 1, 0, T1, luns={})
    for cid, state in ((10, "down"), (2, "failed"), (3, "bound"), (4, None), (5, "up")):
        add_connection(root, 1, cid, address=f"127.0.0.{cid}", state=state)
    out, err, code = run(capsys, "-m", "session", "-P", "1")
    assert (err, code) == ("", 0)
    lines = out.splitlines()
    cids = [int(line.split(": ")[1]) for line in lines if "Connection CID:" in line]
    assert cids == [2, 3, 4, 5, 10]
    states = [line for line in lines if "iSCSI Connection State" in line]
    assert states == [
        "\t\tiSCSI Connection State: LOGGED IN",  # CID 0: iscsid's session_info
        "\t\tiSCSI Connection State: CLEANUP WAIT",
        "\t\tiSCSI Connection State: IN LOGIN",
        "\t\tiSCSI Connection State: Unknown",
        "\t\tiSCSI Connection State: LOGGED IN",
        "\t\tiSCSI Connection State: FREE",
    ]
    assert "\t\t******************\n\t\tConnection CID: 10\n\t\t******************\n" in out
    assert "\t\tCurrent Portal: 127.0.0.10:3261,1\n" in out


def test_first_connection_closed(fake, capsys) -> None:
    """CID 0 closed: the session's lines are those of its lowest CID, the others follow."""
    root, _ = fake
    add_session(root, 1, 0, T1, luns={})
    add_connection(root, 1, 1)
    add_connection(root, 1, 2, address="127.0.0.3")
    remove_connection(root, 1, 0)
    out, err, code = run(capsys, "-m", "session", "-P", "2")
    assert (err, code) == ("", 0)
    assert out.count("Connection CID:") == 1
    assert "\tCurrent Portal: 127.0.0.2:3261,1\n\tPersistent Portal: 127.0.0.2:3261,1\n" in out
    assert out.endswith(BLOCK_P2.replace("CID: 1", "CID: 2").replace("127.0.0.2", "127.0.0.3"))


def test_two_sessions_each_with_its_connections(fake, capsys) -> None:
    """Each session's further connections stay inside that session's lines."""
    root, _ = fake
    add_session(root, 1, 0, T1, luns={})
    add_session(root, 2, 1, T1, luns={})
    add_connection(root, 1, 1)
    out, _, _ = run(capsys, "-m", "session", "-P", "1")
    lines = out.splitlines()
    assert lines.index("\t\tConnection CID: 1") < lines.index("\t\tSID: 2")
    assert out.count("Connection CID:") == 1
    assert out.endswith("\t\tInternal iscsid Session State: NO CHANGE\n")


def test_sid_cid_selects_the_session(fake, capsys) -> None:
    """-r SID:CID with -P: the session SID, all its connections."""
    root, _ = fake
    add_session(root, 1, 0, T1)
    add_connection(root, 1, 1)
    whole = run(capsys, "-m", "session", "-P", "3")
    assert run(capsys, "-m", "session", "-r", "1:1", "-P", "3") == whole
    assert run(capsys, "-m", "session", "-r", "1:0", "-P", "3") == whole
    out, err, code = run(capsys, "-m", "session", "-r", "1:2", "-P", "3")
    assert (out, err, code) == ("", "iscsiadm: Could not get connection info for sid 1 cid 2\n", 22)


# -- -s ----------------------------------------------------------------------------------------


def _capture_counters() -> dict[str, int]:
    counters: dict[str, int] = {}
    for line in capture("31").stdout.splitlines()[1:]:
        if line.startswith("\t"):
            name, value = line.strip().split(": ")
            counters[name] = int(value)
    return counters


def test_stats_one_connection_prints_as_today(fake, capsys) -> None:
    """A reply with "connections" holding one connection: capture 31, byte for byte."""
    root, daemon = fake
    add_session(root, 1, 0, T1)
    counters = _capture_counters()
    daemon.stats[1] = {"stats": counters, "connections": [{"cid": 0, "stats": counters}]}
    want = capture("31")
    assert run(capsys, "-m", "session", "-r", "1", "-s") == (want.stdout, want.stderr, want.exit)
    assert daemon.requests[-1] == ("stats", {"sid": 1})


def test_stats_two_connections(fake, capsys) -> None:
    """The session's total as today, then each connection's counters in CID order."""
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    add_connection(root, 1, 1)
    total = {"txdata_octets": 30, "scsicmd_pdus": 3, "tx_sendpage_failures": 0}
    daemon.stats[1] = {
        "stats": total,
        "connections": [
            {
                "cid": 1,
                "stats": {"txdata_octets": 20, "scsicmd_pdus": 1, "tx_sendpage_failures": 0},
            },
            {
                "cid": 0,
                "stats": {"txdata_octets": 10, "scsicmd_pdus": 2, "tx_sendpage_failures": 0},
            },
        ],
    }
    out, err, code = run(capsys, "-m", "session", "-r", "1", "-s")
    assert (err, code) == ("", 0)

    def block(counters: dict[str, int]) -> str:
        return "\n".join(output.stats_lines(counters)) + "\n"

    banner = f"[sid: 1, target: {T1}, portal: 127.0.0.1,3260]"
    assert out == (
        f"Stats for session {banner}\n"
        + block(total)
        + f"Stats for connection [sid: 1, cid: 0, target: {T1}, portal: 127.0.0.1,3260]\n"
        + block({"txdata_octets": 10, "scsicmd_pdus": 2, "tx_sendpage_failures": 0})
        + f"Stats for connection [sid: 1, cid: 1, target: {T1}, portal: 127.0.0.2,3261]\n"
        + block({"txdata_octets": 20, "scsicmd_pdus": 1, "tx_sendpage_failures": 0})
    )
    # the connection's block as a script sees it
    lines = out.splitlines()
    start = lines.index(
        f"Stats for connection [sid: 1, cid: 1, target: {T1}, portal: 127.0.0.2,3261]"
    )
    assert lines[start + 1 : start + 4] == [
        "iSCSI SNMP:",
        "\ttxdata_octets: 20",
        "\trxdata_octets: 0",
    ]
    assert lines[-2:] == ["iSCSI Extended:", "\ttx_sendpage_failures: 0"]


def test_stats_sid_cid_and_all_sessions(fake, capsys) -> None:
    """-r SID:CID -s prints the session's statistics; -s alone every session's."""
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    add_connection(root, 1, 1)
    add_session(root, 2, 1, T1, luns={})
    daemon.stats[1] = {
        "stats": {"scsicmd_pdus": 3},
        "connections": [{"cid": 0, "stats": {"scsicmd_pdus": 1}}, {"cid": 1, "stats": {}}],
    }
    daemon.stats[2] = {"stats": {"scsicmd_pdus": 5}}
    one = run(capsys, "-m", "session", "-r", "1", "-s")
    assert run(capsys, "-m", "session", "-r", "1:1", "-s") == one
    out, err, code = run(capsys, "-m", "session", "-s")
    assert (err, code) == ("", 0)
    assert out.startswith(one[0])
    assert out[len(one[0]) :].startswith("Stats for session [sid: 2,")
    assert out.count("Stats for connection") == 2


def test_stats_malformed_connections_ignored(fake, capsys) -> None:
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    daemon.stats[1] = {"stats": {"scsicmd_pdus": 3}, "connections": [{"stats": {}}, 7, {"cid": 1}]}
    out, err, code = run(capsys, "-m", "session", "-r", "1", "-s")
    assert (err, code) == ("", 0)
    assert "Stats for connection" not in out


# -- -r SID:CID --logout -------------------------------------------------------------------


def test_logout_one_connection(fake, capsys) -> None:
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    add_connection(root, 1, 1)
    out, err, code = run(capsys, "-m", "session", "-r", "1:1", "--logout")
    assert (out, err, code) == (
        f"Logging out of connection [sid: 1, cid: 1, target: {T1}, portal: 127.0.0.2,3261]\n"
        f"Logout of [sid: 1, cid: 1, target: {T1}, portal: 127.0.0.2,3261] successful.\n",
        "",
        0,
    )
    assert daemon.requests == [("logout", {"sid": 1, "cid": 1})]
    # CID 0 of a session with another connection: that connection only, too
    daemon.requests.clear()
    out, _, code = run(capsys, "-m", "session", "-r", "1:0", "-u")
    assert code == 0
    assert out.startswith("Logging out of connection [sid: 1, cid: 0, target: ")
    assert daemon.requests == [("logout", {"sid": 1, "cid": 0})]


def test_logout_one_connection_fails(fake, capsys) -> None:
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    add_connection(root, 1, 1)
    daemon.logout_error = int(Err.LOGOUT)
    out, err, code = run(capsys, "-m", "session", "-r", "1:1", "--logout")
    where = f"[sid: 1, cid: 1, target: {T1}, portal: 127.0.0.2,3261]"
    assert (out, err, code) == (
        f"Logging out of connection {where}\n",
        f"iscsiadm: Could not logout of {where}.\n"
        "iscsiadm: initiator reported error (10 - encountered iSCSI logout failure)\n",
        10,
    )


def test_logout_last_connection_is_the_session_logout(fake, capsys) -> None:
    """-r SID:CID of a session with that one connection: the session's logout, with its lines
    (capture 34's), as `-r SID --logout`."""
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    want = capture("34")
    assert run(capsys, "-m", "session", "-r", "1:0", "--logout") == (
        want.stdout,
        want.stderr,
        want.exit,
    )
    assert daemon.requests == [("logout_many", {"sids": [1]})]
    daemon.requests.clear()
    assert run(capsys, "-m", "session", "-r", "1", "--logout") == (
        want.stdout,
        want.stderr,
        want.exit,
    )
    assert daemon.requests == [("logout_many", {"sids": [1]})]


def test_logout_of_a_connection_that_is_not_there(fake, capsys) -> None:
    root, daemon = fake
    add_session(root, 1, 0, T1, luns={})
    add_connection(root, 1, 1)
    out, err, code = run(capsys, "-m", "session", "-r", "1:3", "--logout")
    assert (out, err, code) == ("", "iscsiadm: Could not get connection info for sid 1 cid 3\n", 22)
    assert daemon.requests == []


# -- -r parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sid", "cid"),
    [
        ("1", 1, None),
        ("1:0", 1, 0),
        ("12:3", 12, 3),
        ("/sys/class/iscsi_session/session4", 4, None),
        ("session4:2", 4, 2),
    ],
)
def test_sid_cid_parses(text, sid, cid) -> None:
    o = parse(["-m", "session", "-r", text, "-u"])
    assert (o.sid, o.cid, o.logout) == (sid, cid, True)


@pytest.mark.parametrize(
    "bad", ["1:x", ":1", "-1", "1:-1", "-1:0", "1:", "1:2:3", "x", "1:²", "²", " 1", "1: 2"]
)
def test_bad_sid_cid_is_a_usage_error(fake, capsys, bad) -> None:
    """open-iscsi's `invalid sid` and ISCSI_ERR_INVAL (7), nothing asked of iscsid."""
    _root, daemon = fake
    with pytest.raises(UsageError) as e:
        parse(["-m", "session", "-r", bad, "--logout"])
    assert (e.value.lines, e.value.code) == ([f"invalid sid '{bad}'"], Err.INVAL)
    assert run(capsys, "-m", "session", "-r", bad, "--logout") == (
        "",
        f"iscsiadm: invalid sid '{bad}'\n",
        7,
    )
    assert daemon.requests == []

"""iscsiadm's command-line parsing and formats (no database, no network)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass

import pytest

from pyiscsiadm import output
from pyiscsiadm.args import Portal, UsageError, parse, parse_portal, parse_record_id, tokenize
from pyiscsiadm.main import main
from pyiscsid import ipc
from pyiscsid.errors import Err, IscsiError


def test_tokenize_gnu_style():
    tokens, operands = tokenize(["-mnode", "--targetname=iqn.x", "-p", "1.2.3.4", "-lS", "x"])
    assert [(t.letter, t.arg) for t in tokens] == [
        ("m", "node"), ("T", "iqn.x"), ("p", "1.2.3.4"), ("l", None), ("S", None),
    ]  # fmt: skip
    assert operands == ["x"]


def test_long_prefix_and_logoutall():
    o = parse(["-m", "node", "--logoutall=all"])
    assert o.logout_all == "all"
    o = parse(["--mode", "node", "--targ", "iqn.t", "--sho"])
    assert (o.targetname, o.show) == ("iqn.t", True)
    with pytest.raises(UsageError) as e:
        parse(["-m", "node", "--log"])  # --login, --loginall, --logout, --logoutall
    assert e.value.lines[0] == "option '--log' is ambiguous"


def test_portal_forms():
    assert parse_portal("10.0.0.1") == Portal("10.0.0.1", -1, -1)
    assert parse_portal("10.0.0.1:3261") == Portal("10.0.0.1", 3261, -1)
    assert parse_portal("[fe80::1]:3262,5") == Portal("fe80::1", 3262, 5)
    assert parse_portal("fe80::1") == Portal("fe80::1", -1, -1)
    with pytest.raises(IscsiError) as e:
        parse_portal("10.0.0.1:http")
    assert e.value.code == Err.INVAL
    with pytest.raises(IscsiError):
        parse_portal("[fe80::1:3260")


def test_record_id():
    assert parse_record_id("[02F611]") == "02f611"
    assert parse_record_id("0a45f8") == "0a45f8"
    for bad in ("02f61", "zzzzzz", "[02f6111]"):
        with pytest.raises(IscsiError):
            parse_record_id(bad)


@pytest.mark.parametrize(
    ("argv", "lines"),
    [
        (["-m", "foo"], ["mode -1 is not yet supported"]),
        (["-m", "node", "--bogus"], [
            "unrecognized option '--bogus'", "node mode: option '-?' is not allowed/supported",
        ]),
        (["-m", "node", "-x"], [
            "option requires an argument -- 'x'",
            "node mode: option '-?' is not allowed/supported",
        ]),
        (["-m", "node", "-D"], ["node mode: option '-D' is not allowed/supported"]),
        (["-m", "session", "--logoutall=all"], [
            "session mode: option '-U' is not allowed/supported",
        ]),
        (["-m", "node", "-o", "bogus"], ["can not recognize operation: 'bogus'"]),
        (["-m"], ["option requires an argument -- 'm'", "unrecognized character 'm'"]),
    ],
)  # fmt: skip
def test_usage_errors(argv, lines):
    with pytest.raises(UsageError) as e:
        parse(argv)
    assert e.value.lines == lines
    assert e.value.code == Err.INVAL


def test_main_messages(capsys):
    assert main(["-m", "foo"]) == 7
    assert capsys.readouterr().err == "iscsiadm: mode -1 is not yet supported\n"
    assert main([]) == 7
    assert capsys.readouterr().err == "Try `iscsiadm --help' for more information.\n"
    assert main(["-V"]) == 0
    assert capsys.readouterr().out == "iscsiadm version 2.1.8\n"
    assert main(["-m", "node", "-L", "bogus"]) == 7
    assert capsys.readouterr().err == (
        "iscsiadm: Invalid loginall option bogus.\nTry `iscsiadm --help' for more information.\n"
    )
    assert main(["-m", "session", "-r", "abc"]) == 7
    assert capsys.readouterr().err == "iscsiadm: invalid sid 'abc'\n"


def test_help_lists_modes_and_seed_syntax(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("iscsiadm -m discoverydb [-hV]")
    assert "iscsiadm -k priority\n" in out
    assert "--ids" in out and "new iSCSI node record added" in out


@dataclass
class Rec:
    target: str
    address: str
    port: int
    tpgt: int
    iface: str = "default"
    record_id: str = "02f611"


def test_formats():
    a = Rec("iqn.2002-07.com.example.target.a", "10.16.16.223", 3260, 1)
    b = Rec("iqn.t2", "::1", 3261, -1)
    assert (
        output.node_flat(a, ids=True)
        == "[02f611] 10.16.16.223:3260,1 iqn.2002-07.com.example.target.a"
    )
    assert output.node_flat(b) == "[::1]:3261,4294967295 iqn.t2"
    assert output.discovered_flat(b) == "[::1]:3261,-1 iqn.t2"
    assert output.new_node(b) == (
        "New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] ::1,3261,-1 iqn.t2] added"
    )
    c = Rec("iqn.2002-07.com.example.target.a", "10.0.0.2", 3260, -1)
    assert output.node_tree(output.sort_nodes([a, b, c])) == [
        "Target: iqn.2002-07.com.example.target.a",
        "\tPortal: 10.0.0.2:3260,-1",
        "\t\tIface Name: default",
        "\tPortal: 10.16.16.223:3260,1",
        "\t\tIface Name: default",
        "Target: iqn.t2",
        "\tPortal: [::1]:3261,-1",
        "\t\tIface Name: default",
    ]


def test_session_listing_from_fake_sysfs(tmp_path, monkeypatch, capsys):
    s = tmp_path / "class" / "iscsi_session" / "session3"
    c = tmp_path / "class" / "iscsi_connection" / "connection3:0"
    s.mkdir(parents=True)
    c.mkdir(parents=True)
    (s / "targetname").write_text("iqn.2001-04.com.example:a\n")
    (s / "tpgt").write_text("1\n")
    for name, value in (
        ("address", "127.0.0.1"),
        ("port", "3260"),
        ("persistent_address", "127.0.0.1"),
        ("persistent_port", "3260"),
    ):
        (c / name).write_text(value + "\n")  # fmt: skip
    monkeypatch.setenv("PYISCSI_SYSFS", str(tmp_path))
    assert main(["-m", "session"]) == 0
    assert (
        capsys.readouterr().out
        == "tcp: [3] 127.0.0.1:3260,1 iqn.2001-04.com.example:a (non-flash)\n"
    )
    assert main(["-m", "session", "-r", "4"]) == 22
    assert capsys.readouterr().err == (
        "iscsiadm: could not read session targetname: 5\n"
        "iscsiadm: Could not get session info for sid 4\n"
    )
    # the seed's SID:CID: the connection must exist; then it is the session's
    assert main(["-m", "session", "-r", "3:1", "-P", "0"]) == 22
    assert capsys.readouterr().err == "iscsiadm: Could not get connection info for sid 3 cid 1\n"
    assert main(["-m", "session", "-r", "3"]) == 21  # no node record behind it
    plain = capsys.readouterr()
    assert main(["-m", "session", "-r", "3:0"]) == 21
    assert capsys.readouterr() == plain
    for bad in ("3:", "3:x", ":0", "3:0:1"):
        assert main(["-m", "session", "-r", bad]) == 7
        assert capsys.readouterr().err == f"iscsiadm: invalid sid '{bad}'\n"


def test_no_sessions(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYISCSI_SYSFS", str(tmp_path))
    assert main(["-m", "session"]) == 21
    assert capsys.readouterr().err == "iscsiadm: No active sessions.\n"
    assert main(["-m", "node", "-U", "all"]) == 21
    assert capsys.readouterr().err == "iscsiadm: No matching sessions found\n"


def test_ipc_roundtrip_and_errors(tmp_path, monkeypatch):
    path = str(tmp_path / "sock")
    monkeypatch.setenv("ISCSID_SOCKET", path)
    with pytest.raises(IscsiError) as e:
        ipc.request("ping")
    assert e.value.code == Err.ISCSID_NOTCONN
    assert e.value.message == "can not connect to iSCSI daemon (111)!"

    def handler(op, args, peer):
        if op == "boom":
            raise RuntimeError("bug")
        if op == "fail":
            raise IscsiError(Err.SESS_EXISTS)
        return {"echo": args, "uid": peer.uid}

    server = ipc.IpcServer(handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        assert ipc.request("x", a=1) == {
            "code": 0,
            "message": "",
            "echo": {"a": 1},
            "uid": os.getuid(),
        }
        assert ipc.request("fail") == {"code": 15, "message": "session exists"}
        assert ipc.request("boom")["code"] == Err.INTERNAL
        # malformed requests get INVALID_MGMT_REQ, and the server keeps serving
        for raw in (b"not json\n", b"[1,2]\n", b'{"noop": 1}\n', b"x" * 70000):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                s.sendall(raw)
                s.shutdown(socket.SHUT_WR)
                reply = json.loads(s.makefile("rb").readline())
            assert reply["code"] == Err.INVALID_MGMT_REQ
        assert ipc.request("x")["code"] == 0
        # a second server on a live socket is refused
        with pytest.raises(IscsiError) as e:
            ipc.IpcServer(handler)
        assert e.value.code == Err.BUSY
    finally:
        server.stop()
        t.join(2)
        server.close()
    assert not os.path.exists(path)


def test_startup_is_light():
    """`iscsiadm -m session` must not import the heavy modules (cryptography, pyroute2, cffi)."""
    code = (
        "import sys; from pyiscsiadm.main import main; main(['-m', 'session']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('cryptography', 'pyroute2', 'cffi', 'sqlite3', 'json')))"
    )
    env = dict(os.environ, PYISCSI_SYSFS="/nonexistent")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_ipc_connect_waits_for_room_in_a_full_listen_queue(tmp_path, monkeypatch) -> None:
    """A Unix connect to a full listen queue fails at once with EAGAIN; the client waits
    for the daemon to accept (32 logins at once overflowed it on a slow VM)."""
    path = str(tmp_path / "full.sock")
    monkeypatch.setenv("ISCSID_SOCKET", path)
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen(0)
        queued = [socket.socket(socket.AF_UNIX)]
        queued[0].connect(path)  # the one place the queue has
        probe = socket.socket(socket.AF_UNIX)
        probe.setblocking(False)
        with pytest.raises(BlockingIOError):
            probe.connect(path)  # full: what the client must survive
        probe.close()
        with pytest.raises(IscsiError) as e:
            ipc._connect(socket.socket(socket.AF_UNIX), path, 0.2)
        assert e.value.code == Err.ISCSID_NOTCONN
        timer = threading.Timer(0.3, lambda: queued.append(srv.accept()[0]))
        timer.start()
        client = socket.socket(socket.AF_UNIX)
        ipc._connect(client, path, 5.0)  # returns once the accept made room
        timer.join()
        assert client.getpeername() == path
        for s in [client, *queued]:
            s.close()


def test_start_up_imports_stay_light() -> None:
    """`-m session`, `-m node` (list, -L all, -U all) and the session logouts import no typing,
    dataclasses, pathlib or hashlib: each costs iscsiadm about a tenth of a second under the
    VM's software emulation (docs/internals.md)."""
    code = (
        "import sys\n"
        "import pyiscsiadm.main, pyiscsiadm.session, pyiscsiadm.node, pyiscsiadm.common\n"
        "import pyiscsid.sysfs, pyiscsid.db, pyiscsid.ipc, pyiscsid.records\n"
        "heavy = {'typing', 'dataclasses', 'pathlib', 'hashlib', 'inspect', 'pyiscsid.settings'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "[]\n", "")

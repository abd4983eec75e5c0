"""iface records for real: connections bound to an iface's netdev / source address (real
sockets on the loopback device), and `iscsiadm -m iface` with discovery and node records
through ifaces against a real tgtd. (Byte-for-byte against open-iscsi: test_reference_outputs;
sessions through ifaces on separate interfaces: tests/vm/test_vm_multipath.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyiscsid.errors import Err
from pyiscsid.login import BindError, connect, netdev_of_hwaddress

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
A = "iqn.2001-04.com.example:a"
LO_MAC = "00:00:00:00:00:00"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    s.settimeout(5)
    yield s
    s.close()


def _peer_of_next(listener: socket.socket, sock: socket.socket) -> tuple[str, int]:
    conn, peer = listener.accept()
    try:
        assert sock.getsockname() == peer
    finally:
        conn.close()
        sock.close()
    return peer


def test_source_address_binding(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    sock = connect("127.0.0.1", port, 5.0, source_address="127.0.0.2")
    assert _peer_of_next(listener, sock)[0] == "127.0.0.2"
    sock = connect("127.0.0.1", port, 5.0)  # unbound: the kernel picks 127.0.0.1
    assert _peer_of_next(listener, sock)[0] == "127.0.0.1"


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE needs CAP_NET_RAW")
def test_netdev_binding(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    sock = connect("127.0.0.1", port, 5.0, netdev="lo")
    bound = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
    assert bound.rstrip(b"\0") == b"lo"
    _peer_of_next(listener, sock)
    with pytest.raises(BindError) as exc:
        connect("127.0.0.1", port, 5.0, netdev="nosuchdev0")
    assert exc.value.code == Err.TRANS
    assert exc.value.message == "Could not bind connection 0 to nosuchdev0"
    assert exc.value.reason == "No such device"


def test_hwaddress_lookup() -> None:
    """Only Ethernet devices are looked up (open-iscsi's rule): lo's all-zero MAC is no match
    (the capture 82 shows open-iscsi refusing it the same way)."""
    for mac in (LO_MAC, "02:00:5e:ff:ff:fe"):
        with pytest.raises(BindError) as exc:
            netdev_of_hwaddress(mac)
        assert exc.value.message == f"Cannot match {mac} to net/scsi interface."
        assert exc.value.reason == "Success"
    net = Path("/sys/class/net")
    ether = [d for d in sorted(net.iterdir()) if (d / "type").read_text().strip() == "1"]
    if not ether:
        pytest.skip("no Ethernet device on this machine")
    mac = (ether[0] / "address").read_text().strip()
    assert netdev_of_hwaddress(mac.upper()) == next(
        d.name for d in ether if (d / "address").read_text().strip() == mac
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        ISCSI_DB_DIR=str(tmp_path / "db"),
        ISCSID_SOCKET=str(tmp_path / "iscsid.sock"),
        ISCSID_CONFIG=str(tmp_path / "iscsid.conf"),
        ISCSI_INITIATORNAME_FILE=str(tmp_path / "initiatorname.iscsi"),
        PYISCSI_SYSFS=str(tmp_path / "sys"),  # no sessions
    )
    (tmp_path / "initiatorname.iscsi").write_text("InitiatorName=iqn.2005-03.org.test:init\n")
    (tmp_path / "iscsid.conf").write_text("discovery.sendtargets.reopen_max = 0\n")
    return e


def adm(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    r = subprocess.run(
        [str(BIN / "iscsiadm"), *args], env=env, capture_output=True, text=True, timeout=60
    )
    return r.returncode, r.stdout, r.stderr


def new_iface(env: dict[str, str], name: str, **values: str) -> None:
    assert adm(env, "-m", "iface", "-I", name, "-o", "new") == (
        0,
        f"{name} updated.\nNew interface {name} added\n",
        "",
    )
    for key, value in values.items():
        got = adm(env, "-m", "iface", "-I", name, "-o", "update", "-n", f"iface.{key}", "-v", value)
        assert got == (0, f"{name} updated.\n", "")


def test_discovery_through_ifaces(env: dict[str, str], tgtd) -> None:  # type: ignore[no-untyped-def]
    tgtd.add_target(A)
    p = tgtd.portal
    new_iface(env, "bysrc", ipaddress="127.0.0.2")
    new_iface(env, "bydev", net_ifacename="lo")
    new_iface(env, "nowhere", net_ifacename="nosuchdev0")
    # through an iface whose device does not exist: the connection cannot be made
    code, out, err = adm(env, "-m", "discovery", "-t", "st", "-p", p, "-I", "nowhere")
    assert (code, out) == (int(Err.PDU_TIMEOUT), "")
    assert err == (
        "iscsiadm: Could not bind connection 0 to nosuchdev0\n"
        "iscsiadm: cannot make connection to 127.0.0.1: No such device\n"
        "iscsiadm: connection login retries (reopen_max) 0 exceeded\n"
        "iscsiadm: Could not perform SendTargets discovery: iSCSI PDU timed out\n"
    )
    # through the two others: one record each, carrying its iface's binding
    code, out, err = adm(env, "-m", "discovery", "-t", "st", "-p", p, "-I", "bysrc", "-I", "bydev")
    assert (code, out, err) == (0, f"{p},1 {A}\n{p},1 {A}\n", "")
    code, out, _ = adm(env, "-m", "node", "-P", "1")
    assert out == f"Target: {A}\n\tPortal: {p},1\n\t\tIface Name: bydev\n\t\tIface Name: bysrc\n"
    code, out, _ = adm(env, "-m", "node", "-T", A, "-p", p, "-I", "bysrc")
    assert "iface.iscsi_ifacename = bysrc\n" in out
    assert "iface.ipaddress = 127.0.0.2\n" in out
    # an update of the iface reaches its node records
    adm(
        env,
        "-m",
        "iface",
        "-I",
        "bysrc",
        "-o",
        "update",
        "-n",
        "iface.ipaddress",
        "-v",
        "127.0.0.3",
    )
    code, out, _ = adm(env, "-m", "node", "-T", A, "-p", p, "-I", "bysrc")
    assert "iface.ipaddress = 127.0.0.3\n" in out
    code, out, _ = adm(env, "-m", "iface", "-P", "1")
    assert out == (
        f"Iface: bydev\n\tTarget: {A}\n\t\tPortal: {p},1\n"
        f"Iface: bysrc\n\tTarget: {A}\n\t\tPortal: {p},1\n"
        "Iface: nowhere\nIface: default\nIface: iser\n"
    )
    # deleting an iface deletes its node records, not the others
    assert adm(env, "-m", "iface", "-I", "bysrc", "-o", "delete") == (
        0,
        "bysrc unbound and deleted.\n",
        "",
    )
    code, out, _ = adm(env, "-m", "node", "-P", "1")
    assert out == f"Target: {A}\n\tPortal: {p},1\n\t\tIface Name: bydev\n"
    # without -I, discovery binds to every tcp iface record (open-iscsi), not to default
    adm(env, "-m", "iface", "-I", "nowhere", "-o", "delete")
    code, out, err = adm(env, "-m", "discovery", "-t", "st", "-p", p)
    assert (code, out, err) == (0, f"{p},1 {A}\n", "")
    code, out, _ = adm(env, "-m", "node", "-P", "1")
    assert out == f"Target: {A}\n\tPortal: {p},1\n\t\tIface Name: bydev\n"


def test_node_new_through_iface(env: dict[str, str]) -> None:
    new_iface(env, "iface0", net_ifacename="lo")
    assert adm(env, "-m", "node", "-o", "new", "-T", A, "-p", "127.0.0.1", "-I", "iface0") == (
        0,
        f"New iSCSI node [tcp:[hw=,ip=,net_if=lo,iscsi_if=iface0] 127.0.0.1,3260,-1 {A}] added\n",
        "",
    )
    assert adm(env, "-m", "node", "-T", A, "-I", "nosuch") == (
        3,
        "",
        "iscsiadm: Could not read iface info for nosuch.\n",
    )
    code, out, _ = adm(env, "-m", "node", "-T", A, "-I", "iface0")
    assert code == 0 and "iface.net_ifacename = lo\n" in out

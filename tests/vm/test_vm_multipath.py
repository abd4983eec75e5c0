"""iface records and dm-multipath in the VM (one boot; tests/vm/e2e/multipath.sh does the work
in the guest and documents the network it builds).

Two veth pairs lead from the initiator's namespace to a namespace where LIO's two portals of one
target listen; both portals are reachable through both pairs and the kernel's own route to
either is vA0. iface0 (iface.net_ifacename vA0) and iface1 (iface.hwaddress: vB0's MAC) each
carry one session:

1. iface: each session's TCP connection has its interface's local address, the interface of
   each session carries what is written to its disk (the other one does not), and `iscsiadm -m
   session -P 1` names each session's iface, netdev and address.
2. multipath: udev's by-path links and WWIDs of both disks, multipathd's one map over them, and
   fio (crc32c verify) on the map while the target's end of path A is down for ~8 s: path A
   failed, then active again after the session recovers, and fio without an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import parse_results, run_in_vm
from .test_vm_datapath import SCRIPT as _DATAPATH

SCRIPT = _DATAPATH.parent / "multipath.sh"
IQN = "iqn.2003-01.org.linux-iscsi.vm:multipath"
SERIAL = "f5f5f5f5-5eed-4bad-8000-000000000005"
WWID = "36001405" + SERIAL.replace("-", "")[:25]
MIB = 1 << 20

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def run(modules: None) -> Iterator[tuple[Any, dict[str, str]]]:
    result = run_in_vm(SCRIPT, timeout=420)
    yield result, parse_results(result.out_dir)


def _check(run: tuple[Any, dict[str, str]], *keys: str) -> dict[str, str]:
    result, res = run
    tail = result.output[-4000:]
    assert res.get("fail") is None, f"{res['fail']}\n{tail}"
    for key in keys:
        assert key in res, f"no {key} in the results\n{tail}"
    return res


def test_each_session_goes_through_its_iface(run: tuple[Any, dict[str, str]]) -> None:
    res = _check(run, "conn_a", "conn_b", "tx_a_vA0", "tx_b_vB0")
    result = run[0]
    # without the binding, the kernel would send to either portal through vA0
    assert res["route_unbound_pb"] == "dev vA0"
    # the local address of each connection is its interface's, and ss shows the socket bound
    # to that device (ADDRESS%DEVICE)
    assert re.fullmatch(r"10\.1\.1\.2%vA0:\d+", res["conn_a"]), res["conn_a"]
    assert re.fullmatch(r"10\.2\.2\.2%vB0:\d+", res["conn_b"]), res["conn_b"]
    # 8 MiB written through disk A leave by vA0, through disk B by vB0; the other interface
    # carries only pings and their like meanwhile
    assert int(res["tx_a_vA0"]) >= 8 * MIB
    assert int(res["tx_a_vB0"]) < MIB // 4
    assert int(res["tx_b_vB0"]) >= 8 * MIB
    assert int(res["tx_b_vA0"]) < MIB // 4
    out = result.out_dir
    mac = res["mac_b"]
    assert (out / "iface-list.txt").read_text() == (
        "iface0 tcp,<empty>,<empty>,vA0,<empty>\n"
        f"iface1 tcp,{mac},<empty>,<empty>,<empty>\n"
        "default tcp,<empty>,<empty>,<empty>,<empty>\n"
        "iser iser,<empty>,<empty>,<empty>,<empty>\n"
    )
    # discovery through both ifaces: both portals, once per iface
    assert (out / "discovery.txt").read_text() == (
        f"10.9.9.1:3260,1 {IQN}\n10.9.9.2:3260,1 {IQN}\n"
    ) * 2
    assert (out / "login.txt").read_text() == (
        f"Logging in to [iface: iface0, target: {IQN}, portal: 10.9.9.1,3260]\n"
        f"Login to [iface: iface0, target: {IQN}, portal: 10.9.9.1,3260] successful.\n"
        f"Logging in to [iface: iface1, target: {IQN}, portal: 10.9.9.2,3260]\n"
        f"Login to [iface: iface1, target: {IQN}, portal: 10.9.9.2,3260] successful.\n"
    )
    text = (out / "session-P1.txt").read_text()
    # a host bound by hwaddress is named TRANSPORT.HWADDRESS.ipv4.0, as libopeniscsiusr names it
    for name, addr, hw, netdev in (
        ("iface0", "10.1.1.2", "default", "vA0"),
        (f"tcp.{mac}.ipv4.0", "10.2.2.2", mac, "default"),
    ):
        assert (
            f"\t\tIface Name: {name}\n\t\tIface Transport: tcp\n"
            "\t\tIface Initiatorname: iqn.2026-11.test:pyiscsi-multipath\n"
            f"\t\tIface IPaddress: {addr}\n\t\tIface HWaddress: {hw}\n"
            f"\t\tIface Netdev: {netdev}\n"
        ) in text, text


def test_multipath_survives_a_path_cut(
    run: tuple[Any, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    res = _check(run, "by_path", "map", "fio_errors", "path_active_after_ms", "done")
    result = run[0]
    result.check()
    assert res["wwid"] == WWID
    # multipathd set its fast_io_fail_tmo as each session's replacement timeout (the records
    # say 120 s): the failover below takes seconds because of it
    assert res["recovery_tmo"] == "5 5"
    assert res["map"] == f"/dev/mapper/{WWID}"
    out = result.out_dir
    disk_a, disk_b = (d.removeprefix("/dev/") for d in res["disks"].split())
    up = (out / "multipath-ll-up.txt").read_text()
    failed = (out / "multipath-ll-failed.txt").read_text()
    restored = (out / "multipath-ll-restored.txt").read_text()
    assert up.startswith(WWID), up
    for text, state_a in ((up, "active ready"), (failed, "failed"), (restored, "active ready")):
        assert re.search(rf" {disk_a} \S+ +{state_a}", text), text
        assert re.search(rf" {disk_b} \S+ +active ready", text), text
    assert int(res["outage_ms"]) >= 7_000
    assert res["fio_errors"] == "0"
    assert int(res["fio_written_bytes"]) == 32 * MIB
    assert int(res["fio_verified_bytes"]) == 32 * MIB
    # the same session came back through iface0's interface
    assert re.fullmatch(r"10\.1\.1\.2%vA0:\d+", res["conn_a_after"]), res["conn_a_after"]
    assert res["leftover_nodes"] == "0"
    with capsys.disabled():
        print(
            f"\n[vm multipath] path A failed {res['path_failed_after_ms']} ms after the cut, "
            f"session back {res['session_back_after_ms']} ms and path active "
            f"{res['path_active_after_ms']} ms after the link returned; fio longest completion "
            f"{res['fio_max_clat_ms']} ms, 0 errors; boot {result.boot_seconds:.1f} s"
        )

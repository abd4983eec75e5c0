"""bench/: raw guest files -> metrics, medians, ratios, Markdown, PNG; settings and status."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import plot  # noqa: E402
import report  # noqa: E402

import bench  # noqa: E402

STAT = "cpu  434 0 3348 2528 1 0 193 0 0 0\ncpu  490 0 3877 2788 1 0 320 0 0 0\n"


def fio_json(read: tuple[int, int, float, float, float, int], write: tuple | None = None) -> dict:
    """(io_bytes, bw_bytes, iops, lat_mean_ns, clat_p99_ns, total_ios) per direction."""

    def d(t: tuple | None) -> dict:
        if t is None:
            return {"io_bytes": 0, "bw_bytes": 0, "iops": 0.0, "total_ios": 0,
                    "lat_ns": {"mean": 0.0}, "clat_ns": {"mean": 0.0}}  # fmt: skip
        io, bw, iops, lat, p99, n = t
        return {"io_bytes": io, "bw_bytes": bw, "iops": iops, "total_ios": n,
                "lat_ns": {"mean": lat}, "clat_ns": {"percentile": {"99.000000": p99}}}  # fmt: skip

    return {"jobs": [{"error": 0, "read": d(read), "write": d(write)}]}


def test_cpu_busy_seconds_counts_user_system_irq_softirq() -> None:
    # user 56 + system 529 + softirq 127 ticks; idle and iowait left out
    assert report.cpu_busy_seconds(STAT) == pytest.approx(7.12)


@pytest.mark.parametrize(
    "text",
    ["", "cpu  1 2 3 4\n", "cpu  1 2 3 4 5\ncpu  1 x 3 4 5\n", "cpu  9 9 9 9\ncpu  1 1 1 1\n"],
)
def test_cpu_busy_seconds_rejects_bad_input(text: str) -> None:
    with pytest.raises(report.BenchError):
        report.cpu_busy_seconds(text, "x.stat")


def test_fio_metrics_sequential() -> None:
    fio = fio_json((2**30, 50 * 2**20, 50.0, 160e6, 400e6, 1024))
    m = report.fio_metrics(fio, 20.0, "seqread_1m_qd8")
    assert m == {"bw_MiBps": 50.0, "lat_mean_us": 160000.0, "lat_p99_us": 400000.0,
                 "cpu_s_per_GiB": 20.0}  # fmt: skip


def test_fio_metrics_mixed_weights_latency_and_takes_worse_p99() -> None:
    fio = fio_json(
        (7 * 2**26, 7 * 2**20, 112.0, 1000e3, 3000e3, 700),
        (3 * 2**26, 3 * 2**20, 48.0, 2000e3, 5000e3, 300),
    )
    m = report.fio_metrics(fio, 5.0, "randrw70_64k_qd16")
    assert m == {"iops": 160.0, "lat_mean_us": 1300.0, "lat_p99_us": 5000.0,
                 "cpu_s_per_GiB": 5.0 / (10 * 2**26 / 2**30)}  # fmt: skip


def test_fio_metrics_no_data_or_garbage_is_an_error() -> None:
    with pytest.raises(report.BenchError, match="moved no data"):
        report.fio_metrics(fio_json((0, 0, 0, 0, 0, 0)), 1.0, "randread_4k_qd1")
    with pytest.raises(report.BenchError, match="not the fio JSON"):
        report.fio_metrics({"jobs": []}, 1.0, "randread_4k_qd1")


def test_ratio_direction() -> None:
    assert report.ratio("lio.randread_4k_qd1.iops", 200.0, 100.0) == 2.0
    assert report.ratio("lio.seqread_1m_qd8.bw_MiBps", 50.0, 100.0) == 0.5
    assert report.ratio("lio.randread_4k_qd1.lat_mean_us", 50.0, 100.0) == 2.0
    assert report.ratio("lio.randread_4k_qd1.cpu_s_per_GiB", 400.0, 100.0) == 0.25
    assert report.ratio("login_32.login_s", 0.5, 1.5) == 3.0
    assert report.ratio("login_32.login_s", None, 1.5) is None
    assert report.ratio("login_32.login_s", 0.0, 1.5) is None


def write_round(raw: Path, r: int, side: str, iops: float, login_s: float) -> None:
    fio = fio_json((4096 * 1000, int(iops * 4096), iops, 500e3, 900e3, 1000))
    (raw / f"r{r}-{side}-lio-randread_4k_qd1.json").write_text(json.dumps(fio))
    (raw / f"r{r}-{side}-lio-randread_4k_qd1.stat").write_text(STAT)
    (raw / f"r{r}-{side}-login.txt").write_text(f"targets=8 login_s={login_s} logout_s=1.0\n")


SESSION = """Target: iqn.x (non-flash)
		Negotiated iSCSI params:
		************************
		HeaderDigest: None
		MaxBurstLength: 262144
		InitialR2T: Yes
		************************
		Attached SCSI devices:
		************************
		Host Number: 0	State: running
"""


def test_load_and_summarise_medians_ranges_ratios(tmp_path: Path) -> None:
    for r, (ik, ours) in enumerate([(100.0, 150.0), (300.0, 90.0), (200.0, 120.0)], 1):
        write_round(tmp_path, r, "inkernel", ik, 2.0 * r)
        write_round(tmp_path, r, "ours", ours, 0.5 * r)
    (tmp_path / "r1-inkernel-lio-session.txt").write_text(SESSION)
    s = report.load_raw(tmp_path)
    res = report.summarise(s)
    assert list(res) == [
        "lio.randread_4k_qd1.iops",
        "lio.randread_4k_qd1.lat_mean_us",
        "lio.randread_4k_qd1.lat_p99_us",
        "lio.randread_4k_qd1.cpu_s_per_GiB",
        "login_8.login_s",
        "login_8.logout_s",
    ]
    assert res["lio.randread_4k_qd1.iops"] == {
        "ours": 120.0,
        "inkernel": 200.0,
        "ratio": 0.6,
        "ours_range": [90.0, 150.0],
        "inkernel_range": [100.0, 300.0],
    }
    assert res["login_8.login_s"]["ratio"] == 4.0
    assert res["login_8.logout_s"]["ratio"] == 1.0
    assert s.negotiated == {
        "inkernel.lio": {"HeaderDigest": "None", "MaxBurstLength": "262144", "InitialR2T": "Yes"}
    }
    md = report.markdown(res, header=["H"], failures={"ours": "login failed"}, negotiated={})
    assert "**ours side FAILED:** login failed" in md
    assert (
        "| lio.randread_4k_qd1.iops | IOPS | 200 (100\u2013300) | 120 (90.0\u2013150) | **0.60** |"
        in md.splitlines()
    )
    assert "| login_8.login_s | s until all disks exist | 4.00 (2.00\u20136.00) | 1.00 " in md


def test_one_side_only_gives_null_ratio(tmp_path: Path) -> None:
    write_round(tmp_path, 1, "inkernel", 100.0, 1.0)
    e = report.summarise(report.load_raw(tmp_path))["lio.randread_4k_qd1.iops"]
    assert e == {"ours": None, "inkernel": 100.0, "ratio": None, "ours_range": None,
                 "inkernel_range": [100.0, 100.0]}  # fmt: skip


def test_load_raw_reports_missing_stat_and_bad_json(tmp_path: Path) -> None:
    (tmp_path / "r1-ours-lio-seqread_1m_qd8.json").write_text("{")
    with pytest.raises(report.BenchError, match="missing"):
        report.load_raw(tmp_path)
    (tmp_path / "r1-ours-lio-seqread_1m_qd8.stat").write_text(STAT)
    with pytest.raises(report.BenchError, match="not JSON"):
        report.load_raw(tmp_path)
    with pytest.raises(report.BenchError, match="no raw results"):
        report.load_raw(tmp_path / "nope")


def test_builtin_png_is_a_valid_rgb_image() -> None:
    data = plot.builtin_png([("lio.a.iops", 1.5), ("login_8.login_s", 0.5)], "t")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    w, h, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (kind, length, depth, color) == (b"IHDR", 13, 8, 2)
    idat_len = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    pixels = zlib.decompress(data[41 : 41 + idat_len])
    assert len(pixels) == h * (1 + 3 * w)
    assert bytes((46, 125, 50)) in pixels and bytes((198, 40, 40)) in pixels  # both bar colours
    assert data.endswith(b"IEND\xaeB`\x82")


def test_settings_quick_full_and_errors() -> None:
    q = bench.settings_from_env({"BENCH_QUICK": "1"})
    assert (q.rounds, q.runtime, q.login_targets) == (1, 5, 8)
    assert q.sides == ("inkernel", "ours", "ours_mc2", "ours_mc4")
    assert q.targets == ("lio", "tgt")
    f = bench.settings_from_env({"BENCH_SIDES": "inkernel", "BENCH_ROUNDS": "2"})
    assert (f.rounds, f.runtime, f.login_targets, f.sides) == (2, 20, 32, ("inkernel",))
    assert "BENCH_SIDES=inkernel" in f.guest_args() and "BENCH_PERF=0" in f.guest_args()
    assert "BENCH_PERF=1" in bench.settings_from_env({"BENCH_PERF": "1"}).guest_args()
    with pytest.raises(bench.SettingsError, match="BENCH_ROUNDS='x'"):
        bench.settings_from_env({"BENCH_ROUNDS": "x"})
    with pytest.raises(bench.SettingsError, match="unknown theirs"):
        bench.settings_from_env({"BENCH_SIDES": "inkernel theirs"})
    with pytest.raises(bench.SettingsError, match="at least 1"):
        bench.settings_from_env({"BENCH_RUNTIME": "0"})


def test_read_status(tmp_path: Path) -> None:
    (tmp_path / "status.txt").write_text(
        "side_failed ours login to iqn.x failed: exit 8\nside_failed ours later\ndone\n"
    )
    assert bench.read_status(tmp_path) == ({"ours": "login to iqn.x failed: exit 8"}, True)
    assert bench.read_status(tmp_path / "none") == ({}, False)


def write_mc_round(raw: Path, r: int, side: str, iops: float, cmds: dict[int, int]) -> None:
    fio = fio_json((4096 * 1000, int(iops * 4096), iops, 500e3, 900e3, 1000))
    (raw / f"r{r}-{side}-lio-randread_4k_qd32.json").write_text(json.dumps(fio))
    (raw / f"r{r}-{side}-lio-randread_4k_qd32.stat").write_text(STAT)
    before = "".join(f"before cid={c} scsicmd_pdus=10 datain_pdus=5\n" for c in cmds)
    after = "".join(f"after cid={c} scsicmd_pdus={10 + n} datain_pdus=9\n" for c, n in cmds.items())
    (raw / f"r{r}-{side}-lio-randread_4k_qd32.conns").write_text(before + after)
    n = len(cmds)
    cids = ",".join(map(str, cmds))
    (raw / f"r{r}-{side}-lio-connections.txt").write_text(f"want={n} have={n} sid=3 cids={cids}\n")


def test_mc_sides_beside_the_single_connection_ones(tmp_path: Path) -> None:
    for r, (ik, ours, mc2, mc4) in enumerate(
        [(100.0, 110.0, 140.0, 150.0), (120, 100, 160, 170)], 1
    ):
        for side, v in (("inkernel", ik), ("ours", ours)):
            fio = fio_json((4096 * 1000, int(v * 4096), v, 500e3, 900e3, 1000))
            (tmp_path / f"r{r}-{side}-lio-randread_4k_qd32.json").write_text(json.dumps(fio))
            (tmp_path / f"r{r}-{side}-lio-randread_4k_qd32.stat").write_text(STAT)
        write_mc_round(tmp_path, r, "ours_mc2", mc2, {0: 500, 1: 480 + r})
        write_mc_round(tmp_path, r, "ours_mc4", mc4, {0: 300, 1: 0, 2: 250, 3: 260})
    write_round(tmp_path, 1, "inkernel", 100.0, 1.0)  # a metric the mc sides do not measure
    s = report.load_raw(tmp_path)
    assert s.connections == {"ours_mc2.lio": [(1, 2, 2), (2, 2, 2)],
                             "ours_mc4.lio": [(1, 4, 4), (2, 4, 4)]}  # fmt: skip
    assert s.conn_cmds["ours_mc2.lio.randread_4k_qd32"] == [(1, {0: 500, 1: 481}),
                                                            (2, {0: 500, 1: 482})]  # fmt: skip
    res = report.summarise(s)
    e = res["lio.randread_4k_qd32.iops"]
    assert e == {
        "ours": 105.0,
        "inkernel": 110.0,
        "ratio": 0.955,
        "ours_range": [100.0, 110.0],
        "inkernel_range": [100.0, 120.0],
        "ours_mc2": 150.0,
        "ours_mc2_range": [140.0, 160.0],
        "ours_mc2_ratio": 1.364,
        "ours_mc4": 160.0,
        "ours_mc4_range": [150.0, 170.0],
        "ours_mc4_ratio": 1.455,
    }
    # the single-connection metrics keep exactly their keys
    assert set(res["lio.randread_4k_qd1.iops"]) == {
        "ours", "inkernel", "ratio", "ours_range", "inkernel_range"}  # fmt: skip
    assert ("lio.randread_4k_qd32.iops (2 conns)", 1.364) in report.ratio_bars(res)
    names = [b[0] for b in report.ratio_bars(res)]
    assert names.index("lio.randread_4k_qd32.iops") + 1 == names.index(
        "lio.randread_4k_qd32.iops (2 conns)"
    )
    md = report.markdown(res, header=["H"], failures={}, negotiated={},
                         connections=s.connections, conn_cmds=s.conn_cmds)  # fmt: skip
    lines = md.splitlines()
    # the single-connection table is unchanged
    assert "| metric | unit | in-kernel | ours | ratio |" in lines
    assert (
        "| lio.randread_4k_qd32.iops | IOPS | 110 (100\u2013120) | 105 (100\u2013110) | **0.95** |"
        in lines
    )
    assert "## Multi-connection sessions (MC/S)" in lines
    assert (
        "| metric | unit | in-kernel | ours | ratio | ours 2 conns | ratio | ours 4 conns | ratio |"
        in lines
    )
    assert (
        "| lio.randread_4k_qd32.iops | IOPS | 110 (100\u2013120) | 105 (100\u2013110) | **0.95** "
        "| 150 (140\u2013160) | **1.36** | 160 (150\u2013170) | **1.46** |" in lines
    )
    assert not any(ln.startswith("| lio.randread_4k_qd1.iops |") and "conns" in ln for ln in lines)
    assert "- ours 2 conns: MaxConnections=2; connections in sysfs after login: round 1: 2, " \
        "round 2: 2" in lines  # fmt: skip
    assert (
        "| ours 2 conns | lio.randread_4k_qd32 | 1 | cid 0: 500 (51%), cid 1: 481 (49%) |" in lines
    )
    assert any(ln.startswith("| ours 4 conns | lio.randread_4k_qd32 | 2 |")
               and ln.endswith("**idle: cid 1** |") for ln in lines)  # fmt: skip


def test_no_mc_side_no_mc_section(tmp_path: Path) -> None:
    write_round(tmp_path, 1, "inkernel", 100.0, 1.0)
    s = report.load_raw(tmp_path)
    md = report.markdown(report.summarise(s), header=[], failures={}, negotiated={},
                         connections=s.connections, conn_cmds=s.conn_cmds)  # fmt: skip
    assert "Multi-connection" not in md


def test_conn_commands_parsing() -> None:
    text = "before cid=0 scsicmd_pdus=7\nafter cid=0 scsicmd_pdus=17\nafter cid=1 scsicmd_pdus=4\n"
    assert report.conn_commands(text) == {0: 10, 1: 4}
    with pytest.raises(report.BenchError, match="no 'after'"):
        report.conn_commands("before cid=0 scsicmd_pdus=7\n")
    with pytest.raises(report.BenchError, match="no cid or scsicmd_pdus"):
        report.conn_commands("after cid=0 datain_pdus=7\n")
    with pytest.raises(report.BenchError, match="want 'before"):
        report.conn_commands("connstats: GET_STATS failed\n")


def test_settings_mc_sides_need_lio_and_their_workloads() -> None:
    t = bench.settings_from_env({"BENCH_TARGETS": "tgt"})
    assert t.sides == ("inkernel", "ours")  # dropped by default
    w = bench.settings_from_env({"BENCH_WORKLOADS": "randread_4k_qd1"})
    assert w.sides == ("inkernel", "ours")
    with pytest.raises(bench.SettingsError, match="ours_mc2 run only on the lio target"):
        bench.settings_from_env({"BENCH_SIDES": "ours ours_mc2", "BENCH_TARGETS": "tgt"})
    m = bench.settings_from_env({"BENCH_SIDES": "ours_mc4", "BENCH_WORKLOADS": "randread_4k_qd1 "
                                 "randread_4k_qd32"})  # fmt: skip
    assert m.sides == ("ours_mc4",) and m.mc_workloads() == ("randread_4k_qd32",)
    assert "BENCH_SIDES=ours_mc4" in m.guest_args()
    # a multi-connection side costs less VM time than a single-connection one
    one = bench.settings_from_env({"BENCH_SIDES": "ours"}).vm_timeout()
    mc = bench.settings_from_env({"BENCH_SIDES": "ours_mc2"}).vm_timeout()
    both = bench.settings_from_env({"BENCH_SIDES": "ours ours_mc2"}).vm_timeout()
    assert mc < one < both
    assert bench.uses_our_modules("ours_mc2") and not bench.uses_our_modules("inkernel")


def test_guest_script_agrees_with_report() -> None:
    """bench/guest.sh and bench/report.py name the same sides and workloads."""
    text = (BENCH / "guest.sh").read_text()

    def words(var: str) -> list[str]:
        start = text.index(f'{var}="') + len(var) + 2
        return text[start : text.index('"', start)].split()

    assert words("MC_WORKLOADS") == list(report.MC_WORKLOADS)
    assert words("WL_ORDER") == list(report.WORKLOADS)
    assert "SIDES=${BENCH_SIDES:-" + " ".join(report.SIDES) + "}" in text
    for side, n in report.MC_SIDES.items():
        assert side == f"ours_mc{n}"

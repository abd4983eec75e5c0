"""Turn the guest's raw benchmark files into metrics, medians and ratios (no VM needed).

Raw files (written by bench/guest.sh into one directory):
  r<R>-<side>-<target>-<workload>.json   fio --output-format=json
  r<R>-<side>-<target>-<workload>.stat   two "cpu ..." lines of /proc/stat, before and after fio
  r<R>-<side>-login.txt                  "targets=N login_s=S logout_s=S"
  r<R>-<side>-<target>-session.txt       iscsiadm -m session -P 3 (negotiated parameters)
  r<R>-<side>-<target>-connections.txt   multi-connection sides: "want=N have=N sid=S cids=0,1"
  r<R>-<side>-<target>-<workload>.conns  multi-connection sides: GET_STATS of every connection
                                         before and after fio ("before|after cid=C name=value...")

Metric names: "<target>.<workload>.<measure>" (measures in MEASURES) and "login_<N>.<login_s|
logout_s>". A ratio > 1 always means ours is better: ours/inkernel where higher is better
(bandwidth, IOPS), inkernel/ours where lower is better (latency, CPU cost, wall time).

The multi-connection sides (MC_SIDES: our initiator with node.session.iscsi.MaxConnections=N)
run only MC_WORKLOADS against LIO; their values sit in the same metrics under their own keys
("ours_mc2", "ours_mc2_range", "ours_mc2_ratio": again against the in-kernel initiator).
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIDES = ("inkernel", "ours", "ours_mc2", "ours_mc4")
# side -> connections per session; these sides run MC_WORKLOADS on the lio target only
MC_SIDES = {"ours_mc2": 2, "ours_mc4": 4}
DASH = "\u2013"  # en dash: "no value" and ranges in the Markdown table
USER_HZ = 100  # /proc/stat ticks per second on x86-64 Linux
HIGHER_IS_BETTER = frozenset({"bw_MiBps", "iops"})
SEQ_MEASURES = ("bw_MiBps", "lat_mean_us", "lat_p99_us", "cpu_s_per_GiB")
RAND_MEASURES = ("iops", "lat_mean_us", "lat_p99_us", "cpu_s_per_GiB")
UNITS = {
    "bw_MiBps": "MiB/s",
    "iops": "IOPS",
    "lat_mean_us": "µs mean latency",
    "lat_p99_us": "µs p99 completion latency",
    "cpu_s_per_GiB": "guest CPU s per GiB",
    "login_s": "s until all disks exist",
    "logout_s": "s until all disks are gone",
}

WORKLOADS = (
    "seqread_1m_qd8",
    "seqwrite_1m_qd8",
    "randread_4k_qd1",
    "randread_4k_qd32",
    "randwrite_4k_qd1",
    "randwrite_4k_qd32",
    "randrw70_64k_qd16",
)
MC_WORKLOADS = ("seqread_1m_qd8", "seqwrite_1m_qd8", "randread_4k_qd32", "randwrite_4k_qd32")
MC_TARGET = "lio"
TARGETS = ("lio", "tgt")

_SIDE = "(" + "|".join(sorted(SIDES, key=len, reverse=True)) + ")"
_FIO_NAME = re.compile(rf"^r(\d+)-{_SIDE}-([a-z0-9]+)-([a-z0-9_]+)\.json$")
_LOGIN_NAME = re.compile(rf"^r(\d+)-{_SIDE}-login\.txt$")
_SESSION_NAME = re.compile(rf"^r(\d+)-{_SIDE}-([a-z0-9]+)-session\.txt$")
_CONNS_NAME = re.compile(rf"^r(\d+)-{_SIDE}-([a-z0-9]+)-([a-z0-9_]+)\.conns$")
_CONNECTIONS_NAME = re.compile(rf"^r(\d+)-{_SIDE}-([a-z0-9]+)-connections\.txt$")
# the GET_STATS counter that counts SCSI commands sent on a connection
CMD_COUNTER = "scsicmd_pdus"


class BenchError(Exception):
    """A raw result that cannot be used, with the file and the reason."""


def measures_for(workload: str) -> tuple[str, ...]:
    return SEQ_MEASURES if workload.startswith("seq") else RAND_MEASURES


def higher_is_better(metric: str) -> bool:
    return metric.rsplit(".", 1)[-1] in HIGHER_IS_BETTER


def cpu_busy_seconds(stat_text: str, where: str = "stat") -> float:
    """CPU seconds spent busy (not idle, not iowait) between two /proc/stat "cpu" lines."""
    lines = [ln.split() for ln in stat_text.splitlines() if ln.startswith("cpu ")]
    if len(lines) != 2:
        raise BenchError(f"{where}: want two 'cpu' lines of /proc/stat, found {len(lines)}")
    try:
        before, after = ([int(x) for x in ln[1:]] for ln in lines)
    except ValueError as e:
        raise BenchError(f"{where}: not a /proc/stat cpu line ({e})") from None
    if len(before) < 4 or len(before) != len(after):
        raise BenchError(f"{where}: malformed /proc/stat cpu lines")
    delta = [a - b for a, b in zip(after, before, strict=True)]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    busy = sum(delta[:3]) + sum(delta[5:8])
    if busy < 0:
        raise BenchError(f"{where}: /proc/stat counters went backwards")
    return busy / USER_HZ


def fio_metrics(
    fio: dict[str, Any], cpu_s: float, workload: str, where: str = "fio"
) -> dict[str, float]:
    """The measures of one fio run (one job, group reporting) plus the CPU it cost."""
    try:
        job = fio["jobs"][0]
        dirs = [job[d] for d in ("read", "write") if job[d]["io_bytes"] > 0]
        if not dirs:
            raise BenchError(f"{where}: fio moved no data")
        io_bytes = sum(d["io_bytes"] for d in dirs)
        ios = sum(d["total_ios"] for d in dirs)
        all_m: dict[str, float] = {
            "bw_MiBps": sum(d["bw_bytes"] for d in dirs) / 2**20,
            "iops": sum(d["iops"] for d in dirs),
            "lat_mean_us": sum(d["lat_ns"]["mean"] * d["total_ios"] for d in dirs) / ios / 1000,
            # mixed workloads: the worse of the two directions
            "lat_p99_us": max(d["clat_ns"]["percentile"]["99.000000"] for d in dirs) / 1000,
            "cpu_s_per_GiB": cpu_s / (io_bytes / 2**30),
        }
    except BenchError:
        raise
    except (KeyError, IndexError, TypeError, ZeroDivisionError) as e:
        raise BenchError(f"{where}: not the fio JSON this benchmark expects ({e!r})") from None
    if job.get("error"):
        raise BenchError(f"{where}: fio reported error {job['error']}")
    return {m: all_m[m] for m in measures_for(workload)}


@dataclass
class Samples:
    """Every sample of every metric, per side, in round order; what each side negotiated; for
    the multi-connection sides, the connections each round's session had ("side.target" ->
    [(round, have, want)]) and the SCSI commands each connection carried during each workload
    ("side.target.workload" -> [(round, {cid: commands})])."""

    values: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: {s: [] for s in SIDES})
    )
    negotiated: dict[str, dict[str, str]] = field(default_factory=dict)
    connections: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    conn_cmds: dict[str, list[tuple[int, dict[int, int]]]] = field(default_factory=dict)

    def add(self, metric: str, side: str, value: float) -> None:
        self.values[metric][side].append(value)


def load_raw(raw: Path) -> Samples:
    """Read every raw file in `raw` (sorted by round) into Samples."""
    if not raw.is_dir():
        raise BenchError(f"{raw}: no raw results directory")
    s = Samples()
    for p in sorted(raw.iterdir(), key=lambda p: p.name):
        if m := _FIO_NAME.match(p.name):
            _, side, target, workload = m.groups()
            stat = p.with_suffix(".stat")
            if not stat.exists():
                raise BenchError(f"{stat}: missing (the CPU counters of {p.name})")
            try:
                fio = json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BenchError(f"{p}: not JSON ({e})") from None
            cpu = cpu_busy_seconds(stat.read_text(), str(stat))
            for k, v in fio_metrics(fio, cpu, workload, str(p)).items():
                s.add(f"{target}.{workload}.{k}", side, v)
        elif m := _LOGIN_NAME.match(p.name):
            side = m.group(2)
            kv = dict(f.split("=", 1) for f in p.read_text().split() if "=" in f)
            try:
                n = int(kv["targets"])
                for k in ("login_s", "logout_s"):
                    s.add(f"login_{n}.{k}", side, float(kv[k]))
            except (KeyError, ValueError) as e:
                raise BenchError(f"{p}: want 'targets=N login_s=S logout_s=S' ({e!r})") from None
        elif m := _SESSION_NAME.match(p.name):
            _, side, target = m.groups()
            s.negotiated.setdefault(f"{side}.{target}", parse_negotiated(p.read_text()))
        elif m := _CONNECTIONS_NAME.match(p.name):
            r, side, target = m.groups()
            kv = dict(f.split("=", 1) for f in p.read_text().split() if "=" in f)
            try:
                have, want = int(kv["have"]), int(kv["want"])
            except (KeyError, ValueError) as e:
                raise BenchError(f"{p}: want 'want=N have=N ...' ({e!r})") from None
            s.connections.setdefault(f"{side}.{target}", []).append((int(r), have, want))
        elif m := _CONNS_NAME.match(p.name):
            r, side, target, workload = m.groups()
            cmds = conn_commands(p.read_text(), str(p))
            s.conn_cmds.setdefault(f"{side}.{target}.{workload}", []).append((int(r), cmds))
    # by round number: r10 sorts before r2 by name
    for seen in s.connections.values():
        seen.sort(key=lambda t: t[0])
    for carried in s.conn_cmds.values():
        carried.sort(key=lambda t: t[0])
    return s


def conn_commands(text: str, where: str = "conns") -> dict[int, int]:
    """cid -> SCSI commands sent on that connection between the "before" and "after" GET_STATS
    snapshots (lines "before|after cid=C scsicmd_pdus=N ..."). A connection with no "before"
    line (added during the workload) counts from 0."""
    snap: dict[str, dict[int, int]] = {"before": {}, "after": {}}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] not in snap:
            raise BenchError(f"{where}: want 'before|after cid=C name=value...', got {line!r}")
        kv = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        try:
            snap[words[0]][int(kv["cid"])] = int(kv[CMD_COUNTER])
        except (KeyError, ValueError) as e:
            raise BenchError(f"{where}: no cid or {CMD_COUNTER} in {line!r} ({e!r})") from None
    if not snap["after"]:
        raise BenchError(f"{where}: no 'after' snapshot of the connections")
    return {c: n - snap["before"].get(c, 0) for c, n in sorted(snap["after"].items())}


def parse_negotiated(text: str) -> dict[str, str]:
    """The "Negotiated iSCSI params" block of iscsiadm -m session -P 3 as a dict."""
    out: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        t = line.strip()
        if t.startswith("Negotiated iSCSI params"):
            inside = True
        elif inside and t and not t.startswith("*"):
            if ":" not in t:
                break
            k, v = t.split(":", 1)
            if " " in k:  # the next section's heading
                break
            out[k] = v.strip()
        elif inside and out and t.startswith("*"):
            break
    return out


def _round(x: float) -> float:
    """Four significant digits: the noise under TCG is far larger."""
    return float(f"{x:.4g}")


def metric_order(metric: str) -> tuple[int, int, int, str]:
    """Targets, then workloads in the guest's order, then measures; login scaling last."""
    parts = metric.split(".")
    if len(parts) == 3:
        t, w, m = parts
        measures = measures_for(w)
        return (
            TARGETS.index(t) if t in TARGETS else len(TARGETS),
            WORKLOADS.index(w) if w in WORKLOADS else len(WORKLOADS),
            measures.index(m) if m in measures else len(measures),
            metric,
        )
    return (len(TARGETS) + 1, 0, 0, metric)


def summarise(samples: Samples) -> dict[str, dict[str, Any]]:
    """metric -> {"ours", "inkernel", "ratio", "ours_range", "inkernel_range"} (None if absent),
    plus "<mc side>", "<mc side>_range", "<mc side>_ratio" (against in-kernel) for each
    multi-connection side that measured the metric."""
    out: dict[str, dict[str, Any]] = {}
    for metric in sorted(samples.values, key=metric_order):
        entry: dict[str, Any] = {}
        med: dict[str, float | None] = {}
        for side in SIDES:
            vals = samples.values[metric][side]
            med[side] = statistics.median(vals) if vals else None
            entry[side] = _round(med[side]) if med[side] is not None else None
            entry[f"{side}_range"] = [_round(min(vals)), _round(max(vals))] if vals else None
        entry["ratio"] = ratio(metric, med["ours"], med["inkernel"])
        keys = ["ours", "inkernel", "ratio", "ours_range", "inkernel_range"]
        for side in MC_SIDES:
            if med[side] is not None:
                entry[f"{side}_ratio"] = ratio(metric, med[side], med["inkernel"])
                keys += [side, f"{side}_range", f"{side}_ratio"]
        out[metric] = {k: entry[k] for k in keys}
    return out


def ratio_bars(results: dict[str, dict[str, Any]]) -> list[tuple[str, float]]:
    """The chart's bars in table order: each metric's ratio, then "<metric> (N conns)" for each
    multi-connection side that has one (all against in-kernel)."""
    bars: list[tuple[str, float]] = []
    for metric, e in results.items():
        if e["ratio"] is not None:
            bars.append((metric, e["ratio"]))
        for side, n in MC_SIDES.items():
            if e.get(f"{side}_ratio") is not None:
                bars.append((f"{metric} ({n} conns)", e[f"{side}_ratio"]))
    return bars


def ratio(metric: str, ours: float | None, inkernel: float | None) -> float | None:
    """> 1 means ours is better; None when a side is missing or the division is undefined."""
    if ours is None or inkernel is None:
        return None
    num, den = (ours, inkernel) if higher_is_better(metric) else (inkernel, ours)
    if den <= 0:
        return None
    return round(num / den, 3)


def _fmt(v: float | None) -> str:
    if v is None:
        return DASH
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 0.01 else f"{v:.3g}"


def _cell(med: float | None, rng: list[float] | None) -> str:
    if med is None or rng is None:
        return DASH
    return f"{_fmt(med)} ({_fmt(rng[0])}{DASH}{_fmt(rng[1])})"


def side_label(side: str) -> str:
    return f"ours {MC_SIDES[side]} conns" if side in MC_SIDES else side


def _ratio_cell(r: float | None) -> str:
    return DASH if r is None else f"**{r:.2f}**"


def mc_markdown(
    results: dict[str, dict[str, Any]],
    connections: dict[str, list[tuple[int, int, int]]],
    conn_cmds: dict[str, list[tuple[int, dict[int, int]]]],
) -> list[str]:
    """The multi-connection section: its table beside in-kernel and ours, the connections each
    session had, the SCSI commands each connection carried. [] when no such side ran."""
    sides = [
        s
        for s in MC_SIDES
        if any(s in e for e in results.values()) or any(k.startswith(f"{s}.") for k in connections)
    ]
    if not sides:
        return []
    lines = [
        "",
        "## Multi-connection sessions (MC/S)",
        "",
        "Our initiator with `node.session.iscsi.MaxConnections=N` set on the node record before "
        "login: one session, N TCP connections to the same LIO portal (its TPG's MaxConnections "
        "raised to the largest N; the in-kernel initiator and `ours` propose 1 and get one). "
        "Same boot, same rounds, sides alternating. Medians, min\u2013max in parentheses; "
        "each ratio is against in-kernel (> 1: ours better). Goal (issue 11): \u2265 1.3 on the "
        "4 KiB QD32 rows with 2 or more connections.",
        "",
    ]
    for side in sides:
        seen = [
            (r, have, want)
            for key, v in sorted(connections.items())
            if key.startswith(f"{side}.")
            for r, have, want in v
        ]
        if seen:
            rounds = ", ".join(f"round {r}: {have}" for r, have, _ in seen)
            lines.append(
                f"- {side_label(side)}: MaxConnections={seen[0][2]}; connections in sysfs after "
                f"login: {rounds}"
            )
    lines += [
        "",
        "| metric | unit | in-kernel | ours | ratio |"
        + "".join(f" {side_label(s)} | ratio |" for s in sides),
        "|---|---|---:|---:|---:|" + "---:|---:|" * len(sides),
    ]
    for metric, e in results.items():
        if not any(s in e for s in sides):
            continue
        unit = UNITS.get(metric.rsplit(".", 1)[-1], "")
        row = (
            f"| {metric} | {unit} | {_cell(e['inkernel'], e['inkernel_range'])} "
            f"| {_cell(e['ours'], e['ours_range'])} | {_ratio_cell(e['ratio'])} |"
        )
        for s in sides:
            cell = _cell(e.get(s), e.get(f"{s}_range"))
            row += f" {cell} | {_ratio_cell(e.get(f'{s}_ratio'))} |"
        lines.append(row)
    rows = [
        (side, key.split(".", 1)[1], r, cmds)
        for side in sides
        for key, v in conn_cmds.items()
        if key.startswith(f"{side}.")
        for r, cmds in v
    ]
    if rows:
        lines += [
            "",
            "SCSI commands each connection carried during each workload (GET_STATS "
            f"`{CMD_COUNTER}` of every connection, after fio minus before):",
            "",
            "| side | workload | round | commands per connection |",
            "|---|---|---:|---|",
        ]
        for side, wl, r, cmds in sorted(
            rows, key=lambda t: (sides.index(t[0]), metric_order(f"{t[1]}.x"), t[2])
        ):
            total = sum(cmds.values())
            cells = ", ".join(
                f"cid {c}: {n}" + (f" ({100 * n / total:.0f}%)" if total > 0 else "")
                for c, n in cmds.items()
            )
            idle = [str(c) for c, n in cmds.items() if n <= 0]
            if idle:
                cells += f" **idle: cid {', '.join(idle)}**"
            lines.append(f"| {side_label(side)} | {wl} | {r} | {cells} |")
    return lines


def markdown(
    results: dict[str, dict[str, Any]],
    *,
    header: list[str],
    failures: dict[str, str],
    negotiated: dict[str, dict[str, str]],
    connections: dict[str, list[tuple[int, int, int]]] | None = None,
    conn_cmds: dict[str, list[tuple[int, dict[int, int]]]] | None = None,
) -> str:
    """The Markdown report: settings, failures, the table, what each side negotiated, then the
    multi-connection section (when such a side ran)."""
    lines = ["# pyiscsi vs the in-kernel Linux initiator", ""]
    lines += header
    lines.append("")
    for side, why in sorted(failures.items()):
        lines.append(f"**{side} side FAILED:** {why}")
        lines.append("")
    lines += [
        "Medians over the rounds, min\u2013max in parentheses. Ratio > 1 means ours is better "
        "(ours/in-kernel for MiB/s and IOPS, in-kernel/ours for latencies, CPU cost and times).",
        "",
        "| metric | unit | in-kernel | ours | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for metric, e in results.items():
        unit = UNITS.get(metric.rsplit(".", 1)[-1], "")
        r = DASH if e["ratio"] is None else f"**{e['ratio']:.2f}**"
        lines.append(
            f"| {metric} | {unit} | {_cell(e['inkernel'], e['inkernel_range'])} "
            f"| {_cell(e['ours'], e['ours_range'])} | {r} |"
        )
    if negotiated:
        lines += ["", "Negotiated session parameters (round 1):", ""]
        keys = sorted({k for d in negotiated.values() for k in d})
        cols = sorted(negotiated)
        lines.append("| parameter | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(negotiated[c].get(k, DASH) for c in cols) + " |")
    lines += mc_markdown(results, connections or {}, conn_cmds or {})
    lines.append("")
    return "\n".join(lines)

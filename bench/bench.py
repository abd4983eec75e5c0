"""`make bench`: our initiator side by side with the in-kernel Linux one, in one VM boot.

Boots the guest once (tests/vm/harness.py) to run bench/guest.sh, copies its raw fio JSON and
timings to bench/raw/, and writes bench/results.json, bench/results.md and bench/results.png.

Settings (environment):
  BENCH_QUICK=1          1 round, 5 s fio runs, 8 login targets (under 12 minutes)
  BENCH_ROUNDS=N         rounds, sides alternating in each (default 3)
  BENCH_RUNTIME=S        seconds per fio workload (default 20)
  BENCH_LOGIN_TARGETS=N  targets for the login-scaling test, 0 to skip (default 32)
  BENCH_SIDES="inkernel ours ours_mc2 ours_mc4"   which initiators (in this order in every
                         round); ours_mcN: ours with node.session.iscsi.MaxConnections=N, only on
                         the lio target and the workloads in report.MC_WORKLOADS, no login scaling
  BENCH_TARGETS="lio tgt"       LIO ramdisk and/or tgtd (file on tmpfs)
  BENCH_WORKLOADS="..."         a subset of the workloads in bench/report.py (default all)
  BENCH_PERF=1           profile each fio run with `perf record -a -g` in the guest: the report
                         (kernel symbols, both initiators) lands in raw/<run>.perf.txt; the
                         sampling costs CPU, so compare ratios only between runs that both used it
Exit status: 0 when every requested side ran every measurement, 1 otherwise (the reason is
printed and written into results.md), 2 for bad settings or when no VM can run here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from plot import plot_ratios  # noqa: E402
from report import (  # noqa: E402
    MC_SIDES,
    MC_TARGET,
    MC_WORKLOADS,
    SIDES,
    TARGETS,
    WORKLOADS,
    BenchError,
    load_raw,
    markdown,
    ratio_bars,
    summarise,
)

GUEST = HERE / "guest.sh"


class SettingsError(Exception):
    """A BENCH_* variable with a value the benchmark cannot use."""


@dataclass(frozen=True)
class Settings:
    quick: bool
    rounds: int
    runtime: int
    login_targets: int
    sides: tuple[str, ...]
    targets: tuple[str, ...]
    workloads: tuple[str, ...]
    perf: bool = False

    def guest_args(self) -> list[str]:
        return [
            f"BENCH_ROUNDS={self.rounds}",
            f"BENCH_RUNTIME={self.runtime}",
            f"BENCH_LOGIN_TARGETS={self.login_targets}",
            f"BENCH_SIDES={' '.join(self.sides)}",
            f"BENCH_TARGETS={' '.join(self.targets)}",
            f"BENCH_WORKLOADS={' '.join(self.workloads)}",
            f"BENCH_PERF={int(self.perf)}",
        ]

    def mc_workloads(self) -> tuple[str, ...]:
        """What the multi-connection sides run (on the lio target only)."""
        if MC_TARGET not in self.targets:
            return ()
        return tuple(w for w in self.workloads if w in MC_WORKLOADS)

    def vm_timeout(self) -> int:
        """Generous: TCG on a busy host can be several times slower than on an idle one."""
        fio = len(self.targets) * len(self.workloads) * (self.runtime + 10) + 30
        login = 10 + 4 * self.login_targets
        # a multi-connection side: its workloads, GET_STATS before and after each, one login
        mc = len(self.mc_workloads()) * (self.runtime + 16) + 60
        per_round = sum(mc if s in MC_SIDES else fio + login + 30 for s in self.sides)
        setup = 120 + 3 * self.login_targets
        return int(2 * (setup + self.rounds * per_round)) + 300


def _int(env: dict[str, str], name: str, default: int, lo: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: want a whole number") from None
    if v < lo:
        raise SettingsError(f"{name}={v}: want at least {lo}")
    return v


def _words(
    env: dict[str, str], name: str, default: tuple[str, ...], allowed: tuple[str, ...]
) -> tuple[str, ...]:
    raw = env.get(name, "").replace(",", " ").split()
    if not raw:
        return default
    bad = [w for w in raw if w not in allowed]
    if bad:
        raise SettingsError(f"{name}: unknown {' '.join(bad)} (choose from {' '.join(allowed)})")
    return tuple(dict.fromkeys(raw))


def settings_from_env(env: dict[str, str]) -> Settings:
    quick = env.get("BENCH_QUICK", "") not in ("", "0")
    st = Settings(
        quick=quick,
        rounds=_int(env, "BENCH_ROUNDS", 1 if quick else 3, 1),
        runtime=_int(env, "BENCH_RUNTIME", 5 if quick else 20, 1),
        login_targets=_int(env, "BENCH_LOGIN_TARGETS", 8 if quick else 32, 0),
        sides=_words(env, "BENCH_SIDES", SIDES, SIDES),
        targets=_words(env, "BENCH_TARGETS", TARGETS, TARGETS),
        workloads=_words(env, "BENCH_WORKLOADS", WORKLOADS, WORKLOADS),
        perf=env.get("BENCH_PERF", "") not in ("", "0"),
    )
    mc = [s for s in st.sides if s in MC_SIDES]
    if mc and not st.mc_workloads():
        # by default they just drop out; asked for by name, they are an error
        if env.get("BENCH_SIDES", "").replace(",", " ").split():
            raise SettingsError(
                f"BENCH_SIDES: {' '.join(mc)} run only on the {MC_TARGET} target and the "
                f"workloads {' '.join(MC_WORKLOADS)}: BENCH_TARGETS/BENCH_WORKLOADS leave them none"
            )
        st = Settings(**{**st.__dict__, "sides": tuple(s for s in st.sides if s not in mc)})
    return st


def uses_our_modules(side: str) -> bool:
    return side == "ours" or side in MC_SIDES


def build_modules() -> str | None:
    """Build kernel/*.ko for the guest's kernel; None if that worked, else why not."""
    kver = subprocess.run(
        [str(ROOT / "tests/vm/run-vm"), "--kver"], capture_output=True, text=True
    ).stdout.strip()
    if not kver:
        return "cannot tell the guest's kernel version (tests/vm/run-vm --kver)"
    proc = subprocess.run(
        ["make", "-C", str(ROOT / "kernel"), f"KSRC=/lib/modules/{kver}/build"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        return "building kernel/*.ko failed: " + " | ".join(tail)
    return None


def read_status(out_dir: Path) -> tuple[dict[str, str], bool]:
    """The guest's side failures (side -> reason) and whether it reached the end."""
    path = out_dir / "status.txt"
    failures: dict[str, str] = {}
    done = False
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("side_failed "):
                _, side, why = [*line.split(" ", 2), ""][:3]
                failures.setdefault(side, why)
            elif line.strip() == "done":
                done = True
    return failures, done


def collect(out_dir: Path, dest: Path) -> None:
    """Replace bench/raw/ with this run's raw files, output and dmesg."""
    if dest.exists():
        shutil.rmtree(dest)
    src = out_dir / "raw"
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        dest.mkdir(parents=True)
    for name in ("output.txt", "dmesg.txt", "env.txt", "status.txt", "dmesg-problems.txt"):
        if (out_dir / name).exists():
            shutil.copy2(out_dir / name, dest / name)


def main() -> int:
    try:
        st = settings_from_env(dict(os.environ))
    except SettingsError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    from vm.harness import run_in_vm, vm_available

    why = vm_available()
    if why:
        print(f"bench: cannot boot the VM here: {why}", file=sys.stderr)
        return 2
    failures: dict[str, str] = {}
    sides = st.sides
    if any(uses_our_modules(s) for s in sides):
        err = build_modules()
        if err:
            for s in sides:
                if uses_our_modules(s):
                    failures[s] = err
                    print(f"bench: {s} side FAILED: {err}", file=sys.stderr)
            sides = tuple(s for s in sides if not uses_our_modules(s))
    if not sides:
        print("bench: no side left to run", file=sys.stderr)
        return 1
    st_run = Settings(**{**st.__dict__, "sides": sides})
    timeout = st_run.vm_timeout()
    mc_note = ""
    if any(s in MC_SIDES for s in sides):
        mc_note = f" ({len(st.mc_workloads())} on {MC_TARGET} for the multi-connection sides)"
    print(
        f"bench: {'quick, ' if st.quick else ''}{st.rounds} round(s) of [{' '.join(sides)}], "
        f"targets [{' '.join(st.targets)}], {len(st.workloads)} workloads{mc_note} x "
        f"{st.runtime} s, {st.login_targets} login targets (VM timeout {timeout} s)",
        flush=True,
    )
    t0 = time.monotonic()
    res = run_in_vm(GUEST, *st_run.guest_args(), timeout=timeout, mem="2G")
    print(
        f"bench: guest finished in {time.monotonic() - t0:.0f} s (rc {res.rc}, out {res.out_dir})"
    )
    collect(res.out_dir, HERE / "raw")
    guest_failures, done = read_status(res.out_dir)
    for side, why in guest_failures.items():
        failures.setdefault(side, why)
    if res.rc != 0 or not done:
        what = {124: "the guest hung (timeout)", 125: "the guest crashed (no exit code)"}.get(
            res.rc, f"the guest script exited {res.rc}"
        )
        if res.rc == 126:
            what = "kernel warnings in dmesg: " + res.dmesg_problems.strip()[:500]
        failures.setdefault("run", f"{what}; output in {res.out_dir}/output.txt")
        print(res.output[-3000:], file=sys.stderr)
    try:
        samples = load_raw(HERE / "raw")
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    results = summarise(samples)
    for side in sides:
        if side not in failures and not any(samples.values[m][side] for m in samples.values):
            failures[side] = "no measurements came back"
    env = (HERE / "raw" / "env.txt").read_text() if (HERE / "raw" / "env.txt").exists() else ""
    header = [
        f"Run {time.strftime('%Y-%m-%d %H:%M')}: {'BENCH_QUICK=1, ' if st.quick else ''}"
        f"{st.rounds} round(s) alternating [{' '.join(st.sides)}], fio {st.runtime} s per workload "
        f"(direct I/O, libaio), targets [{' '.join(st.targets)}] on 127.0.0.1 in the same guest, "
        f"login scaling with {st.login_targets} LIO targets"
        + (
            f" (not for the multi-connection sides, which run "
            f"{' '.join(st.mc_workloads())} on {MC_TARGET} only)."
            if any(s in MC_SIDES for s in st.sides)
            else "."
        )
        + (" Profiled with perf record -a -g (costs CPU on both sides)." if st.perf else ""),
        "",
        "Guest: " + "; ".join(ln for ln in env.splitlines() if not ln.startswith("settings")),
        "QEMU TCG (software emulation): compare the two sides within one run only. "
        "CPU cost = busy guest CPU seconds (/proc/stat, whole guest: initiator, target, fio) "
        "per GiB moved.",
    ]
    md = markdown(
        results,
        header=header,
        failures=failures,
        negotiated=samples.negotiated,
        connections=samples.connections,
        conn_cmds=samples.conn_cmds,
    )
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "results.md").write_text(md)
    bars = ratio_bars(results)
    if bars:
        drew = plot_ratios(
            bars, HERE / "results.png", "pyiscsi / in-kernel initiator (> 1: ours better)"
        )
        print(f"bench: results.png drawn with {drew}")
    elif (HERE / "results.png").exists():
        (HERE / "results.png").unlink()  # no ratios this time: do not leave an old chart
    print(md)
    for side, why in failures.items():
        print(f"bench: {side} FAILED: {why}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

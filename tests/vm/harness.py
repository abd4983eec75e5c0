"""Run scripts in the QEMU guest from pytest (a thin wrapper around tests/vm/run-vm)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

VM_DIR = Path(__file__).resolve().parent
RUN_VM = VM_DIR / "run-vm"
OUT_BASE = VM_DIR / "out"

# run-vm's own exit codes (anything else is the guest script's)
RC_TIMEOUT = 124
RC_NO_EXIT_CODE = 125
RC_DMESG = 126


@dataclass(frozen=True)
class VmResult:
    """What one guest run left behind: exit code, script output, full dmesg, the run dir."""

    rc: int
    output: str
    dmesg: str
    out_dir: Path
    dmesg_problems: str
    boot_seconds: float | None
    harness_log: str  # run-vm's own stderr (summary line, console tail on failure)

    @property
    def timed_out(self) -> bool:
        return self.rc == RC_TIMEOUT

    def check(self) -> VmResult:
        """Fail the test with everything useful unless the script exited 0 and dmesg is clean."""
        if self.rc != 0 or self.dmesg_problems:
            pytest.fail(
                f"guest run failed (rc={self.rc}, out dir {self.out_dir})\n"
                f"--- output\n{self.output[-6000:]}\n--- run-vm\n{self.harness_log[-4000:]}",
                pytrace=False,
            )
        return self


def vm_available() -> str | None:
    """None when run-vm can boot a guest here, else the reason it cannot.

    Under CI (CI set) the VM tier must run, never be skipped: a missing part is an error there.
    """
    reason = _vm_missing()
    if reason and os.environ.get("CI"):
        raise RuntimeError(f"the VM tier cannot run in CI: {reason}")
    return reason


def _vm_missing() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (make setup)"
    if shutil.which("busybox") is None:
        return "busybox-static is not installed (make setup)"
    kernels = [
        p.name
        for p in Path("/lib/modules").glob("*")
        if (p / "modules.dep").exists() and Path(f"/boot/vmlinuz-{p.name}").exists()
    ]
    if not kernels:
        return "no kernel image with modules (make setup installs linux-image-amd64)"
    if os.geteuid() != 0:
        return "the VM harness needs root (it reads /boot and shares / with the guest)"
    return None


def run_in_vm(
    script: str | Path,
    *args: str,
    timeout: float = 300,
    mem: str = "2G",
    keep: bool = False,
    usr_overlay: bool = False,
) -> VmResult:
    """Boot the guest, run `script args...` as root in the checkout, return what came back.
    usr_overlay: /usr writable in the guest (a tmpfs overlay) for install tests."""
    OUT_BASE.mkdir(parents=True, exist_ok=True)
    out_dir = Path(tempfile.mkdtemp(prefix="run-py-", dir=OUT_BASE))
    cmd = [str(RUN_VM), "--timeout", str(int(timeout)), "--mem", mem, "--out", str(out_dir)]
    if keep:
        cmd.append("--keep")
    if usr_overlay:
        cmd.append("--usr-overlay")
    cmd += ["--", str(script), *args]
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout + 120,  # run-vm kills qemu itself; this is only the backstop
    )

    def read(name: str) -> str:
        p = out_dir / name
        return p.read_text(errors="replace") if p.exists() else ""

    boot = read("boot-seconds").strip()
    return VmResult(
        rc=proc.returncode,
        output=read("output.txt"),
        dmesg=read("dmesg.txt"),
        out_dir=out_dir,
        dmesg_problems=read("dmesg-problems.txt"),
        boot_seconds=float(boot) if boot else None,
        harness_log=proc.stderr,
    )


@dataclass(frozen=True)
class Capture:
    """One reference capture of tests/data/openiscsi (see its README.md)."""

    command: str
    stdout: str
    stderr: str
    exit: int


_NO_NL = "\n\\ No newline at end\n"


def parse_capture(path: str | Path) -> Capture:
    """Read a `$ cmd / --- stdout / --- stderr / --- exit N` file back, byte-exact."""
    text = Path(path).read_text()
    m = re.fullmatch(
        r"\$ (?P<cmd>[^\n]*)\n--- stdout\n(?P<out>.*?)"
        r"--- stderr\n(?P<err>.*?)--- exit (?P<rc>\d+)\n",
        text,
        flags=re.S,
    )
    if m is None:
        raise ValueError(f"{path}: not a capture file")

    def section(s: str) -> str:
        return s[: -len(_NO_NL)] if s.endswith(_NO_NL) else s

    return Capture(m["cmd"], section(m["out"]), section(m["err"]), int(m["rc"]))


def guest_kernel() -> str:
    """The kernel version run-vm boots (`run-vm --kver`)."""
    return subprocess.run(
        [str(VM_DIR / "run-vm"), "--kver"], capture_output=True, text=True, check=True
    ).stdout.strip()


def build_modules() -> None:
    """Build kernel/iscsi_if.ko and kernel/iscsi_tcp.ko for the guest's kernel; fail the test if
    the build fails."""
    root = VM_DIR.parents[1]
    kver = guest_kernel()
    proc = subprocess.run(
        ["make", "-C", str(root / "kernel"), f"KSRC=/lib/modules/{kver}/build"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"module build failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    for ko in ("iscsi_if.ko", "iscsi_tcp.ko"):
        if not (root / "kernel" / ko).is_file():
            pytest.fail(f"kernel/{ko} was not built")


def parse_results(out_dir: Path) -> dict[str, str]:
    """The `key=value` lines a guest script wrote to OUT/results.txt."""
    path = out_dir / "results.txt"
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


def kernel_header_dirs(kver: str) -> list[Path]:
    """The directories a module build for `kver` reads: /lib/modules/KVER/build, on Debian
    /usr/src/linux-headers-KVER, the -common tree its Makefile includes and the linux-kbuild tree
    its scripts link to."""
    build = Path(f"/lib/modules/{kver}/build").resolve()
    dirs = [build]
    makefile = build / "Makefile"
    if makefile.is_file():
        for line in makefile.read_text().splitlines():
            if line.startswith("include /"):
                dirs.append(Path(line.split(None, 1)[1]).resolve().parent)
    for link in ("scripts", "tools"):
        if (build / link).is_symlink():
            dirs.append((build / link).resolve().parent)
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def kernel_files_tarball(kver: str) -> tuple[Path, list[Path]]:
    """A tarball of what a DKMS install for `kver` reads in bulk: kernel_header_dirs(kver) and the
    kernel's own modules (/lib/modules/KVER/kernel, which depmod reads whole); cached in out/,
    made again when a directory is newer. For lib.sh's files_in_ram, with those directories."""
    dirs = [*kernel_header_dirs(kver), Path(f"/lib/modules/{kver}/kernel").resolve()]
    OUT_BASE.mkdir(parents=True, exist_ok=True)
    tarball = OUT_BASE / f"kfiles-{kver}.tar"
    newest = max(d.stat().st_mtime for d in dirs)
    if not tarball.exists() or tarball.stat().st_mtime < newest:
        tmp = tarball.with_suffix(".tmp")
        subprocess.run(
            ["tar", "-C", "/", "-cf", str(tmp), *(str(d.relative_to("/")) for d in dirs)],
            check=True,
        )
        tmp.replace(tarball)
    return tarball, dirs

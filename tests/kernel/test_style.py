"""Kernel style tier: checkpatch.pl --strict and kernel-doc on kernel/, as a maintainer runs them.

The scripts come from Debian's linux-source-6.1 (`make setup` installs it; this test installs it
when it is missing and it can): checkpatch.pl with the two data files it reads, and kernel-doc,
extracted from /usr/src/linux-source-6.1.tar.xz into build/ once per tarball. checkpatch must
report no error, and no warning or check beyond the ones docs/kernel-style.md lists with a reason
(exactly as many of each as it says); kernel-doc -none must report nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (
    "kernel/iscsi_if.c",
    "kernel/iscsi_tcp.c",
    "kernel/iscsi_if.h",
    "kernel/iscsi_if_kern.h",
    "kernel/iscsi_tcp_trace.h",
)
PACKAGE = "linux-source-6.1"
TARBALL = Path("/usr/src") / f"{PACKAGE}.tar.xz"
SCRIPTS = (
    "scripts/checkpatch.pl",
    "scripts/spelling.txt",
    "scripts/const_structs.checkpatch",
    "scripts/kernel-doc",
)
STYLE_DOC = ROOT / "docs" / "kernel-style.md"
CHECKPATCH_ARGS = ("--strict", "--no-tree", "-f", "--terse", "--show-types", "--no-summary")
# --terse --show-types: "kernel/iscsi_tcp.c:350: WARNING:LINUX_VERSION_CODE: message"
REPORT = re.compile(r"^(?P<file>[^:\s]+):\d+: (?P<level>ERROR|WARNING|CHECK):(?P<type>\w+):")


def _install_source() -> str | None:
    """Install linux-source-6.1 if it is missing; the reason it cannot be, or None."""
    if TARBALL.is_file():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{TARBALL} is missing (make setup installs {PACKAGE})"
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE],
        capture_output=True,
        text=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if proc.returncode != 0 or not TARBALL.is_file():
        return f"apt-get install {PACKAGE} failed: {proc.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="module")
def scripts() -> Path:
    """A directory holding the kernel's checkpatch.pl, its data files and kernel-doc."""
    if shutil.which("perl") is None:
        pytest.skip("perl is not installed")
    reason = _install_source()
    if reason:
        pytest.skip(reason)
    st = TARBALL.stat()
    cache = ROOT / "build" / f"{PACKAGE}-scripts-{st.st_size}-{int(st.st_mtime)}"
    if not all((cache / s).is_file() for s in SCRIPTS):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".extract-"))
        proc = subprocess.run(
            ["tar", "-xJf", str(TARBALL), "-C", str(tmp), "--strip-components=1"]
            + [f"{PACKAGE}/{s}" for s in SCRIPTS],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        try:
            tmp.rename(cache)  # atomic: a concurrent run keeps its own copy or finds this one
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return cache / "scripts"


def _allowed() -> Counter[tuple[str, str]]:
    """docs/kernel-style.md's table: (file, "LEVEL:TYPE") -> how many checkpatch may report."""
    allowed: Counter[tuple[str, str]] = Counter()
    for line in STYLE_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("kernel/"):
            assert cells[3], f"{STYLE_DOC.name}: no reason given for {cells[:2]}"
            allowed[(cells[0], cells[1])] += int(cells[2])
    return allowed


def test_checkpatch(scripts: Path, tmp_path: Path) -> None:
    found: Counter[tuple[str, str]] = Counter()
    reports: list[str] = []
    # Run elsewhere than in the checkout: checkpatch leaves a .checkpatch-camelcase.* cache in its
    # working directory (and asks git about the kernel tree when that directory is in one).
    env = {k: v for k, v in os.environ.items() if k != "GIT_DIR"}
    checkpatch = str(scripts / "checkpatch.pl")
    for src in SOURCES:
        proc = subprocess.run(
            ["perl", checkpatch, *CHECKPATCH_ARGS, "--color=never", str(ROOT / src)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        for line in proc.stdout.replace(f"{ROOT}/", "").splitlines():
            m = REPORT.match(line)
            if m:
                found[(m["file"], f"{m['level']}:{m['type']}")] += 1
                reports.append(line)
        assert proc.returncode in (0, 1), proc.stderr[-2000:]
    errors = [r for r in reports if ": ERROR:" in r]
    assert errors == [], "\n".join(errors)
    allowed = _allowed()
    unlisted = {k: n for k, n in found.items() if n > allowed.get(k, 0)}
    assert unlisted == {}, (
        "checkpatch reports not in docs/kernel-style.md (fix them, or list them with a reason):\n"
        + "\n".join(r for r in reports if any(f"{k[0]}:" in r and k[1] in r for k in unlisted))
    )
    stale = {k: n for k, n in allowed.items() if found.get(k, 0) != n}
    assert stale == {}, f"docs/kernel-style.md lists more than checkpatch reports now: {stale}"


def test_kernel_doc(scripts: Path) -> None:
    for src in SOURCES:
        proc = subprocess.run(
            ["perl", str(scripts / "kernel-doc"), "-none", src],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and proc.stdout + proc.stderr == "", (
            f"kernel-doc {src}:\n{proc.stdout}{proc.stderr}"
        )

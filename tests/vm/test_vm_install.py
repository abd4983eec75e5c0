"""`make install` on a real host, in the VM (tests/vm/e2e/install.sh does the work in the guest,
booted with a writable /usr): the tree `make install DESTDIR=...` stages on the host (its pip
run needs PyPI, the guest has no network) extracted onto the guest's root; `dkms install` for
the guest's kernel (its headers and modules served from RAM: the same files, without the
cost of 9p under TCG);
`modprobe iscsi_tcp` loading ours (version, updates/dkms) and iscsi_if with it; a login to an
LIO target with the installed iscsiadm and an iscsid started on demand the way
iscsid.socket/iscsid.service say, data through the disk, logout; `make uninstall` refused while
DKMS has the modules, `dkms remove`, the distribution's iscsi_tcp back, `make uninstall`, and
the file listing as it was before."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    OUT_BASE,
    guest_kernel,
    kernel_files_tarball,
    parse_results,
    run_in_vm,
    vm_available,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).resolve().parent / "e2e" / "install.sh"
# The interpreter of a Debian host (python3-venv); not the one running the tests, which may be
# another (a venv's, pyenv's)
SYSTEM_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.vm

CASES = ("installed", "dkms", "data", "login", "uninstalled", "done")


@pytest.fixture
def staged() -> Iterator[Path]:
    """`make install DESTDIR=STAGE` on the host, as a tarball of STAGE's top directories."""
    reason = vm_available()
    if reason:
        pytest.skip(reason)
    if shutil.which("dkms") is None:
        pytest.fail("dkms is not installed (make setup)")
    OUT_BASE.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="install-stage-", dir=OUT_BASE))
    tarball = stage.with_suffix(".tar")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    try:
        proc = subprocess.run(
            ["make", "-C", str(ROOT), "install", f"DESTDIR={stage}", f"PYTHON={SYSTEM_PYTHON}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"make install DESTDIR failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        tops = sorted(p.name for p in stage.iterdir())
        subprocess.run(["tar", "-C", str(stage), "-cf", str(tarball), *tops], check=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    yield tarball
    tarball.unlink(missing_ok=True)


def test_install_dkms_login_uninstall(staged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files, dirs = kernel_files_tarball(guest_kernel())
    args = [str(staged), str(files), *map(str, dirs)]
    result = run_in_vm(SCRIPT, *args, timeout=900, usr_overlay=True)  # ~3 min when idle
    res = parse_results(result.out_dir)
    tail = result.output[-5000:]
    assert res.get("fail") is None, f"{res['fail']}\n{tail}"
    result.check()
    for key in CASES:
        assert res.get(key) == "ok", f"{key}: {res.get(key)!r}\n{tail}"
    with capsys.disabled():
        print(
            f"\n[vm install] dkms install {res['t_dkms_install_s']} s, dkms remove "
            f"{res['t_dkms_remove_s']} s, first login (iscsid started by it) "
            f"{res['t_first_login_ms']} ms; boot {result.boot_seconds} s; "
            f"transcript {result.out_dir / 'transcript.txt'}"
        )

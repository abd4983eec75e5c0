"""`make install` without the Python venv (the whole install, venv included, is the VM tier's:
tests/vm/test_vm_install.py): the files of tools/install.sh's other parts land where
docs/install.md says, the systemd units
as installed pass `systemd-analyze verify`, an existing /etc/iscsid.conf is never overwritten,
and uninstall removes exactly what the manifest lists."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from pyiscsid import ipc

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "tools" / "install.sh"
PARTS = ("bin", "systemd", "man", "conf", "dkms")
UNITS = ("iscsid.service", "iscsid.socket", "iscsi-login.service")
# what tools/install.sh takes from the environment: only what a test sets
SETTINGS = ("DESTDIR", "PREFIX", "SBINDIR", "LIBDIR", "UNITDIR", "MANDIR", "DATADIR", "DOCDIR",
            "SYSCONFDIR", "DKMSDIR", "PIP_FLAGS")  # fmt: skip

with (ROOT / "pyproject.toml").open("rb") as _f:
    VERSION = tomllib.load(_f)["project"]["version"]


def run_install(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    e.update(env)
    return subprocess.run([str(INSTALL), *args], env=e, capture_output=True, text=True, timeout=120)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def files(root: Path) -> list[str]:
    return [p for p in tree(root) if not (root / p).is_dir()]


def test_destdir_install_and_uninstall(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    r = run_install("install", *PARTS, DESTDIR=str(dest))
    assert r.returncode == 0, r.stdout + r.stderr
    files = {p for p in tree(dest) if (dest / p).is_file()}
    src = f"usr/src/pyiscsi-{VERSION}"
    assert files == {
        "usr/local/sbin/iscsiadm",
        "usr/local/sbin/iscsid",
        *(f"usr/local/lib/systemd/system/{u}" for u in UNITS),
        "usr/local/share/man/man8/iscsiadm.8",
        "usr/local/share/man/man8/iscsid.8",
        "usr/local/share/man/man5/iscsid.conf.5",
        "usr/local/share/doc/pyiscsi/iscsid.conf",
        "usr/local/share/pyiscsi/install-manifest",
        "etc/iscsid.conf",
        *(f"{src}/{n}" for n in ("Kbuild", "Makefile", "VERSION", "dkms.conf")),
        *(f"{src}/{p.name}" for p in (ROOT / "kernel").glob("*.[ch]")),
    }
    # the installed iscsiadm is bin/iscsiadm (os-brick greps it), run by the venv's python
    adm = (dest / "usr/local/sbin/iscsiadm").read_text()
    assert adm.split("\n", 1)[0] == "#!/usr/local/lib/pyiscsi/bin/python3 -IB"
    assert adm.split("\n", 1)[1] == (ROOT / "bin/iscsiadm").read_text().split("\n", 1)[1]
    assert os.access(dest / "usr/local/sbin/iscsid", os.X_OK)
    # DKMS: both modules, the version of pyproject.toml in dkms.conf and in VERSION (Kbuild)
    conf = (dest / src / "dkms.conf").read_text()
    for line in (
        f'PACKAGE_VERSION="{VERSION}"',
        'BUILT_MODULE_NAME[0]="iscsi_if"',
        'BUILT_MODULE_NAME[1]="iscsi_tcp"',
        'DEST_MODULE_LOCATION[0]="/updates/dkms"',
        'DEST_MODULE_LOCATION[1]="/updates/dkms"',
        'AUTOINSTALL="yes"',
    ):
        assert line in conf.splitlines(), line
    assert (dest / src / "VERSION").read_text() == f"{VERSION}\n"
    unit = (dest / "usr/local/lib/systemd/system/iscsid.service").read_text()
    assert "ExecStart=/usr/local/sbin/iscsid -f\n" in unit

    # installing again replaces the first install (its manifest) instead of failing
    again = run_install("install", *PARTS, DESTDIR=str(dest))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "removing the previous install first" in again.stdout

    # with DESTDIR, directories this machine has (usr/local/sbin...) are not the install's own
    common = [d for d in tree(dest) if (dest / d).is_dir() and (Path("/") / d).is_dir()]
    assert "usr/local/sbin" in common and f"{src}" not in common
    r = run_install("uninstall", DESTDIR=str(dest))
    assert r.returncode == 0, r.stdout + r.stderr
    assert tree(dest) == common


def test_an_existing_or_changed_iscsid_conf_is_kept(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "etc").mkdir(parents=True)
    (dest / "etc/iscsid.conf").write_text("node.startup = automatic\n")
    assert run_install("install", "conf", DESTDIR=str(dest)).returncode == 0
    assert (dest / "etc/iscsid.conf").read_text() == "node.startup = automatic\n"
    assert run_install("uninstall", DESTDIR=str(dest)).returncode == 0
    assert files(dest) == ["etc/iscsid.conf"]

    (dest / "etc/iscsid.conf").unlink()
    assert run_install("install", "conf", DESTDIR=str(dest)).returncode == 0
    assert (dest / "etc/iscsid.conf").read_bytes() == (ROOT / "etc/iscsid.conf").read_bytes()
    with (dest / "etc/iscsid.conf").open("a") as f:
        f.write("node.startup = automatic\n")  # the administrator's change
    r = run_install("uninstall", DESTDIR=str(dest))
    assert r.returncode == 0 and "changed since the install: left as it is" in r.stdout
    assert files(dest) == ["etc/iscsid.conf"]


def test_a_file_that_is_not_ours_is_not_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "usr/local/sbin").mkdir(parents=True)
    (dest / "usr/local/sbin/iscsid").write_text("someone else's\n")
    r = run_install("install", "bin", "man", DESTDIR=str(dest))
    assert r.returncode == 1 and "is not from a pyiscsi install" in r.stderr
    # what the failed run had made is gone again, the foreign file stays
    assert tree(dest) == ["usr", "usr/local", "usr/local/sbin", "usr/local/sbin/iscsid"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_units_as_installed_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Installed under a PREFIX of the test's own (no DESTDIR: verify wants ExecStart= paths
    that exist, and the Documentation= man pages found through MANPATH)."""
    prefix = tmp_path / "usr"
    r = run_install(
        "install",
        "bin",
        "systemd",
        "man",
        PREFIX=str(prefix),
        SYSCONFDIR=str(tmp_path / "etc"),
        DKMSDIR=str(tmp_path / "src"),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    unitdir = prefix / "lib/systemd/system"
    v = subprocess.run(
        ["systemd-analyze", "verify", *(str(unitdir / u) for u in UNITS)],
        capture_output=True,
        text=True,
        env={**os.environ, "MANPATH": str(prefix / "share/man"), "SYSTEMD_PAGER": ""},
        timeout=60,
    )
    assert (v.returncode, v.stderr, v.stdout) == (0, "", "")

    def props(unit: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in (unitdir / unit).read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                out.setdefault(key, []).append(value)
        return out

    sbin = prefix / "sbin"
    d = props("iscsid.service")
    assert d["Type"] == ["notify"] and d["ExecStart"] == [f"{sbin}/iscsid -f"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"] and d["KillMode"] == ["mixed"]
    s = props("iscsid.socket")
    assert s["ListenStream"] == [ipc.DEFAULT_SOCKET]
    login = props("iscsi-login.service")
    assert "remote-fs-pre.target" in login["Before"][0]
    assert {"network-online.target", "iscsid.service"} <= set(login["After"][0].split())
    assert "network-online.target" in login["Wants"][0].split()
    assert login["ExecStart"] == [f"{sbin}/iscsiadm -m node --loginall=automatic"]
    assert login["ExecStop"] == [
        f"-{sbin}/iscsiadm -m node --logoutall=automatic",
        f"-{sbin}/iscsiadm -m node --logoutall=manual",
    ]
    assert run_install("uninstall", PREFIX=str(prefix)).returncode == 0
    assert tree(tmp_path) == []

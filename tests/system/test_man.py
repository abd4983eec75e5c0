"""The man pages (man/): they render without a warning, and they cover what the code has: every
long and short option of iscsiadm (pyiscsiadm/args.py) and of iscsid, every exit code
(pyiscsid/errors.py), every environment variable the code reads, and the defaults they state.
The example iscsid.conf (etc/iscsid.conf) names real settings with their real defaults."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyiscsiadm.args import IDS, LONG_OPTIONS, SHORT_OPTIONS
from pyiscsid import daemon
from pyiscsid.errors import Err
from pyiscsid.records import DiscoveryRecord, NodeRecord

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "man"
PAGES = ("iscsiadm.8", "iscsid.8", "iscsid.conf.5")

pytestmark = pytest.mark.skipif(shutil.which("groff") is None, reason="groff missing (make setup)")


def render(page: str) -> str:
    """The page as plain text (no hyphenation, no overstriking)."""
    r = subprocess.run(
        ["groff", "-t", "-man", "-Tascii", "-rHY=0", "-P-cbou", str(MAN / page)],
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout


@pytest.mark.parametrize("page", PAGES)
def test_renders_without_warnings(page: str) -> None:
    r = subprocess.run(
        ["groff", "-t", "-man", "-ww", "-z", str(MAN / page)], capture_output=True, text=True
    )
    assert (r.returncode, r.stderr) == (0, "")
    if shutil.which("man"):  # man-db's own check, with the preprocessors it picks itself
        m = subprocess.run(
            ["man", "--warnings", "-l", str(MAN / page)],
            capture_output=True,
            text=True,
            env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        assert (m.returncode, m.stderr) == (0, "")


def test_every_iscsiadm_option_is_described() -> None:
    text = render("iscsiadm.8")
    missing = [f"--{name}" for name in LONG_OPTIONS if f"--{name}" not in text]
    missing += [f"-{c}" for c in SHORT_OPTIONS if c != IDS and not re.search(f"-{c}\\b", text)]
    assert missing == []


def test_both_syntaxes_are_shown() -> None:
    text = render("iscsiadm.8")
    for example in (
        "-m node --record [02f611] --op update",
        "--name node.session.auth.authmethod --value CHAP",
        "-m node -T iqn.2003-01.org.example:disk1 -p 10.0.0.1 --login",
        "-m session -P 3",
        "-m session -r 1 --logout",
        "[02f611] 10.0.0.1:3260,1 iqn.2003-01.org.example:disk1",
    ):
        assert example in text, example


def test_every_exit_code_is_listed() -> None:
    text = render("iscsiadm.8")
    section = text[text.index("EXIT STATUS") : text.index("ENVIRONMENT")]
    for err in Err:
        assert re.search(rf"^\s+{int(err)}\s+{err.name}\s", section, re.M), err


def test_every_iscsid_option_is_described() -> None:
    text = render("iscsid.8")
    for name in daemon._LONG:
        assert f"--{name.rstrip('=')}" in text, name


def _environment_variables() -> set[str]:
    names: set[str] = set()
    for path in [*ROOT.glob("pyiscsid/*.py"), *ROOT.glob("pyiscsiadm/*.py")]:
        names |= set(re.findall(r"environ(?:\.get)?[(\[]\"([A-Z_]+)\"", path.read_text()))
    return names


def test_every_environment_variable_is_described() -> None:
    names = _environment_variables()
    assert {"ISCSI_DB_DIR", "ISCSID_CONFIG", "ISCSID_SOCKET", "PYISCSI_SYSFS"} <= names
    text = render("iscsid.8") + render("iscsiadm.8")
    assert sorted(n for n in names if n not in text) == []


def _default(name: str) -> str:
    if name.startswith("discovery."):
        return DiscoveryRecord.new("127.0.0.1", 3260).get(name)
    return NodeRecord.new("iqn.2026-12.test:t", "127.0.0.1", 3260).get(name)


def test_the_defaults_iscsid_conf_5_states_are_the_defaults() -> None:
    source = (MAN / "iscsid.conf.5").read_text()
    stated = re.findall(r"^\.B ((?:node|discovery)\.[\w.\[\]]+) = (\S+)$", source, re.M)
    assert len(stated) >= 10
    for name, value in stated:
        assert _default(name) == value, name


def test_the_example_iscsid_conf_names_real_settings() -> None:
    """Every commented-out `name = value` of etc/iscsid.conf is a setting a record takes from
    iscsid.conf, and its value is the default unless it is a CHAP account or algorithm list."""
    lines = re.findall(
        r"^# ([a-z][\w.\[\]]*) = (.*)$", (ROOT / "etc" / "iscsid.conf").read_text(), re.M
    )
    assert len(lines) >= 20
    for name, value in lines:
        if name.startswith("iscsid."):
            continue
        config = {name: value}
        if name.startswith("discovery."):
            rec = DiscoveryRecord.new("127.0.0.1", 3260, config=config)
        else:
            rec = NodeRecord.new("iqn.2026-12.test:t", "127.0.0.1", 3260, config=config)
        assert rec.get(name) == value, name
        if ".auth." not in name:
            assert _default(name) == value, name

"""The installed iscsiadm is bin/iscsiadm: callers that grep the executable for the node settings
they need (OpenStack os-brick: `grep -F node.session.scan /sbin/iscsiadm`) find them, and each
setting the script names is one the node record really has, with the values it lists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pyiscsid.records import NodeRecord

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bin" / "iscsiadm"
INSTALLED = Path(sys.executable).parent / "iscsiadm"


def _named_settings() -> dict[str, list[str]]:
    """`name = a | b` lines of the script's docstring: {name: [values]} ([] for no list)."""
    text = SCRIPT.read_text()
    settings: dict[str, list[str]] = {}
    for m in re.finditer(r"^    (node\.[\w.\[\]]+)(?: = ([^\n]*?))?(?:  +.*)?$", text, re.M):
        values = m.group(2) or ""
        settings[m.group(1)] = [v.strip() for v in values.split("|") if v.strip()]
    return settings


def test_os_brick_probe_finds_manual_scan() -> None:
    """os-brick's probe, run as it runs it, on the iscsiadm this checkout installs."""
    probe = subprocess.run(["grep", "-F", "node.session.scan", str(INSTALLED)], check=False)
    assert probe.returncode == 0


def test_installed_script_is_bin_iscsiadm() -> None:
    body = INSTALLED.read_text().split("\n", 1)[1]
    assert body == SCRIPT.read_text().split("\n", 1)[1]
    version = subprocess.run([str(INSTALLED), "-V"], capture_output=True, text=True, check=False)
    assert (version.returncode, version.stdout) == (0, "iscsiadm version 2.1.8\n")


def test_named_settings_are_node_settings() -> None:
    settings = _named_settings()
    assert settings["node.session.scan"] == ["manual", "auto"]
    rec = NodeRecord.new("iqn.2026-12.test:t", "127.0.0.1", 3260)
    for name, values in settings.items():
        rec.get(name)  # raises for a name the node record does not have
        for value in values:
            rec.set(name, value)
            assert rec.get(name) == value, name

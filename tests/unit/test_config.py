"""iscsid.conf parsing, path overrides and the initiator name file."""

from __future__ import annotations

import multiprocessing
import os
import re
import stat
from pathlib import Path

import pytest

from pyiscsid.config import (
    DEFAULT_CONFIG,
    DEFAULT_INITIATORNAME,
    config_path,
    initiator_name,
    load_config,
)
from pyiscsid.errors import Err, IscsiError

GENERATED = re.compile(r"iqn\.2016-04\.com\.open-iscsi:[0-9a-f]{12}")


def test_config_path_precedence(monkeypatch):
    monkeypatch.delenv("ISCSID_CONFIG", raising=False)
    assert config_path() == Path(DEFAULT_CONFIG) == Path("/etc/iscsid.conf")
    monkeypatch.setenv("ISCSID_CONFIG", "/tmp/env.conf")
    assert config_path() == Path("/tmp/env.conf")
    assert config_path("/tmp/cli.conf") == Path("/tmp/cli.conf")


def test_absent_file(tmp_path, monkeypatch):
    assert load_config(tmp_path / "nope.conf") == {}
    monkeypatch.setenv("ISCSID_CONFIG", str(tmp_path / "nope2.conf"))
    assert load_config() == {}


def test_parse(tmp_path):
    conf = tmp_path / "iscsid.conf"
    conf.write_text(
        "# a comment\n"
        "\n"
        "   # indented comment\n"
        "node.startup = automatic\n"
        "node.session.auth.username=alice\n"
        "\tnode.session.auth.password =  two words  \n"
        "node.conn[0].iscsi.HeaderDigest = None,CRC32C\n"
        "iscsid.startup = /bin/systemctl start iscsid.socket\n"
        "node.startup = manual\n"
        "discovery.sendtargets.auth.password = a=b#c\n"
    )
    assert load_config(conf) == {
        "node.startup": "manual",
        "node.session.auth.username": "alice",
        "node.session.auth.password": "two words",
        "node.conn[0].iscsi.HeaderDigest": "None,CRC32C",
        "iscsid.startup": "/bin/systemctl start iscsid.socket",
        "discovery.sendtargets.auth.password": "a=b#c",
    }


def test_env_override(tmp_path, monkeypatch):
    conf = tmp_path / "env.conf"
    conf.write_text("node.startup = onboot\n")
    monkeypatch.setenv("ISCSID_CONFIG", str(conf))
    assert load_config() == {"node.startup": "onboot"}


def test_debian_iscsid_conf_loads():
    path = Path("/etc/iscsi/iscsid.conf")
    if not path.exists():
        pytest.skip("no open-iscsi configuration on this machine")
    conf = load_config(path)
    assert all(isinstance(v, str) and v for v in conf.values())


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("node.startup automatic\n", 1, "expected 'name = value'"),
        ("# ok\nnode.startup =\n", 2, "has no value"),
        ("\n\n= value\n", 3, "bad parameter name"),
        ("a = 1\nnode startup = x\n", 2, "bad parameter name"),
    ],
)
def test_malformed_line(tmp_path, text, line, what):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    with pytest.raises(IscsiError) as info:
        load_config(conf)
    assert info.value.code == Err.INVAL
    assert info.value.message.startswith(f"iscsid.conf line {line}: ")
    assert what in info.value.message
    assert str(conf) in info.value.message


def test_not_utf8(tmp_path):
    conf = tmp_path / "bin.conf"
    conf.write_bytes(b"a = 1\nb = \xff\xfe\n")
    with pytest.raises(IscsiError, match="line 2: not UTF-8") as info:
        load_config(conf)
    assert info.value.code == Err.INVAL


def test_too_large(tmp_path):
    conf = tmp_path / "huge.conf"
    conf.write_bytes(b"# x\n" * 300000)
    with pytest.raises(IscsiError, match="larger than"):
        load_config(conf)


def test_unreadable(tmp_path):
    with pytest.raises(IscsiError) as info:
        load_config(tmp_path)  # a directory
    assert info.value.code == Err.INVAL
    assert str(tmp_path) in info.value.message


def test_initiator_name_read(tmp_path):
    f = tmp_path / "initiatorname.iscsi"
    f.write_text(
        "## DO NOT EDIT\n"
        "InitiatorName=iqn.1993-08.org.debian:01:abcdef\n"
        "InitiatorAlias = host one\n"
    )
    assert initiator_name(str(f)) == ("iqn.1993-08.org.debian:01:abcdef", "host one")
    f.write_text("InitiatorName=iqn.1993-08.org.debian:01:abcdef\n")
    assert initiator_name(str(f), create=False) == ("iqn.1993-08.org.debian:01:abcdef", "")


def test_initiator_name_generated_and_persistent(tmp_path):
    f = tmp_path / "a" / "b" / "initiatorname.iscsi"
    old = os.umask(0o077)
    try:
        name, alias = initiator_name(str(f))
    finally:
        os.umask(old)
    assert GENERATED.fullmatch(name), name
    assert alias == ""
    assert f.read_text() == f"InitiatorName={name}\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert initiator_name(str(f)) == (name, "")
    assert sorted(p.name for p in f.parent.iterdir()) == ["initiatorname.iscsi"]
    other = initiator_name(str(tmp_path / "other.iscsi"))[0]
    assert other != name


def test_initiator_name_env(tmp_path, monkeypatch):
    f = tmp_path / "env.iscsi"
    f.write_text("InitiatorName=iqn.2000-01.com.example:env\n")
    monkeypatch.setenv("ISCSI_INITIATORNAME_FILE", str(f))
    assert initiator_name() == ("iqn.2000-01.com.example:env", "")
    monkeypatch.delenv("ISCSI_INITIATORNAME_FILE")
    assert DEFAULT_INITIATORNAME == "/etc/iscsi/initiatorname.iscsi"


def test_initiator_name_missing_no_create(tmp_path):
    f = tmp_path / "missing.iscsi"
    with pytest.raises(IscsiError) as info:
        initiator_name(str(f), create=False)
    assert info.value.code == Err.INVAL
    assert str(f) in info.value.message
    assert not f.exists()


@pytest.mark.parametrize(
    "text", ["", "# only comments\n", "InitiatorAlias=x\n", "InitiatorName=has space\n"]
)
def test_initiator_name_bad_file(tmp_path, text):
    f = tmp_path / "bad.iscsi"
    f.write_text(text)
    with pytest.raises(IscsiError) as info:
        initiator_name(str(f))
    assert info.value.code == Err.INVAL
    assert f.read_text() == text  # never overwritten


def _gen(path: str, queue) -> None:
    queue.put(initiator_name(path)[0])


def test_initiator_name_concurrent_creation(tmp_path):
    f = str(tmp_path / "race.iscsi")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_gen, args=(f, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    names = {queue.get(timeout=20) for _ in procs}
    for p in procs:
        p.join(10)
    assert len(names) == 1
    assert Path(f).read_text() == f"InitiatorName={names.pop()}\n"

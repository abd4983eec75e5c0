"""pyiscsid.uapi: names and numbers read from kernel/iscsi_if.h through cffi."""

from __future__ import annotations

import filecmp
from enum import IntEnum, auto
from pathlib import Path

import pytest

from pyiscsid import uapi
from pyiscsid.errors import Err, IscsiError

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "kernel" / "iscsi_if.h"


def test_strings_and_version() -> None:
    assert uapi.GENL_NAME == "iscsi_if"
    assert uapi.MCGRP_EVENTS == "events"
    assert uapi.GENL_VERSION == 1


def test_commands_and_events_in_header_order() -> None:
    assert [c.name for c in uapi.Cmd] == [
        "UNSPEC",
        "CREATE_SESSION",
        "DESTROY_SESSION",
        "CREATE_CONN",
        "DESTROY_CONN",
        "BIND_CONN",
        "START_CONN",
        "STOP_CONN",
        "SET_PARAM",
        "GET_PARAM",
        "SEND_PDU",
        "SCAN",
        "GET_STATS",
        "GET_SESSION",
        "EVENT_CONN_ERROR",
        "EVENT_RECV_PDU",
        "EVENT_SESSION_STATE",
        "EVENT_SESSION_DESTROYED",
        "DRAIN_CONN",
    ]
    assert [int(c) for c in uapi.Cmd] == list(range(19))
    assert uapi.CMD_MAX == 19


def test_attributes() -> None:
    assert uapi.Attr.TRANSPORT == 1
    assert uapi.Attr.SOCK_FD == 5
    assert uapi.Attr.PDU == 12
    assert uapi.Attr.LUN == 18
    assert uapi.Attr.PAD == 20
    assert uapi.Attr.MAX_CMDSN == 21
    assert uapi.Attr.TIMEOUT == 22
    assert uapi.ATTR_MAX == 23


def test_params_and_small_enums() -> None:
    assert uapi.Param.MAX_RECV_DLENGTH == 0
    assert uapi.Param.RECV_TMO == 9
    assert uapi.Param.TARGET_NAME == 10
    assert uapi.Param.USERNAME_IN == 32
    assert uapi.Param.HWADDRESS == 34
    assert uapi.PARAM_MAX == 35
    assert (uapi.Stop.RECOVER, uapi.Stop.TERM) == (1, 2)
    assert uapi.ConnError.NONE == 0 and uapi.ConnError.NOP_TIMEOUT == 8
    assert [s.name for s in uapi.SessionState] == ["LOGGED_IN", "FAILED", "FREE"]
    assert [int(s) for s in uapi.SessionState] == [1, 2, 3]
    assert uapi.Stat.TXDATA_OCTETS == 1 and uapi.Stat.TIMEOUT_ERR == 21
    assert uapi.Stat.EH_ABORT_CNT == 24
    assert uapi.STAT_MAX == 25


def test_header_is_package_data_and_identical() -> None:
    packaged = ROOT / "pyiscsid" / "iscsi_if.h"
    assert packaged.is_file()
    assert filecmp.cmp(packaged, HEADER, shallow=False)
    cands = uapi.header_candidates()
    assert packaged in cands and HEADER in cands
    assert cands.index(packaged) < cands.index(HEADER)


def test_parse_a_synthetic_header() -> None:
    text = """
    /* a comment with enum fake { X } inside */
    #define NAME_A "alpha"   // trailing
    #define NUM 3
    #ifndef G
    enum e1 { E1_A, E1_B = 5, E1_C, __E1_MAX, };
    """
    h = uapi.UapiHeader(text)
    assert h.string("NAME_A") == "alpha"
    assert h.enum("e1") == {"E1_A": 0, "E1_B": 5, "E1_C": 6, "__E1_MAX": 7}
    assert set(h.enums) == {"e1"}

    class E(IntEnum):
        _generate_next_value_ = uapi.header_values(h.enum("e1"), "E1_")
        A = auto()
        C = auto()
        B = auto()

    assert [(m.name, int(m)) for m in E] == [("A", 0), ("C", 6), ("B", 5)]
    with pytest.raises(IscsiError, match=r"iscsi_if\.h has no E1_D"):

        class F(IntEnum):
            _generate_next_value_ = uapi.header_values(h.enum("e1"), "E1_")
            D = auto()

    with pytest.raises(IscsiError, match="no enum nope"):
        h.enum("nope")
    with pytest.raises(IscsiError, match="no #define NUM"):
        h.string("NUM")


def test_broken_header_is_a_clear_error() -> None:
    with pytest.raises(IscsiError, match=r"cannot parse iscsi_if\.h") as exc:
        uapi.UapiHeader("enum broken { A = , };")
    assert exc.value.code == Err.INTERNAL


def test_env_override_and_missing_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alt = tmp_path / "alt.h"
    alt.write_text('#define ISCSI_IF_GENL_NAME "x"\n')
    monkeypatch.setenv("PYISCSI_UAPI_HEADER", str(alt))
    assert uapi.find_header() == alt
    monkeypatch.setattr(uapi, "header_candidates", lambda: [tmp_path / "none.h"])
    with pytest.raises(IscsiError, match=r"iscsi_if\.h is missing: .*none\.h"):
        uapi.find_header()


@pytest.mark.parametrize(
    ("enum", "tag"),
    [
        (uapi.Cmd, "iscsi_if_cmd"),
        (uapi.Attr, "iscsi_if_attr"),
        (uapi.Param, "iscsi_if_param"),
        (uapi.Stop, "iscsi_if_stop"),
        (uapi.ConnError, "iscsi_if_err"),
        (uapi.SessionState, "iscsi_if_session_state"),
        (uapi.Stat, "iscsi_if_stat"),
    ],
)
def test_every_enum_names_every_member_of_the_header(enum: type[IntEnum], tag: str) -> None:
    """The enums' names are written out (for type checkers), their values come from the
    header: a member the header adds must be named here too."""
    header = uapi.UapiHeader(HEADER.read_text()).enum(tag)
    members = {k: v for k, v in header.items() if not k.startswith("__")}
    assert len(enum) == len(members)
    assert all(any(k.endswith("_" + m.name) and v == m for k, v in members.items()) for m in enum)

"""SendTargets discovery against tgtd and against a scripted target."""

from __future__ import annotations

import time

import pytest
from hostile import HostileTarget, answer_login
from tgt import Tgtd, free_port

from pyiscsid import pdu as P
from pyiscsid.discovery import sendtargets
from pyiscsid.errors import Err
from pyiscsid.login import LoginError
from pyiscsid.negotiation import decode_text, encode_text
from pyiscsid.pduio import PduConnection
from pyiscsid.settings import AuthSettings, DiscoveredTarget, LoginSettings, TargetPortal

pytestmark = pytest.mark.integration

INITIATOR = "iqn.2024-01.org.pyiscsi:disc-initiator"
NAMES = [f"iqn.2024-01.org.pyiscsi:disk{i}" for i in (1, 2, 3)]


def settings(**kw: object) -> LoginSettings:
    kw.setdefault("login_timeout", 10.0)
    return LoginSettings(initiator_name=INITIATOR, **kw)  # type: ignore[arg-type]


def test_several_targets(tgtd: Tgtd) -> None:
    for name in NAMES:
        tgtd.add_target(name)
    got = sendtargets("127.0.0.1", tgtd.port, settings())
    assert got == [DiscoveredTarget(n, [TargetPortal("127.0.0.1", tgtd.port, 1)]) for n in NAMES]
    # the discovery session is gone once sendtargets returns
    deadline = time.monotonic() + 5
    while INITIATOR in tgtd.adm("--mode", "target", "--op", "show"):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_through_a_second_portal(tgtd: Tgtd) -> None:
    tgtd.add_target(NAMES[0])
    port2 = free_port()
    tgtd.add_portal(f"127.0.0.1:{port2}")
    # tgtd answers with the portal the question came in on
    assert sendtargets("127.0.0.1", port2, settings()) == [
        DiscoveredTarget(NAMES[0], [TargetPortal("127.0.0.1", port2, 1)])
    ]


def test_ipv6_portal(tgtd: Tgtd) -> None:
    tgtd.add_target(NAMES[0])
    try:
        port6 = free_port("::1")
        tgtd.add_portal(f"[::1]:{port6}")
    except (OSError, RuntimeError):
        pytest.skip("no IPv6 loopback here")
    assert sendtargets("::1", port6, settings()) == [
        DiscoveredTarget(NAMES[0], [TargetPortal("::1", port6, 1)])
    ]


def test_no_targets_for_us(tgtd: Tgtd) -> None:
    # a target no initiator may see (tgtd drops logins when it has no target at all)
    tgtd.adm("--mode", "target", "--op", "new", "--tid", "9", "--targetname", NAMES[2])
    assert sendtargets("127.0.0.1", tgtd.port, settings()) == []


def _discovery_chap(tgtd: Tgtd) -> None:
    tgtd.add_target(NAMES[0])
    tgtd.adm("--mode", "account", "--op", "new", "--user", "disco", "--password", "disco-secret-1")
    tgtd.adm("--mode", "account", "--op", "bind", "--user", "disco")  # no tid: discovery


def test_discovery_chap(tgtd: Tgtd) -> None:
    _discovery_chap(tgtd)
    auth = AuthSettings(method="CHAP", username="disco", password="disco-secret-1")
    got = sendtargets("127.0.0.1", tgtd.port, settings(auth=auth))
    assert [t.name for t in got] == [NAMES[0]]


def test_discovery_chap_wrong_secret(tgtd: Tgtd) -> None:
    _discovery_chap(tgtd)
    auth = AuthSettings(method="CHAP", username="disco", password="wrong-secret-9")
    with pytest.raises(LoginError) as e:
        sendtargets("127.0.0.1", tgtd.port, settings(auth=auth))
    assert e.value.code == Err.LOGIN_AUTH_FAILED


def test_discovery_chap_missing(tgtd: Tgtd) -> None:
    _discovery_chap(tgtd)
    with pytest.raises(LoginError) as e:
        sendtargets("127.0.0.1", tgtd.port, settings())
    assert e.value.code == Err.LOGIN_AUTH_FAILED


def test_target_name_is_ignored_for_discovery(tgtd: Tgtd) -> None:
    tgtd.add_target(NAMES[0])
    got = sendtargets("127.0.0.1", tgtd.port, settings(target_name="iqn.2024-01.x:ignored"))
    assert [t.name for t in got] == [NAMES[0]]


def test_dead_portal() -> None:
    with pytest.raises(Exception) as e:
        sendtargets("127.0.0.1", free_port(), settings())
    assert getattr(e.value, "code", None) == Err.TRANS
    assert "cannot make connection to 127.0.0.1: Connection refused" in str(e.value)


def test_scripted_multi_portal_reply_across_pdus() -> None:
    """Several portals per target, IPv6, missing port and TPGT, and a reply split across
    PDUs both with the C bit (mid-key) and with F=0/TTT continuation."""
    reply = [
        ("TargetName", "iqn.2024-01.x:alpha"),
        ("TargetAddress", "192.0.2.10:3260,1"),
        ("TargetAddress", "[fe80::1]:3261,2"),
        ("TargetName", "iqn.2024-01.x:beta"),
        ("TargetAddress", "192.0.2.11,5"),
        ("TargetAddress", "[2001:db8::9]"),
        ("TargetName", "iqn.2024-01.x:gamma"),
    ]
    body = encode_text(reply)
    logins: list[P.LoginRequest] = []
    texts: list[P.TextRequest] = []

    def handler(conn: PduConnection, _: int) -> None:
        logins.append(answer_login(conn))
        cut1 = 25  # inside the first TargetAddress: C=1
        cut2 = body.index(b"TargetName=iqn.2024-01.x:beta")  # a pair boundary: F=0
        pieces = [
            (body[:cut1], True, False),
            (body[cut1:cut2], False, False),
            (body[cut2:], False, True),
        ]
        statsn = 100
        for i, (data, cont, final) in enumerate(pieces):
            req = conn.recv(5)
            assert isinstance(req, P.TextRequest)
            texts.append(req)
            statsn += 1
            conn.send(
                P.TextResponse(
                    final=final,
                    cont=cont,
                    itt=req.itt,
                    ttt=P.RSVD_TAG if final else 0x77 + i,
                    statsn=statsn,
                    exp_cmdsn=req.cmdsn + 1,
                    max_cmdsn=req.cmdsn + 4,
                    data=data,
                )
            )
        req = conn.recv(5)
        assert isinstance(req, P.LogoutRequest)
        conn.send(P.LogoutResponse(itt=req.itt, statsn=statsn + 1))
        time.sleep(0.2)

    with HostileTarget(handler) as t:
        got = sendtargets(t.address, t.port, settings())
        assert not t.errors, t.errors
    assert got == [
        DiscoveredTarget(
            "iqn.2024-01.x:alpha",
            [TargetPortal("192.0.2.10", 3260, 1), TargetPortal("fe80::1", 3261, 2)],
        ),
        DiscoveredTarget(
            "iqn.2024-01.x:beta",
            [TargetPortal("192.0.2.11", 3260, 5), TargetPortal("2001:db8::9", 3260, -1)],
        ),
        DiscoveredTarget("iqn.2024-01.x:gamma", [TargetPortal("127.0.0.1", t.port, -1)]),
    ]
    # the discovery login said so and named no target
    first = dict(decode_text(logins[0].data)) if logins else {}
    assert "TargetName" not in first
    assert len(texts) == 3 and [q.ttt for q in texts] == [P.RSVD_TAG, 0x77, 0x78]


def test_scripted_discovery_session_type() -> None:
    seen: list[list[tuple[str, str]]] = []

    def handler(conn: PduConnection, _: int) -> None:
        req = conn.recv(5)
        assert isinstance(req, P.LoginRequest)
        seen.append(decode_text(req.data))
        conn.send(P.LoginResponse(itt=req.itt, isid=req.isid, status_class=2, status_detail=9))
        time.sleep(0.5)

    with HostileTarget(handler) as t, pytest.raises(LoginError) as e:
        sendtargets(t.address, t.port, settings())
    assert e.value.code == Err.FATAL_LOGIN
    assert "session type not supported (02/09)" in e.value.message
    keys = dict(seen[0])
    assert keys["SessionType"] == "Discovery"
    assert keys["InitiatorName"] == INITIATOR
    assert keys["AuthMethod"] == "None"

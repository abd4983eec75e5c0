"""Targets that misbehave: every case ends in an IscsiError with a clear message, quickly."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from hostile import HostileTarget, answer_login, recv_login, response_to
from tgt import Tgtd

from pyiscsid import pdu as P
from pyiscsid.errors import Err, IscsiError
from pyiscsid.login import LoginError, login, logout, text_request
from pyiscsid.negotiation import NegotiationError, decode_text, encode_text
from pyiscsid.pduio import PduConnection
from pyiscsid.settings import LoginSettings

pytestmark = pytest.mark.integration

TARGET = "iqn.2024-01.org.pyiscsi:hostile"


def settings(**kw: object) -> LoginSettings:
    kw.setdefault("target_name", TARGET)
    kw.setdefault("login_timeout", 3.0)
    return LoginSettings(initiator_name="iqn.2024-01.org.pyiscsi:init", **kw)  # type: ignore[arg-type]


def run_login(
    handler: Callable[[PduConnection, int], None], **kw: object
) -> tuple[IscsiError, float]:
    with HostileTarget(handler) as t:
        t0 = time.monotonic()
        with pytest.raises(IscsiError) as e:
            login(t.address, t.port, settings(**kw))
        return e.value, time.monotonic() - t0


def hang(conn: PduConnection) -> None:
    time.sleep(5)


def test_truncated_header_then_eof() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.sock.sendall(response_to(req).encode()[:20])
        conn.sock.close()

    err, took = run_login(handler)
    assert err.code == Err.TRANS
    assert "closed the connection in the middle of a PDU header (20 of 48 bytes)" in err.message
    assert took < 2


def test_huge_data_segment_length() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        bhs = bytearray(response_to(req).encode())
        bhs[5:8] = b"\xff\xff\xff"  # 16 MiB, the largest a 24-bit length can say
        conn.sock.sendall(bhs)
        hang(conn)

    err, took = run_login(handler)
    assert isinstance(err, P.PduError)
    assert "data segment of 16777215 bytes, more than the 8192 bytes allowed" in err.message
    assert took < 1


def test_garbage_opcode() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        recv_login(conn)
        conn.sock.sendall(bytes([0x3B]) + b"\xa5" * 47)
        hang(conn)

    err, took = run_login(handler)
    assert isinstance(err, P.PduError)
    assert "unknown iSCSI opcode 0x3b" in err.message
    assert took < 1


def test_wrong_itt() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(response_to(req, itt=req.itt ^ 0x5A5A))
        hang(conn)

    err, _ = run_login(handler)
    assert isinstance(err, P.PduError)
    assert "Login Response for ITT 0x00005a5a, but our Login Request has ITT 0x00000000" in (
        err.message
    )


def test_endless_continuation_is_bounded() -> None:
    sent = []

    def handler(conn: PduConnection, _: int) -> None:
        while True:
            req = recv_login(conn)
            chunk = b"X-Junk=" + b"j" * 8000  # never NUL-terminated: always "more to come"
            conn.send(response_to(req, cont=True, transit=False, nsg=0, data=chunk))
            sent.append(len(chunk))

    err, took = run_login(handler)
    assert isinstance(err, NegotiationError)
    assert "continued over more than 65536 bytes" in err.message
    assert 8 <= len(sent) <= 10
    assert took < 2


def test_reply_never_sent() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        recv_login(conn)
        hang(conn)

    err, took = run_login(handler, login_timeout=0.5)
    assert err.code == Err.TRANS_TIMEOUT
    assert "timed out after 0.5 seconds" in err.message
    assert 0.4 < took < 1.5


def test_accept_but_never_read() -> None:
    # TCP accepts (the listen backlog) but nothing ever answers
    err, took = run_login(lambda conn, _: hang(conn), login_timeout=0.5)
    assert err.code == Err.TRANS_TIMEOUT
    assert took < 1.5


@pytest.mark.parametrize(
    ("detail", "code", "text"),
    [
        (0x0201, 24, "authentication failure (02/01)"),
        (0x0202, 24, "authorization failure (02/02)"),
        (0x0203, 19, "target not found (02/03)"),
        (0x0204, 19, "target removed (02/04)"),
        (0x0205, 19, "unsupported version (02/05)"),
        (0x0207, 19, "missing parameter (02/07)"),
        (0x02EE, 19, "initiator error (02/ee)"),
        (0x0300, 5, "target error (03/00)"),
        (0x0301, 5, "service unavailable (03/01)"),
        (0x0302, 5, "out of resources (03/02)"),
        (0x0701, 5, "unknown status (07/01)"),
    ],
)
def test_status_classes(detail: int, code: int, text: str) -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(
            response_to(
                req, status_class=detail >> 8, status_detail=detail & 0xFF, transit=False, nsg=0
            )
        )
        hang(conn)

    err, _ = run_login(handler)
    assert isinstance(err, LoginError)
    assert err.code == code
    assert (err.status_class, err.status_detail) == (detail >> 8, detail & 0xFF)
    assert err.message.endswith(f"rejected: {text}")


@pytest.mark.parametrize("detail", [1, 2])
def test_redirect_to_real_target(tgtd: Tgtd, detail: int) -> None:
    tgtd.add_target(TARGET)

    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        data = encode_text([("TargetAddress", f"127.0.0.1:{tgtd.port},1")])
        conn.send(
            response_to(req, status_class=1, status_detail=detail, transit=False, nsg=0, data=data)
        )

    with HostileTarget(handler) as t:
        r = login(t.address, t.port, settings())
        try:
            assert r.redirected
            assert (r.address, r.port) == ("127.0.0.1", tgtd.port)
            assert r.tsih != 0
        finally:
            logout(r)


def test_redirect_loop_is_bounded() -> None:
    holder: dict[str, int] = {}

    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        data = encode_text([("TargetAddress", f"127.0.0.1:{holder['port']}")])
        conn.send(
            response_to(req, status_class=1, status_detail=1, transit=False, nsg=0, data=data)
        )

    with HostileTarget(handler) as t:
        holder["port"] = t.port
        with pytest.raises(LoginError, match="redirected more than 3 times") as e:
            login(t.address, t.port, settings(max_redirects=3))
        assert t.connections == 4
    assert e.value.code == Err.LOGIN


def test_redirect_without_address() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(response_to(req, status_class=1, status_detail=2, transit=False, nsg=0))

    err, _ = run_login(handler)
    assert isinstance(err, LoginError) and "without a TargetAddress" in err.message


def test_version_mismatch() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(response_to(req, version_active=2, version_max=2))
        hang(conn)

    err, _ = run_login(handler)
    assert err.code == Err.FATAL_LOGIN and "iSCSI version 2" in err.message


def test_transit_without_consent() -> None:
    def handler2(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(response_to(req, transit=True, nsg=1, data=encode_text([("AuthMethod", "CHAP")])))
        hang(conn)

    from pyiscsid.settings import AuthSettings

    err, _ = run_login(handler2, auth=AuthSettings(method="CHAP", username="u", password="p"))
    assert isinstance(err, LoginError) and "changed stage without our consent" in err.message


def test_transit_and_continue_together() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(response_to(req, transit=True, cont=True, nsg=1))
        hang(conn)

    err, _ = run_login(handler)
    assert isinstance(err, LoginError) and "both the T and C bits" in err.message


def test_reject_during_login() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(P.Reject(reason=9, data=req.encode()[:48]))
        hang(conn)

    err, _ = run_login(handler)
    assert isinstance(err, LoginError)
    assert "rejected our Login Request: invalid PDU field" in err.message


def test_illegal_answer() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(response_to(req, data=encode_text([("AuthMethod", "None")])))
        req = recv_login(conn)
        conn.send(response_to(req, data=encode_text([("HeaderDigest", "MD5")])))
        hang(conn)

    err, _ = run_login(handler, operational={"HeaderDigest": "CRC32C,None"})
    assert isinstance(err, NegotiationError)
    assert "HeaderDigest=MD5" in err.message


def test_garbage_text() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        req = recv_login(conn)
        conn.send(response_to(req, data=b"\xff\xfe=\x00garbage\x00"))
        hang(conn)

    err, _ = run_login(handler)
    assert isinstance(err, NegotiationError)


def test_final_tsih_zero() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        answer_login(conn, tsih=0)
        hang(conn)

    err, _ = run_login(handler)
    assert isinstance(err, LoginError) and "TSIH 0" in err.message


def test_unexpected_pdu_during_login() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        recv_login(conn)
        conn.send(P.NopIn(ttt=1))
        hang(conn)

    err, _ = run_login(handler)
    assert isinstance(err, P.PduError) and "sent a NopIn PDU during login" in err.message


def test_well_behaved_scripted_login_and_text_continuation() -> None:
    """The scripted target itself works: login, then a Text reply continued with TTT and C."""
    seen: list[P.TextRequest] = []

    def handler(conn: PduConnection, _: int) -> None:
        answer_login(conn, statsn=100)
        body = encode_text(
            [
                ("TargetName", "iqn.x:a"),
                ("TargetAddress", "10.0.0.1:3260,1"),
                ("TargetName", "iqn.x:b"),
            ]
        )
        b1 = body.index(b"\x00", body.index(b"TargetAddress")) + 1
        parts = [body[:10], body[10:b1], body[b1:]]  # a key split by C=1, then F=0, then F=1
        statsn = 100
        for i, part in enumerate(parts):
            req = conn.recv(5)
            assert isinstance(req, P.TextRequest)
            seen.append(req)
            statsn += 1
            last = i == len(parts) - 1
            conn.send(
                P.TextResponse(
                    final=last,
                    cont=not last and i == 0,
                    itt=req.itt,
                    ttt=P.RSVD_TAG if last else 0x1000 + i,
                    statsn=statsn,
                    exp_cmdsn=req.cmdsn + 1,
                    max_cmdsn=req.cmdsn + 8,
                    data=part,
                )
            )
        req = conn.recv(5)
        assert isinstance(req, P.LogoutRequest)
        conn.send(
            P.LogoutResponse(
                itt=req.itt, statsn=statsn + 1, exp_cmdsn=req.cmdsn, max_cmdsn=req.cmdsn + 8
            )
        )
        time.sleep(0.2)

    with HostileTarget(handler) as t:
        r = login(t.address, t.port, settings())
        assert r.exp_statsn == 101
        pairs = text_request(r, [("SendTargets", "All")])
        assert pairs == decode_text(
            encode_text(
                [
                    ("TargetName", "iqn.x:a"),
                    ("TargetAddress", "10.0.0.1:3260,1"),
                    ("TargetName", "iqn.x:b"),
                ]
            )
        )
        logout(r)
        assert not t.errors, t.errors
    assert len(seen) == 3
    assert len({q.itt for q in seen}) == 1
    assert [q.ttt for q in seen] == [P.RSVD_TAG, 0x1000, 0x1001]
    assert [q.cmdsn for q in seen] == [1, 2, 3]
    assert [q.exp_statsn for q in seen] == [101, 102, 103]
    assert seen[0].data == b"SendTargets=All\x00" and seen[1].data == seen[2].data == b""


def test_endless_text_reply_is_bounded() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        answer_login(conn)
        while True:
            req = conn.recv(5)
            conn.send(
                P.TextResponse(
                    final=False,
                    itt=req.itt,
                    ttt=5,
                    statsn=1,  # type: ignore[attr-defined]
                    data=b"X-A=" + b"a" * 8000 + b"\x00",
                )
            )

    with HostileTarget(handler) as t:
        r = login(t.address, t.port, settings())
        t0 = time.monotonic()
        with pytest.raises(IscsiError, match="exceeds 65536 bytes") as e:
            text_request(r, [("SendTargets", "All")], max_bytes=65536)
        assert time.monotonic() - t0 < 2
        assert e.value.code == Err.TRANS
        r.close()


def test_text_reply_timeout() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        answer_login(conn)
        conn.recv(5)
        hang(conn)

    with HostileTarget(handler) as t:
        r = login(t.address, t.port, settings())
        with pytest.raises(IscsiError, match="timed out") as e:
            text_request(r, [("SendTargets", "All")], timeout=0.3)
        assert e.value.code == Err.PDU_TIMEOUT
        r.close()


def test_logout_refused_still_closes() -> None:
    def handler(conn: PduConnection, _: int) -> None:
        answer_login(conn)
        req = conn.recv(5)
        assert isinstance(req, P.LogoutRequest)
        assert req.immediate and req.reason == 0
        conn.send(P.LogoutResponse(itt=req.itt, response=3, statsn=1))
        time.sleep(0.2)

    with HostileTarget(handler) as t:
        r = login(t.address, t.port, settings())
        with pytest.raises(IscsiError, match="refused the logout: cleanup failed") as e:
            logout(r)
        assert e.value.code == Err.LOGOUT
        assert r.sock.fileno() == -1


def test_chap_configured_target_picks_none() -> None:
    from pyiscsid.settings import AuthSettings

    requests: list[P.LoginRequest] = []

    def handler(conn: PduConnection, _: int) -> None:
        requests.append(answer_login(conn))
        time.sleep(0.3)

    with HostileTarget(handler) as t:
        auth = AuthSettings(method="CHAP", username="u", password="secret-secret")
        r = login(t.address, t.port, settings(auth=auth))
        assert r.tsih == 7 and r.negotiated.auth_method == "None"
        r.close()


def test_mutual_chap_configured_target_picks_none() -> None:
    from pyiscsid.settings import AuthSettings

    def handler(conn: PduConnection, _: int) -> None:
        answer_login(conn)
        time.sleep(0.3)

    auth = AuthSettings(
        method="CHAP", username="u", password="secret-secret", username_in="t",
        password_in="target-secret",
    )  # fmt: skip
    err, _ = run_login(handler, auth=auth)
    assert err.code == Err.LOGIN_AUTH_FAILED
    assert "refused CHAP but mutual CHAP is configured" in err.message

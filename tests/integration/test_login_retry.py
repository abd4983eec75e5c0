"""A session's first login is retried as open-iscsi's iscsid retries it (login_retrying): a dead
portal ends as exit code 8 after initial_login_retry_max * login_timeout seconds, a target that
rejects us is not asked again, and a portal that comes up in time gets the session."""

from __future__ import annotations

import socket
import time

import pytest
from hostile import HostileTarget, answer_login, recv_login, response_to

from pyiscsid.errors import Err, IscsiError
from pyiscsid.login import login_retrying
from pyiscsid.pduio import PduConnection
from pyiscsid.settings import LoginSettings

pytestmark = pytest.mark.integration

TARGET = "iqn.2026-12.org.pyiscsi:retry"


def settings(retry_max: int, login_timeout: float) -> LoginSettings:
    return LoginSettings(
        initiator_name="iqn.2026-12.org.pyiscsi:init",
        target_name=TARGET,
        login_timeout=login_timeout,
        initial_login_retry_max=retry_max,
    )


def dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_refused_without_retries_is_a_timeout_at_once() -> None:
    retries: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(IscsiError) as e:
        login_retrying("127.0.0.1", dead_port(), settings(0, 5.0), log=retries.append)
    assert time.monotonic() - t0 < 1.0
    assert e.value.code == Err.TRANS_TIMEOUT == 8
    assert e.value.message == "cannot make connection to 127.0.0.1: Connection refused"
    assert retries == []


def test_dropped_connections_are_retried_until_the_time_is_up() -> None:
    retries: list[str] = []
    with HostileTarget(lambda conn, i: None) as t:  # accepts, then closes at once
        t0 = time.monotonic()
        with pytest.raises(IscsiError) as e:
            login_retrying(t.address, t.port, settings(2, 0.5), reopen_delay=0.2,
                           log=retries.append)  # fmt: skip
        elapsed = time.monotonic() - t0
        attempts = t.connections
    # 2 * 0.5 s of retrying, an attempt every 0.2 s: 5 attempts, 4 retries logged
    assert 0.7 <= elapsed < 2.0, elapsed
    assert attempts == len(retries) + 1 >= 4, (attempts, retries)
    assert retries[0].startswith(f"login to {t.address}:{t.port} failed (")
    assert retries[0].endswith("); trying again in 0.2 s")
    assert e.value.code in (Err.TRANS_TIMEOUT, Err.PDU_TIMEOUT, Err.LOGIN), e.value


def test_authentication_failure_is_not_retried() -> None:
    def reject(conn: PduConnection, _index: int) -> None:
        req = recv_login(conn)
        conn.send(response_to(req, status_class=2, status_detail=1, transit=False, nsg=0))

    retries: list[str] = []
    with HostileTarget(reject) as t:
        with pytest.raises(IscsiError) as e:
            login_retrying(t.address, t.port, settings(4, 5.0), reopen_delay=0.2,
                           log=retries.append)  # fmt: skip
        assert t.connections == 1
    assert e.value.code == Err.LOGIN_AUTH_FAILED == 24
    assert retries == []


def test_a_portal_that_answers_later_gets_the_session() -> None:
    def late(conn: PduConnection, index: int) -> None:
        if index >= 2:  # the first two connections are dropped
            answer_login(conn)

    with HostileTarget(late) as t:
        result = login_retrying(t.address, t.port, settings(4, 2.0), reopen_delay=0.1)
        try:
            assert t.connections == 3
            assert result.tsih == 7
        finally:
            result.close()

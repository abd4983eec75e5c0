"""A scripted target for tests/vm/e2e/session_life.sh: it asks for a logout with an Async Message.

    async_target.py PORT LOGFILE

Login 0: (TSIH 7), then an Async Message "logout requested within 5 s" (event 1); it
expects a Logout Request and answers it, then closes. Login 1: the initiator's recovery,
which must reinstate (same ISID, TSIH 0); it stays logged in, answers NOP-Out pings, and answers
the final Logout. No LUNs: the node is logged in with node.session.scan = manual. Every step is a
line in LOGFILE (`login 0 isid=... tsih=...`, `logout 0 reason=1`, ...).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: hostile.py

from hostile import HostileTarget, answer_login

from pyiscsid import pdu as P
from pyiscsid.pduio import PduConnection

RSVD = 0xFFFFFFFF
LOG = Path(sys.argv[2])
lock = threading.Lock()


def note(line: str) -> None:
    with lock, LOG.open("a") as f:
        f.write(line + "\n")


def serve(conn: PduConnection, index: int, statsn: int, cmdsn: int) -> None:
    """Full feature phase: NOP-Out pings answered, a Logout answered (then return)."""
    while True:
        pdu = conn.recv(60)
        if isinstance(pdu, P.NopOut):
            if pdu.itt != RSVD:  # a ping: a NOP-In with the same ITT
                statsn += 1
                conn.send(P.NopIn(itt=pdu.itt, ttt=RSVD, statsn=statsn, exp_cmdsn=cmdsn,
                                  max_cmdsn=cmdsn + 16, data=pdu.data))  # fmt: skip
            continue
        if isinstance(pdu, P.LogoutRequest):
            note(f"logout {index} reason={pdu.reason} cid={pdu.cid}")
            statsn += 1
            conn.send(P.LogoutResponse(itt=pdu.itt, response=0, statsn=statsn,
                                       exp_cmdsn=cmdsn, max_cmdsn=cmdsn + 16))  # fmt: skip
            time.sleep(0.2)
            return
        note(f"unexpected {index} {type(pdu).__name__}")


logins = 0  # connections that logged in (a port probe is a connection too)


def handler(conn: PduConnection, _conn_index: int) -> None:
    global logins
    req = answer_login(conn, tsih=7 + logins, statsn=100)
    with lock:
        index = logins
        logins += 1
    note(f"login {index} isid={req.isid.hex()} tsih={req.tsih}")
    statsn, cmdsn = 100, req.cmdsn
    if index == 0:
        time.sleep(1.5)
        statsn += 1
        conn.send(P.AsyncMessage(async_event=1, parameter3=5, statsn=statsn, exp_cmdsn=cmdsn,
                                 max_cmdsn=cmdsn + 16))  # fmt: skip
        note("async 0 logout-requested")
    serve(conn, index, statsn, cmdsn)


def main() -> None:
    port = int(sys.argv[1])
    target = HostileTarget(handler, port=port)
    note(f"listening {target.port}")
    try:
        while True:
            time.sleep(1)
    finally:
        target.close()


if __name__ == "__main__":
    main()

"""A scripted iSCSI "target" on 127.0.0.1 for tests: each connection runs a handler function.

The handler gets a PduConnection (target side) and the connection's index; it can misbehave
in any way a test needs. `answer_login` is a minimal well-behaved login for handlers that
only misbehave afterwards (discovery replies, redirects...).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from pyiscsid import pdu as P
from pyiscsid.negotiation import decode_text, encode_text
from pyiscsid.pduio import PduConnection

Handler = Callable[[PduConnection, int], None]


class HostileTarget:
    """Listens on 127.0.0.1:PORT (default: a free one); runs `handler(conn, index)` for every
    connection."""

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.address = "127.0.0.1"
        self.port: int = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.received: list[P.Pdu] = []  # every PDU handlers read through `recv`
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._count = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                s, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(s)
            index = self._count
            self._count += 1
            threading.Thread(target=self._run, args=(s, index), daemon=True).start()

    def _run(self, s: socket.socket, index: int) -> None:
        conn = PduConnection(s, max_recv_data_segment_length=1 << 20)
        try:
            self.handler(conn, index)
        except Exception as e:  # a handler failing because the initiator gave up is fine
            self.errors.append(e)
        finally:
            if not self._stop.is_set():
                with contextlib.suppress(OSError):
                    s.close()

    @property
    def connections(self) -> int:
        return self._count

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for s in self._conns:
            with contextlib.suppress(OSError):
                s.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> HostileTarget:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def recv_login(conn: PduConnection, timeout: float = 5) -> P.LoginRequest:
    pdu = conn.recv(timeout)
    assert isinstance(pdu, P.LoginRequest), pdu
    return pdu


def response_to(req: P.LoginRequest, **kw: object) -> P.LoginResponse:
    """A Login Response matching a request (ITT, ISID, CSG); override any field with kw."""
    fields: dict[str, object] = {
        "itt": req.itt,
        "isid": req.isid,
        "csg": req.csg,
        "nsg": req.nsg if req.transit else 0,
        "transit": req.transit,
        "tsih": 0,
        "statsn": 1,
        "exp_cmdsn": req.cmdsn,
        "max_cmdsn": req.cmdsn + 1,
    }
    fields.update(kw)
    return P.LoginResponse(**fields)  # type: ignore[arg-type]


def _answer(key: str, value: str) -> str | None:
    """A compliant target's answer to one operational key (None: no answer due)."""
    if key in (
        "InitiatorName",
        "InitiatorAlias",
        "SessionType",
        "TargetName",
        "MaxRecvDataSegmentLength",
    ):
        return None
    return value.split(",")[0]


def answer_login(
    conn: PduConnection,
    tsih: int = 7,
    declare: list[tuple[str, str]] | None = None,
    statsn: int = 100,
) -> P.LoginRequest:
    """Play a well-behaved target through AuthMethod=None and operational negotiation.

    Returns the last Login Request; the connection is then in the full feature phase.
    """
    declare = declare if declare is not None else [("TargetPortalGroupTag", "1")]
    declared = False
    while True:
        req = recv_login(conn)
        keys = decode_text(req.data)
        out: list[tuple[str, str]] = []
        for k, v in keys:
            if k == "AuthMethod":
                out.append((k, "None"))
            elif req.csg == P.Stage.OPERATIONAL and (a := _answer(k, v)) is not None:
                out.append((k, a))
        if not declared:
            out += declare
            declared = True
        if req.csg == P.Stage.OPERATIONAL:
            out.append(("MaxRecvDataSegmentLength", "8192"))
        final = req.transit and req.nsg == P.Stage.FULL_FEATURE
        conn.send(
            response_to(
                req,
                tsih=tsih if final else 0,
                statsn=statsn,
                data=encode_text(out),
            )
        )
        if final:
            return req


def ffp_recv(conn: PduConnection, timeout: float = 5) -> P.Pdu:
    return conn.recv(timeout)

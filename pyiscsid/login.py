"""The iSCSI login phase (RFC 7143 6.3, 11.12, 11.13), logout and full-feature Text requests.

`login()` connects, runs SecurityNegotiation (AuthMethod, CHAP) and
LoginOperationalNegotiation, and returns a `LoginResult` in the full feature phase: the
connected socket, its PduConnection with digests switched on as negotiated, the sequence
numbers and the negotiated parameters. Redirections (status class 1) are followed up to
`settings.max_redirects`; every other failure is a `LoginError` (or another IscsiError for
transport failures) carrying open-iscsi's exit code.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyiscsid import sysfs
from pyiscsid.errors import Err, IscsiError
from pyiscsid.negotiation import (
    NegotiatedParams,
    NegotiationError,
    Negotiator,
    TextAssembler,
    decode_text,
    encode_text,
    parse_target_address,
)
from pyiscsid.pdu import (
    ISCSI_VERSION,
    RSVD_TAG,
    AsyncMessage,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Pdu,
    PduError,
    Reject,
    Stage,
    TextRequest,
    TextResponse,
)
from pyiscsid.pduio import LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH, PduConnection
from pyiscsid.settings import LoginSettings

# A login that needs more request/response round trips than this is going nowhere.
MAX_LOGIN_EXCHANGES = 32
# Bound on one login stage's text continued across PDUs (C bit).
MAX_LOGIN_TEXT = 65536
# Bound on one Text command's whole reply (SendTargets of many targets).
MAX_TEXT_REPLY = 1 << 20

STATUS_DETAILS: dict[int, str] = {
    0x0000: "success",
    0x0101: "target moved temporarily",
    0x0102: "target moved permanently",
    0x0200: "initiator error",
    0x0201: "authentication failure",
    0x0202: "authorization failure",
    0x0203: "target not found",
    0x0204: "target removed",
    0x0205: "unsupported version",
    0x0206: "too many connections",
    0x0207: "missing parameter",
    0x0208: "cannot include connection in session",
    0x0209: "session type not supported",
    0x020A: "session does not exist",
    0x020B: "invalid request during login",
    0x0300: "target error",
    0x0301: "service unavailable",
    0x0302: "out of resources",
}


class LoginError(IscsiError):
    """The login failed: a status class/detail from the target, or a protocol violation."""

    def __init__(
        self, code: int, message: str, status_class: int = 0, status_detail: int = 0
    ) -> None:
        super().__init__(code, message)
        self.status_class = status_class
        self.status_detail = status_detail


def status_code(status_class: int, status_detail: int) -> Err:
    """open-iscsi's exit code for a Login Response status (RFC 7143 11.13.5)."""
    if status_class == 0:
        return Err.SUCCESS
    if status_class == 2:
        if status_detail in (0x01, 0x02):
            return Err.LOGIN_AUTH_FAILED
        return Err.FATAL_LOGIN
    if status_class == 3:
        return Err.LOGIN
    return Err.LOGIN


def status_text(status_class: int, status_detail: int) -> str:
    """A readable description of a Login Response status, with its class/detail numbers."""
    text = STATUS_DETAILS.get((status_class << 8) | status_detail)
    if text is None:
        text = {1: "redirection", 2: "initiator error", 3: "target error"}.get(
            status_class, "unknown status"
        )
    return f"{text} ({status_class:02x}/{status_detail:02x})"


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic on 32 bits: a < b."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


@dataclass
class LoginResult:
    """A connection in the full feature phase."""

    conn: PduConnection
    sock: socket.socket
    address: str  # what we connected to, after redirects
    port: int
    tsih: int
    isid: bytes
    cid: int
    statsn: int  # the last StatSN received
    exp_statsn: int
    cmdsn: int  # the CmdSN of the next non-immediate command
    exp_cmdsn: int
    max_cmdsn: int
    negotiated: NegotiatedParams
    target_name: str | None  # None for a discovery session
    redirected: bool = False
    next_itt: int = 1
    _closed: bool = field(default=False, repr=False)

    def new_itt(self) -> int:
        itt = self.next_itt
        self.next_itt = (self.next_itt + 1) & 0xFFFFFFFF
        if self.next_itt == RSVD_TAG:
            self.next_itt = 0
        return itt

    def update_sn(self, pdu: Pdu) -> None:
        """Take StatSN/ExpCmdSN/MaxCmdSN from a target PDU that carries them."""
        statsn: int | None = getattr(pdu, "statsn", None)
        exp_cmdsn: int | None = getattr(pdu, "exp_cmdsn", None)
        max_cmdsn: int | None = getattr(pdu, "max_cmdsn", None)
        if statsn is None or exp_cmdsn is None or max_cmdsn is None:
            return  # every target PDU with a StatSN has the other two (RFC 7143 11)
        # an unsolicited NOP-In (ITT reserved) shows the next StatSN without consuming it
        nxt = statsn if isinstance(pdu, NopIn) and pdu.itt == RSVD_TAG else statsn + 1
        nxt &= 0xFFFFFFFF
        if not serial_lt(nxt, self.exp_statsn):
            self.statsn = (nxt - 1) & 0xFFFFFFFF
            self.exp_statsn = nxt
        if not serial_lt(max_cmdsn, (exp_cmdsn - 1) & 0xFFFFFFFF):
            self.exp_cmdsn, self.max_cmdsn = exp_cmdsn, max_cmdsn

    def close(self) -> None:
        self._closed = True
        self.conn.close()


class _Redirect(Exception):
    def __init__(self, address: str, port: int, permanent: bool) -> None:
        super().__init__(f"{address}:{port}")
        self.address = address
        self.port = port
        self.permanent = permanent


def _fmt_portal(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _addresses(address: str, port: int) -> list[Any]:
    """getaddrinfo for a TCP portal: an IP address without the resolver (no hosts file or
    nsswitch reads for each of many logins), a name through it."""
    try:
        return socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
    except (socket.gaierror, UnicodeError):
        pass
    try:
        return socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise IscsiError(Err.TRANS, f"cannot resolve host name {address}: {reason}") from None


class BindError(IscsiError):
    """A connection that cannot be bound to its iface (TRANS). `message` is open-iscsi's line
    about the binding; `reason` what it then reports the connect failed with (open-iscsi's
    `cannot make connection to ADDR: REASON`, "Success" when no system call failed)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(Err.TRANS, message)
        self.reason = reason


ARPHRD_ETHER = "1"  # /sys/class/net/DEV/type of an Ethernet device


def netdev_of_hwaddress(hwaddress: str) -> str:
    """The Ethernet device with this MAC address (case does not matter), from
    /sys/class/net/*/{type,address}; only Ethernet devices count (not lo), as in open-iscsi.
    BindError naming the address when there is none."""
    root = f"{sysfs.sysfs_root()}/class/net"
    try:
        names = sorted(os.listdir(root))
    except OSError:
        names = []
    for name in names:
        if sysfs.read_str(f"{root}/{name}/type") != ARPHRD_ETHER:
            continue
        if sysfs.read_str(f"{root}/{name}/address").lower() == hwaddress.lower():
            return name
    raise BindError(f"Cannot match {hwaddress} to net/scsi interface.", "Success")


def _bind(s: socket.socket, family: int, netdev: str, source_address: str) -> None:
    """Make the connection leave through `netdev` (SO_BINDTODEVICE) and/or from
    `source_address` (bind() before connect, any port); BindError if it cannot."""
    if netdev:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, netdev.encode() + b"\0")
        except OSError as e:
            raise BindError(
                f"Could not bind connection 0 to {netdev}", e.strerror or str(e)
            ) from None
    if source_address:
        try:
            infos = socket.getaddrinfo(
                source_address, 0, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
            )
            s.bind(infos[0][4])
        except (OSError, socket.gaierror) as e:
            raise BindError(
                f"Could not bind {source_address} to conn.", e.strerror or str(e)
            ) from None


def connect(
    address: str,
    port: int,
    timeout: float,
    window_size: int = 0,
    netdev: str = "",
    source_address: str = "",
) -> socket.socket:
    """A TCP connection to a portal, with open-iscsi-like messages on failure. `window_size`
    (node.conn[0].tcp.window_size, 0: the kernel's autotuning) sets both socket buffers before
    the connection is made, as open-iscsi does, so the window scale is negotiated for it.
    `netdev` and `source_address` (an iface's binding) fix the device the connection leaves
    by and its local address."""
    deadline = time.monotonic() + timeout
    infos = _addresses(address, port)
    last: IscsiError | None = None
    for family, type_, proto, _, sockaddr in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        s = socket.socket(family, type_, proto)
        try:
            if window_size > 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window_size)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, window_size)
            _bind(s, family, netdev, source_address)
            s.settimeout(remaining)
            s.connect(sockaddr)
        except TimeoutError:
            s.close()
            last = IscsiError(
                Err.TRANS_TIMEOUT, f"cannot make connection to {address}: Connection timed out"
            )
            continue
        except IscsiError as e:
            s.close()
            last = e
            continue
        except OSError as e:
            s.close()
            last = IscsiError(Err.TRANS, f"cannot make connection to {address}: {e.strerror or e}")
            continue
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s
    if last is None:
        last = IscsiError(
            Err.TRANS_TIMEOUT, f"cannot make connection to {address}: Connection timed out"
        )
    raise last


def _proposals(settings: LoginSettings) -> dict[str, str]:
    props = dict(settings.operational)
    props["InitiatorName"] = settings.initiator_name
    if settings.initiator_alias:
        props["InitiatorAlias"] = settings.initiator_alias
    if settings.target_name is not None:
        props["TargetName"] = settings.target_name
    method = settings.auth.method.strip().upper()
    if method == "CHAP":
        props["AuthMethod"] = "CHAP,None"
    elif method in ("", "NONE"):
        props["AuthMethod"] = "None"
    else:
        raise IscsiError(Err.INVAL, f"unsupported authentication method {settings.auth.method!r}")
    return props


class _Login:
    """One login attempt on one connected socket."""

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        port: int,
        settings: LoginSettings,
        deadline: float,
        cmdsn: int,
    ) -> None:
        self.sock = sock
        self.conn = PduConnection(sock, LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH)
        self.address = address
        self.port = port
        self.portal = _fmt_portal(address, port)
        self.settings = settings
        self.deadline = deadline
        if len(settings.isid) != 6:
            raise IscsiError(Err.INVAL, f"the ISID must be 6 bytes, not {len(settings.isid)}")
        self.isid = bytes(settings.isid)
        self.tsih = settings.tsih
        self.cid = settings.cid
        self.itt = 0
        self.cmdsn = cmdsn
        self.statsn: int | None = None
        self.exp_cmdsn = cmdsn
        self.max_cmdsn = cmdsn
        # a login with the session's TSIH adds a connection: only connection keys (RFC 7143 4.2)
        self.negotiator = Negotiator(
            _proposals(settings), settings.session_type, leading=settings.tsih == 0
        )
        self.exchanges = 0
        what = settings.target_name or "discovery session"
        self.who = f"{what} at {self.portal}"

    # -- PDU exchange

    @property
    def exp_statsn(self) -> int:
        return 0 if self.statsn is None else (self.statsn + 1) & 0xFFFFFFFF

    def _remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        return remaining

    def _timed_out(self) -> IscsiError:
        return IscsiError(
            Err.TRANS_TIMEOUT,
            f"login to {self.who} timed out after {self.settings.login_timeout:g} seconds",
        )

    def _send(self, transit: bool, cont: bool, csg: int, nsg: int, data: bytes) -> None:
        self.exchanges += 1
        if self.exchanges > MAX_LOGIN_EXCHANGES:
            raise LoginError(
                Err.LOGIN, f"login to {self.who} did not finish after {MAX_LOGIN_EXCHANGES} PDUs"
            )
        req = LoginRequest(
            transit=transit,
            cont=cont,
            csg=csg,
            nsg=nsg if transit else 0,
            version_max=ISCSI_VERSION,
            version_min=ISCSI_VERSION,
            isid=self.isid,
            tsih=self.tsih,
            itt=self.itt,
            cid=self.cid,
            cmdsn=self.cmdsn,
            exp_statsn=self.exp_statsn,
            data=data,
        )
        self.conn.send(req, timeout=self._remaining())

    def _recv(self, csg: int, transit_asked: bool, nsg: int = Stage.FULL_FEATURE) -> LoginResponse:
        try:
            pdu = self.conn.recv(self._remaining())
        except IscsiError as e:
            if e.code == Err.PDU_TIMEOUT:
                raise self._timed_out() from None
            e.message = f"login to {self.who} failed: {e.message}"
            e.args = (e.message,)
            raise
        if isinstance(pdu, Reject):
            raise LoginError(Err.LOGIN, f"{self.who} rejected our Login Request: {pdu.reason_text}")
        if not isinstance(pdu, LoginResponse):
            raise PduError(f"{self.who} sent a {type(pdu).__name__} PDU during login", Err.LOGIN)
        if pdu.itt != self.itt:
            raise PduError(
                f"{self.who} sent a Login Response for ITT 0x{pdu.itt:08x}, "
                f"but our Login Request has ITT 0x{self.itt:08x}",
                Err.LOGIN,
            )
        if pdu.status_class != 0:
            self._status_failure(pdu)
        if pdu.version_active != ISCSI_VERSION or pdu.version_max < ISCSI_VERSION:
            raise LoginError(
                Err.FATAL_LOGIN,
                f"{self.who} answered with iSCSI version {pdu.version_active}; "
                f"only version {ISCSI_VERSION} is supported",
            )
        if pdu.isid != self.isid:
            raise LoginError(Err.LOGIN, f"{self.who} answered for ISID {pdu.isid.hex()}")
        if pdu.csg != csg:
            raise LoginError(
                Err.LOGIN, f"{self.who} answered for login stage {pdu.csg}, we are in {csg}"
            )
        if pdu.transit:
            if pdu.cont:
                raise LoginError(Err.LOGIN, f"{self.who} set both the T and C bits")
            if not transit_asked:
                raise LoginError(Err.LOGIN, f"{self.who} changed stage without our consent")
            if pdu.nsg <= csg or pdu.nsg == 2 or pdu.nsg > nsg:
                raise LoginError(Err.LOGIN, f"{self.who} moved to an invalid login stage {pdu.nsg}")
        self.statsn = pdu.statsn
        self.exp_cmdsn = pdu.exp_cmdsn
        self.max_cmdsn = pdu.max_cmdsn
        return pdu

    def _status_failure(self, pdu: LoginResponse) -> None:
        cls_, detail = pdu.status_class, pdu.status_detail
        if cls_ == 1 and detail in (1, 2):
            address = ""
            with contextlib.suppress(NegotiationError):
                for key, value in decode_text(pdu.data):
                    if key == "TargetAddress":
                        address = value
            if not address:
                raise LoginError(
                    Err.LOGIN,
                    f"{self.who} redirected the login without a TargetAddress",
                    cls_,
                    detail,
                )
            try:
                host, port, _ = parse_target_address(address)
            except NegotiationError as e:
                raise LoginError(Err.LOGIN, f"{self.who} redirected to {e.message}") from None
            raise _Redirect(host, port, detail == 2)
        raise LoginError(
            status_code(cls_, detail),
            f"login to {self.who} rejected: {status_text(cls_, detail)}",
            cls_,
            detail,
        )

    def exchange(
        self, pairs: list[tuple[str, str]], csg: int, transit: bool, nsg: int
    ) -> tuple[LoginResponse, list[tuple[str, str]]]:
        """Send our keys (split with the C bit if needed), collect the target's full reply."""
        data = encode_text(pairs)
        limit = LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH  # what a target takes during login
        chunks = [data[i : i + limit] for i in range(0, len(data), limit)] or [b""]
        for chunk in chunks[:-1]:
            self._send(False, True, csg, nsg, chunk)
            resp = self._recv(csg, False)
            if resp.data or resp.cont or resp.transit:
                raise LoginError(Err.LOGIN, f"{self.who} answered a partial Login Request")
        self._send(transit, False, csg, nsg, chunks[-1])
        assembler = TextAssembler(MAX_LOGIN_TEXT)
        while True:
            resp = self._recv(csg, transit, nsg)
            got = assembler.feed(resp.data, resp.cont)
            if got is not None:
                return resp, got
            # the target continues its text: ask for the rest with an empty request
            self._send(False, False, csg, nsg, b"")

    # -- the stages

    def run(self) -> LoginResult:
        neg = self.negotiator
        pairs = neg.security_keys()
        auth = self.settings.auth
        want_chap = "CHAP" in pairs_dict(pairs).get("AuthMethod", "")
        resp, got = self.exchange(pairs, Stage.SECURITY, not want_chap, Stage.OPERATIONAL)
        replies = neg.process(got)
        method = pairs_dict(got).get("AuthMethod")
        if method is None and not resp.transit:
            raise LoginError(Err.LOGIN, f"{self.who} did not answer AuthMethod")
        if method == "CHAP":
            resp = self._chap(pairs_dict(got), replies)
            replies = []
        elif method not in (None, "None"):
            raise LoginError(Err.LOGIN, f"{self.who} chose an unsupported AuthMethod={method}")
        elif auth.method.upper() == "CHAP" and auth.username_in:
            raise LoginError(
                Err.LOGIN_AUTH_FAILED,
                f"{self.who} refused CHAP but mutual CHAP is configured: not authenticated",
            )
        # Wait in the security stage until the target lets us leave it.
        while not resp.transit:
            resp, got = self.exchange(replies, Stage.SECURITY, True, Stage.OPERATIONAL)
            replies = neg.process(got)
        if resp.nsg == Stage.OPERATIONAL:
            keys = replies + neg.initial_keys()
            while True:
                resp, got = self.exchange(keys, Stage.OPERATIONAL, True, Stage.FULL_FEATURE)
                keys = neg.process(got)
                if resp.transit:
                    break
        if keys_left := neg.pending:
            raise LoginError(
                Err.LOGIN,
                f"{self.who} ended the login without answering {', '.join(keys_left)}",
            )
        if self.tsih == 0 and resp.tsih == 0:
            raise LoginError(Err.LOGIN, f"{self.who} completed the login with TSIH 0")
        if self.tsih and resp.tsih != self.tsih:
            raise LoginError(
                Err.LOGIN, f"{self.who} answered TSIH {resp.tsih}, we asked for {self.tsih}"
            )
        params = neg.result()
        self.conn.header_digest = params.header_digest
        self.conn.data_digest = params.data_digest
        self.conn.max_recv_data_segment_length = params.max_recv_data_segment_length
        assert self.statsn is not None
        return LoginResult(
            conn=self.conn,
            sock=self.sock,
            address=self.address,
            port=self.port,
            tsih=resp.tsih,
            isid=self.isid,
            cid=self.cid,
            statsn=self.statsn,
            exp_statsn=self.exp_statsn,
            cmdsn=self.cmdsn,
            exp_cmdsn=self.exp_cmdsn,
            max_cmdsn=self.max_cmdsn,
            negotiated=params,
            target_name=self.settings.target_name,
        )

    def _chap(self, first: dict[str, str], replies: list[tuple[str, str]]) -> LoginResponse:
        from pyiscsid.chap import ChapInitiator

        chap = ChapInitiator(self.settings.auth)
        _, got = self.exchange(replies + chap.algorithm_offer(), Stage.SECURITY, False, 0)
        replies = self.negotiator.process(got)
        answer = chap.respond(pairs_dict(got))
        resp, got = self.exchange(replies + answer, Stage.SECURITY, True, Stage.OPERATIONAL)
        keys = pairs_dict(got)
        chap.verify(keys)  # mutual CHAP: the target must prove itself
        self.negotiator.process(got)
        return resp


def pairs_dict(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)


def login(
    address: str,
    port: int,
    settings: LoginSettings,
    *,
    cmdsn: int = 1,
    on_connected: Callable[[], None] | None = None,
) -> LoginResult:
    """Log in to a portal and return the connection in the full feature phase.

    `cmdsn` is the CmdSN of the login (1 for a new session; the session's current CmdSN when
    adding or reinstating a connection). `on_connected` is called when a TCP connection is up
    and its login begins.
    """
    deadline = time.monotonic() + settings.login_timeout
    redirects = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IscsiError(
                Err.TRANS_TIMEOUT,
                f"login to {_fmt_portal(address, port)} timed out after "
                f"{settings.login_timeout:g} seconds",
            )
        # a hwaddress binding wins over a netdev one, as in open-iscsi
        netdev = netdev_of_hwaddress(settings.hwaddress) if settings.hwaddress else settings.netdev
        sock = connect(
            address, port, remaining, settings.tcp_window_size, netdev, settings.source_address
        )
        try:
            if on_connected is not None:
                on_connected()
            attempt = _Login(sock, address, port, settings, deadline, cmdsn)
            result = attempt.run()
            result.redirected = redirects > 0
            return result
        except _Redirect as r:
            sock.close()
            redirects += 1
            if redirects > settings.max_redirects:
                raise LoginError(
                    Err.LOGIN,
                    f"login to {_fmt_portal(address, port)} redirected more than "
                    f"{settings.max_redirects} times",
                    1,
                    2 if r.permanent else 1,
                ) from None
            address, port = r.address, r.port
        except BaseException:
            sock.close()
            raise


# Seconds between two attempts of a session's first login (open-iscsi waits as long after a
# failed connect before it tries again).
INITIAL_LOGIN_REOPEN_DELAY = 3.0
# Failures that another attempt cannot mend: the target refused us or our credentials, or our
# own settings are wrong.
_FATAL_LOGIN_ERRORS = frozenset({Err.LOGIN_AUTH_FAILED, Err.FATAL_LOGIN, Err.INVAL})


def login_retrying(
    address: str,
    port: int,
    settings: LoginSettings,
    *,
    reopen_delay: float = INITIAL_LOGIN_REOPEN_DELAY,
    log: Callable[[str], None] | None = None,
) -> LoginResult:
    """A session's first login, tried again as open-iscsi's iscsid tries it.

    Every failure but a fatal one (authentication, a login rejected by the target, a bad
    setting) is followed by another attempt `reopen_delay` seconds later, until
    `settings.initial_login_retry_max * settings.login_timeout` seconds have passed since the
    first; then the last error is raised. A portal that could not be connected to ends as
    TRANS_TIMEOUT (8, "connection timed out"), whether the connects were refused or timed out,
    as open-iscsi reports it; `log` (if given) hears of each retry.
    """
    give_up = time.monotonic() + settings.initial_login_retry_max * settings.login_timeout
    while True:
        try:
            return login(address, port, settings)
        except IscsiError as exc:
            last = exc
        if last.code in _FATAL_LOGIN_ERRORS or time.monotonic() + reopen_delay > give_up:
            break
        if log is not None:
            log(
                f"login to {_fmt_portal(address, port)} failed ({last.message}); "
                f"trying again in {reopen_delay:g} s"
            )
        time.sleep(reopen_delay)
    if last.code == Err.TRANS:
        raise IscsiError(Err.TRANS_TIMEOUT, last.message) from last
    raise last


# ---------------------------------------------------------------------------------------------
# Full feature phase helpers


def _recv_for(result: LoginResult, itt: int, deadline: float, what: str) -> Pdu:
    """The next PDU for `itt`, answering NOP-In pings and skipping async messages meanwhile."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IscsiError(Err.PDU_TIMEOUT, f"timed out waiting for the {what}")
        pdu = result.conn.recv(remaining)
        result.update_sn(pdu)
        if isinstance(pdu, NopIn):
            if pdu.ttt != RSVD_TAG:  # the target pings: answer with the same TTT
                result.conn.send(
                    NopOut(
                        immediate=True,
                        lun=pdu.lun,
                        itt=RSVD_TAG,
                        ttt=pdu.ttt,
                        cmdsn=result.cmdsn,
                        exp_statsn=result.exp_statsn,
                        data=pdu.data,
                    ),
                    timeout=remaining,
                )
            continue
        if isinstance(pdu, AsyncMessage):
            continue
        if isinstance(pdu, Reject):
            raise IscsiError(Err.TRANS, f"the target rejected our {what}: {pdu.reason_text}")
        if getattr(pdu, "itt", None) != itt:
            raise PduError(f"unexpected {type(pdu).__name__} while waiting for the {what}")
        return pdu


def text_request(
    result: LoginResult,
    pairs: list[tuple[str, str]],
    timeout: float = 30.0,
    max_bytes: int = MAX_TEXT_REPLY,
) -> list[tuple[str, str]]:
    """One Text command in the full feature phase; returns the target's whole reply."""
    deadline = time.monotonic() + timeout
    itt = result.new_itt()
    data = encode_text(pairs)
    limit = max(result.negotiated.max_xmit_data_segment_length, 512)
    chunks = [data[i : i + limit] for i in range(0, len(data), limit)] or [b""]
    ttt = RSVD_TAG

    def send(chunk: bytes, final: bool, cont: bool) -> None:
        result.conn.send(
            TextRequest(
                final=final,
                cont=cont,
                itt=itt,
                ttt=ttt,
                cmdsn=result.cmdsn,
                exp_statsn=result.exp_statsn,
                data=chunk,
            ),
            timeout=max(deadline - time.monotonic(), 0.001),
        )
        result.cmdsn = (result.cmdsn + 1) & 0xFFFFFFFF

    for chunk in chunks[:-1]:
        send(chunk, False, True)
        resp = _recv_for(result, itt, deadline, "Text Response")
        if not isinstance(resp, TextResponse) or resp.data or resp.final:
            raise PduError("the target did not acknowledge a continued Text Request")
        ttt = resp.ttt
    send(chunks[-1], True, False)
    assembler = TextAssembler(max_bytes)
    out: list[tuple[str, str]] = []
    total = 0
    while True:
        resp = _recv_for(result, itt, deadline, "Text Response")
        if not isinstance(resp, TextResponse):
            raise PduError(f"the target answered a Text Request with a {type(resp).__name__}")
        if resp.final and resp.cont:
            raise PduError("the target set both the F and C bits in a Text Response")
        total += len(resp.data)
        if total > max_bytes:
            raise IscsiError(
                Err.TRANS, f"the target's text reply exceeds {max_bytes} bytes; giving up"
            )
        got = assembler.feed(resp.data, resp.cont)
        if got is not None:
            out.extend(got)
        if resp.final:
            return out
        if resp.ttt == RSVD_TAG:
            raise PduError("the target continued a Text Response without a Target Transfer Tag")
        ttt = resp.ttt
        send(b"", True, False)


def logout(result: LoginResult, reason: int = 0, timeout: float = 15) -> None:
    """Logout Request (reason 0: close the session), wait for the Logout Response, close."""
    deadline = time.monotonic() + timeout
    try:
        itt = result.new_itt()
        result.conn.send(
            LogoutRequest(
                immediate=True,
                reason=reason,
                itt=itt,
                cid=result.cid,
                cmdsn=result.cmdsn,
                exp_statsn=result.exp_statsn,
            ),
            timeout=timeout,
        )
        try:
            pdu = _recv_for(result, itt, deadline, "Logout Response")
        except IscsiError as e:
            raise IscsiError(Err.LOGOUT, f"logout failed: {e.message}") from None
        if not isinstance(pdu, LogoutResponse):
            raise IscsiError(Err.LOGOUT, f"the target answered logout with {type(pdu).__name__}")
        if pdu.response != 0:
            reasons = {
                1: "CID not found",
                2: "connection recovery not supported",
                3: "cleanup failed",
            }
            raise IscsiError(
                Err.LOGOUT,
                f"the target refused the logout: {reasons.get(pdu.response, pdu.response)}",
            )
    finally:
        result.close()

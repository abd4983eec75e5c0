"""What a login needs to know (from a node or discovery record), and what discovery finds.

`records` builds these from the database; `login` and `discovery` consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AuthSettings:
    """Authentication for one session (node.session.auth.* / discovery.sendtargets.auth.*)."""

    method: str = "None"  # "None" or "CHAP"
    username: str = ""  # our CHAP_N towards the target
    password: str = ""  # the secret the target checks
    username_in: str = ""  # the target's CHAP_N (mutual CHAP)
    password_in: str = ""  # the secret we check the target with (mutual CHAP)
    chap_algs: list[str] = field(default_factory=lambda: ["MD5"])  # order of preference


@dataclass
class LoginSettings:
    """One connection's login: who we are, whom we log in to, and what we propose."""

    initiator_name: str
    target_name: str | None = None  # None: a discovery session
    initiator_alias: str = ""
    isid: bytes = b"\x00\x02\x3d\x00\x00\x00"  # 6 bytes, RFC 7143 10.12.5
    tsih: int = 0  # 0 for a new session, the target's TSIH to reinstate / add a connection
    cid: int = 0
    auth: AuthSettings = field(default_factory=AuthSettings)
    login_timeout: float = 15.0  # seconds for the whole login (node.conn[0].timeo.login_timeout)
    # A session's first login is retried for initial_login_retry_max * login_timeout seconds
    # (node.session.initial_login_retry_max; login_retrying())
    initial_login_retry_max: int = 0
    # Operational keys we propose, by their RFC 7143 names, e.g.
    # {"HeaderDigest": "None", "MaxRecvDataSegmentLength": "262144", ...}
    operational: dict[str, str] = field(default_factory=dict)
    max_redirects: int = 8
    tcp_window_size: int = 0  # SO_RCVBUF and SO_SNDBUF (node.conn[0].tcp.window_size); 0: auto
    # The iface the connection goes through (iface.*): the network device it leaves by
    # (SO_BINDTODEVICE; a hwaddress is looked up to its device) and the source address it is
    # bound to (bind()); "" for each: the kernel's routing decides.
    iface_name: str = "default"
    netdev: str = ""
    hwaddress: str = ""
    source_address: str = ""

    def bound_to(
        self, iface_name: str, netdev: str, hwaddress: str, source_address: str
    ) -> LoginSettings:
        """These settings with the connection bound to an iface (see the fields)."""
        self.iface_name = iface_name
        self.netdev = netdev
        self.hwaddress = hwaddress
        self.source_address = source_address
        return self

    @property
    def session_type(self) -> str:
        return "Discovery" if self.target_name is None else "Normal"


@dataclass(frozen=True)
class TargetPortal:
    """One portal of a discovered target (TargetAddress=address:port,tpgt)."""

    address: str  # IPv4 dotted quad, IPv6 without brackets, or a DNS name
    port: int
    tpgt: int


@dataclass
class DiscoveredTarget:
    """A target named in a SendTargets reply, with its portals in the order given."""

    name: str
    portals: list[TargetPortal] = field(default_factory=list)

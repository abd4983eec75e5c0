"""Node and discovery records: every parameter, its default, validation, aliases, ids and dumps.

The parameter names, their order, their default values and the dump format are those of
open-iscsi 2.1.8 (`iscsiadm -m node -T X -p Y` and `iscsiadm -m discoverydb -t st -p X`), because
administrators and tools read and write them by these names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from pyiscsid.errors import Err, IscsiError
from pyiscsid.recordclass import recordclass

# typing, dataclasses and the settings are not imported at run time: iscsiadm starts faster
# (under software emulation each of them costs a tenth of a second)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pyiscsid.settings import AuthSettings, LoginSettings

ISCSI_VERSION = "2.1.8"
BEGIN_RECORD = f"# BEGIN RECORD {ISCSI_VERSION}"
END_RECORD = "# END RECORD"

DEFAULT_PORT = 3260
DEFAULT_IFACE = "default"
VALUE_MAX_LEN = 255  # open-iscsi keeps values in 256-byte buffers
CHAP_ALGORITHMS = ("MD5", "SHA1", "SHA256", "SHA3-256")
DIGEST_VALUES = ("None", "CRC32C", "CRC32C,None", "None,CRC32C")
YES_NO = ("No", "Yes")
STARTUP_VALUES = ("manual", "automatic", "onboot")
NODE_DISCOVERY_TYPES = ("send_targets", "isns", "offload_send_targets", "slp", "static", "fw")
DISCOVERY_TYPES = ("sendtargets", "isns", "offload_send_targets", "slp", "static", "fw")
SUPPORTED_DISCOVERY_TYPES = ("sendtargets", "isns")

_INT_RANGES = {
    "int": (-(2**31), 2**31 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
}
_INT_RE = re.compile(r"[+-]?[0-9]+")


@recordclass
class Param:
    """One record parameter: its name, default, value type and how it is shown."""

    name: str
    default: str
    kind: str  # "str", "int", "uint8", "uint16", "uint32", "enum", "list"
    options: tuple[str, ...] = ()
    masked: bool = False  # printed as ******** when set (passwords)
    modifiable: bool = True  # False: part of the record's identity
    family: str = ""  # "ipv4" / "ipv6": iface keys shown only for that iface type

    def validate(self, value: str) -> str:
        """The value in its canonical spelling, or IscsiError(Err.INVAL) saying what is wrong."""
        if not isinstance(value, str):
            raise IscsiError(Err.INVAL, f"value for {self.name} must be text")
        if "\n" in value or "\r" in value or "\0" in value:
            raise IscsiError(Err.INVAL, f"value for {self.name} must be a single line")
        if len(value.encode()) > VALUE_MAX_LEN:
            raise IscsiError(
                Err.INVAL, f"value for {self.name} is longer than {VALUE_MAX_LEN} bytes"
            )
        if self.kind == "str":
            return value
        text = value.strip()
        if self.kind in _INT_RANGES:
            low, high = _INT_RANGES[self.kind]
            if not _INT_RE.fullmatch(text) or not low <= int(text) <= high:
                raise IscsiError(
                    Err.INVAL,
                    f"invalid value '{value}' for {self.name}: "
                    f"expected an integer from {low} to {high}",
                )
            return str(int(text))
        if self.kind == "enum":
            for option in self.options:
                if text.lower() == option.lower():
                    return option
            raise IscsiError(
                Err.INVAL,
                f"invalid value '{value}' for {self.name}: expected one of "
                + ", ".join(self.options),
            )
        if self.kind == "list":
            return _validate_alg_list(self.name, text)
        raise AssertionError(f"unknown parameter kind {self.kind}")


def _validate_alg_list(name: str, text: str) -> str:
    chosen: list[str] = []
    for token in re.split(r"[,\s]+", text):
        if not token:
            continue
        match = [alg for alg in CHAP_ALGORITHMS if alg.lower() == token.lower()]
        if not match:
            raise IscsiError(
                Err.INVAL,
                f"invalid value '{token}' for {name}: expected a list of "
                + ", ".join(reversed(CHAP_ALGORITHMS)),
            )
        if match[0] in chosen:
            raise IscsiError(Err.INVAL, f"{match[0]} is listed twice in {name}")
        chosen.append(match[0])
    if not chosen:
        raise IscsiError(Err.INVAL, f"{name} needs at least one CHAP algorithm")
    return ",".join(chosen)


def _s(name: str, default: str = "", **kw: Any) -> Param:
    return Param(name, default, "str", **kw)


def _i(name: str, default: int = 0, kind: str = "int", **kw: Any) -> Param:
    return Param(name, str(default), kind, **kw)


def _e(name: str, default: str, options: tuple[str, ...], **kw: Any) -> Param:
    return Param(name, default, "enum", options, **kw)


_V4 = {"family": "ipv4"}
_V6 = {"family": "ipv6"}

# The iface part of a node record, in the order iscsiadm 2.1.8 prints it.
IFACE_PARAMS: tuple[Param, ...] = (
    _s("iface.iscsi_ifacename", DEFAULT_IFACE, modifiable=False),
    _s("iface.net_ifacename"),
    _s("iface.ipaddress"),
    _i("iface.prefix_len", 0, "uint8"),
    _s("iface.hwaddress"),
    _s("iface.transport_name", "tcp"),
    _s("iface.initiatorname"),
    _s("iface.state"),
    _i("iface.vlan_id", 0, "uint16"),
    _i("iface.vlan_priority", 0, "uint8"),
    _s("iface.vlan_state"),
    _i("iface.iface_num", 0),
    _i("iface.mtu", 0, "uint16"),
    _i("iface.port", 0, "uint16"),
    _s("iface.bootproto", **_V4),
    _s("iface.subnet_mask", **_V4),
    _s("iface.gateway", **_V4),
    _s("iface.dhcp_alt_client_id_state", **_V4),
    _s("iface.dhcp_alt_client_id", **_V4),
    _s("iface.dhcp_dns", **_V4),
    _s("iface.dhcp_learn_iqn", **_V4),
    _s("iface.dhcp_req_vendor_id_state", **_V4),
    _s("iface.dhcp_vendor_id_state", **_V4),
    _s("iface.dhcp_vendor_id", **_V4),
    _s("iface.dhcp_slp_da", **_V4),
    _s("iface.fragmentation", **_V4),
    _s("iface.gratuitous_arp", **_V4),
    _s("iface.incoming_forwarding", **_V4),
    _s("iface.tos_state", **_V4),
    _i("iface.tos", 0, "uint8", **_V4),
    _i("iface.ttl", 0, "uint8", **_V4),
    _s("iface.ipv6_autocfg", **_V6),
    _s("iface.linklocal_autocfg", **_V6),
    _s("iface.router_autocfg", **_V6),
    _s("iface.ipv6_linklocal", **_V6),
    _s("iface.ipv6_router", **_V6),
    _i("iface.dup_addr_detect_cnt", 0, "uint8", **_V6),
    _i("iface.flow_label", 0, "uint32", **_V6),
    _s("iface.gratuitous_neighbor_adv", **_V6),
    _i("iface.hop_limit", 0, "uint8", **_V6),
    _s("iface.mld", **_V6),
    _i("iface.nd_reachable_tmo", 0, "uint32", **_V6),
    _i("iface.nd_rexmit_time", 0, "uint32", **_V6),
    _i("iface.nd_stale_tmo", 0, "uint32", **_V6),
    _i("iface.router_adv_link_mtu", 0, "uint32", **_V6),
    _i("iface.traffic_class", 0, "uint8", **_V6),
    _s("iface.delayed_ack"),
    _s("iface.tcp_nagle"),
    _s("iface.tcp_wsf_state"),
    _i("iface.tcp_wsf", 0, "uint8"),
    _i("iface.tcp_timer_scale", 0, "uint8"),
    _s("iface.tcp_timestamp"),
    _s("iface.redirect"),
    _i("iface.def_task_mgmt_timeout", 0, "uint16"),
    _s("iface.header_digest"),
    _s("iface.data_digest"),
    _s("iface.immediate_data"),
    _s("iface.initial_r2t"),
    _s("iface.data_seq_inorder"),
    _s("iface.data_pdu_inorder"),
    _i("iface.erl", 0, "uint8"),
    _i("iface.max_receive_data_len", 0, "uint32"),
    _i("iface.first_burst_len", 0, "uint32"),
    _i("iface.max_outstanding_r2t", 0, "uint16"),
    _i("iface.max_burst_len", 0, "uint32"),
    _s("iface.chap_auth"),
    _s("iface.bidi_chap"),
    _s("iface.strict_login_compliance"),
    _s("iface.discovery_auth"),
    _s("iface.discovery_logout"),
)

_CONN = "node.conn[0]."

# Every node record parameter in dump order, with open-iscsi's compiled-in defaults.
NODE_PARAMS: tuple[Param, ...] = (
    _s("node.name", modifiable=False),
    _i("node.tpgt", -1, modifiable=False),
    _e("node.startup", "manual", STARTUP_VALUES),
    _e("node.leading_login", "No", YES_NO),
    *IFACE_PARAMS,
    _s("node.discovery_address", modifiable=False),
    _i("node.discovery_port", 0, modifiable=False),
    _e("node.discovery_type", "static", NODE_DISCOVERY_TYPES, modifiable=False),
    _i("node.session.initial_cmdsn", 0),
    _i("node.session.initial_login_retry_max", 4),
    _i("node.session.xmit_thread_priority", -20),
    _i("node.session.cmds_max", 128),
    _i("node.session.queue_depth", 32),
    _i("node.session.nr_sessions", 1),
    _e("node.session.auth.authmethod", "None", ("None", "CHAP")),
    _s("node.session.auth.username"),
    _s("node.session.auth.password", masked=True),
    _s("node.session.auth.username_in"),
    _s("node.session.auth.password_in", masked=True),
    Param("node.session.auth.chap_algs", "MD5", "list"),
    _i("node.session.timeo.replacement_timeout", 120),
    _i("node.session.err_timeo.abort_timeout", 15),
    _i("node.session.err_timeo.lu_reset_timeout", 30),
    _i("node.session.err_timeo.tgt_reset_timeout", 30),
    _i("node.session.err_timeo.host_reset_timeout", 60),
    _e("node.session.iscsi.FastAbort", "Yes", YES_NO),
    _e("node.session.iscsi.InitialR2T", "No", YES_NO),
    _e("node.session.iscsi.ImmediateData", "Yes", YES_NO),
    _i("node.session.iscsi.FirstBurstLength", 262144),
    _i("node.session.iscsi.MaxBurstLength", 16776192),
    _i("node.session.iscsi.DefaultTime2Retain", 0),
    _i("node.session.iscsi.DefaultTime2Wait", 2),
    _i("node.session.iscsi.MaxConnections", 1),
    _i("node.session.iscsi.MaxOutstandingR2T", 1),
    _i("node.session.iscsi.ERL", 0),
    _e("node.session.scan", "auto", ("manual", "auto")),
    _i("node.session.reopen_max", 0),
    _s(_CONN + "address", modifiable=False),
    _i(_CONN + "port", DEFAULT_PORT, modifiable=False),
    _e(_CONN + "startup", "manual", STARTUP_VALUES),
    _i(_CONN + "tcp.window_size", 524288),
    _i(_CONN + "tcp.type_of_service", 0),
    _i(_CONN + "timeo.logout_timeout", 15),
    _i(_CONN + "timeo.login_timeout", 30),
    _i(_CONN + "timeo.auth_timeout", 45),
    _i(_CONN + "timeo.noop_out_interval", 5),
    _i(_CONN + "timeo.noop_out_timeout", 5),
    _i(_CONN + "iscsi.MaxXmitDataSegmentLength", 0),
    _i(_CONN + "iscsi.MaxRecvDataSegmentLength", 262144),
    _e(_CONN + "iscsi.HeaderDigest", "None", DIGEST_VALUES),
    _e(_CONN + "iscsi.DataDigest", "None", DIGEST_VALUES),
    _e(_CONN + "iscsi.IFMarker", "No", YES_NO),
    _e(_CONN + "iscsi.OFMarker", "No", YES_NO),
)

_ST = "discovery.sendtargets."
# The discovery chap_algs key really is printed under the node name by open-iscsi.
DISC_CHAP_ALGS = "node.session.auth.chap_algs"

SENDTARGETS_PARAMS: tuple[Param, ...] = (
    _e("discovery.startup", "manual", ("manual", "automatic")),
    _e("discovery.type", "sendtargets", DISCOVERY_TYPES, modifiable=False),
    _s(_ST + "address", modifiable=False),
    _i(_ST + "port", DEFAULT_PORT, modifiable=False),
    _e(_ST + "auth.authmethod", "None", ("None", "CHAP")),
    _s(_ST + "auth.username"),
    _s(_ST + "auth.password", masked=True),
    _s(_ST + "auth.username_in"),
    _s(_ST + "auth.password_in", masked=True),
    Param(DISC_CHAP_ALGS, "MD5", "list"),
    _i(_ST + "timeo.login_timeout", 15),
    _e(_ST + "use_discoveryd", "No", YES_NO),
    _i(_ST + "discoveryd_poll_inval", 30),
    _i(_ST + "reopen_max", 5),
    _i(_ST + "timeo.auth_timeout", 45),
    _i(_ST + "timeo.active_timeout", 30),
    _i(_ST + "iscsi.MaxRecvDataSegmentLength", 32768),
)

ISNS_PARAMS: tuple[Param, ...] = (
    _e("discovery.startup", "manual", ("manual", "automatic")),
    _e("discovery.type", "isns", DISCOVERY_TYPES, modifiable=False),
    _s(_ST + "address", modifiable=False),
    _i(_ST + "port", 3205, modifiable=False),
    _e("discovery.isns.use_discoveryd", "No", YES_NO),
    _i("discovery.isns.discoveryd_poll_inval", -1),
)

_NODE_BY_NAME = {p.name: p for p in NODE_PARAMS}
_DISCOVERY_BY_TYPE = {
    "sendtargets": {p.name: p for p in SENDTARGETS_PARAMS},
    "isns": {p.name: p for p in ISNS_PARAMS},
}
_ALL_NAMES = (
    set(_NODE_BY_NAME) | set(_DISCOVERY_BY_TYPE["sendtargets"]) | set(_DISCOVERY_BY_TYPE["isns"])
)
# Other spellings accepted for a parameter name (the right-hand side is canonical).
ALIASES = {
    "node.transport_name": "iface.transport_name",  # open-iscsi's older name
    "discovery.sendtargets.auth.chap_algs": DISC_CHAP_ALGS,
}
_CONN_RE = re.compile(r"node\.(?:conn|cnx)\[(\d+)\]\.(.+)")


def canonical_name(name: str) -> str:
    """The canonical spelling of a parameter name; IscsiError(Err.INVAL) for an unknown name."""
    if not isinstance(name, str) or not name:
        raise IscsiError(Err.INVAL, "empty parameter name")
    match = _CONN_RE.fullmatch(name)
    if match:
        if int(match.group(1)) != 0:
            raise IscsiError(
                Err.INVAL,
                f"invalid parameter name '{name}': only node.conn[0] exists "
                "(one connection per session)",
            )
        name = _CONN + match.group(2)
    name = ALIASES.get(name, name)
    if name not in _ALL_NAMES:
        raise IscsiError(Err.INVAL, f"invalid parameter name '{name}'")
    return name


def strip_brackets(address: str) -> str:
    """An address without the [] an IPv6 portal is written with."""
    if address.startswith("[") and address.endswith("]"):
        return address[1:-1]
    return address


def format_portal(address: str, port: int) -> str:
    """'10.0.0.1:3260', '[fe80::1]:3260', 'host.example:3260'."""
    address = strip_brackets(address)
    if ":" in address:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise IscsiError(Err.INVAL, f"invalid port {port!r}: expected 1 to 65535")
    return port


def _check_address(address: str) -> str:
    address = strip_brackets(address) if isinstance(address, str) else ""
    if not address or any(c.isspace() or c in ",/[]" for c in address):
        raise IscsiError(Err.INVAL, f"invalid portal address '{address}'")
    return address


def _check_target(target: str) -> str:
    if not isinstance(target, str) or not target:
        raise IscsiError(Err.INVAL, "empty target name")
    if len(target.encode()) > 223 or any(c.isspace() or ord(c) < 0x20 for c in target):
        raise IscsiError(Err.INVAL, f"invalid target name '{target}'")
    return target


def _record_id(parts: Iterable[str], attempt: int) -> str:
    import hashlib  # only new records need it (OpenSSL's loading is slow under emulation)

    text = "\0".join(parts) + f"\0{attempt}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:6]


def node_record_id(target: str, address: str, port: int, iface: str, attempt: int = 0) -> str:
    """The record id of a node: 6 lowercase hex digits; `attempt` > 0 probes after a collision."""
    return _record_id(("node", target, strip_brackets(address), str(port), iface), attempt)


def discovery_record_id(address: str, port: int, type: str, attempt: int = 0) -> str:
    """The record id of a discovery record (same scheme as node_record_id)."""
    return _record_id(("discovery", strip_brackets(address), str(port), type), attempt)


_RECORD_ID_RE = re.compile(r"[0-9a-f]{6}")


def check_record_id(record_id: str) -> str:
    """A record id as the database keys it ('[0A45F8]' -> '0a45f8'); IscsiError if malformed."""
    text = record_id.strip().strip("[]").lower() if isinstance(record_id, str) else ""
    if not _RECORD_ID_RE.fullmatch(text):
        raise IscsiError(Err.INVAL, f"invalid record id '{record_id}': expected 6 hex digits")
    return text


def node_identity_json(target: str, address: str, port: int, iface: str) -> bytes:
    """The start of NodeRecord.to_json() for this identity (lets the database find it fast)."""
    fields = {"kind": "node", "target": target, "address": address, "port": port, "iface": iface}
    return json.dumps(fields, separators=(",", ":")).encode()[:-1] + b","


def _dump(params: Mapping[str, str], table: Iterable[Param], show: bool, family: str | None) -> str:
    lines = [BEGIN_RECORD]
    for param in table:
        if param.family and param.family != family:
            continue
        value = params.get(param.name, param.default)
        if param.masked and value and not show:
            value = "********"
        lines.append(f"{param.name} = {value if value else '<empty>'}")
    lines.append(END_RECORD)
    return "\n".join(lines) + "\n"


def iface_dump(name: str, transport_name: str) -> str:
    """`iscsiadm -m iface -I NAME` of an iface with nothing set but its name and transport (the
    built-in ones), as open-iscsi 2.1.8 prints it: the node record's iface.* keys, IPv4 family."""
    params = {"iface.iscsi_ifacename": name, "iface.transport_name": transport_name}
    return _dump(params, IFACE_PARAMS, False, "ipv4")


# The ifaces every initiator has without a record (open-iscsi's built-in ones): name -> transport.
BUILTIN_IFACES = {"default": "tcp", "iser": "iser"}
IFACE_NAME_MAX = 65  # open-iscsi's ISCSI_MAX_IFACE_LEN, with its NUL: 64 characters
_IFACE_BY_NAME = {p.name: p for p in IFACE_PARAMS}
# The keys that bind an iface's connections to the network, in open-iscsi's order of precedence.
IFACE_NETDEV = "iface.net_ifacename"
IFACE_HWADDRESS = "iface.hwaddress"
IFACE_IPADDRESS = "iface.ipaddress"
_NOT_SET = ("", "default")  # open-iscsi's DEFAULT_NETDEV / DEFAULT_HWADDRESS / ... spell "default"


def check_iface_name(name: str) -> str:
    """An iface name as open-iscsi accepts one (1 to 64 characters) that is also safe as a
    file name (open-iscsi keeps each iface in a file of that name); IscsiError(INVAL) if not."""
    if (
        not isinstance(name, str)
        or not 0 < len(name.encode()) < IFACE_NAME_MAX
        or "/" in name
        or name in (".", "..")
        or any(c.isspace() or ord(c) < 0x20 for c in name)
    ):
        raise IscsiError(
            Err.INVAL,
            f"Invalid iface name {name}. Must be from 1 to {IFACE_NAME_MAX - 1} characters.",
        )
    return name


def is_set(value: str) -> bool:
    """Whether an iface binding value (netdev, hwaddress, ipaddress) is set: not empty and not
    open-iscsi's placeholder `default`."""
    return value not in _NOT_SET


@recordclass
class IfaceRecord:
    """An iface: the iface.* keys of a node record under a name of their own (records compare
    equal field by field). Node records made through it carry a copy of its keys; updating it
    updates them (as open-iscsi does)."""

    name: str
    params: dict[str, str]

    def __init__(self, name: str, params: dict[str, str] | None = None) -> None:
        self.name = check_iface_name(name)
        self.params = {p.name: p.default for p in IFACE_PARAMS}
        for key, value in (params or {}).items():
            param = _IFACE_BY_NAME.get(key)
            if param is None:
                raise IscsiError(Err.INVAL, f"invalid iface parameter name '{key}'")
            self.params[key] = value if value == param.default else param.validate(value)
        self.params["iface.iscsi_ifacename"] = self.name

    def __repr__(self) -> str:
        return f"IfaceRecord(name={self.name!r}, netdev={self.netdev!r}, ip={self.ipaddress!r})"

    @classmethod
    def builtin(cls, name: str) -> IfaceRecord | None:
        """The built-in iface of that name (default, iser), None for any other name."""
        transport = BUILTIN_IFACES.get(name)
        if transport is None:
            return None
        return cls(name, {"iface.transport_name": transport})

    @property
    def is_builtin(self) -> bool:
        return self.name in BUILTIN_IFACES

    @property
    def transport(self) -> str:
        return self.params["iface.transport_name"]

    @property
    def netdev(self) -> str:
        return self.params[IFACE_NETDEV]

    @property
    def hwaddress(self) -> str:
        return self.params[IFACE_HWADDRESS]

    @property
    def ipaddress(self) -> str:
        return self.params[IFACE_IPADDRESS]

    @property
    def initiatorname(self) -> str:
        return self.params["iface.initiatorname"]

    @property
    def bound_by_hwaddress(self) -> bool:
        return is_set(self.hwaddress)

    @property
    def bound_by_netdev(self) -> bool:
        return is_set(self.netdev)

    @property
    def family(self) -> str:
        """Which family's keys a dump shows: decided by the name, as open-iscsi decides it."""
        return "ipv6" if "ipv6" in self.name else "ipv4"

    def param(self, name: str) -> Param:
        """The iface parameter of that name; IscsiError(INVAL) for any other name."""
        param = _IFACE_BY_NAME.get(name)
        if param is None:
            raise IscsiError(Err.INVAL, f"Cannot modify {name}. Invalid param name.")
        return param

    def set(self, name: str, value: str) -> None:
        param = self.param(name)
        if not param.modifiable:
            raise IscsiError(
                Err.INVAL,
                f"Cannot modify {name}. It is used to look up the record and cannot be changed.",
            )
        self.params[name] = param.validate(value)

    def dump(self) -> str:
        """`iscsiadm -m iface -I NAME`: '# BEGIN RECORD 2.1.8', the iface keys, '# END RECORD'."""
        return _dump(self.params, IFACE_PARAMS, False, self.family)

    def flat(self) -> str:
        """One line of `iscsiadm -m iface`: name transport,hwaddress,ipaddress,netdev,initiator."""
        fields = (self.transport, self.hwaddress, self.ipaddress, self.netdev, self.initiatorname)
        return f"{self.name} " + ",".join(v or "<empty>" for v in fields)

    def to_json(self) -> bytes:
        obj = {"kind": "iface", "version": 1, "name": self.name, "params": self.params}
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> IfaceRecord:
        obj = _load_json(data, "iface")
        try:
            return cls(
                _get_field(obj, "name", str, "iface"),
                {k: v for k, v in obj["params"].items() if k in _IFACE_BY_NAME},
            )
        except IscsiError as exc:
            if exc.code == Err.IDBM:
                raise
            raise _bad_json("iface", exc.message) from None


def _bad_json(kind: str, detail: str) -> IscsiError:
    return IscsiError(Err.IDBM, f"corrupt {kind} record in the database: {detail}")


def _load_json(data: bytes | str, kind: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_json(kind, f"not JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise _bad_json(kind, "not a record of this kind")
    params = obj.setdefault("params", {})
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise _bad_json(kind, "bad parameter table")
    return obj


def _get_field(obj: Mapping[str, Any], key: str, type_: type, kind: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, type_) or isinstance(value, bool):
        raise _bad_json(kind, f"bad or missing field '{key}'")
    return value


@recordclass
class NodeRecord:
    """A node record: one target reached through one portal and one iface (records compare
    equal field by field)."""

    target: str
    address: str
    port: int
    tpgt: int
    iface: str
    record_id: str
    params: dict[str, str]

    def __init__(
        self,
        target: str,
        address: str,
        port: int,
        tpgt: int = -1,
        iface: str = DEFAULT_IFACE,
        record_id: str = "",
        params: dict[str, str] | None = None,
    ) -> None:
        self.target = _check_target(target)
        self.address = _check_address(address)
        self.port = _check_port(port)
        self.tpgt = tpgt
        self.iface = iface
        self.record_id = record_id
        given = dict(params or {})
        self.params = {p.name: p.default for p in NODE_PARAMS}
        for name, value in given.items():
            param = _NODE_BY_NAME.get(name)
            if param is None:
                raise IscsiError(Err.INVAL, f"invalid node parameter name '{name}'")
            # most values of a stored record are the defaults, valid and canonical as they are
            self.params[name] = value if value == param.default else param.validate(value)
        self._sync()

    def __repr__(self) -> str:  # without the parameters: there are a hundred
        return (
            f"NodeRecord(target={self.target!r}, address={self.address!r}, port={self.port}, "
            f"tpgt={self.tpgt}, iface={self.iface!r}, record_id={self.record_id!r})"
        )

    def _sync(self) -> None:
        """Write the identity fields into params (they are the source of truth)."""
        p = self.params
        p["node.name"] = self.target
        p["node.tpgt"] = str(self.tpgt)
        p["iface.iscsi_ifacename"] = self.iface
        p[_CONN + "address"] = self.address
        p[_CONN + "port"] = str(self.port)

    @classmethod
    def new(
        cls,
        target: str,
        address: str,
        port: int,
        tpgt: int = -1,
        iface: str = DEFAULT_IFACE,
        config: Mapping[str, str] | None = None,
    ) -> NodeRecord:
        """A record with open-iscsi's defaults, then node.*/iface.* values of iscsid.conf."""
        rec = cls(target, address, port, tpgt, iface)
        if config:
            _apply_config(rec.params, _NODE_BY_NAME, config)
        return rec

    @property
    def portal(self) -> str:
        return format_portal(self.address, self.port)

    def _param(self, name: str) -> Param:
        canonical = canonical_name(name)
        param = _NODE_BY_NAME.get(canonical)
        if param is None or name.startswith("discovery."):
            name = canonical
            raise IscsiError(Err.INVAL, f"{name} is not a node record parameter")
        return param

    def get(self, name: str) -> str:
        self._sync()
        return self.params[self._param(name).name]

    def set(self, name: str, value: str, *, force: bool = False) -> None:
        """Set one parameter; the identity ones (node.name, ...) only with force=True."""
        param = self._param(name)
        if not param.modifiable and not force:
            raise IscsiError(
                Err.INVAL,
                f"Cannot modify {param.name}. It is used to look up the record "
                "and cannot be changed.",
            )
        value = param.validate(value)
        if param.name == "node.tpgt":
            self.tpgt = int(value)
        elif param.name == "node.name":
            self.target = _check_target(value)
        elif param.name == "iface.iscsi_ifacename":
            self.iface = value
        elif param.name == _CONN + "address":
            self.address = _check_address(value)
        elif param.name == _CONN + "port":
            self.port = _check_port(int(value))
        self.params[param.name] = value
        self._sync()

    def apply_iface(self, iface: IfaceRecord) -> None:
        """Bind the record to an iface: its name and a copy of its iface.* keys."""
        self.iface = iface.name
        self.params.update(iface.params)
        self._sync()

    def iface_record(self) -> IfaceRecord:
        """The iface this record's copy of the iface.* keys describes."""
        return IfaceRecord(
            self.iface, {k: v for k, v in self.params.items() if k in _IFACE_BY_NAME}
        )

    def set_discovery(self, address: str, port: int, type: str = "send_targets") -> None:
        """Remember the discovery portal this record was found through."""
        self.params["node.discovery_address"] = strip_brackets(address)
        self.params["node.discovery_port"] = str(port)
        self.params["node.discovery_type"] = _NODE_BY_NAME["node.discovery_type"].validate(type)

    @property
    def iface_family(self) -> str:
        """'ipv6' or 'ipv4': which iface keys the dump shows (decided by the iface name)."""
        return "ipv6" if "ipv6" in self.iface else "ipv4"

    def dump(self, show: bool = False) -> str:
        """The '# BEGIN RECORD 2.1.8' text; passwords as ******** unless show (iscsiadm -S)."""
        self._sync()
        return _dump(self.params, NODE_PARAMS, show, self.iface_family)

    def to_json(self) -> bytes:
        self._sync()
        obj = {
            "kind": "node",
            "target": self.target,
            "address": self.address,
            "port": self.port,
            "iface": self.iface,
            "tpgt": self.tpgt,
            "version": 1,
            "record_id": self.record_id,
            "params": self.params,
        }
        return json.dumps(obj, separators=(",", ":")).encode()

    def identity_json(self) -> bytes:
        """The bytes every to_json() of a record with this target/portal/iface starts with."""
        return node_identity_json(self.target, self.address, self.port, self.iface)

    @classmethod
    def from_json(cls, data: bytes | str) -> NodeRecord:
        """A record read back; IscsiError(Err.IDBM) if the data is not a valid node record."""
        obj = _load_json(data, "node")
        params = {k: v for k, v in obj["params"].items() if k in _NODE_BY_NAME}
        try:
            return cls(
                target=_get_field(obj, "target", str, "node"),
                address=_get_field(obj, "address", str, "node"),
                port=_get_field(obj, "port", int, "node"),
                tpgt=_get_field(obj, "tpgt", int, "node"),
                iface=_get_field(obj, "iface", str, "node"),
                record_id=_get_field(obj, "record_id", str, "node"),
                params=params,
            )
        except IscsiError as exc:
            if exc.code == Err.IDBM:
                raise
            raise _bad_json("node", exc.message) from None


def _apply_config(
    params: dict[str, str], table: Mapping[str, Param], config: Mapping[str, str]
) -> None:
    """Apply iscsid.conf settings that name a modifiable parameter of this record type."""
    for raw_name, value in config.items():
        try:
            name = canonical_name(raw_name)
        except IscsiError:
            continue  # iscsid.* and other settings that are not record parameters
        param = table.get(name)
        if param is None or not param.modifiable:
            continue
        try:
            params[name] = param.validate(value)
        except IscsiError as exc:
            raise IscsiError(Err.INVAL, f"iscsid.conf: {exc.message}") from None


@recordclass
class DiscoveryRecord:
    """A discovery record: a SendTargets (or iSNS) portal and how to log in to it (records
    compare equal field by field)."""

    address: str
    port: int
    type: str
    record_id: str
    params: dict[str, str]

    def __init__(
        self,
        address: str,
        port: int,
        type: str = "sendtargets",
        record_id: str = "",
        params: dict[str, str] | None = None,
    ) -> None:
        if type not in SUPPORTED_DISCOVERY_TYPES:
            raise IscsiError(
                Err.UNKNOWN_DISCOVERY_TYPE,
                f"unknown discovery type '{type}': expected "
                + " or ".join(SUPPORTED_DISCOVERY_TYPES),
            )
        self.type = type
        self.record_id = record_id
        self.address = _check_address(address)
        self.port = _check_port(port)
        given = dict(params or {})
        self.params = {p.name: p.default for p in self._table().values()}
        for name, value in given.items():
            param = self._table().get(ALIASES.get(name, name))
            if param is None:
                raise IscsiError(Err.INVAL, f"invalid discovery parameter name '{name}'")
            self.params[param.name] = value if value == param.default else param.validate(value)
        self._sync()

    def __repr__(self) -> str:  # without the parameters
        return (
            f"DiscoveryRecord(address={self.address!r}, port={self.port}, type={self.type!r}, "
            f"record_id={self.record_id!r})"
        )

    def _table(self) -> dict[str, Param]:
        return _DISCOVERY_BY_TYPE[self.type]

    def _sync(self) -> None:
        self.params["discovery.type"] = self.type
        self.params[_ST + "address"] = self.address
        self.params[_ST + "port"] = str(self.port)

    @classmethod
    def new(
        cls,
        address: str,
        port: int,
        type: str = "sendtargets",
        config: Mapping[str, str] | None = None,
    ) -> DiscoveryRecord:
        """A record with open-iscsi's defaults, then the discovery values of iscsid.conf."""
        rec = cls(address, port, type)
        if config:
            _apply_config(rec.params, rec._table(), config)
        return rec

    @property
    def portal(self) -> str:
        return format_portal(self.address, self.port)

    def _param(self, name: str) -> Param:
        name = canonical_name(name)
        param = self._table().get(name)
        if param is None:
            raise IscsiError(Err.INVAL, f"{name} is not a {self.type} discovery record parameter")
        return param

    def get(self, name: str) -> str:
        self._sync()
        return self.params[self._param(name).name]

    def set(self, name: str, value: str, *, force: bool = False) -> None:
        param = self._param(name)
        if not param.modifiable and not force:
            raise IscsiError(
                Err.INVAL,
                f"Cannot modify {param.name}. It is used to look up the record "
                "and cannot be changed.",
            )
        value = param.validate(value)
        if param.name == "discovery.type" and value != self.type:
            raise IscsiError(Err.INVAL, "the discovery type of a record cannot be changed")
        if param.name == _ST + "address":
            self.address = _check_address(value)
        elif param.name == _ST + "port":
            self.port = _check_port(int(value))
        self.params[param.name] = value
        self._sync()

    def dump(self, show: bool = False) -> str:
        self._sync()
        return _dump(self.params, self._table().values(), show, None)

    def to_json(self) -> bytes:
        self._sync()
        obj = {
            "kind": "discovery",
            "version": 1,
            "record_id": self.record_id,
            "address": self.address,
            "port": self.port,
            "type": self.type,
            "params": self.params,
        }
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> DiscoveryRecord:
        obj = _load_json(data, "discovery")
        try:
            type_ = _get_field(obj, "type", str, "discovery")
            table = _DISCOVERY_BY_TYPE.get(type_, {})
            return cls(
                address=_get_field(obj, "address", str, "discovery"),
                port=_get_field(obj, "port", int, "discovery"),
                type=type_,
                record_id=_get_field(obj, "record_id", str, "discovery"),
                params={k: v for k, v in obj["params"].items() if k in table},
            )
        except IscsiError as exc:
            if exc.code == Err.IDBM:
                raise
            raise _bad_json("discovery", exc.message) from None


def _auth(get: Callable[[str], str], prefix: str, algs_name: str) -> AuthSettings:
    from pyiscsid.settings import AuthSettings

    return AuthSettings(
        method=get(prefix + "authmethod"),
        username=get(prefix + "username"),
        password=get(prefix + "password"),
        username_in=get(prefix + "username_in"),
        password_in=get(prefix + "password_in"),
        chap_algs=get(algs_name).split(","),
    )


def login_settings(
    rec: NodeRecord, initiator_name: str, initiator_alias: str = ""
) -> LoginSettings:
    """What a normal session's login needs, from a node record (iface.initiatorname wins)."""
    from pyiscsid.settings import LoginSettings

    get = rec.get
    operational = {
        "HeaderDigest": get(_CONN + "iscsi.HeaderDigest"),
        "DataDigest": get(_CONN + "iscsi.DataDigest"),
        "MaxRecvDataSegmentLength": get(_CONN + "iscsi.MaxRecvDataSegmentLength"),
        "InitialR2T": get("node.session.iscsi.InitialR2T"),
        "ImmediateData": get("node.session.iscsi.ImmediateData"),
        "FirstBurstLength": get("node.session.iscsi.FirstBurstLength"),
        "MaxBurstLength": get("node.session.iscsi.MaxBurstLength"),
        "DefaultTime2Wait": get("node.session.iscsi.DefaultTime2Wait"),
        "DefaultTime2Retain": get("node.session.iscsi.DefaultTime2Retain"),
        "MaxConnections": get("node.session.iscsi.MaxConnections"),
        "MaxOutstandingR2T": get("node.session.iscsi.MaxOutstandingR2T"),
        "ErrorRecoveryLevel": get("node.session.iscsi.ERL"),
        "DataPDUInOrder": "Yes",
        "DataSequenceInOrder": "Yes",
    }
    return LoginSettings(
        initiator_name=get("iface.initiatorname") or initiator_name,
        target_name=rec.target,
        initiator_alias=initiator_alias,
        auth=_auth(get, "node.session.auth.", "node.session.auth.chap_algs"),
        login_timeout=float(get(_CONN + "timeo.login_timeout")),
        initial_login_retry_max=int(get("node.session.initial_login_retry_max")),
        operational=operational,
        tcp_window_size=int(get(_CONN + "tcp.window_size")),
    ).bound_to(*iface_binding(rec.iface_record()))


def iface_binding(iface: IfaceRecord) -> tuple[str, str, str, str]:
    """(iface name, netdev, hwaddress, source address) of an iface, "" for what is not set:
    LoginSettings.bound_to's arguments."""
    netdev, hwaddress, ipaddress = iface.netdev, iface.hwaddress, iface.ipaddress
    return (
        iface.name,
        netdev if is_set(netdev) else "",
        hwaddress if is_set(hwaddress) else "",
        strip_brackets(ipaddress) if is_set(ipaddress) else "",
    )


def nr_sessions(rec: NodeRecord) -> int:
    """How many sessions a login of the node makes (node.session.nr_sessions, at least 1)."""
    try:
        return max(1, int(rec.get("node.session.nr_sessions")))
    except (IscsiError, ValueError):
        return 1


def discovery_login_settings(
    rec: DiscoveryRecord,
    initiator_name: str,
    initiator_alias: str = "",
    iface: IfaceRecord | None = None,
) -> LoginSettings:
    """What a SendTargets discovery session's login needs, from a discovery record."""
    from pyiscsid.settings import LoginSettings

    if rec.type != "sendtargets":
        raise IscsiError(
            Err.UNKNOWN_DISCOVERY_TYPE, f"{rec.type} discovery does not log in to a portal"
        )
    get = rec.get
    operational = {
        "HeaderDigest": "None",
        "DataDigest": "None",
        "MaxRecvDataSegmentLength": get(_ST + "iscsi.MaxRecvDataSegmentLength"),
    }
    settings = LoginSettings(
        initiator_name=(iface.initiatorname if iface is not None else "") or initiator_name,
        target_name=None,
        initiator_alias=initiator_alias,
        auth=_auth(get, _ST + "auth.", DISC_CHAP_ALGS),
        login_timeout=float(get(_ST + "timeo.login_timeout")),
        operational=operational,
    )
    return settings if iface is None else settings.bound_to(*iface_binding(iface))

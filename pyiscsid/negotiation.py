"""iSCSI text keys: the key=value codec and login/text negotiation (RFC 7143 sections 6 and 13).

The initiator side only: we offer our keys, the target answers them and may offer its own, which
we answer. `Negotiator` keeps the state of one login; `NegotiatedParams` is its outcome.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from pyiscsid.errors import Err, IscsiError

MAX_KEY_LEN = 63  # a key name (standard-label), RFC 7143 6.1
MAX_VALUE_LEN = 255  # a simple value, unless the key says otherwise
MAX_TEXT_VALUE_LEN = 8192  # the longest value we accept at all (large binary values: CHAP_C/R)
MAX_NAME_LEN = 223  # iSCSI names, RFC 7143 4.2.7.1
SEGMENT_MIN = 512
SEGMENT_MAX = 2**24 - 1

IRRELEVANT = "Irrelevant"
REJECT = "Reject"
NOT_UNDERSTOOD = "NotUnderstood"
_ANSWER_WORDS = frozenset({IRRELEVANT, REJECT, NOT_UNDERSTOOD})

# Authentication keys are exchanged by `chap`, not negotiated here; `process` leaves them alone.
AUTH_KEYS = frozenset({"CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})

_KEY_RE = re.compile(r"[A-Z][A-Za-z0-9.\-+@_]*|X#[A-Za-z0-9.\-+@_]+")
# text-value characters (RFC 7143 6.1): letters, digits and . - + @ _ / [ ] :
_TEXT_VALUE_RE = re.compile(r"[A-Za-z0-9.\-+@_/\[\]:]*")
_DECIMAL_RE = re.compile(r"[0-9]+")
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]+")
_NAME_RE = re.compile(r"[A-Za-z0-9.\-:]+")
_ADDRESS_RE = re.compile(r"[A-Za-z0-9.\-:\[\]%]+(,[0-9]+)?")


class NegotiationError(IscsiError):
    """Malformed text or an illegal answer from the target (exit code 5 unless stated)."""

    def __init__(self, message: str, code: int = Err.LOGIN) -> None:
        super().__init__(code, message)


# --------------------------------------------------------------------------------------------
# The text codec


def _check_key(key: str) -> None:
    if not key:
        raise NegotiationError("empty key name in iSCSI text")
    if len(key.encode()) > MAX_KEY_LEN:
        raise NegotiationError(f"iSCSI key name longer than {MAX_KEY_LEN} bytes: {key[:70]!r}...")
    if not _KEY_RE.fullmatch(key):
        raise NegotiationError(f"invalid iSCSI key name {key!r}")


def _check_value_text(key: str, value: str) -> None:
    if len(value.encode()) > MAX_TEXT_VALUE_LEN:
        raise NegotiationError(f"value of {key} longer than {MAX_TEXT_VALUE_LEN} bytes")
    for ch in value:
        if ch < " " or ch == "\x7f":
            raise NegotiationError(f"control character {ch!r} in the value of {key}")


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Encode key=value pairs as iSCSI text: each pair UTF-8 and terminated by a NUL byte."""
    out = bytearray()
    for key, value in pairs:
        _check_key(key)
        _check_value_text(key, value)
        out += key.encode()
        out += b"="
        out += value.encode()
        out += b"\0"
    return bytes(out)


def decode_text(data: bytes) -> list[tuple[str, str]]:
    """Decode iSCSI text into (key, value) pairs in their order (duplicates kept).

    Every pair must end with a NUL; extra NULs (padding) are skipped.
    """
    if not data:
        return []
    if data[-1:] != b"\0":
        raise NegotiationError("iSCSI text does not end with a NUL terminator")
    pairs: list[tuple[str, str]] = []
    for raw in data[:-1].split(b"\0"):
        if not raw:
            continue
        key_raw, sep, value_raw = raw.partition(b"=")
        if not sep:
            shown = raw[:70].decode("utf-8", "replace")
            raise NegotiationError(f"iSCSI text item without '=': {shown!r}")
        try:
            key = key_raw.decode("utf-8")
            value = value_raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = raw[:70].decode("utf-8", "replace")
            raise NegotiationError(f"iSCSI text item is not valid UTF-8: {shown!r}") from None
        _check_key(key)
        _check_value_text(key, value)
        pairs.append((key, value))
    return pairs


class TextAssembler:
    """Joins a text or login data segment continued across PDUs (the C bit), bounded in size."""

    def __init__(self, max_bytes: int = 65536) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()

    def feed(self, data: bytes, cont: bool) -> list[tuple[str, str]] | None:
        """Add one PDU's data; returns the decoded pairs once a PDU arrives with C=0."""
        if len(self._buf) + len(data) > self.max_bytes:
            self._buf.clear()
            raise NegotiationError(
                f"iSCSI text continued over more than {self.max_bytes} bytes; giving up"
            )
        self._buf += data
        if cont:
            return None
        joined = bytes(self._buf)
        self._buf.clear()
        return decode_text(joined)

    @property
    def pending(self) -> bool:
        """True while a continued text is being collected."""
        return bool(self._buf)


def parse_target_address(value: str) -> tuple[str, int, int | None]:
    """Split TargetAddress=domainname[:port][,tpgt] into (address, port, tpgt or None).

    IPv6 addresses come in brackets and are returned without them; the port defaults to 3260.
    """
    host, sep, tag = value.partition(",")
    tpgt: int | None = None
    if sep:
        if not _DECIMAL_RE.fullmatch(tag) or int(tag) > 65535:
            raise NegotiationError(f"invalid portal group tag in TargetAddress={value}")
        tpgt = int(tag)
    port = 3260
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise NegotiationError(f"unterminated IPv6 address in TargetAddress={value}")
        address, rest = host[1:end], host[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise NegotiationError(f"invalid TargetAddress={value}")
            port_text = rest[1:]
        else:
            port_text = ""
    elif host.count(":") == 1:
        address, _, port_text = host.partition(":")
    elif ":" in host:
        address, port_text = host, ""  # a bare IPv6 address, tolerated
    else:
        address, port_text = host, ""
    if port_text:
        if not _DECIMAL_RE.fullmatch(port_text) or not 0 < int(port_text) <= 65535:
            raise NegotiationError(f"invalid port in TargetAddress={value}")
        port = int(port_text)
    if not address or not _ADDRESS_RE.fullmatch(address):
        raise NegotiationError(f"invalid address in TargetAddress={value}")
    return address, port, tpgt


# --------------------------------------------------------------------------------------------
# The key table


class Kind(Enum):
    LIST = "list"  # the acceptor picks the first value it supports from the offerer's list
    MIN = "min"  # numerical, result is the smaller value
    MAX = "max"  # numerical, result is the larger value
    AND = "and"  # boolean, result is Yes only if both say Yes
    OR = "or"  # boolean, result is Yes if either says Yes
    DECLARATIVE = "declarative"  # each side states its own value, no answer
    REJECTED = "rejected"  # obsolete keys we always answer Reject (markers' intervals)


@dataclass(frozen=True)
class KeyDef:
    name: str
    kind: Kind
    default: str | None = None
    lo: int = 0
    hi: int = 0
    values: tuple[str, ...] = ()  # LIST: the values we support
    discovery: bool = True  # applies to discovery sessions
    target_sends: bool = True  # False: only an initiator may send it
    security: bool = False  # exchanged in the security stage
    max_len: int = MAX_VALUE_LEN
    # RFC 7143 13 "Use: LO": negotiated on the leading connection only (a further connection
    # of the session neither sends nor accepts it)
    leading_only: bool = False


_SEG_LO, _SEG_HI = SEGMENT_MIN, SEGMENT_MAX
KEYS: dict[str, KeyDef] = {
    d.name: d
    for d in (
        KeyDef("AuthMethod", Kind.LIST, "None", values=("CHAP", "None"), security=True),
        KeyDef("HeaderDigest", Kind.LIST, "None", values=("CRC32C", "None")),
        KeyDef("DataDigest", Kind.LIST, "None", values=("CRC32C", "None")),
        KeyDef("MaxConnections", Kind.MIN, "1", lo=1, hi=65535, discovery=False, leading_only=True),
        KeyDef("InitialR2T", Kind.OR, "Yes", discovery=False, leading_only=True),
        KeyDef("ImmediateData", Kind.AND, "Yes", discovery=False, leading_only=True),
        KeyDef("MaxRecvDataSegmentLength", Kind.DECLARATIVE, "8192", lo=_SEG_LO, hi=_SEG_HI),
        KeyDef(
            "MaxBurstLength",
            Kind.MIN,
            "262144",
            discovery=False,
            lo=_SEG_LO,
            hi=_SEG_HI,
            leading_only=True,
        ),
        KeyDef(
            "FirstBurstLength",
            Kind.MIN,
            "65536",
            discovery=False,
            lo=_SEG_LO,
            hi=_SEG_HI,
            leading_only=True,
        ),
        KeyDef("DefaultTime2Wait", Kind.MAX, "2", lo=0, hi=3600, leading_only=True),
        KeyDef("DefaultTime2Retain", Kind.MIN, "20", lo=0, hi=3600, leading_only=True),
        KeyDef(
            "MaxOutstandingR2T", Kind.MIN, "1", lo=1, hi=65535, discovery=False, leading_only=True
        ),
        KeyDef("DataPDUInOrder", Kind.OR, "Yes", discovery=False, leading_only=True),
        KeyDef("DataSequenceInOrder", Kind.OR, "Yes", discovery=False, leading_only=True),
        KeyDef("ErrorRecoveryLevel", Kind.MIN, "0", lo=0, hi=2, leading_only=True),
        # Markers are obsolete (RFC 7143 13.25): we never use them, so our side is always No.
        KeyDef("IFMarker", Kind.AND, "No"),
        KeyDef("OFMarker", Kind.AND, "No"),
        KeyDef("IFMarkInt", Kind.REJECTED),
        KeyDef("OFMarkInt", Kind.REJECTED),
        # iSER (RFC 7145): this is a TCP initiator, so always No; its lengths do not apply.
        KeyDef("RDMAExtensions", Kind.AND, "No", leading_only=True),
        KeyDef("InitiatorRecvDataSegmentLength", Kind.DECLARATIVE, None, lo=_SEG_LO, hi=_SEG_HI),
        KeyDef("TargetRecvDataSegmentLength", Kind.DECLARATIVE, None, lo=_SEG_LO, hi=_SEG_HI),
        KeyDef("MaxOutstandingUnexpectedPDUs", Kind.DECLARATIVE, None, lo=0, hi=2**32 - 1),
        # Declarations of who is who.
        KeyDef("InitiatorName", Kind.DECLARATIVE, None, target_sends=False, security=True),
        KeyDef("InitiatorAlias", Kind.DECLARATIVE, None, target_sends=False, security=True),
        KeyDef(
            "SessionType",
            Kind.DECLARATIVE,
            "Normal",
            target_sends=False,
            security=True,
            leading_only=True,
        ),
        KeyDef("TargetName", Kind.DECLARATIVE, None, security=True),
        KeyDef("TargetAlias", Kind.DECLARATIVE, None),
        KeyDef("TargetAddress", Kind.DECLARATIVE, None),
        KeyDef("TargetPortalGroupTag", Kind.DECLARATIVE, None, lo=0, hi=65535),
    )
}
# Keys whose values are numbers (checked against lo..hi).
_NUMERIC = frozenset(n for n, d in KEYS.items() if d.kind in (Kind.MIN, Kind.MAX) or d.hi > 0)
_BOOLEAN = frozenset(n for n, d in KEYS.items() if d.kind in (Kind.AND, Kind.OR))
_LOCAL_NAMES = frozenset({"InitiatorAlias", "TargetAlias"})  # UTF-8 text, any printable
_INERT = frozenset(  # declared by a target, nothing for a TCP initiator to do with them
    {
        "InitiatorRecvDataSegmentLength",
        "TargetRecvDataSegmentLength",
        "MaxOutstandingUnexpectedPDUs",
    }
)


def _parse_number(key: str, value: str) -> int:
    """A numerical-value: decimal or 0x hex constant, below 2**64."""
    if _DECIMAL_RE.fullmatch(value):
        n = int(value)
    elif _HEX_RE.fullmatch(value):
        n = int(value, 16)
    else:
        raise NegotiationError(f"{key}={value}: not a number")
    if n >= 2**64:
        raise NegotiationError(f"{key}={value}: number too large")
    return n


def _validate(key: str, value: str) -> str:
    """Check a value of a known key against its type and range; returns it in canonical form.

    Raises NegotiationError with a message naming the key and value.
    """
    d = KEYS[key]
    if len(value.encode()) > d.max_len:
        raise NegotiationError(f"value of {key} longer than {d.max_len} bytes")
    if key in _NUMERIC:
        n = _parse_number(key, value)
        if not d.lo <= n <= d.hi:
            raise NegotiationError(f"{key}={value} is outside {d.lo}..{d.hi}")
        return str(n)
    if key in _BOOLEAN:
        if value not in ("Yes", "No"):
            raise NegotiationError(f"{key}={value}: expected Yes or No")
        return value
    if d.kind is Kind.LIST:
        items = value.split(",")
        if any(not item or not _TEXT_VALUE_RE.fullmatch(item) for item in items):
            raise NegotiationError(f"{key}={value}: invalid list of values")
        return value
    if key in ("InitiatorName", "TargetName"):
        if not value or len(value.encode()) > MAX_NAME_LEN or not _NAME_RE.fullmatch(value):
            raise NegotiationError(f"{key}={value}: invalid iSCSI name")
        return value
    if key == "SessionType":
        if value not in ("Normal", "Discovery"):
            raise NegotiationError(f"SessionType={value}: expected Normal or Discovery")
        return value
    if key == "TargetAddress":
        parse_target_address(value)
        return value
    if key in _LOCAL_NAMES:
        return value  # printable UTF-8 already checked by the codec
    if not _TEXT_VALUE_RE.fullmatch(value):
        raise NegotiationError(f"{key}={value}: invalid characters")
    return value


# --------------------------------------------------------------------------------------------
# The outcome


def _yes(value: str) -> bool:
    return value == "Yes"


def _yn(flag: bool) -> str:
    return "Yes" if flag else "No"


@dataclass
class NegotiatedParams:
    """A login's outcome; fields not negotiated keep their RFC 7143 defaults."""

    header_digest: bool = False
    data_digest: bool = False
    max_recv_data_segment_length: int = 8192  # what WE may receive (our declaration)
    max_xmit_data_segment_length: int = 8192  # what we may send (the target's declaration)
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    initial_r2t: bool = True
    immediate_data: bool = True
    max_outstanding_r2t: int = 1
    max_connections: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    default_time2wait: int = 2
    default_time2retain: int = 20
    error_recovery_level: int = 0
    ifmarker: bool = False
    ofmarker: bool = False
    session_type: str = "Normal"
    auth_method: str = "None"
    target_alias: str = ""
    target_portal_group_tag: int | None = None  # None: the target did not declare it
    target_address: str = ""  # TargetAddress the target declared, if any

    def as_dict(self) -> dict[str, str]:
        """RFC key names -> values as text (the declarations only when the target made them)."""
        d = {
            "HeaderDigest": "CRC32C" if self.header_digest else "None",
            "DataDigest": "CRC32C" if self.data_digest else "None",
            "MaxRecvDataSegmentLength": str(self.max_recv_data_segment_length),
            "MaxXmitDataSegmentLength": str(self.max_xmit_data_segment_length),
            "MaxBurstLength": str(self.max_burst_length),
            "FirstBurstLength": str(self.first_burst_length),
            "InitialR2T": _yn(self.initial_r2t),
            "ImmediateData": _yn(self.immediate_data),
            "MaxOutstandingR2T": str(self.max_outstanding_r2t),
            "MaxConnections": str(self.max_connections),
            "DataPDUInOrder": _yn(self.data_pdu_in_order),
            "DataSequenceInOrder": _yn(self.data_sequence_in_order),
            "DefaultTime2Wait": str(self.default_time2wait),
            "DefaultTime2Retain": str(self.default_time2retain),
            "ErrorRecoveryLevel": str(self.error_recovery_level),
            "IFMarker": _yn(self.ifmarker),
            "OFMarker": _yn(self.ofmarker),
            "SessionType": self.session_type,
            "AuthMethod": self.auth_method,
        }
        if self.target_alias:
            d["TargetAlias"] = self.target_alias
        if self.target_portal_group_tag is not None:
            d["TargetPortalGroupTag"] = str(self.target_portal_group_tag)
        if self.target_address:
            d["TargetAddress"] = self.target_address
        return d


# --------------------------------------------------------------------------------------------
# The negotiation state of one login


class Negotiator:
    """The initiator's side of one login's key negotiation.

    `proposals` are our values by RFC key name (operational keys and, optionally, the
    security-stage keys AuthMethod, InitiatorName, InitiatorAlias, TargetName). Keys that do not
    apply to the session type are dropped. A bad proposal raises NegotiationError (code INVAL).

    `leading` is False for a further connection of a running session (a login with the
    session's TSIH, RFC 7143 4.2): the leading-only keys (KeyDef.leading_only: MaxConnections,
    InitialR2T, ..., ErrorRecoveryLevel, SessionType) are then neither offered nor accepted;
    only the connection's own keys (digests, MaxRecvDataSegmentLength, AuthMethod) and the
    names (InitiatorName, TargetName, InitiatorAlias) are sent. Its `result()` keeps the
    defaults for the session-wide fields: the session's values are the leading login's.
    """

    def __init__(
        self, proposals: dict[str, str], session_type: str = "Normal", leading: bool = True
    ) -> None:
        if session_type not in ("Normal", "Discovery"):
            raise NegotiationError(f"unknown session type {session_type!r}", Err.INVAL)
        self.session_type = session_type
        self.leading = leading
        self._ours: dict[str, str] = {}
        for key, value in proposals.items():
            d = KEYS.get(key)
            if d is None or d.kind is Kind.REJECTED or key in _INERT:
                raise NegotiationError(f"cannot propose unknown iSCSI key {key!r}", Err.INVAL)
            if key in ("TargetAlias", "TargetAddress", "TargetPortalGroupTag"):
                raise NegotiationError(f"{key} is declared by the target only", Err.INVAL)
            if key == "SessionType":
                raise NegotiationError("give the session type as session_type", Err.INVAL)
            try:
                value = _validate(key, value)
            except NegotiationError as e:
                raise NegotiationError(f"bad proposal: {e.message}", Err.INVAL) from None
            if d.kind is Kind.LIST:
                unknown = [v for v in value.split(",") if v not in d.values]
                if unknown:
                    raise NegotiationError(
                        f"bad proposal: {key} value {unknown[0]!r} is not supported", Err.INVAL
                    )
            if key in ("IFMarker", "OFMarker", "RDMAExtensions") and value == "Yes":
                raise NegotiationError(f"bad proposal: {key}=Yes is not supported", Err.INVAL)
            if session_type == "Discovery" and not d.discovery:
                continue
            if d.leading_only and not leading:
                continue
            self._ours[key] = value
        if session_type == "Normal":
            first = int(self._value_or_default("FirstBurstLength"))
            burst = int(self._value_or_default("MaxBurstLength"))
            if first > burst:
                raise NegotiationError(
                    f"bad proposal: FirstBurstLength {first} exceeds MaxBurstLength {burst}",
                    Err.INVAL,
                )
        self._offered: dict[str, str] = {}  # keys we sent -> the value we sent
        self._answers: dict[str, str] = {}  # target's answers to our offers
        self._agreed: dict[str, str] = {}  # results of the target's offers we answered
        self._declared: dict[str, str] = {}  # the target's declarations
        self._seen: set[str] = set()  # every key the target sent (duplicates are errors)

    # -- what we send

    def _value_or_default(self, key: str) -> str:
        value = self._ours.get(key, KEYS[key].default)
        assert value is not None
        return value

    def _offer(self, security: bool) -> list[tuple[str, str]]:
        out = []
        order = ["SessionType", *KEYS] if security and self.leading else list(KEYS)
        for key in order:
            if key == "SessionType" and security and self.leading:
                value = self.session_type
            elif key in self._ours and KEYS[key].security == security:
                value = self._ours[key]
            else:
                continue
            if key not in self._offered:
                self._offered[key] = value
                out.append((key, value))
        return out

    def security_keys(self) -> list[tuple[str, str]]:
        """The security-stage keys: SessionType and InitiatorName, InitiatorAlias, TargetName,
        AuthMethod when proposed. Marks them offered (AuthMethod then expects an answer)."""
        return self._offer(security=True)

    def initial_keys(self) -> list[tuple[str, str]]:
        """Our operational-stage offers (each key at most once per login)."""
        return self._offer(security=False)

    # -- what the target sends

    def process(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Take the target's keys; return our answers to its offers, in its order.

        Authentication keys (CHAP_*) are skipped: hand them to `chap.ChapInitiator`.
        Raises NegotiationError on an illegal answer or a malformed or repeated key.
        """
        replies: list[tuple[str, str]] = []
        for key, value in pairs:
            if key in AUTH_KEYS:
                continue
            if key in self._seen:
                raise NegotiationError(f"target sent {key} more than once")
            self._seen.add(key)
            d = KEYS.get(key)
            if key in self._offered and d is not None and d.kind is not Kind.DECLARATIVE:
                self._take_answer(d, value)
                continue
            if value in _ANSWER_WORDS:
                if d is not None and d.kind is Kind.DECLARATIVE and key in self._offered:
                    continue  # e.g. InitiatorAlias=NotUnderstood: nothing to do
                raise NegotiationError(f"target answered {key}={value} but we never offered {key}")
            if d is None:
                replies.append((key, NOT_UNDERSTOOD))  # unknown, X- and X# keys alike
                continue
            if d.kind is Kind.DECLARATIVE:
                self._take_declaration(d, value)
                continue
            if key == "AuthMethod":
                self._take_auth_choice(value)  # AuthMethod offered by the caller, not through us
                continue
            replies.append((key, self._answer_offer(d, value)))
        return replies

    def _take_declaration(self, d: KeyDef, value: str) -> None:
        if not d.target_sends:
            raise NegotiationError(f"target sent {d.name}, which only an initiator may declare")
        try:
            self._declared[d.name] = _validate(d.name, value)
        except NegotiationError as e:
            raise NegotiationError(f"target declared an invalid value: {e.message}") from None

    def _take_auth_choice(self, value: str) -> None:
        if value not in KEYS["AuthMethod"].values:
            raise NegotiationError(f"target chose an unsupported AuthMethod={value}")
        self._agreed["AuthMethod"] = value

    def _take_answer(self, d: KeyDef, value: str) -> None:
        key = d.name
        offered = self._offered[key]
        if value in _ANSWER_WORDS:
            self._answers[key] = value  # the key keeps its default
            return
        try:
            value = _validate(key, value)
        except NegotiationError as e:
            raise NegotiationError(f"target answered with an invalid value: {e.message}") from None
        if d.kind is Kind.LIST:
            if value not in offered.split(","):
                raise NegotiationError(
                    f"target chose {key}={value}, which is not among our offer {offered}"
                )
        elif d.kind is Kind.MIN:
            if int(value) > int(offered):
                raise NegotiationError(f"target answered {key}={value}, above our offer {offered}")
        elif d.kind is Kind.MAX:
            if int(value) < int(offered):
                raise NegotiationError(f"target answered {key}={value}, below our offer {offered}")
        elif d.kind is Kind.AND:
            if offered == "No" and value == "Yes":
                raise NegotiationError(f"target answered {key}=Yes although we offered No")
        elif d.kind is Kind.OR and offered == "Yes" and value == "No":
            raise NegotiationError(f"target answered {key}=No although we offered Yes")
        self._answers[key] = value

    def _answer_offer(self, d: KeyDef, value: str) -> str:
        """Our answer to a key the target offered."""
        key = d.name
        if d.kind is Kind.REJECTED:
            return REJECT
        if self.session_type == "Discovery" and not d.discovery:
            return IRRELEVANT
        if d.leading_only and not self.leading:
            return REJECT  # a session-wide value is not renegotiated by a further connection
        try:
            value = _validate(key, value)
        except NegotiationError:
            return REJECT
        ours = self._value_or_default(key)
        if d.kind is Kind.LIST:
            # RFC 7143 6.2.1: the first value of the offerer's list that we allow
            allowed = ours.split(",")
            result = next((v for v in value.split(",") if v in allowed), None)
            if result is None:
                return REJECT
        elif d.kind is Kind.MIN:
            lowest = min(int(ours), int(value))
            if key == "FirstBurstLength":  # never above MaxBurstLength (RFC 7143 13.14)
                lowest = min(lowest, int(self._current("MaxBurstLength")))
            result = str(lowest)
        elif d.kind is Kind.MAX:
            result = str(max(int(ours), int(value)))
        elif d.kind is Kind.AND:
            result = _yn(_yes(ours) and _yes(value))
        else:  # Kind.OR
            result = _yn(_yes(ours) or _yes(value))
        self._agreed[key] = result
        return result

    # -- the state

    def _needs_answer(self, key: str) -> bool:
        d = KEYS[key]
        if d.kind is Kind.DECLARATIVE:
            return False
        offered = self._offered[key]
        # RFC 7143 6.2.2: a No for AND, a Yes for OR fixes the result; the answer is optional.
        return not (
            (d.kind is Kind.AND and offered == "No") or (d.kind is Kind.OR and offered == "Yes")
        )

    @property
    def pending(self) -> list[str]:
        """Keys we offered that still wait for an answer."""
        return [k for k in self._offered if k not in self._answers and self._needs_answer(k)]

    @property
    def complete(self) -> bool:
        """Every key we offered got the answer it needs."""
        return not self.pending

    def _current(self, key: str) -> str:
        """The outcome for one negotiable key so far."""
        answer = self._answers.get(key)
        if answer is not None and answer not in _ANSWER_WORDS:
            return answer
        if key in self._agreed:
            return self._agreed[key]
        if answer is None and key in self._offered and not self._needs_answer(key):
            return self._offered[key]  # our No (AND) or Yes (OR) decides alone
        default = KEYS[key].default
        assert default is not None
        return default

    def _bursts(self) -> tuple[int, int]:
        """(FirstBurstLength, MaxBurstLength). FirstBurstLength must not exceed MaxBurstLength
        (RFC 7143 13.14), yet targets (tgtd among them) answer the two keys independently, e.g.
        MaxBurstLength=4096 with FirstBurstLength=65536. A first burst is part of a burst, so
        the outcome is clamped to MaxBurstLength instead of failing the login."""
        first = int(self._current("FirstBurstLength"))
        burst = int(self._current("MaxBurstLength"))
        return min(first, burst), burst

    def result(self) -> NegotiatedParams:
        """The negotiated parameters (defaults for anything not negotiated)."""
        c = self._current
        xmit = self._declared.get("MaxRecvDataSegmentLength", "8192")
        p = NegotiatedParams(
            header_digest=c("HeaderDigest") == "CRC32C",
            data_digest=c("DataDigest") == "CRC32C",
            max_recv_data_segment_length=int(self._value_or_default("MaxRecvDataSegmentLength")),
            max_xmit_data_segment_length=int(xmit),
            error_recovery_level=int(c("ErrorRecoveryLevel")),
            default_time2wait=int(c("DefaultTime2Wait")),
            default_time2retain=int(c("DefaultTime2Retain")),
            ifmarker=_yes(c("IFMarker")),
            ofmarker=_yes(c("OFMarker")),
            session_type=self.session_type,
            auth_method=c("AuthMethod"),
            target_alias=self._declared.get("TargetAlias", ""),
            target_address=self._declared.get("TargetAddress", ""),
        )
        if "TargetPortalGroupTag" in self._declared:
            p.target_portal_group_tag = int(self._declared["TargetPortalGroupTag"])
        if self.session_type == "Normal":
            p.first_burst_length, p.max_burst_length = self._bursts()
            p.initial_r2t = _yes(c("InitialR2T"))
            p.immediate_data = _yes(c("ImmediateData"))
            p.max_outstanding_r2t = int(c("MaxOutstandingR2T"))
            p.max_connections = int(c("MaxConnections"))
            p.data_pdu_in_order = _yes(c("DataPDUInOrder"))
            p.data_sequence_in_order = _yes(c("DataSequenceInOrder"))
        return p

"""RFC 7143 PDU codec: the Basic Header Segment of every opcode, AHS, padding, CRC32C digests.

A PDU on the wire is: BHS (48 bytes), AHS (TotalAHSLength 4-byte words), optional header digest
(CRC32C over BHS+AHS), data segment (DataSegmentLength bytes, padded to 4), optional data digest
(CRC32C over data+padding). Digests are sent least significant byte first, as every iSCSI
implementation does (RFC 7143 13.1 test vectors).

`decode_bhs(bhs, ahs)` builds a PDU object from a header (its `data` left empty: `pduio` reads
the data segment after checking its length); `decode_pdu(buf, ...)` decodes a whole PDU held in
memory; `Pdu.encode(header_digest, data_digest)` produces the bytes to send.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

import crc32c as _crc32c

from pyiscsid.errors import Err, IscsiError

BHS_LEN = 48
DIGEST_LEN = 4
RSVD_TAG = 0xFFFFFFFF  # the reserved tag value (ITT/TTT "none")
MAX_DATA_SEGMENT_LENGTH = (1 << 24) - 1  # DataSegmentLength is 24 bits
ISCSI_VERSION = 0x00  # Version-max / Version-min / Version-active of RFC 7143


class PduError(IscsiError):
    """A PDU that cannot be encoded or decoded (malformed header, bad digest, too long...)."""

    def __init__(self, message: str, code: int = Err.TRANS) -> None:
        super().__init__(code, message)


class Opcode(IntEnum):
    NOP_OUT = 0x00
    SCSI_CMD = 0x01
    TASK_MGMT_REQ = 0x02
    LOGIN_REQ = 0x03
    TEXT_REQ = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQ = 0x06
    SNACK_REQ = 0x10
    NOP_IN = 0x20
    SCSI_RSP = 0x21
    TASK_MGMT_RSP = 0x22
    LOGIN_RSP = 0x23
    TEXT_RSP = 0x24
    DATA_IN = 0x25
    LOGOUT_RSP = 0x26
    R2T = 0x31
    ASYNC_MSG = 0x32
    REJECT = 0x3F


class Stage(IntEnum):
    """CSG/NSG values of Login PDUs."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3


class AhsType(IntEnum):
    EXTENDED_CDB = 1
    BIDI_READ_LENGTH = 2


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C (Castagnoli) as used by iSCSI header and data digests."""
    return int(_crc32c.crc32c(data, value))


def digest_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The 4 digest bytes as sent on the wire."""
    return crc32c(data).to_bytes(4, "little")


def pad_len(n: int) -> int:
    """Bytes of padding after a segment of `n` bytes."""
    return -n % 4


def make_isid(t: int = 0, a: int = 0, b: int = 0, c: int = 0, d: int = 0) -> bytes:
    """An ISID from its fields (RFC 7143 10.12.5): T 2 bits, A 6, B 16, C 8, D 16."""
    if not (0 <= t < 4 and 0 <= a < 64 and 0 <= b < 65536 and 0 <= c < 256 and 0 <= d < 65536):
        raise PduError(f"ISID field out of range: t={t} a={a} b={b} c={c} d={d}", Err.INVAL)
    return struct.pack(">BHBH", (t << 6) | a, b, c, d)


def split_isid(isid: bytes) -> tuple[int, int, int, int, int]:
    """(T, A, B, C, D) of a 6-byte ISID."""
    if len(isid) != 6:
        raise PduError(f"an ISID is 6 bytes, not {len(isid)}", Err.INVAL)
    ta, b, c, d = struct.unpack(">BHBH", isid)
    return ta >> 6, ta & 0x3F, b, c, d


def encode_lun(lun: int) -> bytes:
    """The 8-byte SAM LUN field for a LUN number (peripheral below 256, flat space above)."""
    if 0 <= lun < 256:
        return bytes([0, lun]) + bytes(6)
    if lun < 16384:
        return bytes([0x40 | (lun >> 8), lun & 0xFF]) + bytes(6)
    raise PduError(f"LUN {lun} does not fit single-level addressing", Err.INVAL)


def decode_lun(lun: bytes) -> int:
    """The LUN number of an 8-byte LUN field (peripheral and flat space addressing)."""
    if len(lun) != 8:
        raise PduError(f"a LUN field is 8 bytes, not {len(lun)}", Err.INVAL)
    method = lun[0] >> 6
    if method in (0, 1):
        return ((lun[0] & 0x3F) << 8) | lun[1]
    return int.from_bytes(lun, "big")


@dataclass
class Ahs:
    """One Additional Header Segment: AHSType and its AHS-Specific bytes (without padding)."""

    ahs_type: int
    specific: bytes

    def encode(self) -> bytes:
        if len(self.specific) > 0xFFFF:
            raise PduError(f"AHS of {len(self.specific)} bytes is too long", Err.INVAL)
        raw = struct.pack(">HB", len(self.specific), self.ahs_type) + self.specific
        return raw + bytes(pad_len(len(raw)))

    @staticmethod
    def extended_cdb(rest: bytes) -> Ahs:
        """The CDB bytes beyond the 16 that fit in the BHS (AHSLength = CDB length - 15)."""
        return Ahs(AhsType.EXTENDED_CDB, b"\x00" + rest)

    @staticmethod
    def bidi_read_length(length: int) -> Ahs:
        """Bidirectional Read Expected Data Transfer Length (AHSLength 5)."""
        return Ahs(AhsType.BIDI_READ_LENGTH, b"\x00" + struct.pack(">I", length))


def decode_ahs(buf: bytes) -> list[Ahs]:
    """Split the AHS area (TotalAHSLength * 4 bytes) into its segments."""
    out: list[Ahs] = []
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < 4:
            raise PduError("truncated AHS header")
        length, ahs_type = struct.unpack_from(">HB", buf, pos)
        end = pos + 3 + length
        if end > len(buf):
            raise PduError(f"AHS of type {ahs_type} claims {length} bytes past TotalAHSLength")
        out.append(Ahs(ahs_type, bytes(buf[pos + 3 : end])))
        pos = end + pad_len(3 + length)
    return out


# A field of the BHS: (attribute name, byte offset, struct format without byte order).
_Field = tuple[str, int, str]
_COMMON_TAIL: tuple[_Field, ...] = ()


@dataclass(kw_only=True)
class Pdu:
    """Fields every PDU has. Subclasses add their BHS fields; `data` is the data segment."""

    OPCODE: ClassVar[int] = -1
    # (name, offset, format) of the plain integer/bytes fields in bytes 2-3 and 8-47
    LAYOUT: ClassVar[tuple[_Field, ...]] = ()
    # single-bit flags of byte 1: name -> mask
    FLAGS: ClassVar[dict[str, int]] = {}
    # bits of byte 1 always set on encode (the F bit where the RFC fixes it to 1)
    FIXED_BITS: ClassVar[int] = 0

    immediate: bool = False
    ahs: list[Ahs] = field(default_factory=list)
    data: bytes = b""

    # -- encoding -------------------------------------------------------------------------------

    def _byte1(self) -> int:
        """Byte 1 besides single-bit flags (multi-bit fields); subclasses override."""
        return 0

    def _all_ahs(self) -> list[Ahs]:
        return list(self.ahs)

    def encode_bhs(self, ahs_len: int = 0) -> bytearray:
        """The 48-byte BHS (DataSegmentLength from `data`, TotalAHSLength from `ahs_len`)."""
        if len(self.data) > MAX_DATA_SEGMENT_LENGTH:
            raise PduError(f"data segment of {len(self.data)} bytes is too long", Err.INVAL)
        if ahs_len % 4 or ahs_len > 255 * 4:
            raise PduError(f"AHS of {ahs_len} bytes is too long", Err.INVAL)
        b = bytearray(BHS_LEN)
        b[0] = (0x40 if self.immediate else 0) | self.OPCODE
        byte1 = self.FIXED_BITS | self._byte1()
        for name, mask in self.FLAGS.items():
            if getattr(self, name):
                byte1 |= mask
        b[1] = byte1
        b[4] = ahs_len // 4
        b[5:8] = len(self.data).to_bytes(3, "big")
        for name, offset, fmt in self.LAYOUT:
            value = getattr(self, name)
            try:
                if fmt.endswith("s"):
                    size = int(fmt[:-1])
                    if len(value) != size:
                        raise PduError(
                            f"{type(self).__name__}.{name} must be {size} bytes, not {len(value)}",
                            Err.INVAL,
                        )
                struct.pack_into(">" + fmt, b, offset, value)
            except struct.error as e:
                raise PduError(
                    f"{type(self).__name__}.{name}={value!r} does not fit the header: {e}",
                    Err.INVAL,
                ) from None
        return b

    def encode(self, header_digest: bool = False, data_digest: bool = False) -> bytes:
        """The whole PDU as sent: BHS, AHS, header digest, data, padding, data digest."""
        ahs = b"".join(a.encode() for a in self._all_ahs())
        header = bytes(self.encode_bhs(len(ahs))) + ahs
        parts = [header]
        if header_digest:
            parts.append(digest_bytes(header))
        if self.data:
            padded = bytes(self.data) + bytes(pad_len(len(self.data)))
            parts.append(padded)
            if data_digest:
                parts.append(digest_bytes(padded))
        return b"".join(parts)

    # -- decoding -------------------------------------------------------------------------------

    @classmethod
    def _decode_byte1(cls, byte1: int, kw: dict[str, Any]) -> None:
        """Multi-bit fields of byte 1 into `kw`; subclasses override."""

    @classmethod
    def _from_bhs(cls, bhs: bytes, ahs: list[Ahs]) -> Pdu:
        kw: dict[str, Any] = {"immediate": bool(bhs[0] & 0x40), "ahs": ahs}
        for name, mask in cls.FLAGS.items():
            kw[name] = bool(bhs[1] & mask)
        cls._decode_byte1(bhs[1], kw)
        for name, offset, fmt in cls.LAYOUT:
            (kw[name],) = struct.unpack_from(">" + fmt, bhs, offset)
        return cls._finish(kw)

    @classmethod
    def _finish(cls, kw: dict[str, Any]) -> Pdu:
        return cls(**kw)

    @property
    def opcode(self) -> Opcode:
        return Opcode(self.OPCODE)


# ---------------------------------------------------------------------------------------------
# Initiator PDUs
# ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class NopOut(Pdu):
    OPCODE = Opcode.NOP_OUT
    FIXED_BITS = 0x80
    LAYOUT = (
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        ("ttt", 20, "I"),
        ("cmdsn", 24, "I"),
        ("exp_statsn", 28, "I"),
    )
    lun: bytes = bytes(8)
    itt: int = RSVD_TAG
    ttt: int = RSVD_TAG
    cmdsn: int = 0
    exp_statsn: int = 0


@dataclass(kw_only=True)
class ScsiCommand(Pdu):
    """SCSI Command. `cdb` longer than 16 bytes travels partly in an Extended CDB AHS; a
    decoded `cdb` is at least 16 bytes (the BHS field, zero padded)."""

    OPCODE = Opcode.SCSI_CMD
    FLAGS = {"final": 0x80, "read": 0x40, "write": 0x20}
    LAYOUT = (
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        ("expected_data_length", 20, "I"),
        ("cmdsn", 24, "I"),
        ("exp_statsn", 28, "I"),
    )
    final: bool = True
    read: bool = False
    write: bool = False
    attr: int = 0  # task attribute (3 bits): 0 untagged, 1 simple, 2 ordered, 3 HoQ, 4 ACA
    lun: bytes = bytes(8)
    itt: int = 0
    expected_data_length: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0
    cdb: bytes = bytes(16)
    bidi_read_length: int | None = None  # Bidirectional Read Expected Data Transfer Length AHS

    def _byte1(self) -> int:
        if not 0 <= self.attr < 8:
            raise PduError(f"task attribute {self.attr} does not fit 3 bits", Err.INVAL)
        return self.attr

    def _all_ahs(self) -> list[Ahs]:
        out: list[Ahs] = []
        if len(self.cdb) > 16:
            out.append(Ahs.extended_cdb(self.cdb[16:]))
        if self.bidi_read_length is not None:
            out.append(Ahs.bidi_read_length(self.bidi_read_length))
        return out + list(self.ahs)

    def encode_bhs(self, ahs_len: int = 0) -> bytearray:
        b = super().encode_bhs(ahs_len)
        b[32:48] = self.cdb[:16].ljust(16, b"\x00")
        return b

    @classmethod
    def _decode_byte1(cls, byte1: int, kw: dict[str, Any]) -> None:
        kw["attr"] = byte1 & 0x07

    @classmethod
    def _from_bhs(cls, bhs: bytes, ahs: list[Ahs]) -> Pdu:
        pdu = super()._from_bhs(bhs, [])
        assert isinstance(pdu, ScsiCommand)
        cdb = bytes(bhs[32:48])
        for a in ahs:
            if a.ahs_type == AhsType.EXTENDED_CDB and len(a.specific) >= 1:
                cdb += a.specific[1:]
            elif a.ahs_type == AhsType.BIDI_READ_LENGTH and len(a.specific) == 5:
                (pdu.bidi_read_length,) = struct.unpack_from(">I", a.specific, 1)
            else:
                pdu.ahs.append(a)
        pdu.cdb = cdb
        return pdu


@dataclass(kw_only=True)
class TaskMgmtRequest(Pdu):
    OPCODE = Opcode.TASK_MGMT_REQ
    FIXED_BITS = 0x80
    LAYOUT = (
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        ("ref_itt", 20, "I"),
        ("cmdsn", 24, "I"),
        ("exp_statsn", 28, "I"),
        ("ref_cmdsn", 32, "I"),
        ("exp_datasn", 36, "I"),
    )
    # 1 ABORT TASK, 2 ABORT TASK SET, 3 CLEAR ACA, 4 CLEAR TASK SET, 5 LUN RESET,
    # 6 TARGET WARM RESET, 7 TARGET COLD RESET, 8 TASK REASSIGN
    function: int = 1
    lun: bytes = bytes(8)
    itt: int = 0
    ref_itt: int = RSVD_TAG
    cmdsn: int = 0
    exp_statsn: int = 0
    ref_cmdsn: int = 0
    exp_datasn: int = 0

    def _byte1(self) -> int:
        if not 0 <= self.function < 128:
            raise PduError(f"task management function {self.function} out of range", Err.INVAL)
        return self.function

    @classmethod
    def _decode_byte1(cls, byte1: int, kw: dict[str, Any]) -> None:
        kw["function"] = byte1 & 0x7F


def _stage_check(csg: int, nsg: int) -> None:
    if not (0 <= csg < 4 and 0 <= nsg < 4):
        raise PduError(f"login stage out of range: CSG={csg} NSG={nsg}", Err.INVAL)


class _LoginStages:
    """CSG/NSG in byte 1 of Login Request and Login Response (RFC 7143 11.12, 11.13)."""

    csg: int
    nsg: int

    def _byte1(self) -> int:
        _stage_check(self.csg, self.nsg)
        return (self.csg << 2) | self.nsg

    @classmethod
    def _decode_byte1(cls, byte1: int, kw: dict[str, Any]) -> None:
        kw["csg"] = (byte1 >> 2) & 3
        kw["nsg"] = byte1 & 3


@dataclass(kw_only=True)
class LoginRequest(_LoginStages, Pdu):
    OPCODE = Opcode.LOGIN_REQ
    FLAGS = {"transit": 0x80, "cont": 0x40}
    LAYOUT = (
        ("version_max", 2, "B"),
        ("version_min", 3, "B"),
        ("isid", 8, "6s"),
        ("tsih", 14, "H"),
        ("itt", 16, "I"),
        ("cid", 20, "H"),
        ("cmdsn", 24, "I"),
        ("exp_statsn", 28, "I"),
    )
    immediate: bool = True  # a Login Request is always immediate
    transit: bool = False
    cont: bool = False
    csg: int = Stage.SECURITY
    nsg: int = Stage.SECURITY
    version_max: int = ISCSI_VERSION
    version_min: int = ISCSI_VERSION
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0


@dataclass(kw_only=True)
class TextRequest(Pdu):
    OPCODE = Opcode.TEXT_REQ
    FLAGS = {"final": 0x80, "cont": 0x40}
    LAYOUT = (
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        ("ttt", 20, "I"),
        ("cmdsn", 24, "I"),
        ("exp_statsn", 28, "I"),
    )
    final: bool = True
    cont: bool = False
    lun: bytes = bytes(8)
    itt: int = 0
    ttt: int = RSVD_TAG
    cmdsn: int = 0
    exp_statsn: int = 0


@dataclass(kw_only=True)
class DataOut(Pdu):
    OPCODE = Opcode.DATA_OUT
    FLAGS = {"final": 0x80}
    LAYOUT = (
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        ("ttt", 20, "I"),
        ("exp_statsn", 28, "I"),
        ("datasn", 36, "I"),
        ("buffer_offset", 40, "I"),
    )
    final: bool = False
    lun: bytes = bytes(8)
    itt: int = 0
    ttt: int = RSVD_TAG
    exp_statsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0


@dataclass(kw_only=True)
class LogoutRequest(Pdu):
    OPCODE = Opcode.LOGOUT_REQ
    FIXED_BITS = 0x80
    LAYOUT = (
        ("itt", 16, "I"),
        ("cid", 20, "H"),
        ("cmdsn", 24, "I"),
        ("exp_statsn", 28, "I"),
    )
    # 0 close the session, 1 close the connection, 2 remove the connection for recovery
    reason: int = 0
    itt: int = 0
    cid: int = 0
    cmdsn: int = 0
    exp_statsn: int = 0

    def _byte1(self) -> int:
        if not 0 <= self.reason < 128:
            raise PduError(f"logout reason {self.reason} out of range", Err.INVAL)
        return self.reason

    @classmethod
    def _decode_byte1(cls, byte1: int, kw: dict[str, Any]) -> None:
        kw["reason"] = byte1 & 0x7F


@dataclass(kw_only=True)
class SnackRequest(Pdu):
    OPCODE = Opcode.SNACK_REQ
    FIXED_BITS = 0x80
    LAYOUT = (
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        ("ttt", 20, "I"),
        ("exp_statsn", 28, "I"),
        ("begrun", 40, "I"),
        ("run_length", 44, "I"),
    )
    snack_type: int = 0  # 0 Data/R2T, 1 Status, 2 DataACK, 3 R-Data
    lun: bytes = bytes(8)
    itt: int = RSVD_TAG
    ttt: int = RSVD_TAG  # TTT or SNACK Tag
    exp_statsn: int = 0
    begrun: int = 0
    run_length: int = 0

    def _byte1(self) -> int:
        if not 0 <= self.snack_type < 16:
            raise PduError(f"SNACK type {self.snack_type} out of range", Err.INVAL)
        return self.snack_type

    @classmethod
    def _decode_byte1(cls, byte1: int, kw: dict[str, Any]) -> None:
        kw["snack_type"] = byte1 & 0x0F


# ---------------------------------------------------------------------------------------------
# Target PDUs
# ---------------------------------------------------------------------------------------------

_SN_TRIPLE: tuple[_Field, ...] = (
    ("statsn", 24, "I"),
    ("exp_cmdsn", 28, "I"),
    ("max_cmdsn", 32, "I"),
)


@dataclass(kw_only=True)
class NopIn(Pdu):
    OPCODE = Opcode.NOP_IN
    FIXED_BITS = 0x80
    LAYOUT = (("lun", 8, "8s"), ("itt", 16, "I"), ("ttt", 20, "I"), *_SN_TRIPLE)
    lun: bytes = bytes(8)
    itt: int = RSVD_TAG
    ttt: int = RSVD_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0


@dataclass(kw_only=True)
class ScsiResponse(Pdu):
    OPCODE = Opcode.SCSI_RSP
    FIXED_BITS = 0x80
    FLAGS = {
        "bidi_overflow": 0x10,
        "bidi_underflow": 0x08,
        "overflow": 0x04,
        "underflow": 0x02,
    }
    LAYOUT = (
        ("response", 2, "B"),
        ("status", 3, "B"),
        ("itt", 16, "I"),
        ("snack_tag", 20, "I"),
        *_SN_TRIPLE,
        ("exp_datasn", 36, "I"),
        ("bidi_residual_count", 40, "I"),
        ("residual_count", 44, "I"),
    )
    bidi_overflow: bool = False
    bidi_underflow: bool = False
    overflow: bool = False
    underflow: bool = False
    response: int = 0
    status: int = 0
    itt: int = 0
    snack_tag: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    exp_datasn: int = 0
    bidi_residual_count: int = 0
    residual_count: int = 0


@dataclass(kw_only=True)
class TaskMgmtResponse(Pdu):
    OPCODE = Opcode.TASK_MGMT_RSP
    FIXED_BITS = 0x80
    LAYOUT = (("response", 2, "B"), ("itt", 16, "I"), *_SN_TRIPLE)
    response: int = 0
    itt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0


@dataclass(kw_only=True)
class LoginResponse(_LoginStages, Pdu):
    OPCODE = Opcode.LOGIN_RSP
    FLAGS = {"transit": 0x80, "cont": 0x40}
    LAYOUT = (
        ("version_max", 2, "B"),
        ("version_active", 3, "B"),
        ("isid", 8, "6s"),
        ("tsih", 14, "H"),
        ("itt", 16, "I"),
        *_SN_TRIPLE,
        ("status_class", 36, "B"),
        ("status_detail", 37, "B"),
    )
    transit: bool = False
    cont: bool = False
    csg: int = Stage.SECURITY
    nsg: int = Stage.SECURITY
    version_max: int = ISCSI_VERSION
    version_active: int = ISCSI_VERSION
    isid: bytes = bytes(6)
    tsih: int = 0
    itt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    status_class: int = 0
    status_detail: int = 0


@dataclass(kw_only=True)
class TextResponse(Pdu):
    OPCODE = Opcode.TEXT_RSP
    FLAGS = {"final": 0x80, "cont": 0x40}
    LAYOUT = (("lun", 8, "8s"), ("itt", 16, "I"), ("ttt", 20, "I"), *_SN_TRIPLE)
    final: bool = True
    cont: bool = False
    lun: bytes = bytes(8)
    itt: int = 0
    ttt: int = RSVD_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0


@dataclass(kw_only=True)
class DataIn(Pdu):
    OPCODE = Opcode.DATA_IN
    FLAGS = {
        "final": 0x80,
        "ack": 0x40,
        "overflow": 0x04,
        "underflow": 0x02,
        "status_present": 0x01,
    }
    LAYOUT = (
        ("status", 3, "B"),
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        ("ttt", 20, "I"),
        *_SN_TRIPLE,
        ("datasn", 36, "I"),
        ("buffer_offset", 40, "I"),
        ("residual_count", 44, "I"),
    )
    final: bool = False
    ack: bool = False
    overflow: bool = False
    underflow: bool = False
    status_present: bool = False
    status: int = 0
    lun: bytes = bytes(8)
    itt: int = 0
    ttt: int = RSVD_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    datasn: int = 0
    buffer_offset: int = 0
    residual_count: int = 0


@dataclass(kw_only=True)
class LogoutResponse(Pdu):
    OPCODE = Opcode.LOGOUT_RSP
    FIXED_BITS = 0x80
    LAYOUT = (
        ("response", 2, "B"),
        ("itt", 16, "I"),
        *_SN_TRIPLE,
        ("time2wait", 40, "H"),
        ("time2retain", 42, "H"),
    )
    # 0 closed successfully, 1 CID not found, 2 recovery not supported, 3 cleanup failed
    response: int = 0
    itt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    time2wait: int = 0
    time2retain: int = 0


@dataclass(kw_only=True)
class R2T(Pdu):
    OPCODE = Opcode.R2T
    FIXED_BITS = 0x80
    LAYOUT = (
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        ("ttt", 20, "I"),
        *_SN_TRIPLE,
        ("r2tsn", 36, "I"),
        ("buffer_offset", 40, "I"),
        ("desired_data_length", 44, "I"),
    )
    lun: bytes = bytes(8)
    itt: int = 0
    ttt: int = 0
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    r2tsn: int = 0
    buffer_offset: int = 0
    desired_data_length: int = 0


@dataclass(kw_only=True)
class AsyncMessage(Pdu):
    OPCODE = Opcode.ASYNC_MSG
    FIXED_BITS = 0x80
    LAYOUT = (
        ("lun", 8, "8s"),
        ("itt", 16, "I"),
        *_SN_TRIPLE,
        ("async_event", 36, "B"),
        ("async_vcode", 37, "B"),
        ("parameter1", 38, "H"),
        ("parameter2", 40, "H"),
        ("parameter3", 42, "H"),
    )
    # 0 SCSI async event, 1 logout request, 2 dropping a connection, 3 dropping all,
    # 4 renegotiation request, 5 task termination, 255 vendor specific
    lun: bytes = bytes(8)
    itt: int = RSVD_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    async_event: int = 0
    async_vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0


REJECT_REASONS = {
    0x02: "data (payload) digest error",
    0x03: "SNACK reject",
    0x04: "protocol error",
    0x05: "command not supported",
    0x06: "immediate command reject: too many immediate commands",
    0x07: "task in progress",
    0x08: "invalid data ACK",
    0x09: "invalid PDU field",
    0x0A: "long operation reject: out of resources",
    0x0B: "negotiation reset",
    0x0C: "waiting for logout",
}


@dataclass(kw_only=True)
class Reject(Pdu):
    """Reject; `data` holds the complete header of the rejected PDU."""

    OPCODE = Opcode.REJECT
    FIXED_BITS = 0x80
    LAYOUT = (
        ("reason", 2, "B"),
        ("itt", 16, "I"),
        *_SN_TRIPLE,
        ("datasn", 36, "I"),
    )
    reason: int = 0
    itt: int = RSVD_TAG
    statsn: int = 0
    exp_cmdsn: int = 0
    max_cmdsn: int = 0
    datasn: int = 0  # DataSN/R2TSN of the rejected SNACK, else 0

    @property
    def reason_text(self) -> str:
        return REJECT_REASONS.get(self.reason, f"reason 0x{self.reason:02x}")


PDU_CLASSES: dict[int, type[Pdu]] = {
    cls.OPCODE: cls
    for cls in (
        NopOut,
        ScsiCommand,
        TaskMgmtRequest,
        LoginRequest,
        TextRequest,
        DataOut,
        LogoutRequest,
        SnackRequest,
        NopIn,
        ScsiResponse,
        TaskMgmtResponse,
        LoginResponse,
        TextResponse,
        DataIn,
        LogoutResponse,
        R2T,
        AsyncMessage,
        Reject,
    )
}


def bhs_lengths(bhs: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(AHS bytes, DataSegmentLength) announced by a BHS, so a reader knows what follows."""
    if len(bhs) < BHS_LEN:
        raise PduError(f"truncated PDU header: {len(bhs)} of {BHS_LEN} bytes")
    return bhs[4] * 4, int.from_bytes(bhs[5:8], "big")


def pdu_class(bhs: bytes | bytearray | memoryview) -> type[Pdu]:
    """The PDU class for a header's opcode; PduError for an opcode RFC 7143 does not define."""
    opcode = bhs[0] & 0x3F
    cls = PDU_CLASSES.get(opcode)
    if cls is None:
        raise PduError(f"unknown iSCSI opcode 0x{opcode:02x}")
    return cls


def decode_bhs(bhs: bytes | bytearray | memoryview, ahs: bytes = b"") -> Pdu:
    """A PDU object from its 48-byte BHS (and the AHS bytes that followed it); `data` is empty."""
    bhs = bytes(bhs)
    ahs_len, _ = bhs_lengths(bhs)
    cls = pdu_class(bhs)
    if len(ahs) != ahs_len:
        raise PduError(f"AHS is {len(ahs)} bytes but TotalAHSLength says {ahs_len}")
    return cls._from_bhs(bhs[:BHS_LEN], decode_ahs(ahs))


P = TypeVar("P", bound=Pdu)


def peek_bhs(data: bytes, cls: type[P]) -> P | None:
    """The header of the PDU `data` (BHS [+AHS] + data segment, as the kernel hands PDUs up)
    if it is a `cls`, else None (also for a short or malformed header). The opcode is looked at
    before anything is decoded."""
    if len(data) < BHS_LEN or PDU_CLASSES.get(data[0] & 0x3F) is not cls:
        return None
    try:
        pdu = decode_bhs(data[:BHS_LEN], data[BHS_LEN : BHS_LEN + data[4] * 4])
    except IscsiError:
        return None
    return pdu if isinstance(pdu, cls) else None


def decode_pdu(
    buf: bytes | bytearray | memoryview,
    header_digest: bool = False,
    data_digest: bool = False,
    max_data_segment_length: int = MAX_DATA_SEGMENT_LENGTH,
) -> Pdu:
    """Decode one whole PDU held in `buf` (which must hold exactly that PDU), checking digests."""
    buf = memoryview(bytes(buf))
    ahs_len, dlen = bhs_lengths(buf)
    if dlen > max_data_segment_length:
        raise PduError(
            f"data segment of {dlen} bytes exceeds the limit of {max_data_segment_length}"
        )
    hlen = BHS_LEN + ahs_len
    pos = hlen + (DIGEST_LEN if header_digest else 0)
    plen = dlen + pad_len(dlen) if dlen else 0
    total = pos + plen + (DIGEST_LEN if data_digest and dlen else 0)
    if len(buf) != total:
        raise PduError(f"PDU is {len(buf)} bytes but its header announces {total}")
    if header_digest:
        check_digest(buf[:hlen], buf[hlen:pos], "header")
    if dlen and data_digest:
        check_digest(buf[pos : pos + plen], buf[pos + plen : total], "data")
    pdu = decode_bhs(buf[:BHS_LEN], bytes(buf[BHS_LEN:hlen]))
    pdu.data = bytes(buf[pos : pos + dlen])
    return pdu


def check_digest(covered: bytes | memoryview, received: bytes | memoryview, what: str) -> None:
    """Raise PduError if `received` is not the CRC32C digest of `covered`."""
    expected = digest_bytes(covered)
    if bytes(received) != expected:
        raise PduError(
            f"{what} digest error: received 0x{int.from_bytes(received, 'little'):08x}, "
            f"computed 0x{int.from_bytes(expected, 'little'):08x}"
        )

"""PDU codec: exact bytes, round trips of every opcode, AHS, padding, digests, bad input."""

from __future__ import annotations

import struct

import pytest

from pyiscsid import pdu as P
from pyiscsid.errors import Err, IscsiError

# RFC 3720 B.4 / RFC 7143 CRC32C examples: the bytes as sent on the wire.
CRC_VECTORS = [
    (bytes(32), "aa36918a"),
    (b"\xff" * 32, "43aba862"),
    (bytes(range(32)), "4e79dd46"),
    (bytes(range(31, -1, -1)), "5cdb3f11"),
    (
        bytes.fromhex(
            "01c00000000000000000000000000000140000000000040000000014000000182800000000"
            "0000000200000000000000"
        ),
        "563a96d9",
    ),
]


@pytest.mark.parametrize(("data", "wire"), CRC_VECTORS)
def test_crc32c_vectors(data: bytes, wire: str) -> None:
    assert P.digest_bytes(data).hex() == wire


def test_known_login_request_bytes() -> None:
    req = P.LoginRequest(
        transit=True,
        csg=P.Stage.SECURITY,
        nsg=P.Stage.OPERATIONAL,
        isid=P.make_isid(0, 0, 0x023D, 0, 0),
        tsih=0,
        itt=0x11223344,
        cid=7,
        cmdsn=1,
        exp_statsn=0,
        data=b"AuthMethod=None\x00",
    )
    expected = (
        bytes([0x43, 0x81, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10])
        + bytes.fromhex("00023d0000000000")  # ISID + TSIH
        + bytes.fromhex("11223344")  # ITT
        + bytes.fromhex("00070000")  # CID + reserved
        + bytes.fromhex("00000001")  # CmdSN
        + bytes(4)  # ExpStatSN
        + bytes(16)
        + b"AuthMethod=None\x00"
    )
    assert req.encode() == expected
    assert P.decode_pdu(expected) == req
    # with both digests: CRC32C after the header and after the (already aligned) data
    wire = req.encode(header_digest=True, data_digest=True)
    assert wire == expected[:48] + P.digest_bytes(expected[:48]) + expected[48:] + (
        P.digest_bytes(expected[48:])
    )


def test_padding_and_data_digest_covers_padding() -> None:
    p = P.TextRequest(itt=5, cmdsn=2, exp_statsn=3, data=b"SendTargets=All\x00x")  # 17 bytes
    wire = p.encode(data_digest=True)
    assert len(wire) == 48 + 20 + 4
    assert wire[5:8] == b"\x00\x00\x11"
    assert wire[48 + 17 : 48 + 20] == b"\x00\x00\x00"
    assert wire[-4:] == P.digest_bytes(wire[48:68])
    back = P.decode_pdu(wire, data_digest=True)
    assert back.data == p.data


ALL = [
    P.NopOut(itt=1, ttt=P.RSVD_TAG, cmdsn=5, exp_statsn=9, lun=P.encode_lun(3), data=b"ping"),
    P.ScsiCommand(
        read=True,
        write=True,
        attr=1,
        lun=P.encode_lun(1),
        itt=0x1234,
        expected_data_length=4096,
        cmdsn=77,
        exp_statsn=66,
        cdb=bytes([0x28]) + bytes(15),
        immediate=True,
        data=b"abc",
    ),
    P.TaskMgmtRequest(function=5, lun=P.encode_lun(2), itt=4, ref_itt=3, cmdsn=1, ref_cmdsn=9),
    P.LoginRequest(
        transit=True,
        cont=False,
        csg=1,
        nsg=3,
        isid=b"\x80\x01\x02\x03\x04\x05",
        tsih=0x55,
        itt=9,
        cid=1,
        cmdsn=3,
        exp_statsn=4,
        version_max=0,
        version_min=0,
    ),
    P.TextRequest(final=False, cont=True, itt=2, ttt=0x77, cmdsn=8, exp_statsn=1, data=b"a=b\0"),
    P.DataOut(
        final=True,
        lun=P.encode_lun(0),
        itt=3,
        ttt=0x99,
        exp_statsn=2,
        datasn=1,
        buffer_offset=8192,
        data=bytes(range(256)) * 4,
    ),
    P.LogoutRequest(reason=1, itt=6, cid=2, cmdsn=10, exp_statsn=11, immediate=True),
    P.SnackRequest(snack_type=1, itt=7, ttt=8, exp_statsn=12, begrun=3, run_length=4),
    P.NopIn(itt=P.RSVD_TAG, ttt=0x42, statsn=5, exp_cmdsn=6, max_cmdsn=70, lun=P.encode_lun(9)),
    P.ScsiResponse(
        underflow=True,
        bidi_overflow=True,
        response=0,
        status=2,
        itt=8,
        snack_tag=1,
        statsn=9,
        exp_cmdsn=10,
        max_cmdsn=20,
        exp_datasn=2,
        bidi_residual_count=5,
        residual_count=512,
        data=b"\x00\x12" + bytes(18),
    ),
    P.TaskMgmtResponse(response=1, itt=4, statsn=2, exp_cmdsn=3, max_cmdsn=4),
    P.LoginResponse(
        transit=True,
        csg=0,
        nsg=1,
        version_max=0,
        version_active=0,
        isid=bytes(6),
        tsih=3,
        itt=9,
        statsn=100,
        exp_cmdsn=3,
        max_cmdsn=4,
        status_class=2,
        status_detail=1,
        data=b"AuthMethod=CHAP\0",
    ),
    P.TextResponse(
        final=False,
        cont=True,
        itt=2,
        ttt=0x55,
        statsn=1,
        exp_cmdsn=2,
        max_cmdsn=3,
        data=b"TargetName=iqn.x\0",
    ),
    P.DataIn(
        final=True,
        ack=True,
        overflow=True,
        status_present=True,
        status=0,
        itt=1,
        ttt=2,
        statsn=3,
        exp_cmdsn=4,
        max_cmdsn=5,
        datasn=6,
        buffer_offset=7,
        residual_count=8,
        data=b"x" * 33,
    ),
    P.LogoutResponse(
        response=2, itt=6, statsn=1, exp_cmdsn=2, max_cmdsn=3, time2wait=2, time2retain=20
    ),
    P.R2T(
        lun=P.encode_lun(1),
        itt=5,
        ttt=6,
        statsn=7,
        exp_cmdsn=8,
        max_cmdsn=9,
        r2tsn=1,
        buffer_offset=65536,
        desired_data_length=262144,
    ),
    P.AsyncMessage(
        async_event=1,
        async_vcode=2,
        parameter1=3,
        parameter2=4,
        parameter3=5,
        statsn=6,
        exp_cmdsn=7,
        max_cmdsn=8,
        data=b"\x00\x00",
    ),
    P.Reject(reason=9, statsn=1, exp_cmdsn=2, max_cmdsn=3, datasn=4, data=bytes(48)),
]


def test_every_opcode_is_covered() -> None:
    assert {type(p).OPCODE for p in ALL} == set(P.PDU_CLASSES)
    assert len(P.PDU_CLASSES) == 18


@pytest.mark.parametrize("pdu", ALL, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("digests", [(False, False), (True, False), (True, True)])
def test_round_trip(pdu: P.Pdu, digests: tuple[bool, bool]) -> None:
    wire = pdu.encode(*digests)
    assert wire[0] & 0x3F == pdu.OPCODE
    assert bool(wire[0] & 0x40) == pdu.immediate
    assert int.from_bytes(wire[5:8], "big") == len(pdu.data)
    back = P.decode_pdu(wire, *digests)
    assert type(back) is type(pdu)
    assert back == pdu
    # the header alone decodes to the same fields with no data
    hdr = P.decode_bhs(wire[:48])
    assert hdr.data == b""


def test_field_offsets() -> None:
    w = P.ScsiResponse(
        status=0x02,
        response=0x01,
        itt=0xA1A2A3A4,
        statsn=0xB1B2B3B4,
        residual_count=0xC1C2C3C4,
        underflow=True,
    ).encode()
    assert w[0] == 0x21 and w[1] == 0x82 and w[2] == 0x01 and w[3] == 0x02
    assert w[16:20] == bytes.fromhex("a1a2a3a4")
    assert w[24:28] == bytes.fromhex("b1b2b3b4")
    assert w[44:48] == bytes.fromhex("c1c2c3c4")
    w = P.LoginResponse(
        status_class=3, status_detail=2, transit=True, csg=1, nsg=3, tsih=0xBEEF
    ).encode()
    assert w[0] == 0x23 and w[1] == 0x87 and w[36:38] == b"\x03\x02" and w[14:16] == b"\xbe\xef"
    w = P.LogoutResponse(time2wait=0x0102, time2retain=0x0304).encode()
    assert w[1] == 0x80 and w[40:44] == bytes.fromhex("01020304")
    w = P.R2T(desired_data_length=0x10000).encode()
    assert w[44:48] == bytes.fromhex("00010000")
    w = P.TaskMgmtRequest(function=0x05).encode()
    assert w[1] == 0x85
    w = P.AsyncMessage(async_event=4, parameter3=0x0A0B).encode()
    assert w[16:20] == b"\xff\xff\xff\xff" and w[36] == 4 and w[42:44] == b"\x0a\x0b"
    w = P.ScsiCommand(cdb=b"\x12\x00\x00\x00\x24\x00", read=True, attr=1, final=True).encode()
    assert w[1] == 0xC1 and w[32:48] == b"\x12\x00\x00\x00\x24" + bytes(11)


def test_extended_cdb_and_bidi_ahs() -> None:
    cdb = bytes(range(1, 33))  # 32-byte CDB: 16 in the BHS, 16 in the AHS
    cmd = P.ScsiCommand(cdb=cdb, bidi_read_length=0x01020304, read=True, write=True, itt=1)
    wire = cmd.encode(header_digest=True)
    # extended CDB AHS: length 17, type 1, reserved, 16 bytes -> 20 bytes, no padding;
    # bidi AHS: length 5, type 2, reserved, 4 bytes -> 8 bytes
    assert wire[4] == (20 + 8) // 4
    assert wire[48:52] == b"\x00\x11\x01\x00"
    assert wire[52:68] == cdb[16:]
    assert wire[68:76] == b"\x00\x05\x02\x00\x01\x02\x03\x04"
    assert wire[76:80] == P.digest_bytes(wire[:76])
    assert len(wire) == 80
    back = P.decode_pdu(wire, header_digest=True)
    assert isinstance(back, P.ScsiCommand)
    assert back.cdb == cdb and back.bidi_read_length == 0x01020304 and back.ahs == []


def test_ahs_padding() -> None:
    a = P.Ahs(ahs_type=3, specific=b"\x00abcdef")  # 3 + 7 = 10 bytes, padded to 12
    enc = a.encode()
    assert enc == b"\x00\x07\x03\x00abcdef\x00\x00"
    cmd = P.ScsiCommand(ahs=[a], itt=2)
    back = P.decode_pdu(cmd.encode())
    assert isinstance(back, P.ScsiCommand) and back.ahs == [a]


def test_isid_and_lun_helpers() -> None:
    isid = P.make_isid(t=2, a=1, b=0x1234, c=0x56, d=0x789A)
    assert isid == bytes.fromhex("8112345678 9a".replace(" ", ""))
    assert P.split_isid(isid) == (2, 1, 0x1234, 0x56, 0x789A)
    assert P.encode_lun(5) == b"\x00\x05" + bytes(6)
    assert P.encode_lun(300) == b"\x41\x2c" + bytes(6)
    assert P.decode_lun(P.encode_lun(300)) == 300
    with pytest.raises(P.PduError):
        P.make_isid(t=4)
    with pytest.raises(P.PduError):
        P.encode_lun(1 << 20)


def test_short_header() -> None:
    with pytest.raises(P.PduError, match="truncated PDU header: 20 of 48"):
        P.decode_bhs(bytes(20))


def test_unknown_opcode() -> None:
    bad = bytearray(P.NopIn().encode())
    bad[0] = 0x3B
    with pytest.raises(P.PduError, match="unknown iSCSI opcode 0x3b"):
        P.decode_pdu(bad)


def test_bad_header_digest() -> None:
    wire = bytearray(P.NopIn(statsn=1).encode(header_digest=True))
    wire[30] ^= 1
    with pytest.raises(P.PduError, match="header digest error") as e:
        P.decode_pdu(wire, header_digest=True)
    assert isinstance(e.value, IscsiError) and e.value.code == Err.TRANS


def test_bad_data_digest() -> None:
    wire = bytearray(P.NopIn(data=b"12345").encode(header_digest=True, data_digest=True))
    wire[-1] ^= 0x80
    with pytest.raises(P.PduError, match="data digest error"):
        P.decode_pdu(wire, header_digest=True, data_digest=True)


def test_length_beyond_limit() -> None:
    wire = P.TextResponse(data=b"k=v\0" * 100).encode()
    with pytest.raises(P.PduError, match="400 bytes exceeds the limit of 256"):
        P.decode_pdu(wire, max_data_segment_length=256)


def test_length_mismatch_and_bad_ahs() -> None:
    wire = P.NopIn(data=b"abcd").encode()
    with pytest.raises(P.PduError, match="announces"):
        P.decode_pdu(wire[:-1])
    bhs = bytearray(P.ScsiCommand().encode())
    bhs[4] = 1
    with pytest.raises(P.PduError, match="AHS"):
        P.decode_bhs(bhs, b"\x00\x09\x01\x00")  # claims 9 bytes inside a 4-byte area


def test_encode_rejects_bad_fields() -> None:
    with pytest.raises(P.PduError, match="isid must be 6 bytes"):
        P.LoginRequest(isid=b"\x00").encode()
    with pytest.raises(P.PduError, match="does not fit"):
        P.NopOut(cmdsn=1 << 32).encode()
    with pytest.raises(P.PduError, match="stage"):
        P.LoginRequest(csg=5).encode()


def test_reject_reason_text() -> None:
    assert P.Reject(reason=9).reason_text == "invalid PDU field"
    assert struct.unpack(">I", P.Reject().encode()[16:20])[0] == P.RSVD_TAG

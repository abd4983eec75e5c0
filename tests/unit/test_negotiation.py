"""Text keys: the codec, the continuation assembler and the login key negotiation."""

from __future__ import annotations

import pytest

from pyiscsid.errors import Err
from pyiscsid.negotiation import (
    NegotiatedParams,
    NegotiationError,
    Negotiator,
    TextAssembler,
    decode_text,
    encode_text,
    parse_target_address,
)

# What open-iscsi offers for a normal session by default (its node.session.* defaults).
OPEN_ISCSI = {
    "HeaderDigest": "None",
    "DataDigest": "None",
    "DefaultTime2Wait": "2",
    "DefaultTime2Retain": "0",
    "IFMarker": "No",
    "OFMarker": "No",
    "ErrorRecoveryLevel": "0",
    "InitialR2T": "No",
    "ImmediateData": "Yes",
    "MaxBurstLength": "16776192",
    "FirstBurstLength": "262144",
    "MaxOutstandingR2T": "1",
    "MaxConnections": "1",
    "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes",
    "MaxRecvDataSegmentLength": "262144",
}


def offered(proposals: dict[str, str], session_type: str = "Normal") -> Negotiator:
    n = Negotiator(proposals, session_type)
    n.initial_keys()
    return n


# -- the codec


def test_encode_exact_bytes():
    data = encode_text([("HeaderDigest", "CRC32C,None"), ("MaxBurstLength", "262144")])
    assert data == b"HeaderDigest=CRC32C,None\0MaxBurstLength=262144\0"
    assert encode_text([]) == b""
    assert encode_text([("TargetAlias", "")]) == b"TargetAlias=\0"


def test_decode_sendtargets_example():
    # RFC 7143 appendix: a SendTargets response with a target at two portals
    data = (
        b"TargetName=iqn.1993-11.com.example:diskarray.sn.8675309\0"
        b"TargetAddress=[2001:db8:cafe::1]:3260,1\0"
        b"TargetAddress=192.0.2.1:3260,2\0"
    )
    assert decode_text(data) == [
        ("TargetName", "iqn.1993-11.com.example:diskarray.sn.8675309"),
        ("TargetAddress", "[2001:db8:cafe::1]:3260,1"),
        ("TargetAddress", "192.0.2.1:3260,2"),
    ]


def test_decode_roundtrip_and_details():
    pairs = [("A", "x=y"), ("TargetAlias", "Ölfass 1"), ("X-com.example.k", ""), ("X#k", "1")]
    assert decode_text(encode_text(pairs)) == pairs
    assert decode_text(b"") == []
    assert decode_text(b"A=1\0\0\0") == [("A", "1")]  # NUL padding
    assert decode_text(b"A=1\0A=2\0") == [("A", "1"), ("A", "2")]  # duplicates are kept


def test_decode_length_limits():
    key63 = "K" + "a" * 62
    assert decode_text(f"{key63}=1\0".encode()) == [(key63, "1")]
    with pytest.raises(NegotiationError, match="longer than 63"):
        decode_text(f"{key63}b=1\0".encode())
    assert decode_text(b"CHAP_C=" + b"a" * 8192 + b"\0") == [("CHAP_C", "a" * 8192)]
    with pytest.raises(NegotiationError, match="longer than 8192"):
        decode_text(b"CHAP_C=" + b"a" * 8193 + b"\0")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"A=1", "NUL"),
        (b"A=1\0B=2", "NUL"),
        (b"A\0", "without '='"),
        (b"=1\0", "empty key"),
        (b"lower=1\0", "invalid iSCSI key"),
        (b"A B=1\0", "invalid iSCSI key"),
        (b"A#B=1\0", "invalid iSCSI key"),
        (b"A=\xff\xfe\0", "UTF-8"),
        (b"A=a\nb\0", "control character"),
        (b"A=a\x7fb\0", "control character"),
    ],
)
def test_decode_errors(data, message):
    with pytest.raises(NegotiationError, match=message) as e:
        decode_text(data)
    assert e.value.code == Err.LOGIN


@pytest.mark.parametrize(
    "pairs", [[("A", "a\0b")], [("A=B", "1")], [("", "1")], [("a", "1")], [("K" * 64, "1")]]
)
def test_encode_errors(pairs):
    with pytest.raises(NegotiationError):
        encode_text(pairs)


def test_assembler_joins_split_pairs():
    a = TextAssembler()
    assert a.feed(b"HeaderDig", True) is None
    assert a.pending
    assert a.feed(b"est=None\0MaxRecvData", True) is None
    assert a.feed(b"SegmentLength=8192\0", False) == [
        ("HeaderDigest", "None"),
        ("MaxRecvDataSegmentLength", "8192"),
    ]
    assert not a.pending
    assert a.feed(b"A=1\0", False) == [("A", "1")]  # fresh after a complete text


def test_assembler_bounded():
    a = TextAssembler(max_bytes=100)
    assert a.feed(b"A=" + b"x" * 60, True) is None
    with pytest.raises(NegotiationError, match="more than 100 bytes"):
        a.feed(b"x" * 60, True)
    assert not a.pending
    assert a.feed(b"B=2\0", False) == [("B", "2")]
    with pytest.raises(NegotiationError, match="NUL"):
        TextAssembler().feed(b"A=1", False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("192.0.2.1:3260,2", ("192.0.2.1", 3260, 2)),
        ("192.0.2.1", ("192.0.2.1", 3260, None)),
        ("[2001:db8:cafe::1]:3261,1", ("2001:db8:cafe::1", 3261, 1)),
        ("[2001:db8::1]", ("2001:db8::1", 3260, None)),
        ("fe80::1", ("fe80::1", 3260, None)),
        ("disk.example.com:860,65535", ("disk.example.com", 860, 65535)),
    ],
)
def test_parse_target_address(value, expected):
    assert parse_target_address(value) == expected


@pytest.mark.parametrize(
    "value", ["", ":3260", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:x", "1.2.3.4,x", "[::1", "a b"]
)
def test_parse_target_address_errors(value):
    with pytest.raises(NegotiationError):
        parse_target_address(value)


# -- offers


def test_initial_keys_order_and_once():
    n = Negotiator(OPEN_ISCSI)
    keys = n.initial_keys()
    assert keys == [
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxConnections", "1"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("MaxBurstLength", "16776192"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
    ]
    assert n.initial_keys() == []
    assert encode_text(keys).startswith(b"HeaderDigest=None\0DataDigest=None\0MaxConnections=1\0")


def test_discovery_offers_only_what_applies():
    n = Negotiator(OPEN_ISCSI, "Discovery")
    assert [k for k, _ in n.initial_keys()] == [
        "HeaderDigest",
        "DataDigest",
        "MaxRecvDataSegmentLength",
        "DefaultTime2Wait",
        "DefaultTime2Retain",
        "ErrorRecoveryLevel",
        "IFMarker",
        "OFMarker",
    ]


def test_security_keys():
    n = Negotiator(
        {
            "InitiatorName": "iqn.1999-07.com.os:hostid.77",
            "TargetName": "iqn.1999-07.com.example:diskarray.sn.88",
            "AuthMethod": "CHAP,None",
            "HeaderDigest": "None",
        }
    )
    assert n.security_keys() == [
        ("SessionType", "Normal"),
        ("AuthMethod", "CHAP,None"),
        ("InitiatorName", "iqn.1999-07.com.os:hostid.77"),
        ("TargetName", "iqn.1999-07.com.example:diskarray.sn.88"),
    ]
    assert n.pending == ["AuthMethod"]
    # the target picks CHAP and declares its portal group; CHAP keys are left to chap.py
    replies = n.process([("AuthMethod", "CHAP"), ("TargetPortalGroupTag", "1"), ("CHAP_A", "5")])
    assert replies == []
    assert n.complete
    assert n.initial_keys() == [("HeaderDigest", "None")]
    n.process([("HeaderDigest", "None")])
    r = n.result()
    assert r.auth_method == "CHAP"
    assert r.target_portal_group_tag == 1


def test_security_auth_method_outside_offer():
    n = Negotiator({"AuthMethod": "None"})
    n.security_keys()
    with pytest.raises(NegotiationError, match="not among our offer"):
        n.process([("AuthMethod", "CHAP")])


def test_auth_method_sent_by_caller():
    # the login code sent AuthMethod itself: the target's choice is recorded, not answered
    n = Negotiator({})
    assert n.process([("AuthMethod", "None")]) == []
    assert n.result().auth_method == "None"
    with pytest.raises(NegotiationError, match="unsupported AuthMethod"):
        Negotiator({}).process([("AuthMethod", "SRP")])


@pytest.mark.parametrize(
    ("proposals", "message"),
    [
        ({"MaxRecvDataSegmentLength": "511"}, "outside 512..16777215"),
        ({"MaxRecvDataSegmentLength": "16777216"}, "outside"),
        ({"MaxBurstLength": "1e6"}, "not a number"),
        ({"ImmediateData": "yes"}, "Yes or No"),
        ({"HeaderDigest": "MD5"}, "not supported"),
        ({"HeaderDigest": "CRC32C,"}, "invalid list"),
        ({"IFMarker": "Yes"}, "not supported"),
        ({"Frobnicate": "1"}, "unknown iSCSI key"),
        ({"OFMarkInt": "1"}, "unknown iSCSI key"),
        ({"TargetAlias": "x"}, "declared by the target"),
        ({"SessionType": "Normal"}, "session_type"),
        ({"FirstBurstLength": "262144", "MaxBurstLength": "65536"}, "exceeds"),
        ({"FirstBurstLength": "300000"}, "exceeds MaxBurstLength 262144"),
        ({"InitiatorName": "iqn bad"}, "invalid iSCSI name"),
        ({"ErrorRecoveryLevel": "3"}, "outside 0..2"),
    ],
)
def test_bad_proposals(proposals, message):
    with pytest.raises(NegotiationError, match=message) as e:
        Negotiator(proposals)
    assert e.value.code == Err.INVAL


def test_bad_session_type():
    with pytest.raises(NegotiationError):
        Negotiator({}, "Boot")


def test_discovery_ignores_burst_rules():
    n = Negotiator({"FirstBurstLength": "262144", "MaxBurstLength": "65536"}, "Discovery")
    assert n.initial_keys() == []


# -- answers to our offers


def test_full_normal_login():
    n = offered({**OPEN_ISCSI, "HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C,None"})
    assert not n.complete
    replies = n.process(
        [
            ("HeaderDigest", "CRC32C"),
            ("DataDigest", "None"),
            ("MaxConnections", "1"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxRecvDataSegmentLength", "8192"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("ErrorRecoveryLevel", "0"),
            ("TargetAlias", "disk one"),
            ("TargetPortalGroupTag", "1"),
        ]
    )
    assert replies == []
    assert n.complete
    assert n.pending == []
    assert n.result() == NegotiatedParams(
        header_digest=True,
        data_digest=False,
        max_recv_data_segment_length=262144,
        max_xmit_data_segment_length=8192,
        max_burst_length=262144,
        first_burst_length=65536,
        initial_r2t=True,
        immediate_data=True,
        max_outstanding_r2t=1,
        max_connections=1,
        data_pdu_in_order=True,
        data_sequence_in_order=True,
        default_time2wait=2,
        default_time2retain=0,
        error_recovery_level=0,
        ifmarker=False,
        ofmarker=False,
        target_alias="disk one",
        target_portal_group_tag=1,
    )
    d = n.result().as_dict()
    assert d["HeaderDigest"] == "CRC32C"
    assert d["DataDigest"] == "None"
    assert d["MaxRecvDataSegmentLength"] == "262144"
    assert d["MaxXmitDataSegmentLength"] == "8192"
    assert d["InitialR2T"] == "Yes"
    assert d["TargetAlias"] == "disk one"
    assert d["TargetPortalGroupTag"] == "1"
    assert "TargetAddress" not in d


def test_defaults_are_rfc_defaults():
    r = Negotiator({}).result()
    assert r == NegotiatedParams()
    assert r.as_dict() == {
        "HeaderDigest": "None",
        "DataDigest": "None",
        "MaxRecvDataSegmentLength": "8192",
        "MaxXmitDataSegmentLength": "8192",
        "MaxBurstLength": "262144",
        "FirstBurstLength": "65536",
        "InitialR2T": "Yes",
        "ImmediateData": "Yes",
        "MaxOutstandingR2T": "1",
        "MaxConnections": "1",
        "DataPDUInOrder": "Yes",
        "DataSequenceInOrder": "Yes",
        "DefaultTime2Wait": "2",
        "DefaultTime2Retain": "20",
        "ErrorRecoveryLevel": "0",
        "IFMarker": "No",
        "OFMarker": "No",
        "SessionType": "Normal",
        "AuthMethod": "None",
    }


@pytest.mark.parametrize(
    ("proposals", "answer", "message"),
    [
        # list: the target must pick exactly one value of ours
        ({"HeaderDigest": "None"}, ("HeaderDigest", "CRC32C"), "not among our offer"),
        ({"HeaderDigest": "CRC32C,None"}, ("HeaderDigest", "CRC32C,None"), "not among"),
        ({"DataDigest": "CRC32C"}, ("DataDigest", "MD5"), "not among"),
        # numerical min: never above our offer
        ({"MaxBurstLength": "65536"}, ("MaxBurstLength", "65537"), "above our offer"),
        ({"FirstBurstLength": "4096"}, ("FirstBurstLength", "8192"), "above our offer"),
        ({"MaxConnections": "1"}, ("MaxConnections", "2"), "above our offer"),
        ({"ErrorRecoveryLevel": "0"}, ("ErrorRecoveryLevel", "1"), "above our offer"),
        ({"DefaultTime2Retain": "0"}, ("DefaultTime2Retain", "20"), "above our offer"),
        ({"MaxOutstandingR2T": "1"}, ("MaxOutstandingR2T", "0"), "outside 1..65535"),
        ({"MaxBurstLength": "65536"}, ("MaxBurstLength", "256"), "outside 512"),
        ({"MaxBurstLength": "65536"}, ("MaxBurstLength", "lots"), "not a number"),
        ({"ErrorRecoveryLevel": "2"}, ("ErrorRecoveryLevel", "3"), "outside 0..2"),
        # numerical max: never below our offer
        ({"DefaultTime2Wait": "5"}, ("DefaultTime2Wait", "4"), "below our offer"),
        ({"DefaultTime2Wait": "5"}, ("DefaultTime2Wait", "3601"), "outside 0..3600"),
        # boolean AND: our No stays No
        ({"ImmediateData": "No"}, ("ImmediateData", "Yes"), "although we offered No"),
        ({"IFMarker": "No"}, ("IFMarker", "Yes"), "although we offered No"),
        ({"OFMarker": "No"}, ("OFMarker", "Yes"), "although we offered No"),
        # boolean OR: our Yes stays Yes
        ({"InitialR2T": "Yes"}, ("InitialR2T", "No"), "although we offered Yes"),
        ({"DataPDUInOrder": "Yes"}, ("DataPDUInOrder", "No"), "although we offered Yes"),
        ({"DataSequenceInOrder": "Yes"}, ("DataSequenceInOrder", "No"), "we offered Yes"),
        ({"ImmediateData": "Yes"}, ("ImmediateData", "maybe"), "Yes or No"),
        ({"MaxBurstLength": "65536"}, ("MaxBurstLength", "1" * 256), "longer than 255"),
    ],
)
def test_illegal_answers(proposals, answer, message):
    n = offered(proposals)
    with pytest.raises(NegotiationError, match=message) as e:
        n.process([answer])
    assert e.value.code == Err.LOGIN


@pytest.mark.parametrize(
    ("proposals", "answer", "field", "value"),
    [
        ({"HeaderDigest": "CRC32C,None"}, ("HeaderDigest", "None"), "header_digest", False),
        ({"DataDigest": "None,CRC32C"}, ("DataDigest", "CRC32C"), "data_digest", True),
        ({"MaxBurstLength": "1048576"}, ("MaxBurstLength", "65536"), "max_burst_length", 65536),
        ({"MaxBurstLength": "1048576"}, ("MaxBurstLength", "0x100000"), "max_burst_length", 2**20),
        ({"DefaultTime2Wait": "2"}, ("DefaultTime2Wait", "10"), "default_time2wait", 10),
        ({"ImmediateData": "Yes"}, ("ImmediateData", "No"), "immediate_data", False),
        ({"InitialR2T": "No"}, ("InitialR2T", "Yes"), "initial_r2t", True),
        ({"InitialR2T": "No"}, ("InitialR2T", "No"), "initial_r2t", False),
        ({"DataPDUInOrder": "No"}, ("DataPDUInOrder", "Yes"), "data_pdu_in_order", True),
        ({"ErrorRecoveryLevel": "2"}, ("ErrorRecoveryLevel", "1"), "error_recovery_level", 1),
        ({"MaxOutstandingR2T": "8"}, ("MaxOutstandingR2T", "4"), "max_outstanding_r2t", 4),
    ],
)
def test_legal_answers(proposals, answer, field, value):
    n = offered(proposals)
    assert n.process([answer]) == []
    assert n.complete
    assert getattr(n.result(), field) == value


@pytest.mark.parametrize("word", ["Reject", "Irrelevant", "NotUnderstood"])
def test_answer_words_keep_the_default(word):
    n = offered({"MaxBurstLength": "1048576", "HeaderDigest": "CRC32C", "ImmediateData": "No"})
    assert n.process([("MaxBurstLength", word), ("HeaderDigest", word)]) == []
    assert n.complete
    r = n.result()
    assert r.max_burst_length == 262144
    assert r.header_digest is False
    assert r.immediate_data is False  # our No (AND) needs no answer and decides alone


def test_optional_answers_for_and_no_or_yes():
    n = offered(
        {"ImmediateData": "No", "InitialR2T": "Yes", "IFMarker": "No", "HeaderDigest": "None"}
    )
    assert n.pending == ["HeaderDigest"]
    n.process([("HeaderDigest", "None")])
    assert n.complete
    r = n.result()
    assert (r.immediate_data, r.initial_r2t, r.ifmarker) == (False, True, False)


def test_incomplete_until_every_answer():
    n = offered({"MaxBurstLength": "65536", "DataDigest": "None", "ImmediateData": "Yes"})
    assert n.pending == ["DataDigest", "ImmediateData", "MaxBurstLength"]
    n.process([("MaxBurstLength", "65536")])  # answers may come over several PDUs
    assert not n.complete
    n.process([("DataDigest", "None"), ("ImmediateData", "Yes")])
    assert n.complete


def test_first_burst_clamped_to_max_burst():
    # tgtd with MaxBurstLength=4096 answers exactly this
    n = offered({"MaxBurstLength": "262144", "FirstBurstLength": "65536"})
    assert n.process([("MaxBurstLength", "4096"), ("FirstBurstLength", "65536")]) == []
    r = n.result()
    assert (r.first_burst_length, r.max_burst_length) == (4096, 4096)
    # a default FirstBurstLength follows a lower MaxBurstLength too
    n = offered({"MaxBurstLength": "262144"})
    n.process([("MaxBurstLength", "4096")])
    r = n.result()
    assert (r.first_burst_length, r.max_burst_length) == (4096, 4096)
    n = Negotiator({})
    assert n.process([("MaxBurstLength", "8192")]) == [("MaxBurstLength", "8192")]
    assert n.result().first_burst_length == 8192
    # answering the target's FirstBurstLength offer, we stay within the MaxBurstLength agreed
    n = Negotiator({})
    n.process([("MaxBurstLength", "8192")])
    assert n.process([("FirstBurstLength", "16384")]) == [("FirstBurstLength", "8192")]
    assert (n.result().first_burst_length, n.result().max_burst_length) == (8192, 8192)


def test_declarations():
    n = offered({"MaxRecvDataSegmentLength": "65536"})
    assert n.complete  # a declaration needs no answer
    assert (
        n.process(
            [
                ("MaxRecvDataSegmentLength", "262144"),
                ("TargetAlias", "Ölfass"),
                ("TargetAddress", "192.0.2.1:3260,1"),
                ("TargetPortalGroupTag", "7"),
                ("TargetName", "iqn.2001-04.com.example:storage"),
                ("TargetRecvDataSegmentLength", "8192"),
            ]
        )
        == []
    )
    r = n.result()
    assert r.max_recv_data_segment_length == 65536
    assert r.max_xmit_data_segment_length == 262144
    assert (r.target_alias, r.target_address, r.target_portal_group_tag) == (
        "Ölfass",
        "192.0.2.1:3260,1",
        7,
    )
    assert r.as_dict()["TargetAddress"] == "192.0.2.1:3260,1"


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (("MaxRecvDataSegmentLength", "511"), "invalid value"),
        (("MaxRecvDataSegmentLength", "16777216"), "invalid value"),
        (("TargetPortalGroupTag", "65536"), "invalid value"),
        (("TargetPortalGroupTag", "one"), "invalid value"),
        (("TargetAddress", "1.2.3.4:99999"), "invalid value"),
        (("TargetAlias", "a" * 256), "longer than 255"),
        (("InitiatorName", "iqn.x"), "only an initiator"),
        (("InitiatorAlias", "me"), "only an initiator"),
        (("SessionType", "Normal"), "only an initiator"),
    ],
)
def test_bad_declarations(pair, message):
    with pytest.raises(NegotiationError, match=message):
        offered({}).process([pair])


# -- the target's own offers


def test_we_answer_target_offers():
    n = offered({"HeaderDigest": "None", "MaxBurstLength": "65536"})
    replies = n.process(
        [
            ("HeaderDigest", "None"),
            ("MaxBurstLength", "65536"),
            ("DataDigest", "CRC32C,None"),  # our default list is None only
            ("FirstBurstLength", "16384"),  # min(our default 65536, 16384)
            ("DefaultTime2Wait", "1"),  # max(our default 2, 1)
            ("ImmediateData", "Yes"),  # Yes and our default Yes
            ("InitialR2T", "No"),  # No or our default Yes
            ("MaxConnections", "0x10"),
            ("IFMarker", "Yes"),  # we never do markers
            ("IFMarkInt", "2048~8192"),
            ("RDMAExtensions", "Yes"),
            ("X-com.example.feature", "On"),
            ("X#vendorkey", "1"),
            ("UnheardOf", "1"),
        ]
    )
    assert replies == [
        ("DataDigest", "None"),
        ("FirstBurstLength", "16384"),
        ("DefaultTime2Wait", "2"),
        ("ImmediateData", "Yes"),
        ("InitialR2T", "Yes"),
        ("MaxConnections", "1"),
        ("IFMarker", "No"),
        ("IFMarkInt", "Reject"),
        ("RDMAExtensions", "No"),
        ("X-com.example.feature", "NotUnderstood"),
        ("X#vendorkey", "NotUnderstood"),
        ("UnheardOf", "NotUnderstood"),
    ]
    r = n.result()
    assert (r.first_burst_length, r.default_time2wait, r.initial_r2t, r.data_digest) == (
        16384,
        2,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("proposals", "offer", "reply"),
    [
        # the first value of the target's list that we allow (RFC 7143 6.2.1)
        ({"HeaderDigest": "CRC32C,None"}, ("HeaderDigest", "None,CRC32C"), "None"),
        ({"HeaderDigest": "CRC32C,None"}, ("HeaderDigest", "MD5,CRC32C"), "CRC32C"),
        ({"HeaderDigest": "CRC32C"}, ("HeaderDigest", "None"), "Reject"),
        ({}, ("HeaderDigest", "CRC32C"), "Reject"),
        ({}, ("HeaderDigest", "CRC32C,,None"), "Reject"),
        ({}, ("MaxBurstLength", "100"), "Reject"),
        ({}, ("MaxBurstLength", "16777216"), "Reject"),
        ({}, ("MaxBurstLength", "-5"), "Reject"),
        ({}, ("MaxBurstLength", "9" * 300), "Reject"),
        ({}, ("ImmediateData", "True"), "Reject"),
        ({}, ("ErrorRecoveryLevel", "5"), "Reject"),
        ({"ImmediateData": "No"}, ("ImmediateData", "Yes"), "No"),
        ({"InitialR2T": "No"}, ("InitialR2T", "No"), "No"),
        ({"ErrorRecoveryLevel": "1"}, ("ErrorRecoveryLevel", "2"), "1"),
    ],
)
def test_target_offer_answers(proposals, offer, reply):
    n = Negotiator(proposals)  # nothing offered yet: the target's keys are its offers
    assert n.process([offer]) == [(offer[0], reply)]


def test_rejected_offer_keeps_default():
    n = Negotiator({})
    n.process([("MaxBurstLength", "100")])
    assert n.result().max_burst_length == 262144


@pytest.mark.parametrize("word", ["Reject", "Irrelevant", "NotUnderstood"])
def test_answer_to_key_never_offered(word):
    with pytest.raises(NegotiationError, match="never offered"):
        offered({"HeaderDigest": "None"}).process([("MaxBurstLength", word)])
    with pytest.raises(NegotiationError, match="never offered"):
        offered({}).process([("X-com.example.k", word)])


def test_duplicate_keys():
    n = offered({"HeaderDigest": "None"})
    with pytest.raises(NegotiationError, match="more than once"):
        n.process([("HeaderDigest", "None"), ("HeaderDigest", "None")])
    n = offered({"HeaderDigest": "None"})
    n.process([("HeaderDigest", "None"), ("MaxBurstLength", "4096")])
    with pytest.raises(NegotiationError, match="more than once"):
        n.process([("MaxBurstLength", "4096")])
    with pytest.raises(NegotiationError, match="more than once"):
        Negotiator({}).process([("TargetAlias", "a"), ("TargetAlias", "b")])


def test_chap_keys_left_alone():
    n = Negotiator({})
    pairs = [("CHAP_A", "5"), ("CHAP_I", "1"), ("CHAP_C", "0x0102"), ("CHAP_A", "5")]
    assert n.process(pairs) == []


# -- discovery sessions


def test_discovery_session():
    n = offered({**OPEN_ISCSI, "HeaderDigest": "CRC32C,None"}, "Discovery")
    replies = n.process(
        [
            ("HeaderDigest", "CRC32C"),
            ("DataDigest", "None"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("ErrorRecoveryLevel", "0"),
            ("MaxRecvDataSegmentLength", "32768"),
            ("MaxBurstLength", "262144"),
            ("InitialR2T", "Yes"),
            ("DataPDUInOrder", "Yes"),
        ]
    )
    assert replies == [
        ("MaxBurstLength", "Irrelevant"),
        ("InitialR2T", "Irrelevant"),
        ("DataPDUInOrder", "Irrelevant"),
    ]
    assert n.complete
    r = n.result()
    assert r.session_type == "Discovery"
    assert r.header_digest is True
    assert r.max_xmit_data_segment_length == 32768
    assert r.max_burst_length == 262144  # untouched default
    assert r.as_dict()["SessionType"] == "Discovery"

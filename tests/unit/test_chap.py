"""CHAP: response vectors, one-way and mutual flows, reflection refusal, bad encodings."""

from __future__ import annotations

import base64
import hashlib

import pytest

from pyiscsid.chap import AuthError, ChapInitiator, chap_response, decode_binary
from pyiscsid.errors import Err
from pyiscsid.settings import AuthSettings

HASHLIB = {5: hashlib.md5, 6: hashlib.sha1, 7: hashlib.sha256, 8: hashlib.sha3_256}


def one_way(**kw) -> AuthSettings:
    return AuthSettings(method="CHAP", username="alice", password="secretsecret", **kw)


def mutual(**kw) -> AuthSettings:
    return AuthSettings(
        method="CHAP",
        username="alice",
        password="secretsecret",
        username_in="tgt-user",
        password_in="target-secret",
        **kw,
    )


# -- digest vectors


@pytest.mark.parametrize(
    ("alg", "digest"),
    [
        # the published "abc" vectors (RFC 1321, FIPS 180, FIPS 202): id 0x61 'a', secret 'b',
        # challenge 'c' hash exactly the message "abc"
        (5, "900150983cd24fb0d6963f7d28e17f72"),
        (6, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (7, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (8, "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"),
    ],
)
def test_standard_abc_vectors(alg, digest):
    assert chap_response(alg, 0x61, b"b", b"c").hex() == digest


def test_fixed_md5_vector():
    got = chap_response(5, 1, b"secretsecret", bytes(range(16)))
    assert got.hex() == "226dc576c33f04ff9c3a200ffe35f442"


def test_fixed_sha256_vector():
    got = chap_response(7, 0xA7, b"target-secret", bytes.fromhex("deadbeef" * 8))
    assert got.hex() == "b89228adbd3a591fb75b769936671885bbe2ea5ac4a15a6858e42fa318f9470f"


@pytest.mark.parametrize("alg", [5, 6, 7, 8])
@pytest.mark.parametrize("ident", [0, 1, 200, 255])
def test_matches_hashlib(alg, ident):
    challenge = bytes((i * 37 + ident) & 0xFF for i in range(41))
    expected = HASHLIB[alg](bytes([ident]) + b"pa\xc3\x9fword" + challenge).digest()
    assert chap_response(alg, ident, "paßword".encode(), challenge) == expected


# -- algorithm offer


def test_offer_default_md5():
    assert ChapInitiator(one_way()).algorithm_offer() == [("CHAP_A", "5")]


def test_offer_in_configured_order():
    auth = one_way(chap_algs=["SHA3-256", "SHA256", "SHA1", "MD5"])
    assert ChapInitiator(auth).algorithm_offer() == [("CHAP_A", "8,7,6,5")]
    auth = one_way(chap_algs=["md5", " sha256", "MD5"])
    assert ChapInitiator(auth).algorithm_offer() == [("CHAP_A", "5,7")]


@pytest.mark.parametrize("algs", [["SHA512"], [], ["MD4", "MD5"]])
def test_offer_bad_algorithms(algs):
    with pytest.raises(AuthError) as e:
        ChapInitiator(one_way(chap_algs=algs))
    assert e.value.code == Err.LOGIN_AUTH_FAILED == 24


@pytest.mark.parametrize(
    "auth",
    [
        AuthSettings(method="CHAP", username="", password="x"),
        AuthSettings(method="CHAP", username="u", password=""),
        AuthSettings(method="CHAP", username="u", password="p", username_in="t"),
        AuthSettings(method="CHAP", username="u", password="p", password_in="t"),
        AuthSettings(method="CHAP", username="u" * 256, password="p"),
        AuthSettings(method="CHAP", username="a\nb", password="p"),
    ],
)
def test_bad_settings(auth):
    with pytest.raises(AuthError):
        ChapInitiator(auth)


# -- one-way


def test_one_way_response_exact():
    chap = ChapInitiator(one_way())
    assert not chap.mutual
    out = chap.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x" + bytes(range(16)).hex()})
    assert out == [("CHAP_N", "alice"), ("CHAP_R", "0x226dc576c33f04ff9c3a200ffe35f442")]
    assert chap.algorithm == 5
    chap.verify({})  # one-way: nothing to check


def test_one_way_sha256_base64_challenge():
    challenge = bytes.fromhex("deadbeef" * 8)
    chap = ChapInitiator(
        AuthSettings(username="bob", password="target-secret", chap_algs=["SHA256", "MD5"])
    )
    out = chap.respond(
        {"CHAP_A": "7", "CHAP_I": "0xa7", "CHAP_C": "0b" + base64.b64encode(challenge).decode()}
    )
    assert out == [
        ("CHAP_N", "bob"),
        ("CHAP_R", "0xb89228adbd3a591fb75b769936671885bbe2ea5ac4a15a6858e42fa318f9470f"),
    ]


def test_uppercase_prefix_and_odd_hex_digits():
    chap = ChapInitiator(one_way())
    out = chap.respond({"CHAP_A": "5", "CHAP_I": "9", "CHAP_C": "0XABC"})
    expected = hashlib.md5(b"\x09secretsecret\x0a\xbc").hexdigest()
    assert out[1] == ("CHAP_R", "0x" + expected)


def test_challenge_length_bounds():
    assert decode_binary("CHAP_C", "0x01", 1024) == b"\x01"
    assert decode_binary("CHAP_C", "0x" + "ab" * 1024, 1024) == b"\xab" * 1024
    with pytest.raises(AuthError, match="longer than 1024"):
        decode_binary("CHAP_C", "0x" + "ab" * 1025, 1024)
    big = "0b" + base64.b64encode(b"\x00" * 1025).decode()
    with pytest.raises(AuthError, match="longer than 1024"):
        decode_binary("CHAP_C", big, 1024)
    with pytest.raises(AuthError, match="longer than 1024"):
        decode_binary("CHAP_C", "0x" + "0" * 100000, 1024)
    chap = ChapInitiator(one_way())
    with pytest.raises(AuthError, match="longer than 1024"):
        chap.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x" + "00" * 1025})


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0x",
        "0b",
        "abcd",
        "1234",
        "0xZZ",
        "0x12 34",
        "0x12\t34",
        "0b!!!!",
        "0bAAA",
        "0x-1",
        "0b====",
        "0xéé",
    ],
)
def test_bad_binary_encodings(value):
    with pytest.raises(AuthError) as e:
        decode_binary("CHAP_C", value, 1024)
    assert e.value.code == 24
    chap = ChapInitiator(one_way())
    with pytest.raises(AuthError):
        chap.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": value})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"CHAP_I": "1", "CHAP_C": "0x0102"}, "CHAP_A"),
        ({"CHAP_A": "5", "CHAP_C": "0x0102"}, "CHAP_I"),
        ({"CHAP_A": "5", "CHAP_I": "1"}, "CHAP_C"),
        ({"CHAP_A": "7", "CHAP_I": "1", "CHAP_C": "0x0102"}, "we offered 5"),
        ({"CHAP_A": "5,7", "CHAP_I": "1", "CHAP_C": "0x0102"}, "we offered"),
        ({"CHAP_A": "Reject", "CHAP_I": "1", "CHAP_C": "0x0102"}, "we offered"),
        ({"CHAP_A": "5", "CHAP_I": "256", "CHAP_C": "0x0102"}, "0..255"),
        ({"CHAP_A": "5", "CHAP_I": "-1", "CHAP_C": "0x0102"}, "not a number"),
        ({"CHAP_A": "5", "CHAP_I": "x", "CHAP_C": "0x0102"}, "not a number"),
    ],
)
def test_bad_challenges(keys, message):
    with pytest.raises(AuthError, match=message):
        ChapInitiator(one_way()).respond(keys)


def test_second_challenge_refused():
    chap = ChapInitiator(one_way())
    chap.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x0102"})
    with pytest.raises(AuthError, match="second"):
        chap.respond({"CHAP_A": "5", "CHAP_I": "2", "CHAP_C": "0x0304"})


# -- mutual


def target_side(chap_out: list[tuple[str, str]], alg: int, secret: bytes) -> str:
    """What an honest target answers: H(our id || password_in || our challenge), in hex."""
    keys = dict(chap_out)
    ident = int(keys["CHAP_I"])
    challenge = bytes.fromhex(keys["CHAP_C"][2:])
    return "0x" + HASHLIB[alg](bytes([ident]) + secret + challenge).hexdigest()


@pytest.mark.parametrize(("name", "alg"), [("MD5", 5), ("SHA1", 6), ("SHA256", 7), ("SHA3-256", 8)])
def test_mutual_flow(name, alg):
    chap = ChapInitiator(mutual(chap_algs=[name]))
    assert chap.mutual
    out = chap.respond({"CHAP_A": str(alg), "CHAP_I": "3", "CHAP_C": "0x" + "5a" * 20})
    keys = dict(out)
    assert [k for k, _ in out] == ["CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"]
    assert keys["CHAP_N"] == "alice"
    expected_r = HASHLIB[alg](b"\x03secretsecret" + b"\x5a" * 20).hexdigest()
    assert keys["CHAP_R"] == "0x" + expected_r
    assert 0 <= int(keys["CHAP_I"]) <= 255
    assert keys["CHAP_C"].startswith("0x")
    challenge = bytes.fromhex(keys["CHAP_C"][2:])
    assert len(challenge) >= 16
    assert len(challenge) == max(16, HASHLIB[alg]().digest_size)
    assert not chap.verified
    chap.verify({"CHAP_N": "tgt-user", "CHAP_R": target_side(out, alg, b"target-secret")})
    assert chap.verified


def test_mutual_challenges_are_random():
    seen = set()
    for _ in range(20):
        out = dict(
            ChapInitiator(mutual()).respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x0102"})
        )
        seen.add(out["CHAP_C"])
    assert len(seen) == 20


def test_mutual_wrong_target_secret():
    chap = ChapInitiator(mutual())
    out = chap.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x0102"})
    with pytest.raises(AuthError, match="response is wrong") as e:
        chap.verify({"CHAP_N": "tgt-user", "CHAP_R": target_side(out, 5, b"wrong-secret")})
    assert e.value.code == 24
    assert not chap.verified


def test_mutual_wrong_target_name():
    chap = ChapInitiator(mutual())
    out = chap.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x0102"})
    with pytest.raises(AuthError, match="expected 'tgt-user'"):
        chap.verify({"CHAP_N": "mallory", "CHAP_R": target_side(out, 5, b"target-secret")})


def test_mutual_base64_response_accepted():
    chap = ChapInitiator(mutual())
    out = chap.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x0102"})
    raw = bytes.fromhex(target_side(out, 5, b"target-secret")[2:])
    chap.verify({"CHAP_N": "tgt-user", "CHAP_R": "0b" + base64.b64encode(raw).decode()})
    assert chap.verified


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"CHAP_N": "tgt-user"},
        {"CHAP_R": "0x00"},
        {"CHAP_N": "tgt-user", "CHAP_R": "0x00"},
        {"CHAP_N": "tgt-user", "CHAP_R": "0x" + "00" * 17},
        {"CHAP_N": "tgt-user", "CHAP_R": "nothex"},
    ],
)
def test_mutual_bad_verify(keys):
    chap = ChapInitiator(mutual())
    chap.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x0102"})
    with pytest.raises(AuthError):
        chap.verify(keys)


def test_verify_before_respond():
    with pytest.raises(AuthError, match="before"):
        ChapInitiator(mutual()).verify({"CHAP_N": "tgt-user", "CHAP_R": "0x00"})


def test_reflection_refused():
    first = ChapInitiator(mutual())
    ours = dict(first.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x0102"}))["CHAP_C"]
    # a target replays our challenge to another session (or the same one) to get it answered
    second = ChapInitiator(mutual())
    with pytest.raises(AuthError, match="reflection") as e:
        second.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": ours})
    assert e.value.code == 24
    # the same bytes in base64 are the same challenge
    again = ChapInitiator(one_way())
    b64 = "0b" + base64.b64encode(bytes.fromhex(ours[2:])).decode()
    with pytest.raises(AuthError, match="reflection"):
        again.respond({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": b64})

"""CHAP for iSCSI logins, one-way and mutual (RFC 1994, RFC 7143 section 12.1.3).

The target challenges us with CHAP_A (algorithm), CHAP_I (identifier) and CHAP_C (challenge); we
answer CHAP_N (our name) and CHAP_R = H(CHAP_I || secret || CHAP_C). For mutual CHAP we also send
our own CHAP_I and CHAP_C, and check the target's CHAP_N and CHAP_R.
"""

from __future__ import annotations

import binascii
import hmac
import re
import secrets
import threading
from collections import deque
from typing import TYPE_CHECKING

from pyiscsid.errors import Err, IscsiError
from pyiscsid.settings import AuthSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.hashes import HashAlgorithm

# node.session.auth.chap_algs names -> CHAP_A numbers (IANA PPP authentication algorithms)
CHAP_ALGORITHMS: dict[str, int] = {"SHA3-256": 8, "SHA256": 7, "SHA1": 6, "MD5": 5}
_DIGEST_SIZES = {5: 16, 6: 20, 7: 32, 8: 32}
MIN_CHALLENGE = 16  # the shortest challenge we send
MAX_CHALLENGE = 1024  # the longest challenge we accept from a target
MAX_NAME = 255  # CHAP_N is a simple value
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")


class AuthError(IscsiError):
    """CHAP failed: bad settings, a malformed exchange or a target that did not prove itself."""

    def __init__(self, message: str) -> None:
        super().__init__(Err.LOGIN_AUTH_FAILED, message)


# Challenges this process sent recently: a target handing one of them back to us as its own
# challenge (in this or another session) is a reflection attack.
_recent_challenges: deque[bytes] = deque(maxlen=4096)
_recent_lock = threading.Lock()


def _remember_challenge(challenge: bytes) -> None:
    with _recent_lock:
        _recent_challenges.append(challenge)


def _is_our_challenge(challenge: bytes) -> bool:
    with _recent_lock:
        return challenge in _recent_challenges


def _hash_algorithm(alg: int) -> HashAlgorithm:
    from cryptography.hazmat.primitives import hashes  # lazily: iscsiadm never needs it

    algorithms: dict[int, type[HashAlgorithm]] = {
        5: hashes.MD5,
        6: hashes.SHA1,
        7: hashes.SHA256,
        8: hashes.SHA3_256,
    }
    return algorithms[alg]()


def chap_response(alg: int, identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """The CHAP response H(identifier byte || secret || challenge) for CHAP_A number `alg`."""
    if alg not in _DIGEST_SIZES:
        raise AuthError(f"unsupported CHAP algorithm {alg}")
    if not 0 <= identifier <= 255:
        raise AuthError(f"CHAP identifier {identifier} is not one byte")
    from cryptography.hazmat.primitives import hashes

    h = hashes.Hash(_hash_algorithm(alg))
    h.update(bytes([identifier]))
    h.update(secret)
    h.update(challenge)
    return h.finalize()


def decode_binary(key: str, value: str, max_bytes: int) -> bytes:
    """Decode an iSCSI binary value: "0x"/"0X" hex (odd digit count: leading 0 implied) or
    "0b"/"0B" base64. Raises AuthError naming the key."""
    prefix, body = value[:2], value[2:]
    # each encoded character carries at least 4 bits: refuse oversize text before decoding it
    if len(body) > 2 * max_bytes + 4:
        raise AuthError(f"{key} is longer than {max_bytes} bytes")
    try:
        if prefix in ("0x", "0X"):
            if len(body) % 2:
                body = "0" + body
            if not _HEX_DIGITS.fullmatch(body):
                raise ValueError
            data = bytes.fromhex(body)
        elif prefix in ("0b", "0B"):
            data = binascii.a2b_base64(body.encode("ascii"), strict_mode=True)
        else:
            raise AuthError(f"{key} is neither hex (0x...) nor base64 (0b...)")
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise AuthError(f"{key} is not a valid binary value") from None
    if not data:
        raise AuthError(f"{key} is empty")
    if len(data) > max_bytes:
        raise AuthError(f"{key} is longer than {max_bytes} bytes")
    return data


def encode_hex(data: bytes) -> str:
    return "0x" + data.hex()


def _parse_identifier(value: str) -> int:
    try:
        if value[:2] in ("0x", "0X"):
            n = int(value[2:], 16)
        elif value.isdigit() and value.isascii():
            n = int(value)
        else:
            raise ValueError
    except ValueError:
        raise AuthError(f"CHAP_I={value[:20]} is not a number") from None
    if not 0 <= n <= 255:
        raise AuthError(f"CHAP_I={value[:20]} is not in 0..255")
    return n


def _check_name(what: str, name: str) -> None:
    if not name:
        raise AuthError(f"CHAP {what} is not set")
    if len(name.encode()) > MAX_NAME or any(c < " " or c == "\x7f" for c in name):
        raise AuthError(f"CHAP {what} is too long or has control characters")


class ChapInitiator:
    """One login's CHAP exchange from the initiator's side."""

    def __init__(self, auth: AuthSettings) -> None:
        _check_name("username", auth.username)
        if not auth.password:
            raise AuthError("CHAP password is not set")
        if bool(auth.username_in) != bool(auth.password_in):
            raise AuthError("mutual CHAP needs both username_in and password_in")
        if auth.username_in:
            _check_name("username_in", auth.username_in)
        self.auth = auth
        self.algorithms = self._parse_algs(auth.chap_algs)
        self.algorithm: int | None = None  # the target's choice, after respond()
        self._our_id: int | None = None
        self._our_challenge: bytes | None = None
        self._responded = False
        self._verified = False

    @staticmethod
    def _parse_algs(names: list[str]) -> list[int]:
        algs: list[int] = []
        for raw in names:
            name = raw.strip().upper()
            if name not in CHAP_ALGORITHMS:
                known = ", ".join(CHAP_ALGORITHMS)
                raise AuthError(f"unknown CHAP algorithm {raw!r} (known: {known})")
            if CHAP_ALGORITHMS[name] not in algs:
                algs.append(CHAP_ALGORITHMS[name])
        if not algs:
            raise AuthError("no CHAP algorithm configured (chap_algs is empty)")
        return algs

    @property
    def mutual(self) -> bool:
        return bool(self.auth.username_in)

    @property
    def verified(self) -> bool:
        """True once a mutual CHAP target proved its identity."""
        return self._verified

    def algorithm_offer(self) -> list[tuple[str, str]]:
        """Our CHAP_A offer, in the order of auth.chap_algs."""
        return [("CHAP_A", ",".join(str(a) for a in self.algorithms))]

    def respond(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        """Answer the target's CHAP_A, CHAP_I, CHAP_C with CHAP_N, CHAP_R (and for mutual CHAP
        our CHAP_I, CHAP_C)."""
        if self._responded:
            raise AuthError("target sent a second CHAP challenge")
        for key in ("CHAP_A", "CHAP_I", "CHAP_C"):
            if key not in keys:
                raise AuthError(f"target did not send {key}")
        alg_text = keys["CHAP_A"]
        if not (alg_text.isdigit() and alg_text.isascii()) or int(alg_text) not in self.algorithms:
            offered = ",".join(str(a) for a in self.algorithms)
            raise AuthError(f"target chose CHAP_A={alg_text[:20]}, we offered {offered}")
        alg = int(alg_text)
        identifier = _parse_identifier(keys["CHAP_I"])
        challenge = decode_binary("CHAP_C", keys["CHAP_C"], MAX_CHALLENGE)
        if _is_our_challenge(challenge):
            raise AuthError("target sent back a challenge of ours (reflection attack refused)")
        self.algorithm = alg
        self._responded = True
        response = chap_response(alg, identifier, self.auth.password.encode(), challenge)
        out = [("CHAP_N", self.auth.username), ("CHAP_R", encode_hex(response))]
        if self.mutual:
            size = max(MIN_CHALLENGE, _DIGEST_SIZES[alg])
            ours = secrets.token_bytes(size)
            while ours == challenge:  # never hand the target its own challenge
                ours = secrets.token_bytes(size)
            self._our_id = secrets.randbelow(256)
            self._our_challenge = ours
            _remember_challenge(ours)
            out += [("CHAP_I", str(self._our_id)), ("CHAP_C", encode_hex(ours))]
        return out

    def verify(self, keys: dict[str, str]) -> None:
        """Mutual CHAP: check the target's CHAP_N and CHAP_R; raises AuthError if wrong.

        Does nothing for one-way CHAP."""
        if not self.mutual:
            return
        if self._our_challenge is None or self._our_id is None or self.algorithm is None:
            raise AuthError("mutual CHAP: target answered before it was challenged")
        for key in ("CHAP_N", "CHAP_R"):
            if key not in keys:
                raise AuthError(f"mutual CHAP: target did not send {key}")
        if keys["CHAP_N"] != self.auth.username_in:
            raise AuthError(
                f"mutual CHAP: target calls itself {keys['CHAP_N'][:64]!r}, "
                f"expected {self.auth.username_in!r}"
            )
        size = _DIGEST_SIZES[self.algorithm]
        got = decode_binary("CHAP_R", keys["CHAP_R"], size)
        expected = chap_response(
            self.algorithm, self._our_id, self.auth.password_in.encode(), self._our_challenge
        )
        if not hmac.compare_digest(got, expected):
            raise AuthError("mutual CHAP: the target's response is wrong (bad password_in)")
        self._verified = True

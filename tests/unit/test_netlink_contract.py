"""The kernel/user contract: the type of every netlink attribute, as the kernel declares it, is the
one pyiscsid.netlink encodes and decodes it as.

Three places say what an ISCSI_IF_ATTR_* is: kernel/iscsi_if.h (the enum, a comment per
attribute), kernel/iscsi_if.c (the `iscsi_if_policy` array for what the kernel accepts, the
nla_put_* calls for what it sends) and netlink.ATTR_TYPES. The C is parsed here, not trusted to
a comment: a change on either side that the other does not follow fails this test.
"""

from __future__ import annotations

import re
from pathlib import Path

from pyroute2.netlink import nla

from pyiscsid import netlink

ROOT = Path(__file__).resolve().parents[2]
HEADER = ROOT / "kernel" / "iscsi_if.h"
SOURCE = ROOT / "kernel" / "iscsi_if.c"

# kernel netlink types -> pyroute2 nla_map types (a nested attribute: any nla class of its own)
NLA_TYPES = {
    "NLA_U8": "uint8",
    "NLA_U16": "uint16",
    "NLA_U32": "uint32",
    "NLA_U64": "uint64",
    "NLA_S32": "int32",
    "NLA_S64": "int64",
    "NLA_STRING": "asciiz",
    "NLA_NUL_STRING": "asciiz",
    "NLA_BINARY": "cdata",
    "NLA_NESTED": "nested",
}
PUT_TYPES = {
    "nla_put_u32": "uint32",
    "nla_put_u64_64bit": "uint64",
    "nla_put_s32": "int32",
    "nla_put_string": "asciiz",
    "nla_put": "cdata",
    "nla_reserve": "cdata",
    "nla_nest_start": "nested",
}
COMMENT_TYPES = {
    "u32": "uint32",
    "u64": "uint64",
    "s32": "int32",
    "string": "asciiz",
    "binary": "cdata",
    "nested": "nested",
}
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)


def _kind(nla_type: str) -> str:
    """ATTR_TYPES' value as the kernel would name it: a nested nla class is "nested"."""
    cls = getattr(netlink.IscsiIfMsg, nla_type, None)
    return "nested" if isinstance(cls, type) and issubclass(cls, nla) else nla_type


def header_attrs(text: str) -> list[tuple[str, str | None]]:
    """(short name, type from its comment or None) of enum iscsi_if_attr, in order."""
    body = re.search(r"enum\s+iscsi_if_attr\s*\{(.*?)\};", text, re.S)
    assert body is not None, "kernel/iscsi_if.h has no enum iscsi_if_attr"
    out = []
    for m in re.finditer(
        r"\b(ISCSI_IF_ATTR_\w+|__ISCSI_IF_ATTR_MAX)\b[^,]*,\s*(/\*.*?\*/)?", body[1], re.S
    ):
        if m[1].startswith("__"):
            continue
        words = re.findall(r"[a-z0-9]+", (m[2] or "").lower())
        out.append(
            (m[1].removeprefix("ISCSI_IF_ATTR_"), COMMENT_TYPES.get(words[0]) if words else None)
        )
    return out


def policy_types(text: str) -> dict[str, str]:
    """Short attribute name -> nla type, from the `iscsi_if_policy` array."""
    body = re.search(r"nla_policy\s+iscsi_if_policy\s*\[[^]]*\]\s*=\s*\{(.*?)\n\};", text, re.S)
    assert body is not None, "kernel/iscsi_if.c has no iscsi_if_policy array"
    entries = re.findall(
        r"\[\s*ISCSI_IF_ATTR_(\w+)\s*\]\s*=\s*(?:\{\s*\.type\s*=\s*(NLA_\w+)|NLA_POLICY_\w+\(\s*(NLA_\w+))",
        _COMMENT.sub(" ", body[1]),
    )
    assert entries, "no entries parsed from iscsi_if_policy"
    return {name: NLA_TYPES[a or b] for name, a, b in entries}


def sent_types(text: str) -> dict[str, set[str]]:
    """Short attribute name -> the nla types the kernel puts it into messages as."""
    out: dict[str, set[str]] = {}
    for fn, name in re.findall(r"\b(nla_\w+)\s*\(\s*\w+\s*,\s*ISCSI_IF_ATTR_(\w+)\b", text):
        if fn in PUT_TYPES:
            out.setdefault(name, set()).add(PUT_TYPES[fn])
    return out


def test_the_table_names_every_attribute_of_the_header() -> None:
    names = [name for name, _ in header_attrs(HEADER.read_text())]
    assert list(netlink.ATTR_TYPES) == names


def test_the_kernel_policy_agrees_with_the_table() -> None:
    policy = policy_types(SOURCE.read_text())
    assert {"SID", "SOCK_FD", "VALUE", "PDU", "LUN"} <= set(policy)
    wrong = {n: (t, netlink.ATTR_TYPES.get(n)) for n, t in policy.items()
             if _kind(netlink.ATTR_TYPES.get(n, "")) != t}  # fmt: skip
    assert wrong == {}, "iscsi_if_policy (kernel type, netlink.ATTR_TYPES)"


def test_what_the_kernel_sends_agrees_with_the_table() -> None:
    sent = sent_types(SOURCE.read_text())
    assert {"SID", "HOST_NO", "STATS", "PDU"} <= set(sent)
    wrong = {n: (ts, netlink.ATTR_TYPES.get(n)) for n, ts in sent.items()
             if ts != {_kind(netlink.ATTR_TYPES.get(n, ""))}}  # fmt: skip
    assert wrong == {}, "nla_put_* in iscsi_if.c (kernel types, netlink.ATTR_TYPES)"


def test_the_header_comments_agree_with_the_table() -> None:
    attrs = header_attrs(HEADER.read_text())
    typed = {name: kind for name, kind in attrs if kind is not None}
    assert len(typed) >= len(attrs) - 2  # all but UNSPEC and PAD say what they are
    wrong = {n: (t, netlink.ATTR_TYPES[n]) for n, t in typed.items()
             if _kind(netlink.ATTR_TYPES[n]) != t}  # fmt: skip
    assert wrong == {}, "kernel/iscsi_if.h comments (type, netlink.ATTR_TYPES)"


def test_every_attribute_the_kernel_uses_is_typed_by_the_kernel() -> None:
    c = SOURCE.read_text()
    known = set(policy_types(c)) | set(sent_types(c))
    # ERROR and STATE go out through event_simple(), which nla_put_u32()s the attribute it is
    # given; UNSPEC and PAD carry nothing
    events = set(re.findall(r"\bevent_simple\s*\([^;]*?ISCSI_IF_ATTR_(\w+)", c, re.S))
    assert events <= {n for n, t in netlink.ATTR_TYPES.items() if t == "uint32"}
    untyped = set(netlink.ATTR_TYPES) - known - events - {"UNSPEC", "PAD"}
    assert untyped == set()


def test_stats_are_u64_counters_on_both_sides() -> None:
    c = SOURCE.read_text()
    assert re.search(r"nla_put_u64_64bit\s*\(\s*\w+\s*,\s*i\s*,\s*stats\[i\]", c)
    kinds = {kind for code, _name, kind in netlink.IscsiIfMsg.stats.nla_map if code}
    assert kinds == {"uint64"}


def test_a_disagreement_is_seen() -> None:
    """The parsers find a changed type (so the tests above cannot pass by parsing nothing)."""
    c = SOURCE.read_text().replace("[ISCSI_IF_ATTR_CID]\t\t= { .type = NLA_U32 }",
                                   "[ISCSI_IF_ATTR_CID]\t\t= { .type = NLA_U64 }")  # fmt: skip
    assert policy_types(c)["CID"] == "uint64"
    h = HEADER.read_text().replace(
        "ISCSI_IF_ATTR_CID,\t\t/* u32 */", "ISCSI_IF_ATTR_CID,\t/* s32 */"
    )
    assert dict(header_attrs(h))["CID"] == "int32"

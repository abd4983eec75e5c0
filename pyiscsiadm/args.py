"""iscsiadm's command line: open-iscsi 2.1's getopt_long syntax plus the seed's extensions.

Parsing follows GNU getopt_long as open-iscsi uses it (clustered short options, `--opt=value`,
`--opt value`, unique prefixes of long options, options after operands) so that error messages
and their order match. Seed extensions: `--record/-r ID` (node and discovery modes), `--ids`.
"""

from __future__ import annotations

from pyiscsid.errors import Err, IscsiError
from pyiscsid.recordclass import recordclass

# short option letter -> takes an argument (open-iscsi's "RlDVhm:a:b:c:C:p:P:T:H:i:I:U:k:L:d:r:n:
# v:o:sSt:ux:A:W")
SHORT_OPTIONS: dict[str, bool] = {}
for (
    _spec
) in "R l D V h m: a: b: c: C: p: P: T: H: i: I: U: k: L: d: r: n: v: o: s S t: u x: A: W".split():
    SHORT_OPTIONS[_spec[0]] = _spec.endswith(":")

IDS = "\x01"  # the pseudo option letter of the seed's --ids flag

# long option -> (letter, argument: 0 none, 1 required, 2 optional)
LONG_OPTIONS: dict[str, tuple[str, int]] = {
    "mode": ("m", 1),
    "portal": ("p", 1),
    "targetname": ("T", 1),
    "interface": ("I", 1),
    "op": ("o", 1),
    "type": ("t", 1),
    "name": ("n", 1),
    "value": ("v", 1),
    "host": ("H", 1),
    "sid": ("r", 1),
    "record": ("r", 1),
    "rescan": ("R", 0),
    "print": ("P", 1),
    "discover": ("D", 0),
    "login": ("l", 0),
    "loginall": ("L", 1),
    "logout": ("u", 0),
    "logoutall": ("U", 1),
    "stats": ("s", 0),
    "killiscsid": ("k", 1),
    "debug": ("d", 1),
    "show": ("S", 0),
    "version": ("V", 0),
    "help": ("h", 0),
    "submode": ("C", 1),
    "ip": ("a", 1),
    "packetsize": ("b", 1),
    "count": ("c", 1),
    "interval": ("i", 1),
    "index": ("x", 1),
    "portal_type": ("A", 2),
    "no_wait": ("W", 0),
    "ids": (IDS, 0),
}

# mode -> (name used in messages, letters allowed, -m may repeat)
MODES: dict[str, tuple[str, str, bool]] = {
    "discovery": ("discovery", "DSIPdmntplov" + "r" + IDS, False),
    "discoverydb": ("discovery", "DSIPdmntplov" + "r" + IDS, False),
    "node": ("node", "RsPIdmlSonvupTULW" + "r" + IDS, False),
    "session": ("session", "PiRdrmusonuSv", True),
    "host": ("host", "CHdmPotnvxA", False),
    "iface": ("iface", "HIdnvmPoCabci", False),
    "fw": ("fw", "dmlWnv", False),
}

OPS = ("new", "delete", "update", "show", "nonpersistent", "apply", "applyall", "login", "logout")


@recordclass
class Token:
    """One parsed option, or a getopt error (`letter == "?"`, `error` set)."""

    letter: str
    arg: str | None = None
    error: str = ""
    optopt: str = ""  # getopt's optopt for errors ("" for long-option errors)


def tokenize(argv: list[str]) -> tuple[list[Token], list[str]]:
    """Split argv (without the program name) into options and operands, GNU style."""
    tokens: list[Token] = []
    operands: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            operands.extend(argv[i:])
            break
        if a.startswith("--"):
            body = a[2:]
            name, eq, value = body.partition("=")
            matches = [n for n in LONG_OPTIONS if n.startswith(name)]
            if name in LONG_OPTIONS:
                matches = [name]
            if not matches:
                tokens.append(Token("?", error=f"unrecognized option '--{name}'"))
                continue
            if len({LONG_OPTIONS[m] for m in matches}) > 1:
                tokens.append(Token("?", error=f"option '--{name}' is ambiguous"))
                continue
            full = matches[0]
            letter, has_arg = LONG_OPTIONS[full]
            if has_arg == 0:
                if eq:
                    tokens.append(Token("?", error=f"option '--{full}' doesn't allow an argument"))
                    continue
                tokens.append(Token(letter))
            elif eq or has_arg == 2:
                tokens.append(Token(letter, value if eq else None))
            elif i < len(argv):
                tokens.append(Token(letter, argv[i]))
                i += 1
            else:
                tokens.append(
                    Token("?", error=f"option '--{full}' requires an argument", optopt=letter)
                )
            continue
        if a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                ch = a[j]
                j += 1
                if ch not in SHORT_OPTIONS:
                    tokens.append(Token("?", error=f"invalid option -- '{ch}'", optopt=ch))
                    continue
                if not SHORT_OPTIONS[ch]:
                    tokens.append(Token(ch))
                    continue
                if j < len(a):
                    tokens.append(Token(ch, a[j:]))
                elif i < len(argv):
                    tokens.append(Token(ch, argv[i]))
                    i += 1
                else:
                    tokens.append(
                        Token("?", error=f"option requires an argument -- '{ch}'", optopt=ch)
                    )
                break
            continue
        operands.append(a)
    return tokens, operands


@recordclass
class Portal:
    """-p ip[:port][,tpgt]."""

    address: str
    port: int  # -1: not given
    tpgt: int  # -1: not given


def parse_portal(text: str) -> Portal:
    """`ip[:port][,tpgt]`, IPv6 in brackets (`[fe80::1]:3260`); a bare IPv6 address is allowed."""
    rest = text
    tpgt = -1
    if "," in rest:
        rest, _, tp = rest.rpartition(",")
        tpgt = _int(tp, f"Invalid portal group tag in portal '{text}'")
    port = -1
    if rest.startswith("["):
        addr, close, after = rest[1:].partition("]")
        if not close:
            raise IscsiError(Err.INVAL, f"Invalid portal '{text}': missing ']'")
        if after:
            if not after.startswith(":"):
                raise IscsiError(Err.INVAL, f"Invalid portal '{text}'")
            port = _int(after[1:], f"Invalid port in portal '{text}'")
    elif rest.count(":") == 1:
        addr, _, p = rest.partition(":")
        port = _int(p, f"Invalid port in portal '{text}'")
    else:
        addr = rest
    if not addr:
        raise IscsiError(Err.INVAL, "Please specify portal as <ipaddr>[:<ipport>]")
    if port != -1 and not 0 < port < 65536:
        raise IscsiError(Err.INVAL, f"Invalid port in portal '{text}'")
    return Portal(addr, port, tpgt)


def _int(text: str, message: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise IscsiError(Err.INVAL, message) from None


def parse_record_id(text: str) -> str:
    """The seed's record id: 6 hex digits, brackets optional (`[02f611]`)."""
    rid = text.strip()
    if rid.startswith("[") and rid.endswith("]"):
        rid = rid[1:-1]
    if len(rid) != 6 or any(c not in "0123456789abcdefABCDEF" for c in rid):
        raise IscsiError(Err.INVAL, f"invalid record id '{text}': expected 6 hex digits")
    return rid.lower()


class Options:
    """Everything the command line asked for, after the open-iscsi checks."""

    def __init__(self) -> None:
        self.mode = ""  # "" when no -m
        self.op_names: list[str] = []
        self.targetname: str | None = None
        self.portal: Portal | None = None
        self.iface: str | None = None  # the first -I
        self.ifaces: list[str] = []  # every -I, in order (discovery binds to each)
        self.disc_type: str | None = None  # "sendtargets", or the raw text for unsupported types
        self.params: list[tuple[str, str]] = []
        self.pending_name: str | None = None
        self.pending_value: str | None = None
        self.record_id: str | None = None  # seed -r ID in node/discovery mode
        self.sid: int | None = None  # -r in session mode
        self.cid: int | None = None  # the seed's -r SID:CID: one connection of the session
        self.sid_text: str | None = None
        self.info_level = -1
        self.login = False
        self.logout = False
        self.login_all: str | None = None
        self.logout_all: str | None = None
        self.discover = False
        self.stats = False
        self.show = False
        self.rescan = False
        self.ids = False
        self.killiscsid: int | None = None
        self.debug = 0
        self.no_wait = False
        self.version = False
        self.help = False

    def __repr__(self) -> str:
        return f"Options({vars(self)!r})"


class UsageError(Exception):
    """A bad command line: `lines` go to stderr (prefixed `iscsiadm: ` unless raw), exit code."""

    def __init__(self, lines: list[str], code: int = Err.INVAL, try_help: bool = False) -> None:
        self.lines = lines
        self.code = code
        self.try_help = try_help
        super().__init__("; ".join(lines))


def parse(argv: list[str]) -> Options:
    """Parse argv (without the program name). Raises UsageError with open-iscsi's messages.

    -V and -h stop parsing where they appear (as in open-iscsi): the result has `version`
    or `help` set and nothing after them is checked.
    """
    tokens, _operands = tokenize(argv)
    o = Options()
    printed: set[int] = set()
    messages: list[str] = []
    optopt = ""
    for idx, t in enumerate(tokens):
        if t.letter == "?":
            if idx not in printed:
                messages.append(t.error)
                printed.add(idx)
            optopt = t.optopt or optopt
            continue
        _apply(o, t, tokens, idx, printed, messages)
        if o.version or o.help:
            return o
    if optopt:
        messages.append(f"unrecognized character '{optopt}'")
        raise UsageError(messages)
    if messages:
        # a bad long option outside any mode: getopt complained, open-iscsi then shows usage
        raise UsageError(messages, try_help=not o.mode)
    if o.pending_name is not None and o.pending_value is None and o.mode:
        pass  # a lone -n is reported by the operation that needs it
    return o


def _apply(
    o: Options,
    t: Token,
    tokens: list[Token],
    idx: int,
    printed: set[int],
    messages: list[str],
) -> None:
    ch, arg = t.letter, t.arg or ""
    if ch == "k":
        o.killiscsid = _atoi(arg)
        if o.killiscsid < 0:
            raise UsageError(
                [
                    f"Invalid killiscsid priority {o.killiscsid} Priority must be greater "
                    "than or equal to zero."
                ]
            )
    elif ch == "t":
        o.disc_type = "sendtargets" if arg in ("sendtargets", "st") else arg
    elif ch == "o":
        if arg not in OPS:
            raise UsageError([*messages, f"can not recognize operation: '{arg}'"])
        o.op_names.append(arg)
    elif ch == "n":
        o.pending_name = arg
    elif ch == "v":
        o.pending_value = arg
    elif ch == "r":
        if o.mode == "session":
            o.sid_text = arg
            o.sid, o.cid = _parse_sid(arg)
        else:
            o.record_id = parse_record_id(arg)
    elif ch == "R":
        o.rescan = True
    elif ch == "P":
        o.info_level = _atoi(arg)
    elif ch == "D":
        o.discover = True
    elif ch == "l":
        o.login = True
    elif ch == "u":
        o.logout = True
    elif ch == "U":
        o.logout_all = arg
    elif ch == "L":
        o.login_all = arg
    elif ch == "s":
        o.stats = True
    elif ch == "S":
        o.show = True
    elif ch == "d":
        o.debug = _atoi(arg)
    elif ch == "m":
        _set_mode(o, arg, tokens, printed, messages)
    elif ch == "T":
        o.targetname = arg
    elif ch == "p":
        o.portal = parse_portal(arg)
    elif ch == "I":
        if not arg or len(arg) > 64:
            raise UsageError([f"Invalid iface name {arg}. Must be from 1 to 64 characters."])
        o.ifaces.append(arg)
        if o.iface is None:
            o.iface = arg
    elif ch == "V":
        o.version = True
    elif ch == "h":
        o.help = True
    elif ch == "W":
        o.no_wait = True
    elif ch == IDS:
        o.ids = True
    # -C -H -a -b -c -i -x -A: host/iface sub-modes we do not implement; accepted and ignored
    if o.pending_name is not None and o.pending_value is not None:
        o.params.append((o.pending_name, o.pending_value))
        o.pending_name = o.pending_value = None


def _set_mode(
    o: Options, name: str, tokens: list[Token], printed: set[int], messages: list[str]
) -> None:
    if name not in MODES:
        raise UsageError([*messages, "mode -1 is not yet supported"])
    label, allowed, skip_m = MODES[name]
    o.mode = name
    for idx, t in enumerate(tokens):
        if t.letter == "?" and idx not in printed:
            messages.append(t.error)
            printed.add(idx)
        if t.letter in allowed:
            continue
        if t.letter == "m" and skip_m:
            continue
        shown = "-" + t.letter if t.letter != IDS else "--ids"
        messages.append(f"{label} mode: option '{shown}' is not allowed/supported")
        raise UsageError(messages)


def _atoi(text: str) -> int:
    """C atoi: leading integer, 0 when there is none."""
    s = text.strip()
    n = 0
    sign = 1
    i = 0
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        i = 1
    while i < len(s) and s[i].isdigit():
        n = n * 10 + int(s[i])
        i += 1
    return sign * n


def _parse_sid(text: str) -> tuple[int, int | None]:
    """-r in session mode: a number, a sysfs path ending in sessionN, or the seed's SID:CID
    (one connection of the session); (sid, cid or None)."""
    base = text.rstrip("/").rsplit("/", 1)[-1]
    if base.startswith("session"):
        base = base[len("session") :]
    sid, colon, cid = base.partition(":")
    if not _is_number(sid) or (colon and not _is_number(cid)):
        raise UsageError([f"invalid sid '{text}'"])
    return int(sid), int(cid) if colon else None


def _is_number(text: str) -> bool:
    """Decimal digits 0-9 only (no sign, no space, no other script's digits)."""
    return text.isascii() and text.isdigit()

"""The generic netlink client of the iscsi_if family (kernel/iscsi_if.h).

Messages are pyroute2 classes (``genlmsg`` subclasses with an ``nla_map`` built from the header
through :mod:`pyiscsid.uapi`), so attribute ids and types are declared once. The socket I/O is a
plain ``AF_NETLINK`` socket driven in the caller's thread: BIND_CONN needs the caller's file table
(the kernel looks the socket fd up in it), every request has a timeout, and iscsid may call from
any thread. pyroute2's own socket classes run an asyncio loop per socket, which buys nothing here.

``IscsiNetlink``   one method per command; a negative errno in the ack -> IscsiError.
``EventListener``  subscribes to the "events" group and yields typed events.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, TypeVar


def _load_pyroute2_netlink() -> None:
    """Import pyroute2.netlink without running pyroute2/__init__.py up front.

    That __init__ imports all of pyroute2 (asyncio, ndb, ipdb, conntrack...): 0.2 s on a host,
    seconds under emulation, paid by every iscsid. The message classes need none of it. The
    package is registered unexecuted; the first use of any other name of it runs the real
    __init__ (once), so other users of pyroute2 in the process see the whole package.
    """
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # let the import below fail with the usual message
    pkg = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> Any:
        del pkg.__dict__["__getattr__"]
        loader.exec_module(pkg)
        return getattr(pkg, name)

    pkg.__dict__["__getattr__"] = complete
    sys.modules["pyroute2"] = pkg
    try:
        importlib.import_module("pyroute2.netlink")
    except BaseException:
        del sys.modules["pyroute2"]
        raise


_load_pyroute2_netlink()

from pyroute2.netlink import (  # noqa: E402
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
    ctrlmsg,
    genlmsg,
    nla,
    nlmsg,
)

from pyiscsid import uapi  # noqa: E402
from pyiscsid.errors import Err, IscsiError  # noqa: E402
from pyiscsid.uapi import Attr, Cmd, ConnError, Param, SessionState, Stat, Stop  # noqa: E402

E = TypeVar("E", bound=IntEnum)

SOL_NETLINK = 270
NETLINK_GENERIC = 16
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
NLMSG_HDR = struct.Struct("=IHHII")

DEFAULT_TIMEOUT = 30.0  # seconds for one request (SCAN of a large target can take a while)
RECV_BUFFER = 1 << 20  # a RECV_PDU event holds at most one PDU with its data segment

# The type of every attribute of enum iscsi_if_attr, by its short name.
ATTR_TYPES: dict[str, str] = {
    "UNSPEC": "none",
    "TRANSPORT": "asciiz",
    "SID": "uint32",
    "CID": "uint32",
    "HOST_NO": "uint32",
    "SOCK_FD": "int32",
    "CMDS_MAX": "uint32",
    "QUEUE_DEPTH": "uint32",
    "CMDSN": "uint32",
    "EXP_STATSN": "uint32",
    "PARAM": "uint32",
    "VALUE": "asciiz",
    "PDU": "cdata",
    "STOP_FLAG": "uint32",
    "ERROR": "uint32",
    "STATE": "uint32",
    "CHANNEL": "uint32",
    "ID": "uint32",
    "LUN": "uint64",
    "STATS": "stats",
    "PAD": "none",
    "MAX_CMDSN": "uint32",
    "TIMEOUT": "uint32",
}


def _attr_nla_map() -> tuple[tuple[int, str, str], ...]:
    # An attribute newer than ATTR_TYPES decodes as raw bytes (a unit test keeps them in step).
    return tuple((int(a), f"ISCSI_IF_ATTR_{a.name}", ATTR_TYPES.get(a.name, "hex")) for a in Attr)


class IscsiIfMsg(genlmsg):
    """Every command, reply and event of the family (one attribute space)."""

    prefix = "ISCSI_IF_ATTR_"
    nla_map = _attr_nla_map()

    class stats(nla):
        """ISCSI_IF_ATTR_STATS: one u64 counter per enum iscsi_if_stat."""

        prefix = "ISCSI_IF_STAT_"
        nla_map = tuple(
            (int(s), f"ISCSI_IF_STAT_{s.name}", "none" if s == 0 else "uint64") for s in Stat
        )


class NlAck(nlmsg):
    """NLMSG_ERROR with NETLINK_CAP_ACK: errno, the request's header, extended-ack TLVs."""

    fields = (
        ("error", "i"),
        ("req_length", "I"),
        ("req_type", "H"),
        ("req_flags", "H"),
        ("req_seq", "I"),
        ("req_pid", "I"),
    )
    nla_map = (
        (0, "NLMSGERR_ATTR_UNUSED", "none"),
        (1, "NLMSGERR_ATTR_MSG", "asciiz"),
        (2, "NLMSGERR_ATTR_OFFS", "uint32"),
        (3, "NLMSGERR_ATTR_COOKIE", "hex"),
        (4, "NLMSGERR_ATTR_POLICY", "hex"),
        (5, "NLMSGERR_ATTR_MISS_TYPE", "uint32"),
        (6, "NLMSGERR_ATTR_MISS_NEST", "uint32"),
    )


# ------------------------------------------------------------------------------------------
# Encoding and decoding (no socket: unit-testable)
# ------------------------------------------------------------------------------------------


def attr_name(attr: int) -> str:
    return f"ISCSI_IF_ATTR_{Attr(attr).name}"


# How a request's attribute value becomes its payload, by the nla_map type of IscsiIfMsg. Requests
# carry only these flat types; pyroute2's generic encoder, which walks the whole class machinery
# for every attribute, was most of iscsid's CPU time per login (30 SET_PARAMs a session, profiled
# under software emulation). Replies and events are still decoded by IscsiIfMsg itself.
_PACKERS: dict[str, Any] = {
    "uint32": struct.Struct("=I").pack,
    "int32": struct.Struct("=i").pack,
    "uint64": struct.Struct("=Q").pack,
    "asciiz": lambda v: str(v).encode() + b"\0",
    "cdata": bytes,
}
_ATTR_TYPE: dict[int, str] = {code: kind for code, _name, kind in IscsiIfMsg.nla_map}
_NLA_HDR = struct.Struct("=HH")
_GENL_HDR = struct.Struct("=BBH")


def encode_attrs(attrs: dict[int, Any]) -> bytes:
    """The netlink attributes of a request (Attr -> value; None values left out), 4-aligned."""
    out = []
    for code, value in attrs.items():
        if value is None:
            continue
        kind = _ATTR_TYPE.get(int(code))
        pack = _PACKERS.get(kind or "")
        if pack is None:
            raise IscsiError(Err.INVAL, f"attribute {attr_name(code)} ({kind}) is not a request's")
        payload = pack(value)
        out.append(_NLA_HDR.pack(4 + len(payload), int(code)) + payload)
        out.append(bytes(-len(payload) % 4))
    return b"".join(out)


def build_msg(
    family_id: int,
    cmd: int,
    attrs: dict[int, Any],
    *,
    seq: int = 0,
    flags: int = NLM_F_REQUEST | NLM_F_ACK,
) -> bytes:
    """One request: the netlink and genl headers plus `attrs` (Attr -> value; None left out)."""
    body = _GENL_HDR.pack(int(cmd), uapi.GENL_VERSION, 0) + encode_attrs(attrs)
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), family_id, flags, seq, 0) + body


def split_messages(buf: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, whole message) for every netlink message in a datagram."""
    off = 0
    while off + NLMSG_HDR.size <= len(buf):
        length, mtype, mflags, seq, _pid = NLMSG_HDR.unpack_from(buf, off)
        if length < NLMSG_HDR.size or off + length > len(buf):
            raise IscsiError(Err.TRANS, f"malformed netlink message (length {length})")
        yield mtype, mflags, seq, buf[off : off + length]
        off += (length + 3) & ~3


def sid_of(data: bytes) -> int | None:
    """The SID attribute of a message, read without decoding the rest (None: it has none)."""
    off = NLMSG_HDR.size + _GENL_HDR.size
    end = len(data)
    while off + _NLA_HDR.size <= end:
        length, kind = _NLA_HDR.unpack_from(data, off)
        if length < _NLA_HDR.size or off + length > end:
            return None
        if kind & NLA_TYPE_MASK == Attr.SID and length >= 8:
            return int(struct.unpack_from("=I", data, off + 4)[0])
        off += (length + 3) & ~3
    return None


def decode_msg(data: bytes) -> IscsiIfMsg:
    msg = IscsiIfMsg(data)
    msg.decode()
    return msg


def decode_ack(data: bytes) -> tuple[int, str]:
    """(errno as the kernel gave it, <= 0; the extended-ack message or '')."""
    (error,) = struct.unpack_from("=i", data, NLMSG_HDR.size)
    # A success carries nothing else: no pyroute2 decode (a login waits for some 40 acks).
    # A short ack (no NETLINK_CAP_ACK echo) has only the errno.
    if error == 0 or len(data) < NLMSG_HDR.size + 4 + NLMSG_HDR.size:
        return error, ""
    msg = NlAck(data)
    msg.decode()
    return int(msg["error"]), str(msg.get_attr("NLMSGERR_ATTR_MSG") or "")


def get(msg: IscsiIfMsg, attr: int, default: Any = None) -> Any:
    return msg.get_attr(attr_name(attr), default)


def require(msg: IscsiIfMsg, attr: int) -> Any:
    value = msg.get_attr(attr_name(attr))
    if value is None:
        cmd = _cmd_name(msg["cmd"])
        raise IscsiError(Err.TRANS, f"kernel reply to {cmd} lacks {attr_name(attr)}")
    return value


def _cmd_name(cmd: int) -> str:
    try:
        return Cmd(cmd).name
    except ValueError:
        return f"command {cmd}"


_ERRNO_CODES = {
    errno.ENOENT: Err.SESS_NOT_FOUND,
    errno.ESRCH: Err.SESS_NOT_FOUND,
    errno.ENODEV: Err.SESS_NOT_FOUND,
    errno.ENOMEM: Err.NOMEM,
    errno.EPERM: Err.ACCESS,
    errno.EACCES: Err.ACCESS,
    errno.EINVAL: Err.INVAL,
    errno.ERANGE: Err.INVAL,
    errno.EBUSY: Err.BUSY,
    errno.EEXIST: Err.SESS_EXISTS,
    errno.EOPNOTSUPP: Err.OP_NOT_SUPP,
    errno.ETIMEDOUT: Err.TRANS_TIMEOUT,
    errno.EAGAIN: Err.AGAIN,
    errno.ENOTCONN: Err.SESSION_NOT_CONNECTED,
}


def kernel_error(cmd: int, error: int, extack: str = "") -> IscsiError:
    """The IscsiError for a negative errno the kernel answered `cmd` with."""
    num = -error
    name = errno.errorcode.get(num, str(num))
    text = f"kernel iscsi_if {_cmd_name(cmd)} failed: {os.strerror(num)} ({name})"
    if extack:
        text += f": {extack}"
    code = _ERRNO_CODES.get(num, Err.TRANS)
    if cmd == Cmd.CREATE_SESSION and num == errno.ENOENT:
        code = Err.TRANS_NOT_FOUND  # the transport ("tcp") is not registered
    return IscsiError(code, text)


# ------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnErrorEvent:
    sid: int
    cid: int
    error: ConnError | int  # an int: a reason newer than the header


@dataclass(frozen=True)
class RecvPduEvent:
    sid: int
    cid: int
    pdu: bytes  # BHS [+AHS] + data segment, no digests


@dataclass(frozen=True)
class SessionStateEvent:
    sid: int
    state: SessionState | int


@dataclass(frozen=True)
class SessionDestroyedEvent:
    sid: int


@dataclass(frozen=True)
class EventsLost:
    """The socket overflowed: some events were dropped; re-read the state from the kernel."""


Event = ConnErrorEvent | RecvPduEvent | SessionStateEvent | SessionDestroyedEvent | EventsLost


def _enum_or_int(enum: type[E], value: int) -> E | int:
    try:
        return enum(value)
    except ValueError:
        return value


def decode_event(msg: IscsiIfMsg) -> Event | None:
    """The typed event of a multicast message; None for anything that is not an event."""
    cmd = msg["cmd"]
    if cmd == Cmd.EVENT_CONN_ERROR:
        return ConnErrorEvent(
            require(msg, Attr.SID),
            get(msg, Attr.CID, 0),
            _enum_or_int(ConnError, get(msg, Attr.ERROR, 0)),
        )
    if cmd == Cmd.EVENT_RECV_PDU:
        return RecvPduEvent(
            require(msg, Attr.SID), get(msg, Attr.CID, 0), bytes(require(msg, Attr.PDU))
        )
    if cmd == Cmd.EVENT_SESSION_STATE:
        return SessionStateEvent(
            require(msg, Attr.SID), _enum_or_int(SessionState, require(msg, Attr.STATE))
        )
    if cmd == Cmd.EVENT_SESSION_DESTROYED:
        return SessionDestroyedEvent(require(msg, Attr.SID))
    return None


# ------------------------------------------------------------------------------------------
# Sockets
# ------------------------------------------------------------------------------------------


class CreatedSession(NamedTuple):
    sid: int
    host_no: int


@dataclass(frozen=True)
class KernelSession:
    """GET_SESSION's answer."""

    sid: int
    host_no: int
    state: SessionState | int
    cmdsn: int | None = None  # the session's next CmdSN (a further connection's login uses it)


# name -> (identity of the module's load, family id, groups). The id of a family is fixed while
# its module stays loaded; a reload makes a new /sys/module/<name> directory, a new inode.
_family_cache: dict[str, tuple[object, int, dict[str, int]]] = {}
_family_lock = threading.Lock()
_BUILTIN_FAMILIES = frozenset({"nlctrl"})


def _family_key(name: str) -> object | None:
    """What says the family is still the one resolved: the inode of its module's sysfs
    directory (iscsi_if), a constant for built-in families, None (do not cache) otherwise."""
    if name in _BUILTIN_FAMILIES:
        return "builtin"
    try:
        st = os.stat(f"/sys/module/{name}")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class _GenlSocket:
    """A generic netlink socket with the iscsi_if family id resolved."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, family: str = uapi.GENL_NAME) -> None:
        self.timeout = timeout
        self._seq = int(time.monotonic() * 1000) & 0xFFFF
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            self.sock.bind((0, 0))
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                try:
                    self.sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass
            self.family_id, self.groups = self._resolve_cached(family)
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _resolve_cached(self, name: str) -> tuple[int, dict[str, int]]:
        """The family's id and groups, asked of the controller once per load of its module:
        iscsid opens a socket per operation, and every GETFAMILY answer is a pyroute2 decode."""
        key = _family_key(name)
        with _family_lock:
            hit = _family_cache.get(name)
        if hit is not None and key is not None and hit[0] == key:
            return hit[1], dict(hit[2])
        family_id, groups = self._resolve(name)
        if key is not None:
            with _family_lock:
                _family_cache[name] = (key, family_id, dict(groups))
        return family_id, groups

    def _resolve(self, name: str) -> tuple[int, dict[str, int]]:
        req = ctrlmsg()
        req["cmd"] = CTRL_CMD_GETFAMILY
        req["version"] = 1
        req["attrs"] = [["CTRL_ATTR_FAMILY_NAME", name]]
        seq = self._next_seq()
        req["header"]["type"] = GENL_ID_CTRL
        req["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
        req["header"]["sequence_number"] = seq
        req.encode()
        self.sock.send(req.data)
        family: ctrlmsg | None = None
        for mtype, _flags, mseq, data in self._receive_until_ack(seq, name):
            if mtype == GENL_ID_CTRL and mseq == seq:
                family = ctrlmsg(data)
                family.decode()
        if family is None:
            raise IscsiError(Err.TRANS, "no answer from the generic netlink controller")
        groups = {
            g.get_attr("CTRL_ATTR_MCAST_GRP_NAME"): g.get_attr("CTRL_ATTR_MCAST_GRP_ID")
            for g in family.get_attr("CTRL_ATTR_MCAST_GROUPS", [])
        }
        return int(family.get_attr("CTRL_ATTR_FAMILY_ID")), groups

    def _recv(self, timeout: float | None) -> bytes | None:
        """One datagram; None on timeout."""
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
            if not ready:
                return None
        peek = bytearray(16)
        size = self.sock.recv_into(peek, len(peek), socket.MSG_PEEK | socket.MSG_TRUNC)
        return self.sock.recv(max(size, 16))

    def _receive_until_ack(
        self, seq: int, what: str, cmd: int = 0
    ) -> Iterator[tuple[int, int, int, bytes]]:
        """Messages answering `seq` until its ack / NLMSG_DONE; raises on an error ack."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            buf = self._recv(left)
            if buf is None:
                raise IscsiError(
                    Err.TRANS_TIMEOUT, f"kernel did not answer {what} in {self.timeout:g} s"
                )
            for mtype, mflags, mseq, data in split_messages(buf):
                if mseq != seq:
                    continue  # a late answer to an earlier request that timed out
                if mtype == NLMSG_ERROR:
                    error, extack = decode_ack(data)
                    if error == 0:
                        return
                    if error == -errno.ENOENT and cmd == 0:
                        raise IscsiError(
                            Err.TRANS_NOT_FOUND,
                            f"generic netlink family {what!r} not found: "
                            "is the iscsi_if kernel module loaded?",
                        )
                    raise kernel_error(cmd, error, extack)
                if mtype == NLMSG_DONE:
                    return
                if mtype in (NLMSG_NOOP, NLMSG_OVERRUN):
                    continue
                yield mtype, mflags, mseq, data


class IscsiNetlink(_GenlSocket):
    """The iscsi_if commands. Raises IscsiError(TRANS_NOT_FOUND) if the module is not loaded."""

    def __enter__(self) -> IscsiNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, cmd: int, attrs: dict[int, Any], dump: bool = False) -> list[IscsiIfMsg]:
        """Send one command, return the replies (the ack consumed; errors raised)."""
        seq = self._next_seq()
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_DUMP if dump else 0)
        self.sock.send(build_msg(self.family_id, cmd, attrs, seq=seq, flags=flags))
        return [
            decode_msg(data)
            for mtype, _f, _s, data in self._receive_until_ack(seq, _cmd_name(cmd), cmd)
            if mtype == self.family_id
        ]

    def request_batch(self, cmd: int, batch: list[dict[int, Any]]) -> None:
        """Send many commands of one kind in one datagram (the kernel handles them in order,
        each as if sent alone). Only the last asks for an ack: the kernel answers a failed
        command whether or not it was asked to, and all those answers come before the last
        ack. The first error is raised once that ack is in, so no answer is left behind."""
        if not batch:
            return
        seqs = [self._next_seq() for _ in batch]
        last = len(batch) - 1
        data = b"".join(
            build_msg(
                self.family_id,
                cmd,
                attrs,
                seq=seq,
                flags=NLM_F_REQUEST | (NLM_F_ACK if i == last else 0),
            )
            for i, (seq, attrs) in enumerate(zip(seqs, batch, strict=True))
        )
        self.sock.send(data)
        index = {seq: i for i, seq in enumerate(seqs)}
        first_error: tuple[int, IscsiError] | None = None
        deadline = time.monotonic() + self.timeout
        done = False
        while not done:
            buf = self._recv(deadline - time.monotonic())
            if buf is None:
                raise IscsiError(
                    Err.TRANS_TIMEOUT,
                    f"kernel did not answer {len(seqs)} {_cmd_name(cmd)} in {self.timeout:g} s",
                )
            for mtype, _f, mseq, msg in split_messages(buf):
                i = index.get(mseq)
                if mtype != NLMSG_ERROR or i is None:
                    continue
                error, extack = decode_ack(msg)
                if error and (first_error is None or i < first_error[0]):
                    first_error = (i, kernel_error(cmd, error, extack))
                done = done or i == last
        if first_error is not None:
            raise first_error[1]

    def _one(self, cmd: int, attrs: dict[int, Any]) -> IscsiIfMsg:
        replies = self.request(cmd, attrs)
        if not replies:
            raise IscsiError(Err.TRANS, f"kernel sent no reply to {_cmd_name(cmd)}")
        return replies[0]

    def create_session(
        self, cmds_max: int, queue_depth: int, transport: str = "tcp"
    ) -> CreatedSession:
        reply = self._one(
            Cmd.CREATE_SESSION,
            {Attr.TRANSPORT: transport, Attr.CMDS_MAX: cmds_max, Attr.QUEUE_DEPTH: queue_depth},
        )
        return CreatedSession(require(reply, Attr.SID), require(reply, Attr.HOST_NO))

    def destroy_session(self, sid: int) -> None:
        self.request(Cmd.DESTROY_SESSION, {Attr.SID: sid})

    def create_conn(self, sid: int, cid: int) -> None:
        self.request(Cmd.CREATE_CONN, {Attr.SID: sid, Attr.CID: cid})

    def destroy_conn(self, sid: int, cid: int) -> None:
        self.request(Cmd.DESTROY_CONN, {Attr.SID: sid, Attr.CID: cid})

    def bind_conn(
        self,
        sid: int,
        cid: int,
        sock_fd: int,
        exp_statsn: int,
        cmdsn: int,
        max_cmdsn: int | None = None,
    ) -> None:
        """Hand the connected socket `sock_fd` (of this process) to the kernel."""
        self.request(
            Cmd.BIND_CONN,
            {
                Attr.SID: sid,
                Attr.CID: cid,
                Attr.SOCK_FD: sock_fd,
                Attr.EXP_STATSN: exp_statsn & 0xFFFFFFFF,
                Attr.CMDSN: cmdsn & 0xFFFFFFFF,
                Attr.MAX_CMDSN: None if max_cmdsn is None else max_cmdsn & 0xFFFFFFFF,
            },
        )

    def start_conn(self, sid: int, cid: int) -> None:
        self.request(Cmd.START_CONN, {Attr.SID: sid, Attr.CID: cid})

    def stop_conn(self, sid: int, cid: int, flag: int = Stop.TERM) -> None:
        self.request(Cmd.STOP_CONN, {Attr.SID: sid, Attr.CID: cid, Attr.STOP_FLAG: int(flag)})

    def set_param(self, sid: int, param: int, value: str, cid: int | None = None) -> None:
        self.request(
            Cmd.SET_PARAM,
            {Attr.SID: sid, Attr.CID: cid, Attr.PARAM: int(param), Attr.VALUE: str(value)},
        )

    def set_params(self, sid: int, params: list[tuple[int, str, int | None]]) -> None:
        """SET_PARAM for each (param, value, cid or None for the session), in one batch."""
        self.request_batch(
            Cmd.SET_PARAM,
            [
                {Attr.SID: sid, Attr.CID: cid, Attr.PARAM: int(param), Attr.VALUE: str(value)}
                for param, value, cid in params
            ],
        )

    def get_param(self, sid: int, param: int, cid: int | None = None) -> str:
        reply = self._one(Cmd.GET_PARAM, {Attr.SID: sid, Attr.CID: cid, Attr.PARAM: int(param)})
        return str(require(reply, Attr.VALUE))

    def send_pdu(self, sid: int, cid: int, pdu: bytes) -> None:
        self.request(Cmd.SEND_PDU, {Attr.SID: sid, Attr.CID: cid, Attr.PDU: bytes(pdu)})

    def scan(
        self, sid: int, channel: int | None = None, id: int | None = None, lun: int | None = None
    ) -> None:
        self.request(Cmd.SCAN, {Attr.SID: sid, Attr.CHANNEL: channel, Attr.ID: id, Attr.LUN: lun})

    def get_stats(self, sid: int, cid: int) -> dict[Stat, int]:
        reply = self._one(Cmd.GET_STATS, {Attr.SID: sid, Attr.CID: cid})
        return stats_of(reply)

    def drain_conn(self, sid: int, cid: int, timeout: int) -> None:
        """No new commands go to connection `sid`:`cid`; returns once its outstanding commands
        have completed (IscsiError TRANS_TIMEOUT after `timeout` seconds, BUSY if it is the
        session's last running connection)."""
        saved = self.timeout
        self.timeout = max(saved, timeout + 5.0)  # the kernel answers after the drain
        try:
            self.request(Cmd.DRAIN_CONN, {Attr.SID: sid, Attr.CID: cid, Attr.TIMEOUT: timeout})
        finally:
            self.timeout = saved

    def get_session(self, sid: int) -> KernelSession:
        return session_of(self._one(Cmd.GET_SESSION, {Attr.SID: sid}))

    def get_sessions(self) -> list[KernelSession]:
        """Every session the kernel has (GET_SESSION as a dump)."""
        return [session_of(m) for m in self.request(Cmd.GET_SESSION, {}, dump=True)]


def stats_of(msg: IscsiIfMsg) -> dict[Stat, int]:
    nested = get(msg, Attr.STATS)
    out: dict[Stat, int] = {}
    if nested is None:
        return out
    for name, value in nested["attrs"]:
        short = name.removeprefix("ISCSI_IF_STAT_")
        if short in Stat.__members__:
            out[Stat[short]] = int(value)
    return out


def session_of(msg: IscsiIfMsg) -> KernelSession:
    state = get(msg, Attr.STATE, 0)
    return KernelSession(
        require(msg, Attr.SID),
        get(msg, Attr.HOST_NO, 0),
        _enum_or_int(SessionState, state),
        get(msg, Attr.CMDSN),
    )


class EventListener(_GenlSocket):
    """A socket subscribed to the "events" group; create it before the action you wait for."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, family: str = uapi.GENL_NAME) -> None:
        super().__init__(timeout, family)
        group = self.groups.get(uapi.MCGRP_EVENTS)
        if group is None:
            self.close()
            raise IscsiError(Err.TRANS, f"iscsi_if has no multicast group {uapi.MCGRP_EVENTS!r}")
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)

    def __enter__(self) -> EventListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self, timeout: float | None = 0.0, sid: int | None = None) -> list[Event]:
        """The events of the next datagram ([] when none came within `timeout`; None: block).
        `sid`: only that session's events (the others are skipped before they are decoded:
        many logouts at once each see every session's events)."""
        try:
            buf = self._recv(timeout)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return [EventsLost()]
            raise
        if buf is None:
            return []
        events: list[Event] = []
        for mtype, _flags, _seq, data in split_messages(buf):
            if mtype != self.family_id:
                continue
            if sid is not None and sid_of(data) not in (None, sid):
                continue
            event = decode_event(decode_msg(data))
            if event is not None:
                events.append(event)
        return events

    def wait(self, timeout: float, sid: int | None = None) -> Iterator[Event]:
        """Events as they come (of session `sid` only, if given), until `timeout` seconds have
        passed."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            yield from self.poll(left, sid)

    def __iter__(self) -> Iterator[Event]:
        while True:
            yield from self.poll(None)


def family_available() -> bool:
    """True if the iscsi_if generic netlink family is registered (the module is loaded)."""
    key = _family_key(uapi.GENL_NAME)
    with _family_lock:
        hit = _family_cache.get(uapi.GENL_NAME)
    if hit is not None and key is not None and hit[0] == key:
        return True  # resolved during this load of the module: no socket needed
    try:
        _GenlSocket(timeout=5.0).close()
    except (IscsiError, OSError):
        return False
    return True


__all__ = [
    "ConnErrorEvent",
    "CreatedSession",
    "Event",
    "EventListener",
    "EventsLost",
    "IscsiIfMsg",
    "IscsiNetlink",
    "KernelSession",
    "Param",
    "RecvPduEvent",
    "SessionDestroyedEvent",
    "SessionStateEvent",
    "family_available",
]

"""A scripted iSCSI target for the hostile-target tier: correct, until a case says otherwise.

It logs in like a compliant target (no authentication), serves an 8 MiB in-memory disk at LUN 0
(INQUIRY, REPORT LUNS, READ CAPACITY, MODE SENSE, TEST UNIT READY, READ, WRITE, SYNCHRONIZE
CACHE; anything else is CHECK CONDITION / invalid opcode), answers NOP-Out pings, task management
and Logout, and misbehaves in one chosen way (`CASES`) on the first command that touches
`TRIGGER_LBA` (the test's own I/O: the SCSI scan and partition probing never read there), or
during the scan for the cases marked so. `Target(case)` serves on 127.0.0.1:PORT from threads;
`hostile_run.py` drives the initiator against it.

The MC/S cases (trigger "mcs") let the session have two connections and serve I/O on both with
one session-wide CmdSN window: ExpCmdSN advances over the CmdSNs received on either connection,
and every command is checked against it (`Target.mcs_received`): a CmdSN beyond the MaxCmdSN
the target announced, one used twice, or one never sent (a hole the target would wait on for
ever) is a violation of RFC 7143 4.2.2.1 that `mcs_problems` reports.

The fuzz mode (`Target(fuzz=Fuzzer(seed, rate))`) sends every full-feature PDU through the
fuzzer, which mutates some of them at random (header bit flips, length fields, tags, sequence
numbers, truncation) from a seed, so that a failing run can be replayed by its number.

What the target negotiates: InitialR2T=Yes, ImmediateData=No (all write data is solicited),
MaxBurstLength 16384, MaxOutstandingR2T 2, its own MaxRecvDataSegmentLength 8192, digests as the
initiator proposes first. Read data goes out in Data-In PDUs of 16 KiB with the status in the
last one. Every disk sector holds its own LBA, 64 times as a big-endian u64 (`pattern`), so a
reader can tell any misplaced or missing sector.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout: pyiscsid

from pyiscsid import pdu as P
from pyiscsid.negotiation import decode_text, encode_text
from pyiscsid.pduio import PduConnection

SECTOR = 512
DISK_SECTORS = 16384  # 8 MiB
TRIGGER_LBA = 8192  # 4 MiB in: only the test's I/O goes there
IO_BYTES = 65536  # the test's I/O: 4 Data-In PDUs, or 4 R2Ts
SEG = 16384  # Data-In segment
MAX_BURST = 16384
MAX_R2T = 2
TARGET_MRDSL = 8192
WINDOW = 32
RSVD = P.RSVD_TAG
IQN = "iqn.2026-12.test:hostile"

GOOD, CHECK_CONDITION = 0x00, 0x02


def serial_gt(a: int, b: int) -> bool:
    """a > b in 32-bit serial number arithmetic (RFC 1982)."""
    return 0 < (a - b) & RSVD < 1 << 31


def pattern(lba: int, sectors: int) -> bytes:
    """What the disk holds at `lba` before anything is written."""
    return b"".join(struct.pack(">Q", lba + i) * (SECTOR // 8) for i in range(sectors))


def sense_invalid(asc: int = 0x20) -> bytes:
    """Fixed-format sense: ILLEGAL REQUEST, the ASC given (0x20 invalid opcode)."""
    s = bytearray(18)
    s[0], s[2], s[7], s[12] = 0x70, 0x05, 10, asc
    return bytes(s)


# ------------------------------------------------------------------------------------ the fuzzer


@dataclass
class Fuzzer:
    """Mutates PDUs the target sends: `rate` of them, chosen and changed by `random.Random(seed)`.

    Header fields are changed before the digests are computed (the initiator sees a well-formed
    but wrong PDU); with digests on, some bytes are flipped after (a digest error must follow).

    Framing (a length field, a cut PDU, payload bytes) is changed only when both digests are
    on. Without them such a change is, to the initiator, a well-formed stream carrying other
    bytes: a longer DataSegmentLength in a Data-In pulls the next PDU's bytes into the buffer
    just as a target sending wrong data would, and no protocol check can tell; catching it is
    what the digests are for. So with digests off the fuzzer changes protocol fields only, and
    wrong data after any session is a defect.
    """

    seed: int
    rate: float = 0.05
    rng: random.Random = field(init=False)
    mutated: int = 0
    sent: int = 0
    log: list[str] = field(default_factory=list)

    FIELDS = ("itt", "ttt", "statsn", "exp_cmdsn", "max_cmdsn", "datasn", "r2tsn",
              "buffer_offset", "desired_data_length", "residual_count")  # fmt: skip

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def wire(self, pdu: P.Pdu, hd: bool, dd: bool) -> bytes:
        """The bytes to send for `pdu` (mutated or not)."""
        self.sent += 1
        r = self.rng
        if r.random() >= self.rate:
            return pdu.encode(hd, dd)
        self.mutated += 1
        framing = hd and dd
        kinds = ["field", "field", "flags", "bitflip", "opcode"]
        how = r.choice([*kinds, "length", "truncate"] if framing else kinds)
        name = type(pdu).__name__
        if how == "field":
            names = [f for f in self.FIELDS if hasattr(pdu, f)]
            if names:
                f = r.choice(names)
                old = getattr(pdu, f)
                new = r.choice([0, 1, RSVD, old + 1, old - 1 & RSVD, old ^ (1 << r.randrange(32)),
                                r.getrandbits(32)])  # fmt: skip
                setattr(pdu, f, new & RSVD)
                self.log.append(f"{name}.{f} {old:#x} -> {new & RSVD:#x}")
            return pdu.encode(hd, dd)
        raw = pdu.encode(False, False)
        hlen = 48 + raw[4] * 4
        hdr, data = bytearray(raw[:hlen]), bytearray(raw[hlen:])
        flips: list[tuple[bytearray, int, int]] = []
        if how == "flags":
            hdr[1] ^= 1 << r.randrange(8)
        elif how == "opcode":
            hdr[0] = r.choice([0x3D, 0x1C, 0x20, 0x25, 0x3F, hdr[0] ^ 0x01])
        elif how == "length":
            if r.random() < 0.5:
                hdr[5:8] = r.choice([0, 1, 0xFFFFFF, 0x10000, 8193, 262145]).to_bytes(3, "big")
            else:
                hdr[4] = r.choice([1, 2, 255, 0x10])
        elif how == "bitflip":
            # without digests, not the lengths (bytes 4-7) nor the payload: see the class doc
            spots = range(len(hdr)) if framing else [*range(4), *range(8, len(hdr))]
            for _ in range(r.randrange(1, 4)):
                part = data if framing and data and r.random() < 0.5 else hdr
                i = r.randrange(len(part)) if part is data else r.choice(spots)
                flips.append((part, i, 1 << r.randrange(8)))
        late = hd or dd  # with digests on, a flipped bit must show as a digest error

        def flip() -> None:
            for part, i, bit in flips:
                part[i] ^= bit

        if not late:
            flip()
        hdg = P.digest_bytes(bytes(hdr)) if hd else b""
        ddg = P.digest_bytes(bytes(data)) if dd and data else b""
        if late:
            flip()
        buf = bytes(hdr) + hdg + bytes(data) + ddg
        self.log.append(f"{name} {how}")
        if how == "truncate":
            return buf[: r.randrange(1, len(buf))]
        return buf


# ------------------------------------------------------------------------------ one connection


class Closed(Exception):
    """The case ends the connection here."""


@dataclass
class WriteTask:
    itt: int
    lba: int
    length: int
    buf: bytearray
    lun: bytes
    got: int = 0
    next_off: int = 0  # first byte not yet asked for
    r2tsn: int = 0
    open_r2t: dict[int, list[int]] = field(default_factory=dict)  # ttt -> [offset, left]


class Conn:
    """The target side of one connection."""

    def __init__(self, target: Target, sock: socket.socket, index: int) -> None:
        self.t = target
        self.sock = sock
        self.index = index
        self.io = PduConnection(sock, max_recv_data_segment_length=1 << 20)
        self.statsn = 1000 * (index + 1)
        self.exp_cmdsn = 0
        self.hd = self.dd = False
        self.initiator_mrdsl = 8192
        self.writes: dict[int, WriteTask] = {}
        self.done_itts: list[int] = []
        self.next_ttt = 0x100
        self.window_closed = False
        self.tsih = 0
        self.rsp_tsih_delta = 0  # login2 cases: what a further connection's answer gets wrong
        self.rsp_isid_flip = False
        self.max_r2t = 1  # RFC 7143 defaults until negotiated
        self.send_lock = threading.Lock()
        self.max_burst = 262144

    # -- sending ---------------------------------------------------------------------------

    def sn(self, advance: bool = True) -> dict[str, int]:
        """StatSN/ExpCmdSN/MaxCmdSN for a PDU (StatSN advanced for status-carrying PDUs)."""
        statsn = self.statsn
        if advance:
            self.statsn += 1
        if self.t.mcs:
            exp, mx = self.t.mcs_window()
            stale = self.t.mcs_stale()
            if stale and self.t.hook("mcs", self, None):
                exp, mx = stale
            return {"statsn": statsn & RSVD, "exp_cmdsn": exp & RSVD, "max_cmdsn": mx & RSVD}
        window = self.t.case.window if self.t.case else WINDOW
        max_cmdsn = self.exp_cmdsn - 1 if self.window_closed else self.exp_cmdsn + window - 1
        return {"statsn": statsn & RSVD, "exp_cmdsn": self.exp_cmdsn & RSVD,
                "max_cmdsn": max_cmdsn & RSVD}  # fmt: skip

    def send(self, pdu: P.Pdu) -> None:
        fz = self.t.fuzz
        buf = fz.wire(pdu, self.hd, self.dd) if fz else pdu.encode(self.hd, self.dd)
        self.sendraw(buf)

    def sendraw(self, buf: bytes) -> None:
        with self.send_lock:  # another connection's case may send here too
            self.sock.settimeout(60)
            self.sock.sendall(buf)

    def raw_pdu(self, bhs: bytes | bytearray, data: bytes = b"", ahs: bytes = b"",
                bad_hd: bool = False, bad_dd: bool = False) -> bytes:  # fmt: skip
        """A PDU from raw header bytes (lengths filled in), digests as negotiated."""
        h = bytearray(bhs)
        h[4] = len(ahs) // 4
        h[5:8] = len(data).to_bytes(3, "big")
        out = bytes(h) + ahs
        if self.hd:
            dg = P.digest_bytes(out)
            out += bytes([dg[0] ^ 0xFF]) + dg[1:] if bad_hd else dg
        if data:
            padded = data + bytes(P.pad_len(len(data)))
            out += padded
            if self.dd:
                dg = P.digest_bytes(padded)
                out += bytes([dg[0] ^ 0xFF]) + dg[1:] if bad_dd else dg
        return out

    # -- login -----------------------------------------------------------------------------

    def login(self) -> bool:
        declared = False
        while True:
            try:
                req = self.io.recv(30)
            except Exception:
                return False
            if not isinstance(req, P.LoginRequest):
                return False
            # a further connection of the session (TSIH set): the login2 cases misbehave here
            if req.tsih and self.t.hook("login2", self, req):
                raise Closed
            out: list[tuple[str, str]] = []
            for k, v in decode_text(req.data):
                a = self.answer(k, v, req.csg)
                if a is not None:
                    out.append((k, a))
            if not declared:
                out.append(("TargetPortalGroupTag", "1"))
                declared = True
            if req.csg == P.Stage.OPERATIONAL:
                out.append(("MaxRecvDataSegmentLength", str(TARGET_MRDSL)))
            final = req.transit and req.nsg == P.Stage.FULL_FEATURE
            if final:
                self.tsih = (req.tsih or self.t.new_tsih()) + self.rsp_tsih_delta
                self.exp_cmdsn = req.cmdsn
                if req.tsih:  # the session's values, negotiated by its leading login
                    self.max_r2t, self.max_burst = self.t.session_values
                else:
                    self.t.session_values = (self.max_r2t, self.max_burst)
            isid = bytes(b ^ 0x5A for b in req.isid) if self.rsp_isid_flip else req.isid
            exp = req.cmdsn
            mx = req.cmdsn + (self.t.case.window if self.t.case else WINDOW) - 1
            if self.t.mcs and (final or req.tsih):  # the session's window from here on
                exp, mx = self.t.mcs_window(start=None if req.tsih else req.cmdsn)
            self.io.send(P.LoginResponse(
                itt=req.itt, isid=isid, csg=req.csg, transit=req.transit,
                nsg=req.nsg if req.transit else 0, tsih=self.tsih if final else 0,
                statsn=self.statsn, exp_cmdsn=exp & RSVD, max_cmdsn=mx & RSVD,
                data=encode_text(out)))  # fmt: skip
            if final:
                self.statsn += 1
                self.io.header_digest, self.io.data_digest = self.hd, self.dd
                self.t.note(f"login {self.index} isid={req.isid.hex()} tsih={req.tsih}")
                return True

    def answer(self, key: str, value: str, csg: int) -> str | None:
        if key == "AuthMethod":
            return "None"
        if csg != P.Stage.OPERATIONAL:
            return None
        burst = self.t.case.max_burst if self.t.case else MAX_BURST
        mcs = str(self.t.case.conns if self.t.case else 1)
        fixed = {"InitialR2T": "Yes", "ImmediateData": "No", "MaxBurstLength": str(burst),
                 "FirstBurstLength": "8192", "MaxOutstandingR2T": str(MAX_R2T),
                 "ErrorRecoveryLevel": "0", "MaxConnections": mcs}  # fmt: skip
        if key in ("InitiatorName", "InitiatorAlias", "SessionType", "TargetName"):
            return None
        if key == "MaxRecvDataSegmentLength":
            self.initiator_mrdsl = int(value)
            return None
        if key == "MaxConnections":  # min(): the initiator must have asked for two
            return str(min(int(value), int(mcs)))
        if key in ("MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T"):  # min()
            v = str(min(int(value), int(fixed[key])))
            if key == "MaxOutstandingR2T":
                self.max_r2t = int(v)
            elif key == "MaxBurstLength":
                self.max_burst = int(v)
            return v
        if key in fixed:
            return fixed[key]
        first = value.split(",")[0]
        if key == "HeaderDigest":
            self.hd = first == "CRC32C"
        elif key == "DataDigest":
            self.dd = first == "CRC32C"
        return first

    # -- full feature phase ----------------------------------------------------------------

    def serve(self) -> None:
        if not self.login():
            return
        self.t.on_login(self)
        while True:
            try:
                pdu = self.io.recv(600)
            except Exception as e:
                self.t.note(f"conn {self.index} ends: {e}")
                return
            try:
                self.dispatch(pdu)
            except Closed:
                return

    def dispatch(self, pdu: P.Pdu) -> None:
        if not pdu.immediate and isinstance(pdu, (P.ScsiCommand, P.TaskMgmtRequest,
                                                  P.LogoutRequest, P.TextRequest)):  # fmt: skip
            self.exp_cmdsn = pdu.cmdsn + 1
            if self.t.mcs:
                self.t.mcs_received(self, pdu)
        if isinstance(pdu, P.NopOut):
            if pdu.itt != RSVD:
                self.send(P.NopIn(itt=pdu.itt, ttt=RSVD, data=pdu.data, **self.sn()))
        elif isinstance(pdu, P.ScsiCommand):
            self.command(pdu)
        elif isinstance(pdu, P.DataOut):
            self.data_out(pdu)
        elif isinstance(pdu, P.TaskMgmtRequest):
            self.t.note(f"tmf {pdu.function} ref_itt={pdu.ref_itt:#x}")
            self.writes.pop(pdu.ref_itt, None)
            if self.t.mcs:
                self.t.mcs_finished(self, pdu.ref_itt)
            if not self.t.hook("tmf", self, pdu):
                self.send(P.TaskMgmtResponse(itt=pdu.itt, response=0, **self.sn()))
        elif isinstance(pdu, P.LogoutRequest):
            self.t.note(f"logout {self.index} reason={pdu.reason}")
            self.send(P.LogoutResponse(itt=pdu.itt, response=0, **self.sn()))
            time.sleep(0.1)
            raise Closed
        elif isinstance(pdu, P.TextRequest):
            self.send(P.TextResponse(itt=pdu.itt, final=True, ttt=RSVD, **self.sn()))

    def command(self, cmd: P.ScsiCommand) -> None:
        op = cmd.cdb[0]
        lba, blocks = rw_range(cmd.cdb)
        if lba is not None:
            if blocks * SECTOR != cmd.expected_data_length or lba + blocks > DISK_SECTORS:
                self.respond(cmd, CHECK_CONDITION, sense=sense_invalid(0x21))
                return
            kind = "read" if op in (0x28, 0x88) else "write"
            if lba <= TRIGGER_LBA < lba + blocks and self.t.hook(kind, self, cmd):
                return
            if kind == "read":
                self.read_reply(cmd, bytes(self.t.disk[lba * SECTOR : (lba + blocks) * SECTOR]))
            else:
                self.write_start(cmd, lba)
            return
        if self.t.hook("scan", self, cmd):
            return
        data = self.t.scsi_data(cmd.cdb)
        if data is None:
            self.respond(cmd, CHECK_CONDITION, sense=sense_invalid())
        else:
            self.read_reply(cmd, data[: cmd.expected_data_length])

    def respond(self, cmd: P.ScsiCommand, status: int, sense: bytes = b"", **kw: object) -> None:
        data = struct.pack(">H", len(sense)) + sense if sense else b""
        self.finished(cmd.itt)
        self.send(P.ScsiResponse(itt=cmd.itt, status=status, data=data, **kw, **self.sn()))  # type: ignore[arg-type]

    def finished(self, itt: int) -> None:
        """`itt`'s status goes out next (called first: in the MC/S cases the window it
        announces may move with it)."""
        self.done_itts = [*self.done_itts, itt][-16:]
        if self.t.mcs:
            self.t.mcs_finished(self, itt)

    def read_reply(self, cmd: P.ScsiCommand, data: bytes, seg: int = SEG) -> None:
        """Data-In PDUs of `seg` bytes, the status in the last one (GOOD, underflow as due)."""
        want = cmd.expected_data_length
        data = data[:want]
        if not data:
            kw = {"underflow": True, "residual_count": want} if want else {}
            self.respond(cmd, GOOD, **kw)
            return
        offsets = list(range(0, len(data), seg))
        for n, off in enumerate(offsets):
            last = n == len(offsets) - 1
            chunk = data[off : off + seg]
            kw: dict[str, object] = {}
            if last:
                self.finished(cmd.itt)
                kw = {"final": True, "status_present": True, "status": GOOD, **self.sn()}
                if len(data) < want:
                    kw.update(underflow=True, residual_count=want - len(data))
            else:
                kw = {"final": (off + seg) % MAX_BURST == 0, **self.sn(advance=False)}
            self.send(P.DataIn(itt=cmd.itt, lun=cmd.lun, datasn=n, buffer_offset=off,
                               data=chunk, **kw))  # type: ignore[arg-type]  # fmt: skip

    def write_start(self, cmd: P.ScsiCommand, lba: int) -> None:
        w = WriteTask(cmd.itt, lba, cmd.expected_data_length,
                      bytearray(cmd.expected_data_length), cmd.lun)  # fmt: skip
        self.writes[cmd.itt] = w
        if not w.length:
            self.write_done(w)
            return
        while len(w.open_r2t) < self.max_r2t and w.next_off < w.length:
            self.r2t(w)

    def r2t(self, w: WriteTask, **override: int) -> None:
        n = min(self.max_burst, w.length - w.next_off)
        ttt = self.next_ttt
        self.next_ttt += 1
        w.open_r2t[ttt] = [w.next_off, n]
        fields = {"itt": w.itt, "ttt": ttt, "r2tsn": w.r2tsn, "buffer_offset": w.next_off,
                  "desired_data_length": n, **self.sn(advance=False)}  # fmt: skip
        fields.update(override)
        self.send(P.R2T(lun=w.lun, **fields))
        w.r2tsn += 1
        w.next_off += n

    def data_out(self, d: P.DataOut) -> None:
        w = self.writes.get(d.itt)
        if w is None:
            return
        end = d.buffer_offset + len(d.data)
        if end > w.length:
            self.t.note(f"data-out beyond the write: {d.buffer_offset}+{len(d.data)}")
            return
        w.buf[d.buffer_offset : end] = d.data
        w.got += len(d.data)
        r = w.open_r2t.get(d.ttt)
        if r is not None:
            r[1] -= len(d.data)
            if r[1] <= 0:
                del w.open_r2t[d.ttt]
                if w.next_off < w.length:
                    self.r2t(w)
        if not w.open_r2t and w.next_off >= w.length and w.got >= w.length:
            self.write_done(w)

    def write_done(self, w: WriteTask) -> None:
        self.writes.pop(w.itt, None)
        if self.t.hook("write_status", self, w):
            return
        self.t.disk[w.lba * SECTOR : w.lba * SECTOR + w.length] = w.buf
        self.finished(w.itt)
        self.send(P.ScsiResponse(itt=w.itt, status=GOOD, **self.sn()))


def rw_range(cdb: bytes) -> tuple[int | None, int]:
    op = cdb[0]
    if op in (0x28, 0x2A):
        return struct.unpack_from(">I", cdb, 2)[0], struct.unpack_from(">H", cdb, 7)[0]
    if op in (0x88, 0x8A):
        return struct.unpack_from(">Q", cdb, 2)[0], struct.unpack_from(">I", cdb, 10)[0]
    return None, 0


# ------------------------------------------------------------------------------------- target

Hook = Callable[[Conn, object], bool]


class Target:
    """Listens on 127.0.0.1:`port`; one thread per connection."""

    def __init__(self, case: Case | None = None, port: int = 0,
                 fuzz: Fuzzer | None = None, logfile: Path | None = None) -> None:  # fmt: skip
        self.case = case
        self.fuzz = fuzz
        self.fired = 0
        self.syncs = 0  # SYNCHRONIZE CACHE commands served
        self.lines: list[str] = []
        self.logfile = logfile
        self.lock = threading.Lock()
        self.disk = bytearray(b"".join(pattern(lba, 256) for lba in range(0, DISK_SECTORS, 256)))
        self._tsih = 0
        self.conns: list[Conn] = []
        self.session_values = (1, 262144)  # MaxOutstandingR2T, MaxBurstLength of the session
        # the MC/S cases: the session's CmdSN window, shared by its connections
        self.mcs = bool(case and case.conns > 1 and case.trigger != "login2")
        self.s_exp: int | None = None  # ExpCmdSN: every CmdSN before it has arrived
        self.s_max = 0  # the highest MaxCmdSN announced on any connection
        self.s_ahead: set[int] = set()  # CmdSNs received beyond a hole
        self.s_hist: list[tuple[int, int]] = []  # (ExpCmdSN, MaxCmdSN) as announced, newest last
        self.s_open: dict[tuple[int, int], int] = {}  # (connection, ITT) -> CmdSN, not answered
        self.cmds_per_conn: dict[int, int] = {}
        self.violations: list[str] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def note(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)
            if self.logfile:
                with self.logfile.open("a") as f:
                    f.write(line + "\n")

    def new_tsih(self) -> int:
        with self.lock:
            self._tsih += 1
            return self._tsih

    # -- the MC/S cases: one CmdSN window for the session ---------------------------------

    def mcs_window(self, start: int | None = None) -> tuple[int, int]:
        """(ExpCmdSN, MaxCmdSN) to announce now; `start`: the leading login's CmdSN."""
        assert self.case is not None
        with self.lock:
            if start is not None or self.s_exp is None:  # a new session (or reinstatement)
                self.s_exp = start if start is not None else 0
                self.s_ahead.clear()
                self.s_open.clear()
                self.s_hist = []
            exp = self.s_exp
            # `window` commands from the oldest one not answered yet: the initiator cannot
            # know of a larger MaxCmdSN before that command's answer has been sent
            oldest = max(self.s_open.values(), key=lambda sn: exp - sn & RSVD, default=exp)
            mx = oldest + self.case.window - 1 & RSVD
            if not self.s_hist or serial_gt(mx, self.s_max):
                self.s_max = mx
            self.s_hist = [*self.s_hist[-7:], (exp, mx)]
            return exp, mx

    def mcs_stale(self) -> tuple[int, int] | None:
        """A window announced four updates ago, if it is older than the current one."""
        with self.lock:
            if len(self.s_hist) < 5 or self.s_hist[-5][0] == self.s_hist[-1][0]:
                return None
            return self.s_hist[-5]

    def mcs_received(self, c: Conn, pdu: P.Pdu) -> None:
        """Account a non-immediate PDU's CmdSN against the session's window."""
        sn = pdu.cmdsn  # type: ignore[attr-defined]
        with self.lock:
            if isinstance(pdu, P.ScsiCommand):
                self.cmds_per_conn[c.index] = self.cmds_per_conn.get(c.index, 0) + 1
                self.s_open[c.index, pdu.itt] = sn
            exp = self.s_exp if self.s_exp is not None else sn
            if serial_gt(sn, self.s_max):
                self.violations.append(f"CmdSN {sn} on connection {c.index} beyond MaxCmdSN "
                                       f"{self.s_max}")  # fmt: skip
            if serial_gt(exp, sn) or sn in self.s_ahead:
                self.violations.append(f"CmdSN {sn} on connection {c.index} used twice")
                return
            self.s_ahead.add(sn)
            while exp in self.s_ahead:
                self.s_ahead.discard(exp)
                exp = exp + 1 & RSVD
            self.s_exp = exp

    def mcs_finished(self, c: Conn, itt: int) -> None:
        """The command `itt` of connection `c` is answered (or aborted)."""
        with self.lock:
            self.s_open.pop((c.index, itt), None)

    def mcs_problems(self) -> list[str]:
        """The violations seen, and CmdSNs received beyond one that never came."""
        with self.lock:
            out = list(self.violations)
            if self.s_ahead:
                out.append(f"CmdSN {self.s_exp} never came; received after it: "
                           f"{sorted(self.s_ahead)[:8]}")  # fmt: skip
            return out

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        index = 0
        while not self._stop.is_set():
            try:
                s, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.case and self.case.rcvbuf and index == 0:  # the misbehaving one only
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.case.rcvbuf)
            c = Conn(self, s, index)
            index += 1
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c: Conn) -> None:
        try:
            c.serve()
        except Exception as e:  # the initiator gave up on us: fine
            self.note(f"conn {c.index}: {type(e).__name__}: {e}")
        finally:
            if not getattr(c, "keep_open", False):
                with contextlib.suppress(OSError):
                    c.sock.close()

    def on_login(self, c: Conn) -> None:
        if self.case and self.case.trigger == "login" and self.should_fire():
            self.case.action(c, None)

    def should_fire(self) -> bool:
        assert self.case is not None
        with self.lock:
            if self.fired and not self.case.persistent:
                return False
            self.fired += 1
        self.note(f"fired {self.case.name} #{self.fired}")
        return True

    def hook(self, where: str, c: Conn, obj: object) -> bool:
        """Run the case's action if it triggers here; True if it handled `obj` itself."""
        case = self.case
        if case is None or case.trigger != where:
            return False
        if where == "scan" and not case.matches_scan(obj):
            return False
        if not self.should_fire():
            return False
        return case.action(c, obj)

    def scsi_data(self, cdb: bytes) -> bytes | None:
        op = cdb[0]
        if op in (0x35, 0x91):  # SYNCHRONIZE CACHE
            self.syncs += 1
            return b""
        if op == 0x00:  # TEST UNIT READY
            return b""
        if op == 0x12:
            if cdb[1] & 1:
                return vpd(cdb[2])
            return bytes([0, 0, 6, 2, 31, 0, 0, 0x02]) + b"PYISCSI HOSTILE TARGET  0001"
        if op == 0xA0:
            return struct.pack(">II", 8, 0) + bytes(8)
        if op == 0x25:
            return struct.pack(">II", DISK_SECTORS - 1, SECTOR)
        if op == 0x9E and cdb[1] & 0x1F == 0x10:
            return struct.pack(">QI", DISK_SECTORS - 1, SECTOR) + bytes(20)
        if op in (0x1A, 0x5A):
            page = bytes([0x08, 18, 0x04]) + bytes(17)  # caching: WCE off, read cache on
            want = cdb[2] & 0x3F
            body = page if want in (0x08, 0x3F) else b""
            if op == 0x1A:
                return bytes([3 + len(body), 0, 0, 0]) + body
            return struct.pack(">HBBHH", 6 + len(body), 0, 0, 0, 0) + body
        return None

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.sock.close()


def vpd(page: int) -> bytes | None:
    if page == 0x00:
        return bytes([0, 0, 0, 3, 0x00, 0x80, 0x83])
    if page == 0x80:
        return bytes([0, 0x80, 0, 8]) + b"HOSTILE1"
    if page == 0x83:
        desc = bytes([0x02, 0x01, 0, 16]) + b"PYISCSI HOSTILE1"  # T10 vendor id, ASCII
        return bytes([0, 0x83, 0, len(desc)]) + desc
    return None


# ------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One misbehaviour: where it triggers (`read`, `write`, `write_status`, `scan`, `login`,
    `tmf`, `login2`: the login of a further connection of a session the target lets have two;
    `mcs`: every status PDU of a session with two connections), what it does, and what a
    correct initiator must make of it.

    `io`: the test's I/O ("read": 64 KiB at TRIGGER_LBA; "write": 64 KiB written there, then
    read back; "mcs": 8 threads at once, each writing 64 KiB blocks and reading them back);
    `recover`: the in-kernel initiator recovers from it, so ours must too (the I/O completes
    with the right data, replacement_timeout 5); `persistent`: misbehave every time,
    not only once; `digests`: log in with header and data digests on."""

    name: str
    trigger: str
    action: Hook
    io: str = "read"
    recover: bool = False
    persistent: bool = False
    digests: bool = False
    scan_opcodes: tuple[int, ...] = ()
    max_burst: int = MAX_BURST  # MaxBurstLength the target answers
    rcvbuf: int = 0  # SO_RCVBUF of the target's first socket (0: the default)
    kills_inkernel: bool = False  # the in-kernel initiator oopses: left out of its run
    window: int = WINDOW  # commands the CmdSN window lets through (MaxCmdSN - ExpCmdSN + 1)
    conns: int = 1  # the MaxConnections the target answers (the initiator asks for this many)
    doc: str = ""

    def matches_scan(self, obj: object) -> bool:
        return isinstance(obj, P.ScsiCommand) and obj.cdb[0] in self.scan_opcodes


def _rd(c: Conn, cmd: P.ScsiCommand) -> bytes:
    lba, blocks = rw_range(cmd.cdb)
    assert lba is not None
    return bytes(c.t.disk[lba * SECTOR : (lba + blocks) * SECTOR])


def _datain(c: Conn, cmd: P.ScsiCommand, off: int, data: bytes, datasn: int,
            status: bool = False, **kw: object) -> None:  # fmt: skip
    f: dict[str, object] = {"itt": cmd.itt, "lun": cmd.lun, "datasn": datasn,
                            "buffer_offset": off, "data": data}  # fmt: skip
    if status:
        f.update(final=True, status_present=True, status=GOOD, **c.sn())
    else:
        f.update(c.sn(advance=False))
    f.update(kw)
    c.send(P.DataIn(**f))  # type: ignore[arg-type]


def _segments(c: Conn, cmd: P.ScsiCommand, plan: list[tuple[int, int]], status_kw: object = None,
              filler: bytes | None = None) -> None:  # fmt: skip
    """Data-In PDUs for (offset, length) pairs in order, the status in the last one."""
    data = _rd(c, cmd)
    for n, (off, ln) in enumerate(plan):
        chunk = filler * ln if filler else data[off : off + ln]
        last = n == len(plan) - 1
        _datain(c, cmd, off, chunk.ljust(ln, b"\xa5"), n, status=last,
                **(status_kw if last and isinstance(status_kw, dict) else {}))  # fmt: skip
    c.finished(cmd.itt)


def a_datain_overlong(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    _segments(c, cmd, [(0, IO_BYTES + 4096)])
    return True


def a_datain_beyond(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    _segments(c, cmd, [(0, 16384), (16384, 16384), (IO_BYTES - 4096, 8192)])
    return True


def a_datain_skip(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    _segments(c, cmd, [(0, 16384), (32768, 16384), (49152, 16384)])
    return True


def a_datain_overlap(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    _segments(c, cmd, [(0, 16384), (8192, 16384), (24576, 40960)])
    return True


def a_datain_unknown_itt(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    c.send(P.DataIn(itt=0x7ABC0123, datasn=0, buffer_offset=0, data=b"\xee" * 4096,
                    **c.sn(advance=False)))  # fmt: skip
    return False  # then the real answer


def a_datain_write_itt(c: Conn, w: object) -> bool:
    assert isinstance(w, P.ScsiCommand)
    c.send(P.DataIn(itt=w.itt, datasn=0, buffer_offset=0, data=b"\xee" * 4096,
                    **c.sn(advance=False)))  # fmt: skip
    return False


def a_datain_finished_itt(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    c.read_reply(cmd, _rd(c, cmd))
    for itt in c.done_itts[-4:]:
        c.send(P.DataIn(itt=itt, datasn=0, buffer_offset=0, data=b"\xee" * 4096,
                        final=True, status_present=True, **c.sn()))  # fmt: skip
    return True


def a_datain_status_early(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    _segments(c, cmd, [(0, 16384)])
    return True


def a_datain_underflow_huge(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    _segments(c, cmd, [(0, 32768), (32768, 32768)],
              {"underflow": True, "residual_count": 0x7FFFFFFF})  # fmt: skip
    return True


def a_datain_overflow_huge(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    _segments(c, cmd, [(0, 32768), (32768, 32768)], {"overflow": True, "residual_count": RSVD})
    return True


def a_datain_underflow_lie(c: Conn, cmd: object) -> bool:
    """All 64 KiB sent, but the status claims only half was."""
    assert isinstance(cmd, P.ScsiCommand)
    _segments(c, cmd, [(0, 32768), (32768, 32768)], {"underflow": True, "residual_count": 32768})
    return True


def a_datain_over_mrdsl(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    ln = c.initiator_mrdsl + 4096
    data = _rd(c, cmd) * (ln // IO_BYTES + 1)
    _datain(c, cmd, 0, data[:ln], 0)
    c.finished(cmd.itt)
    return True


def a_datain_datasn_jump(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    data = _rd(c, cmd)
    _datain(c, cmd, 0, data[:32768], 0)
    _datain(c, cmd, 32768, data[32768:], 5, status=True)
    return True


def a_datain_garbage_ahs(c: Conn, cmd: object) -> bool:
    """A Data-In with TotalAHSLength 8 words of garbage, otherwise right."""
    assert isinstance(cmd, P.ScsiCommand)
    data = _rd(c, cmd)
    pdu = P.DataIn(itt=cmd.itt, lun=cmd.lun, datasn=0, buffer_offset=0, data=data,
                   final=True, status_present=True, **c.sn())  # fmt: skip
    c.sendraw(c.raw_pdu(pdu.encode_bhs(), data, ahs=bytes(range(0xC0, 0xE0))))
    return True


def _r2t_case(**override: int) -> Hook:
    def act(c: Conn, cmd: object) -> bool:
        assert isinstance(cmd, P.ScsiCommand)
        lba, _ = rw_range(cmd.cdb)
        w = WriteTask(cmd.itt, lba or 0, cmd.expected_data_length,
                      bytearray(cmd.expected_data_length), cmd.lun)  # fmt: skip
        c.writes[cmd.itt] = w
        c.r2t(w, **override)
        return True

    return act


def a_r2t_for_read(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    c.send(P.R2T(itt=cmd.itt, ttt=0x55, r2tsn=0, buffer_offset=0, desired_data_length=4096,
                 **c.sn(advance=False)))  # fmt: skip
    return False


def a_r2t_unknown_itt(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    c.send(P.R2T(itt=0x7ABC0123, ttt=0x55, r2tsn=0, buffer_offset=0, desired_data_length=4096,
                 **c.sn(advance=False)))  # fmt: skip
    return False


def a_r2t_too_many(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    lba, _ = rw_range(cmd.cdb)
    w = WriteTask(cmd.itt, lba or 0, cmd.expected_data_length,
                  bytearray(cmd.expected_data_length), cmd.lun)  # fmt: skip
    c.writes[cmd.itt] = w
    while w.next_off < w.length:  # all four at once: MaxOutstandingR2T is 1 or 2
        c.r2t(w)
    return True


def a_rsp_sense_overlong(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    data = struct.pack(">H", 200) + sense_invalid()
    c.send(P.ScsiResponse(itt=cmd.itt, status=CHECK_CONDITION, data=data, **c.sn()))
    c.finished(cmd.itt)
    return True


def a_rsp_unknown_itt(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    c.send(P.ScsiResponse(itt=0x7ABC0123, status=GOOD, **c.sn()))
    return False


def a_rsp_twice(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    c.read_reply(cmd, _rd(c, cmd))
    c.send(P.ScsiResponse(itt=cmd.itt, status=CHECK_CONDITION,
                          data=struct.pack(">H", 18) + sense_invalid(), **c.sn()))  # fmt: skip
    return True


def a_rsp_bidi_flags(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    data = _rd(c, cmd)
    for n, off in enumerate(range(0, IO_BYTES, SEG)):
        _datain(c, cmd, off, data[off : off + SEG], n)
    c.send(P.ScsiResponse(itt=cmd.itt, status=GOOD, bidi_overflow=True, bidi_underflow=True,
                          bidi_residual_count=RSVD, **c.sn()))  # fmt: skip
    c.finished(cmd.itt)
    return True


def a_rsp_missing_data(c: Conn, cmd: object) -> bool:
    """Half the data, then a separate SCSI Response: GOOD, no residual."""
    assert isinstance(cmd, P.ScsiCommand)
    data = _rd(c, cmd)
    _datain(c, cmd, 0, data[:32768], 0)
    c.send(P.ScsiResponse(itt=cmd.itt, status=GOOD, exp_datasn=1, **c.sn()))
    c.finished(cmd.itt)
    return True


def a_rsp_underflow_huge(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    c.send(P.ScsiResponse(itt=cmd.itt, status=GOOD, underflow=True, residual_count=RSVD,
                          **c.sn()))  # fmt: skip
    c.finished(cmd.itt)
    return True


def a_write_rsp_early(c: Conn, cmd: object) -> bool:
    """GOOD status for a WRITE before any of its data was asked for."""
    assert isinstance(cmd, P.ScsiCommand)
    c.send(P.ScsiResponse(itt=cmd.itt, status=GOOD, **c.sn()))
    c.finished(cmd.itt)
    return True


def a_unknown_opcode(c: Conn, cmd: object) -> bool:
    bhs = bytearray(48)
    bhs[0] = 0x3D
    bhs[1] = 0x80
    c.sendraw(c.raw_pdu(bhs, b"\x00" * 100))
    return False


def a_reject_bogus(c: Conn, cmd: object) -> bool:
    """A Reject whose data segment is a SCSI Command header with a made-up ITT, one that is
    too short, then one naming the real command (the task must fail, nothing else)."""
    assert isinstance(cmd, P.ScsiCommand)
    bogus = bytearray(48)
    bogus[0] = 0x01
    bogus[16:20] = b"\x7a\xbc\x01\x23"
    c.send(P.Reject(reason=0x09, data=bytes(bogus), **c.sn()))
    c.send(P.Reject(reason=0x04, data=b"\x01\x02\x03", **c.sn()))
    c.send(P.Reject(reason=0x09, data=cmd.encode_bhs(), **c.sn()))
    return True


def a_nopin_huge(c: Conn, cmd: object) -> bool:
    bhs = P.NopIn(itt=RSVD, ttt=0x1234, **c.sn(advance=False)).encode_bhs()
    bhs[5:8] = (0xFFFFFF).to_bytes(3, "big")
    c.sendraw(bytes(bhs) + (P.digest_bytes(bytes(bhs)) if c.hd else b"") + bytes(65536))
    return False


def a_nopin_flood(c: Conn, cmd: object) -> bool:
    buf = b"".join(P.NopIn(itt=RSVD, ttt=0x2000 + i, **c.sn(advance=False)).encode(c.hd, c.dd)
                   for i in range(5000))  # fmt: skip
    c.sendraw(buf)
    return False


def a_async_unknown(c: Conn, cmd: object) -> bool:
    c.send(P.AsyncMessage(async_event=0x7F, parameter1=0xFFFF, parameter2=0xFFFF,
                          parameter3=0xFFFF, data=b"\xff" * 300, **c.sn()))  # fmt: skip
    c.send(P.AsyncMessage(async_event=0xFF, async_vcode=0xEE, **c.sn()))
    return False


def a_async_absurd_drop(c: Conn, cmd: object) -> bool:
    """ "Dropping the connection" with Time2Wait and Time2Retain of 65535 s, then the drop."""
    c.send(P.AsyncMessage(async_event=2, parameter1=0, parameter2=0xFFFF, parameter3=0xFFFF,
                          **c.sn()))  # fmt: skip
    time.sleep(0.2)
    c.sock.shutdown(socket.SHUT_RDWR)
    raise Closed


def a_async_absurd_logout(c: Conn, cmd: object) -> bool:
    """ "Logout requested within 65535 s": the initiator may take its time, nothing breaks."""
    c.send(P.AsyncMessage(async_event=1, parameter3=0xFFFF, **c.sn()))
    return False


def a_async_scsi_sense_garbage(c: Conn, cmd: object) -> bool:
    c.send(P.AsyncMessage(async_event=0, data=struct.pack(">H", 4000) + b"\x70" * 20, **c.sn()))
    return False


def a_cmdsn_chaos(c: Conn, cmd: object) -> bool:
    """Nonsense ExpCmdSN/MaxCmdSN/StatSN in a NOP-In ping and in the read's PDUs."""
    assert isinstance(cmd, P.ScsiCommand)
    r = random.Random(7)
    data = _rd(c, cmd)
    for n, off in enumerate(range(0, IO_BYTES, SEG)):
        last = off + SEG >= IO_BYTES
        kw: dict[str, object] = {"statsn": r.getrandbits(32), "exp_cmdsn": r.getrandbits(32),
                                 "max_cmdsn": r.getrandbits(32)}  # fmt: skip
        if last:
            kw.update(final=True, status_present=True, status=GOOD)
        c.send(P.DataIn(itt=cmd.itt, lun=cmd.lun, datasn=n, buffer_offset=off,
                        data=data[off : off + SEG], **kw))  # type: ignore[arg-type]  # fmt: skip
    c.finished(cmd.itt)
    return True


def a_window_closed(c: Conn, cmd: object) -> bool:
    """With a window of one command: the read is answered, and from then on MaxCmdSN =
    ExpCmdSN - 1 in everything the target sends, for good (NOP-Out pings still answered). The
    test's second read can never be sent."""
    assert isinstance(cmd, P.ScsiCommand)
    c.window_closed = True
    c.read_reply(cmd, _rd(c, cmd))
    return True


def a_datain_unsent_itt(c: Conn, cmd: object) -> bool:
    """Answer the read, close the CmdSN window, then answer the commands the initiator could
    not send yet: Data-In with GOOD status and garbage for every ITT the next command can have
    (the generation count + 1, each of the 128 blk-mq tags); then open the window again."""
    assert isinstance(cmd, P.ScsiCommand)
    c.window_closed = True
    c.read_reply(cmd, _rd(c, cmd))

    def spray() -> None:
        time.sleep(1.5)  # the test's next read is queued, waiting for the window
        gen = (cmd.itt >> 16) + 1  # the generation count goes up by one a command
        junk = b"\xee" * IO_BYTES
        mine = cmd.itt & 0xFFFF
        for tag in [mine, *[t for t in range(128) if t != mine]]:  # blk-mq tags: can_queue 128
            c.send(P.DataIn(itt=(gen << 16) | tag, datasn=0, buffer_offset=0, data=junk,
                            final=True, status_present=True, **c.sn()))  # fmt: skip
        time.sleep(0.5)
        c.window_closed = False
        c.send(P.NopIn(itt=RSVD, ttt=RSVD, **c.sn(advance=False)))

    threading.Thread(target=spray, daemon=True).start()
    return True


def a_bad_hdr_digest(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    data = _rd(c, cmd)
    pdu = P.DataIn(itt=cmd.itt, lun=cmd.lun, datasn=0, buffer_offset=0, data=data[:SEG],
                   **c.sn(advance=False))  # fmt: skip
    c.sendraw(c.raw_pdu(pdu.encode_bhs(), data[:SEG], bad_hd=True))
    return True


def a_bad_data_digest(c: Conn, cmd: object) -> bool:
    assert isinstance(cmd, P.ScsiCommand)
    data = _rd(c, cmd)
    pdu = P.DataIn(itt=cmd.itt, lun=cmd.lun, datasn=0, buffer_offset=0, data=data[:SEG],
                   **c.sn(advance=False))  # fmt: skip
    c.sendraw(c.raw_pdu(pdu.encode_bhs(), data[:SEG], bad_dd=True))
    return True


def _cut_mid_segment(rst: bool) -> Hook:
    def act(c: Conn, cmd: object) -> bool:
        assert isinstance(cmd, P.ScsiCommand)
        data = _rd(c, cmd)
        pdu = P.DataIn(itt=cmd.itt, lun=cmd.lun, datasn=0, buffer_offset=0, data=data[:SEG],
                       **c.sn(advance=False))  # fmt: skip
        c.sendraw(c.raw_pdu(pdu.encode_bhs(), data[:SEG])[: 48 + 5000])
        time.sleep(0.1)
        if rst:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.sock.close()
        else:
            c.sock.shutdown(socket.SHUT_RDWR)
        raise Closed

    return act


def a_stop_reading(c: Conn, cmd: object) -> bool:
    """Ask for the whole write, then never read the socket again (it stays open)."""
    assert isinstance(cmd, P.ScsiCommand)
    burst = min(c.max_burst, cmd.expected_data_length // 2)
    for n in range(c.max_r2t):
        c.send(P.R2T(itt=cmd.itt, ttt=0x77 + n, r2tsn=n, buffer_offset=n * burst,
                     desired_data_length=burst, lun=cmd.lun, **c.sn(advance=False)))  # fmt: skip
    c.keep_open = True  # type: ignore[attr-defined]
    time.sleep(3600)
    raise Closed


def a_stop_responding(c: Conn, cmd: object) -> bool:
    """Read everything, answer nothing (pings neither) from the trigger on."""
    c.keep_open = True  # type: ignore[attr-defined]
    c.sock.settimeout(None)
    with contextlib.suppress(OSError):
        while c.sock.recv(65536):
            pass
    raise Closed


def a_unsolicited_logout_rsp(c: Conn, cmd: object) -> bool:
    c.send(P.LogoutResponse(itt=0x7ABC0123, response=0, **c.sn()))
    time.sleep(0.2)
    c.sock.shutdown(socket.SHUT_RDWR)
    raise Closed


def a_tmf_rsp_unknown(c: Conn, cmd: object) -> bool:
    c.send(P.TaskMgmtResponse(itt=0x7ABC0123, response=0, **c.sn()))
    return False


def a_scan_inquiry_overlong(c: Conn, cmd: object) -> bool:
    """INQUIRY answered with more data than the allocation length (the scan's first command)."""
    assert isinstance(cmd, P.ScsiCommand)
    ln = cmd.expected_data_length + 512
    _datain(c, cmd, 0, (b"\x00\x00\x06\x02\x1f" + bytes(ln))[:ln], 0, status=True)
    return True


def a_scan_report_luns_huge(c: Conn, cmd: object) -> bool:
    """REPORT LUNS claiming 0xfffffff8 bytes of LUN list (sent: one entry)."""
    assert isinstance(cmd, P.ScsiCommand)
    data = struct.pack(">II", 0xFFFFFFF8, 0) + bytes(8)
    _datain(c, cmd, 0, data, 0, status=True, underflow=True,
            residual_count=cmd.expected_data_length - len(data))  # fmt: skip
    return True


def a_scan_capacity_zero(c: Conn, cmd: object) -> bool:
    """READ CAPACITY (10 or 16): block size 0 and the largest last LBA."""
    assert isinstance(cmd, P.ScsiCommand)
    if cmd.cdb[0] == 0x25:
        data = struct.pack(">II", RSVD, 0)
    else:
        data = (struct.pack(">QI", (1 << 64) - 1, 0) + bytes(20))[: cmd.expected_data_length]
    _datain(c, cmd, 0, data, 0, status=True)
    return True


def _login2_status(status_class: int, detail: int, data: bytes = b"") -> Hook:
    """A further connection's login answered with a status other than success."""

    def act(c: Conn, req: object) -> bool:
        assert isinstance(req, P.LoginRequest)
        c.io.send(P.LoginResponse(itt=req.itt, isid=req.isid, csg=req.csg, tsih=req.tsih,
                                  statsn=c.statsn, exp_cmdsn=req.cmdsn, max_cmdsn=req.cmdsn,
                                  status_class=status_class, status_detail=detail,
                                  data=data))  # fmt: skip
        time.sleep(0.2)
        return True

    return act


def a_login2_other_tsih(c: Conn, req: object) -> bool:
    """A further connection's login succeeds with a TSIH that is not the session's."""
    c.rsp_tsih_delta = 7
    return False


def a_login2_other_isid(c: Conn, req: object) -> bool:
    """A further connection's login answers with another ISID."""
    c.rsp_isid_flip = True
    return False


def a_mcs_datain_other_conn(c: Conn, cmd: object) -> bool:
    """A read's Data-In, with GOOD status and the wrong bytes, sent on the session's other
    connection first (RFC 7143 4.2.1: a task's PDUs stay on its connection); then the right
    answer on the read's own connection."""
    assert isinstance(cmd, P.ScsiCommand)
    other = next((o for o in c.t.conns if o is not c and o.tsih == c.tsih), None)
    if other is not None:
        n = cmd.expected_data_length
        other.send(P.DataIn(itt=cmd.itt, lun=cmd.lun, datasn=0, buffer_offset=0,
                            data=b"\xee" * n, final=True, status_present=True, status=GOOD,
                            **other.sn()))  # fmt: skip
        c.t.note(f"Data-In of connection {c.index}'s ITT {cmd.itt:#x} sent on {other.index}")
        time.sleep(0.2)
    return False  # then the real answer


def a_mcs_window(c: Conn, _: object) -> bool:
    """Both connections serve I/O under one window of 2 commands (the check is the point)."""
    return False


def a_mcs_stale(c: Conn, _: object) -> bool:
    """The further connection's PDUs carry the ExpCmdSN/MaxCmdSN of four PDUs before."""
    return c.index > 0


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case("datain_overlong", "read", a_datain_overlong,
             doc="a Data-In segment longer than the command's buffer"),
        Case("datain_beyond", "read", a_datain_beyond,
             doc="offset + length beyond the buffer"),
        Case("datain_skip", "read", a_datain_skip,
             doc="offsets skip 16 KiB, DataSN in order, GOOD status, no residual"),
        Case("datain_overlap", "read", a_datain_overlap, doc="offsets overlap"),
        Case("datain_unknown_itt", "read", a_datain_unknown_itt,
             doc="a Data-In with an ITT never used, then the right answer"),
        Case("datain_write_itt", "write", a_datain_write_itt, io="write",
             doc="a Data-In with a WRITE's ITT"),
        Case("datain_finished_itt", "read", a_datain_finished_itt,
             doc="Data-In with status for tasks already finished"),
        Case("datain_status_early", "read", a_datain_status_early,
             doc="GOOD status (S bit) after 16 of 64 KiB"),
        Case("datain_underflow_huge", "read", a_datain_underflow_huge,
             doc="underflow residual 0x7fffffff on a 64 KiB read"),
        Case("datain_overflow_huge", "read", a_datain_overflow_huge,
             doc="overflow residual 0xffffffff, all data sent"),
        Case("datain_underflow_lie", "read", a_datain_underflow_lie,
             doc="all 64 KiB sent, the status says 32 KiB were not"),
        Case("datain_over_mrdsl", "read", a_datain_over_mrdsl,
             doc="a Data-In segment larger than our MaxRecvDataSegmentLength"),
        Case("datain_datasn_jump", "read", a_datain_datasn_jump, doc="DataSN 0 then 5"),
        Case("datain_garbage_ahs", "read", a_datain_garbage_ahs,
             doc="TotalAHSLength 8 with garbage AHS on the Data-In"),
        Case("r2t_beyond", "write", _r2t_case(buffer_offset=IO_BYTES - 4096,
             desired_data_length=8192), io="write", doc="R2T offset + length beyond the write"),
        Case("r2t_len0", "write", _r2t_case(desired_data_length=0), io="write",
             doc="R2T DesiredDataTransferLength 0"),
        Case("r2t_len_max", "write", _r2t_case(desired_data_length=RSVD), io="write",
             kills_inkernel=True,
             doc="R2T DesiredDataTransferLength 0xffffffff"),
        Case("r2t_for_read", "read", a_r2t_for_read, doc="an R2T for a READ"),
        Case("r2t_unknown_itt", "write", a_r2t_unknown_itt, io="write",
             doc="an R2T with an ITT never used, then the right ones"),
        Case("r2t_r2tsn_jump", "write", _r2t_case(r2tsn=9), io="write", doc="R2TSN 9 first"),
        Case("r2t_reserved_ttt", "write", _r2t_case(ttt=RSVD), io="write",
             doc="R2T with the reserved TTT"),
        Case("r2t_too_many", "write", a_r2t_too_many, io="write",
             doc="4 R2Ts at once, above MaxOutstandingR2T"),
        Case("rsp_sense_overlong", "read", a_rsp_sense_overlong,
             doc="SenseLength 200 in an 20-byte segment"),
        Case("rsp_unknown_itt", "read", a_rsp_unknown_itt,
             doc="a SCSI Response with an ITT never used, then the right answer"),
        Case("rsp_twice", "read", a_rsp_twice, doc="a second (CHECK CONDITION) response"),
        Case("rsp_bidi_flags", "read", a_rsp_bidi_flags,
             doc="bidirectional residual flags on a read"),
        Case("rsp_missing_data", "read", a_rsp_missing_data,
             doc="32 of 64 KiB, then a SCSI Response GOOD without residual"),
        Case("rsp_underflow_huge", "read", a_rsp_underflow_huge,
             doc="no data, SCSI Response underflow 0xffffffff"),
        Case("write_rsp_early", "write", a_write_rsp_early, io="write",
             doc="GOOD for a WRITE before any R2T"),
        Case("unknown_opcode", "read", a_unknown_opcode, recover=True,
             doc="a PDU with opcode 0x3d"),
        Case("reject_bogus", "read", a_reject_bogus,
             doc="Rejects: a made-up header, a 3-byte one, then the read's own"),
        Case("nopin_huge", "read", a_nopin_huge, recover=True,
             doc="a NOP-In ping announcing a 16 MiB data segment"),
        Case("nopin_flood", "read", a_nopin_flood, doc="5000 NOP-In pings at once"),
        Case("async_unknown", "read", a_async_unknown,
             doc="Async Messages with event 0x7f and 0xff"),
        Case("async_absurd_drop", "read", a_async_absurd_drop,
             doc="'dropping the connection', Time2Wait 65535 s, then the drop"),
        Case("async_absurd_logout", "read", a_async_absurd_logout,
             doc="'logout requested within 65535 s'"),
        Case("async_scsi_garbage", "read", a_async_scsi_sense_garbage,
             doc="a SCSI Async Event whose SenseLength is beyond its segment"),
        Case("cmdsn_chaos", "read", a_cmdsn_chaos,
             doc="random StatSN/ExpCmdSN/MaxCmdSN in the read's Data-In"),
        Case("window_closed", "read", a_window_closed, io="read2", window=1,
             doc="a window of 1; after the read MaxCmdSN = ExpCmdSN - 1 for good"),
        Case("datain_unsent_itt", "read", a_datain_unsent_itt, io="read2", window=1,
             doc="Data-In with GOOD status for ITTs of commands still waiting for the window"),
        Case("bad_hdr_digest", "read", a_bad_hdr_digest, digests=True, recover=True,
             doc="a Data-In with a wrong header digest"),
        Case("bad_data_digest", "read", a_bad_data_digest, digests=True, recover=True,
             doc="a Data-In with a wrong data digest"),
        Case("close_mid_segment", "read", _cut_mid_segment(rst=False), recover=True,
             doc="FIN in the middle of a Data-In segment"),
        Case("reset_mid_segment", "read", _cut_mid_segment(rst=True), recover=True,
             doc="RST in the middle of a Data-In segment"),
        Case("stop_reading", "write", a_stop_reading, io="bigwrite", recover=True,
             max_burst=262144, rcvbuf=4096,
             doc="the target asks for 512 KiB of a write, then stops reading"),
        Case("stop_responding", "read", a_stop_responding, recover=True,
             doc="the target answers nothing, pings neither"),
        Case("unsolicited_logout_rsp", "read", a_unsolicited_logout_rsp, recover=True,
             doc="a Logout Response nobody asked for, then the close"),
        Case("tmf_rsp_unknown", "read", a_tmf_rsp_unknown,
             doc="a Task Management Response for no request"),
        Case("scan_inquiry_overlong", "scan", a_scan_inquiry_overlong, io="none",
             scan_opcodes=(0x12,), doc="INQUIRY data longer than the allocation length"),
        Case("scan_report_luns_huge", "scan", a_scan_report_luns_huge, io="none",
             scan_opcodes=(0xA0,), doc="REPORT LUNS list length 0xfffffff8"),
        Case("scan_capacity_zero", "scan", a_scan_capacity_zero, io="none",
             scan_opcodes=(0x25, 0x9E), doc="READ CAPACITY: block size 0, last LBA 0xffffffff"),
        Case("login2_other_tsih", "login2", a_login2_other_tsih, recover=True, conns=2,
             doc="MC/S: a further connection's login answered with another TSIH"),
        Case("login2_other_isid", "login2", a_login2_other_isid, recover=True, conns=2,
             doc="MC/S: a further connection's login answered with another ISID"),
        Case("login2_redirect", "login2",
             _login2_status(1, 1, encode_text([("TargetAddress", "127.0.0.1:1,1")])),
             recover=True, conns=2,
             doc="MC/S: a further connection's login redirected to a dead portal"),
        Case("login2_too_many", "login2", _login2_status(2, 6), recover=True, conns=2,
             doc="MC/S: a further connection refused: too many connections (0x0206)"),
        Case("login2_no_session", "login2", _login2_status(2, 10), recover=True, conns=2,
             doc="MC/S: a further connection refused: session does not exist (0x020a)"),
        Case("mcs_window", "mcs", a_mcs_window, io="mcs", window=2, conns=2,
             doc="MC/S: I/O on two connections, one session window of 2 commands"),
        Case("mcs_window_stale", "mcs", a_mcs_stale, io="mcs", window=2, persistent=True,
             conns=2, doc="MC/S: the second connection announces an old ExpCmdSN/MaxCmdSN"),
        Case("mcs_datain_other_conn", "read", a_mcs_datain_other_conn, io="mcs", conns=2,
             doc="MC/S: a read's Data-In with status and wrong bytes on the other connection"),
    ]
}  # fmt: skip


def main() -> None:
    """hostile_target.py PORT CASE|fuzz:SEED[:RATE] [LOGFILE]: serve until killed."""
    port, what = int(sys.argv[1]), sys.argv[2]
    log = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    if what.startswith("fuzz:"):
        parts = what.split(":")
        fz = Fuzzer(int(parts[1]), float(parts[2]) if len(parts) > 2 else 0.05)
        Target(port=port, fuzz=fz, logfile=log)
    elif what == "none":
        Target(port=port, logfile=log)
    else:
        Target(CASES[what], port=port, logfile=log)
    print(f"serving on 127.0.0.1:{port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()

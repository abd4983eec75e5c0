"""The iscsi_tcp tracepoints in the VM: one session to LIO traced through tracefs from login to
logout, a 4 KiB O_DIRECT read and write in it, every event checked field by field
(tests/vm/e2e/trace.sh does the work in the guest; docs/tracing.md says what the fields are).

The guest script writes markers (trace_marker) between its steps, so each step's events are
the ones between two markers. LIO is set up so that the sequence is exact: ImmediateData=No (the
write goes SCSI Command, R2T, Data-Out, SCSI Response), no NOP-In pings from LIO nor NOP-Out
pings from iscsid (StatSN and CmdSN then advance by one per command, nothing in between).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .harness import VmResult, parse_results, run_in_vm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "vm" / "e2e" / "trace.sh"
EVENTS = ("iscsi_tcp_cmd_done", "iscsi_tcp_conn_state", "iscsi_tcp_pdu_recv", "iscsi_tcp_pdu_send")
# "  dd-123  [001] .....  57.123456: iscsi_tcp_pdu_send: sid=1 cid=0 op=SCSI_CMD ..."
LINE = re.compile(r"(?P<ts>\d+\.\d+): (?P<event>\w+): (?P<body>.*)$")

pytestmark = pytest.mark.vm


@dataclass
class Event:
    ts: float  # seconds, trace_clock mono (CLOCK_MONOTONIC, as latency_ns)
    name: str  # the event without its iscsi_tcp_ prefix: pdu_send, ..., or "mark"
    body: str
    f: dict[str, str] = field(default_factory=dict)

    def num(self, key: str) -> int:
        return int(self.f[key], 0)


def parse_trace(text: str) -> list[Event]:
    events = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.search(line)
        if not m:
            continue
        name, body = m["event"], m["body"]
        if name == "tracing_mark_write":
            events.append(Event(float(m["ts"]), "mark", body.removeprefix("trace-test: ")))
        elif name.startswith("iscsi_tcp_"):
            fields = dict(kv.split("=", 1) for kv in body.split())
            events.append(Event(float(m["ts"]), name.removeprefix("iscsi_tcp_"), body, fields))
    return events


def window(events: list[Event], start: str, end: str, sid: int) -> list[Event]:
    """The events of session `sid` between the markers `start` and `end`."""
    marks = [e.body for e in events if e.name == "mark"]
    assert marks == ["login", "perf", "read", "write", "logout", "end"], marks
    i = next(n for n, e in enumerate(events) if e.name == "mark" and e.body == start)
    j = next(n for n, e in enumerate(events) if e.name == "mark" and e.body == end)
    return [e for e in events[i + 1 : j] if e.name != "mark" and e.num("sid") == sid]


def mark_ts(events: list[Event], name: str) -> float:
    return next(e.ts for e in events if e.name == "mark" and e.body == name)


def expect(ev: Event, name: str, **fields: str | int) -> None:
    """ev is event `name` with exactly these field values (ints compared as numbers)."""
    assert ev.name == name, f"expected {name}, got {ev.name}: {ev.body}"
    for key, want in fields.items():
        got: str | int = ev.num(key) if isinstance(want, int) else ev.f[key]
        assert got == want, f"{name} {key}={ev.f[key]}, expected {want}: {ev.body}"


def only(events: list[Event], name: str, **match: str) -> Event:
    hits = [e for e in events if e.name == name and all(e.f[k] == v for k, v in match.items())]
    assert len(hits) == 1, f"{len(hits)} {name} {match}:\n" + "\n".join(e.body for e in events)
    return hits[0]


def check_latency(done: Event, cmd_sent: Event, marker_ts: float) -> None:
    """latency_ns counts from the block layer's start of the request: after the step's marker
    (written before dd started) and before the SCSI Command PDU went out. Timestamps are
    microseconds; the event's own timestamp is taken just before the latency is computed."""
    latency = done.num("latency_ns")
    assert 0 < latency < 10**10, done.body
    start = done.ts - latency / 1e9
    assert start <= cmd_sent.ts + 2e-6, (start, cmd_sent.ts, done.body)
    assert start >= marker_ts - 5e-3, (start, marker_ts, done.body)


@pytest.fixture(scope="module")
def traced(modules: None) -> tuple[VmResult, dict[str, str], list[Event]]:
    result = run_in_vm(SCRIPT, timeout=300)
    res = parse_results(result.out_dir)
    result.check()
    assert res.get("done") == "ok", result.output[-3000:]
    return result, res, parse_trace((result.out_dir / "trace.txt").read_text())


def test_events_in_tracefs(traced: tuple[VmResult, dict[str, str], list[Event]]) -> None:
    result, res, _events = traced
    assert (result.out_dir / "events.txt").read_text().split() == ["enable", "filter", *EVENTS]
    formats = (result.out_dir / "formats.txt").read_text()
    # TRACE_DEFINE_ENUM: tools that parse the print fmt (perf, trace-cmd) see numbers, not names
    assert "ISCSI_IF_" not in formats and "DMA_" not in formats, formats
    assert res["immediate_data"] == "0" and res["initial_r2t"] == "1", res


def test_login_states(traced: tuple[VmResult, dict[str, str], list[Event]]) -> None:
    _result, res, events = traced
    sid = int(res["sid"])
    # login to the read: the disk's partition scan may still run when iscsiadm returns
    login = window(events, "login", "read", sid)
    # the login itself runs in iscsid: the kernel's first sight of the connection is BIND_CONN
    expect(login[0], "conn_state", cid=0, state="bound", err="none", stop="none")
    expect(login[1], "conn_state", cid=0, state="up", err="none", stop="none")
    assert [e for e in login if e.name == "conn_state"] == login[:2]
    # then the scan: SCSI commands, each answered and completed with DID_OK
    cmds = [e for e in login if e.name == "pdu_send" and e.f["op"] == "SCSI_CMD"]
    dones = [e for e in login if e.name == "cmd_done"]
    assert cmds and len(dones) == len(cmds), "\n".join(e.body for e in login)
    assert {e.f["itt"] for e in cmds} == {e.f["itt"] for e in dones}
    assert all(e.num("result") >> 16 == 0 for e in dones), [e.body for e in dones]


def test_read(traced: tuple[VmResult, dict[str, str], list[Event]]) -> None:
    _result, res, events = traced
    sid = int(res["sid"])
    ev = window(events, "read", "write", sid)
    cmd = only(ev, "pdu_send", op="SCSI_CMD")
    itt = cmd.f["itt"]
    # F, R, task attribute SIMPLE; no immediate data; the whole 4 KiB expected
    expect(cmd, "pdu_send", cid=0, imm=0, flags="0xc1", ttt=0)
    expect(cmd, "pdu_send", datasn=0, offset=0, xferlen=4096, ahslen=0, dlen=0)
    assert [e.name for e in ev if e.f.get("itt") == itt] in (
        ["pdu_send", "pdu_recv", "cmd_done"],  # status in the Data-In (phase collapse)
        ["pdu_send", "pdu_recv", "pdu_recv", "cmd_done"],  # Data-In, then a SCSI Response
    ), "\n".join(e.body for e in ev)
    datain = only(ev, "pdu_recv", op="SCSI_DATA_IN", itt=itt)
    expect(datain, "pdu_recv", cid=0, ttt=0xFFFFFFFF, datasn=0, offset=0, dlen=4096, ahslen=0)
    expect(datain, "pdu_recv", exp_cmdsn=cmd.num("cmdsn") + 1, xferlen=0, residual=0)
    assert datain.num("max_cmdsn") >= datain.num("exp_cmdsn"), datain.body
    if datain.num("flags") & 0x01:  # S: the status is here
        expect(datain, "pdu_recv", flags="0x81", status="0x00", statsn=cmd.num("exp_statsn"))
    else:
        expect(datain, "pdu_recv", flags="0x80", status="0x00", statsn=0)
        rsp = only(ev, "pdu_recv", op="SCSI_CMD_RSP", itt=itt)
        expect(rsp, "pdu_recv", response="0x00", status="0x00", statsn=cmd.num("exp_statsn"))
    done = only(ev, "cmd_done", itt=itt)
    expect(done, "cmd_done", cmdsn=cmd.num("cmdsn"), lun=0, cdb="0x28", dir="read")
    expect(done, "cmd_done", len=4096, resid=0, result=0)
    check_latency(done, cmd, mark_ts(events, "read"))
    assert all(e.f.get("itt") == itt for e in ev), "\n".join(e.body for e in ev)


def test_write(traced: tuple[VmResult, dict[str, str], list[Event]]) -> None:
    _result, res, events = traced
    sid = int(res["sid"])
    read = only(window(events, "read", "write", sid), "pdu_send", op="SCSI_CMD")
    ev = window(events, "write", "logout", sid)
    cmd = only(ev, "pdu_send", op="SCSI_CMD")
    itt = cmd.f["itt"]
    statsn = read.num("exp_statsn") + 1  # the read's status took one StatSN
    # F, W, SIMPLE; ImmediateData=No: no data with the command, the target asks for it
    expect(cmd, "pdu_send", cid=0, imm=0, flags="0xa1", xferlen=4096, dlen=0, ahslen=0)
    expect(cmd, "pdu_send", cmdsn=read.num("cmdsn") + 1, exp_statsn=statsn, ttt=0)
    assert [(e.name, e.f["op"]) if "op" in e.f else (e.name, "") for e in ev] == [
        ("pdu_send", "SCSI_CMD"),
        ("pdu_recv", "R2T"),
        ("pdu_send", "SCSI_DATA_OUT"),
        ("pdu_recv", "SCSI_CMD_RSP"),
        ("cmd_done", ""),
    ], "\n".join(e.body for e in ev)
    r2t, dataout, rsp, done = ev[1:]
    expect(r2t, "pdu_recv", itt=itt, flags="0x80", datasn=0, offset=0, xferlen=4096, dlen=0)
    expect(r2t, "pdu_recv", statsn=statsn, exp_cmdsn=cmd.num("cmdsn") + 1, residual=0)
    assert r2t.num("ttt") != 0xFFFFFFFF, r2t.body
    expect(dataout, "pdu_send", itt=itt, ttt=r2t.f["ttt"], flags="0x80", cmdsn=0)
    expect(dataout, "pdu_send", exp_statsn=statsn, datasn=0, offset=0, dlen=4096, xferlen=0)
    expect(rsp, "pdu_recv", itt=itt, flags="0x80", response="0x00", status="0x00")
    expect(rsp, "pdu_recv", statsn=statsn, exp_cmdsn=cmd.num("cmdsn") + 1, residual=0, dlen=0)
    expect(done, "cmd_done", itt=itt, cmdsn=cmd.num("cmdsn"), lun=0, cdb="0x2a", dir="write")
    expect(done, "cmd_done", len=4096, resid=0, result=0)
    check_latency(done, cmd, mark_ts(events, "write"))


def test_logout_states(traced: tuple[VmResult, dict[str, str], list[Event]]) -> None:
    _result, res, events = traced
    sid = int(res["sid"])
    write = only(window(events, "write", "logout", sid), "pdu_send", op="SCSI_CMD")
    ev = window(events, "logout", "end", sid)
    assert [e.name for e in ev] == ["pdu_send", "pdu_recv", "conn_state"], "\n".join(
        e.body for e in ev
    )
    req, rsp, stopped = ev
    statsn = write.num("exp_statsn") + 1
    # iscsid's Logout Request (immediate, reason 0: close the session, ITT with bit 31 set);
    # the kernel filled CmdSN (not advanced: immediate) and ExpStatSN
    expect(req, "pdu_send", op="LOGOUT", imm=1, flags="0x80", cmdsn=write.num("cmdsn") + 1)
    expect(req, "pdu_send", exp_statsn=statsn, dlen=0)
    assert req.num("itt") & 0x80000000, req.body
    expect(rsp, "pdu_recv", op="LOGOUT_RSP", itt=req.f["itt"], response="0x00", statsn=statsn)
    expect(stopped, "conn_state", cid=0, state="stopped", err="none", stop="term")
    # nothing of the session after its stop, in the whole trace
    after = [e for e in events if e.ts > stopped.ts and e.name != "mark"]
    assert all(e.num("sid") != sid for e in after), [e.body for e in after]


def test_perf_reads_the_events(traced: tuple[VmResult, dict[str, str], list[Event]]) -> None:
    """perf (linux-perf, libtraceevent) parses the formats: symbolic names and all."""
    result, res, _events = traced
    assert res.get("perf") == "ok", res.get("perf")
    text = (result.out_dir / "perf-script.txt").read_text()
    assert re.search(
        r"iscsi_tcp:iscsi_tcp_pdu_send: sid=\d+ cid=0 op=SCSI_CMD .*xferlen=4096", text
    )
    assert re.search(r"iscsi_tcp:iscsi_tcp_pdu_recv: sid=\d+ cid=0 op=SCSI_DATA_IN ", text)
    assert re.search(r"iscsi_tcp:iscsi_tcp_cmd_done: .* cdb=0x28 dir=read len=4096 ", text), text


def test_hist_trigger(traced: tuple[VmResult, dict[str, str], list[Event]]) -> None:
    """The hist trigger of docs/tracing.md: commands by CDB opcode with their summed latency."""
    result, _res, events = traced
    hist = (result.out_dir / "hist.txt").read_text()
    dones = [e for e in events if e.name == "cmd_done"]
    for cdb in ("0x28", "0x2a"):
        mine = [e for e in dones if e.f["cdb"] == cdb]
        m = re.search(rf"^{{ cdb: {cdb[2:]} }} hitcount: +(\d+) +latency_ns: +(\d+)$", hist, re.M)
        assert m, hist
        assert int(m[1]) == len(mine), (hist, [e.body for e in mine])
        assert int(m[2]) == sum(e.num("latency_ns") for e in mine), hist

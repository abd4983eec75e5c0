#!/bin/bash
# Guest side of tests/vm/test_vm_trace.py: the iscsi_tcp tracepoints through tracefs and perf.
# Run by hand: make -C kernel && tests/vm/run-vm tests/vm/e2e/trace.sh [KO_DIR]
# Leaves in $VM_OUT: trace.txt (tracefs, every iscsi_tcp event of one session from login to
# logout, with markers between the steps), perf-script.txt (perf record + perf script of one
# read), hist.txt (a hist trigger on cmd_done), formats.txt (the events' tracefs formats),
# iscsid.log (iscsid -d 1) and results.txt.
#
# 1. LIO ramdisk (ImmediateData=No: a write goes SCSI Command, R2T, Data-Out, SCSI Response;
#    no NOP-In pings from LIO, none from iscsid: the sequence numbers follow each other)
# 2. tracefs (mounted if needed), trace_clock mono (the clock of latency_ns), iscsi_tcp events on
# 3. login (marker "login"), perf record of one 4 KiB read (marker "perf"), one 4 KiB O_DIRECT
#    read (marker "read"), one 4 KiB O_DIRECT write (marker "write"), logout (marker "logout"),
#    marker "end"; the host side checks the events between the markers field by field
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

IQN=iqn.2003-01.org.linux-iscsi.vm:trace
INITIATOR=iqn.2026-11.test:pyiscsi-trace
PORTAL=127.0.0.1:3260
ADM=$VM_WORK/.venv/bin/iscsiadm
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
KO=${1:-kernel}
T=/sys/kernel/tracing
: >"$RES"
. tests/vm/e2e/common.sh

mark() { echo "trace-test: $1" >$T/trace_marker || fail "trace_marker"; }

step "setup"
ip link set lo up
pyiscsi_kmod_up $KO
lio_ramdisk $IQN 16 ImmediateData=No InitialR2T=Yes
# LIO pings an idle initiator (NOP-In) after nopin_timeout seconds, an attribute of the node
# ACL: an explicit ACL for our initiator, with the pings off
acl=/sys/kernel/config/target/iscsi/$IQN/tpgt_1/acls/$INITIATOR
mkdir -p "$acl/lun_0" && ln -s /sys/kernel/config/target/iscsi/$IQN/tpgt_1/lun/lun_0 "$acl/lun_0/lun_0" \
	&& echo 0 >"$acl/attrib/nopin_timeout" || fail "cannot turn LIO's NOP-In pings off"
iscsid_state $INITIATOR
start_iscsid
$ADM -m discovery -t st -p $PORTAL >/dev/null || fail "discovery (exit $?)"
$ADM -m node -T $IQN -p $PORTAL -o update -n 'node.conn[0].timeo.noop_out_interval' -v 0 \
	|| fail "noop_out_interval 0 (exit $?)"
head -c 4096 /dev/urandom >/tmp/block.bin

step "tracefs"
[ -d $T/events ] || mount -t tracefs nodev $T || fail "cannot mount tracefs on $T"
[ -d $T/events/iscsi_tcp ] || fail "no $T/events/iscsi_tcp: $(ls $T/events | tr '\n' ' ')"
ls $T/events/iscsi_tcp >"$VM_OUT/events.txt"
for e in $T/events/iscsi_tcp/iscsi_tcp_*/; do
	echo "== ${e%/}" && cat "$e/format"
done >"$VM_OUT/formats.txt"
echo 0 >$T/tracing_on
echo mono >$T/trace_clock || fail "trace_clock mono"
echo 4096 >$T/buffer_size_kb
echo >$T/trace
echo 1 >$T/events/iscsi_tcp/enable || fail "cannot enable the iscsi_tcp events"
# a hist trigger (docs/tracing.md): commands and their summed latency by CDB opcode
HIST='hist:keys=cdb.hex:vals=hitcount,latency_ns:sort=cdb'
echo "$HIST" >$T/events/iscsi_tcp/iscsi_tcp_cmd_done/trigger || fail "hist trigger"
echo 1 >$T/tracing_on

step "login"
mark login
$ADM -m node -T $IQN -p $PORTAL --login >/tmp/login.out 2>&1 \
	|| { rc=$?; cat /tmp/login.out; fail "login (exit $rc)"; }
disk=$(iscsi_disk $IQN)
sid=$(for s in /sys/class/iscsi_session/session*; do
	[ "$(cat "$s/targetname")" = $IQN ] && echo "${s##*session}"; done)
result sid "$sid"
result disk "$disk"
for p in immediate_data initial_r2t; do
	result "$p" "$(cat /sys/class/iscsi_session/session$sid/$p)"
done

step "perf"
mark perf
# -B -N --no-bpf-event --synth=no: no build-ids, no BPF or task synthesis (each read over 9p:
# 10 s instead of 30-60 under TCG; perf script then names tasks by pid only)
if perf record -q -B -N --no-bpf-event --synth=no -o /tmp/perf.data -a -e iscsi_tcp:iscsi_tcp_pdu_send \
	-e iscsi_tcp:iscsi_tcp_pdu_recv -e iscsi_tcp:iscsi_tcp_cmd_done \
	-- dd if="$disk" of=/dev/null bs=4096 count=1 skip=3 iflag=direct status=none \
	>/tmp/perf.out 2>&1; then
	perf script -i /tmp/perf.data >"$VM_OUT/perf-script.txt" 2>/tmp/perf.err \
		|| { cat /tmp/perf.err; fail "perf script"; }
	result perf ok
else
	cat /tmp/perf.out
	result perf "failed: $(tail -n 1 /tmp/perf.out)"
fi

step "one 4 KiB read"
mark read
dd if="$disk" of=/dev/null bs=4096 count=1 skip=5 iflag=direct status=none || fail "read"

step "one 4 KiB write"
mark write
dd if=/tmp/block.bin of="$disk" bs=4096 count=1 seek=7 oflag=direct status=none || fail "write"

step "logout"
mark logout
$ADM -m node -T $IQN -p $PORTAL --logout >/tmp/logout.out 2>&1 \
	|| { rc=$?; cat /tmp/logout.out; fail "logout (exit $rc)"; }
mark end
echo 0 >$T/tracing_on
cp $T/trace "$VM_OUT/trace.txt"
cp $T/events/iscsi_tcp/iscsi_tcp_cmd_done/hist "$VM_OUT/hist.txt"
echo "!$HIST" >$T/events/iscsi_tcp/iscsi_tcp_cmd_done/trigger
echo 0 >$T/events/iscsi_tcp/enable
echo >$T/trace

# the data went out and came back (not the point here, but a trace of a write that did not
# happen would be no use)
$ADM -m node -T $IQN -p $PORTAL --login >/dev/null 2>&1 || fail "second login"
disk=$(iscsi_disk $IQN)
dd if="$disk" of=/tmp/back.bin bs=4096 count=1 skip=7 iflag=direct status=none || fail "read back"
cmp /tmp/block.bin /tmp/back.bin || fail "the block written reads back different"
$ADM -m node -T $IQN -p $PORTAL --logout >/dev/null 2>&1 || fail "second logout"

teardown_pyiscsi
result done ok
echo PASS

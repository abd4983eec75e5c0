#!/bin/bash
# Guest side of tests/vm/test_vm_recovery.py: connection recovery by our iscsid (ERL 0).
# Run by hand: make -C kernel && tests/vm/run-vm --timeout 400 tests/vm/e2e/recovery.sh [KO_DIR]
# Writes key=value lines to $VM_OUT/results.txt; stops at the first failure with "FAIL: ...".
#
# 1. LIO ramdisk on 127.0.0.1:3260, our modules, our iscsid; discovery and --login
# 2. fio (crc32c verify) writes while the target's portal group is disabled for 10 s: fio ends
#    without errors, the SID is unchanged, iscsid logs the recovery; fio's longest completion
#    latency is the pause the application saw
# 3. logout; node.session.timeo.replacement_timeout=5; login again; the portal group disabled
#    for longer: I/O fails within a bounded time, new I/O fails fast, the disk stays; after the
#    target returns the session recovers by itself and new data verifies
# 4. tgtd target with noop_out_interval=2/noop_out_timeout=2, tgtd SIGSTOPped: iscsid's ping
#    timeout fails the connection, it recovers after SIGCONT, data reads back
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

IQN=iqn.2003-01.org.linux-iscsi.vm:recovery
IQN_TGT=iqn.2001-04.com.example.vm:recovery-nop
INITIATOR=iqn.2026-11.test:pyiscsi-recovery
VENV=$VM_WORK/.venv
PY=$VENV/bin/python
ADM=$VENV/bin/iscsiadm
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
KO=${1:-kernel}
TPG=/sys/kernel/config/target/iscsi/$IQN/tpgt_1
: >"$RES"
. tests/vm/e2e/common.sh

disk_of() { # IQN: /dev/sdX of the session's first disk (waits up to 20 s)
	local i s host d
	for ((i = 0; i < 200; i++)); do
		for s in /sys/class/iscsi_session/session*; do
			[ "$(cat "$s/targetname" 2>/dev/null)" = "$1" ] || continue
			host=$(readlink -f "$s/device" | grep -o 'host[0-9]*' | tail -n1)
			for d in /sys/bus/scsi/devices/${host#host}:*/block/*; do
				[ -e "$d" ] && [ -b "/dev/${d##*/}" ] && { echo "/dev/${d##*/}"; return 0; }
			done
		done
		sleep 0.1
	done
	return 1
}
sid_of() {
	local s
	for s in /sys/class/iscsi_session/session*; do
		[ "$(cat "$s/targetname" 2>/dev/null)" = "$1" ] && { echo "${s##*session}"; return 0; }
	done
	return 1
}
state_of() { cat /sys/class/iscsi_session/session$1/state 2>/dev/null; }
wait_state() { # SID STATE SECONDS
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		[ "$(state_of $1)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}


login() {
	$ADM -m node -T $IQN -p 127.0.0.1:3260 --login >/tmp/login.out 2>&1 \
		|| { rc=$?; cat /tmp/login.out; fail "login (exit $rc)"; }
	disk=$(disk_of $IQN) || fail "no disk after login"
	sid=$(sid_of $IQN) || fail "no session after login"
}

# ---------------------------------------------------------------------------------------------
step "setup"
ip link set lo up
pyiscsi_kmod_up $KO
lio_ramdisk $IQN 64
iscsid_state $INITIATOR
start_iscsid
out=$($ADM -m discovery -t st -p 127.0.0.1:3260) || fail "discovery (exit $?)"
[ "$out" = "127.0.0.1:3260,1 $IQN" ] || fail "discovery output: $out"
login
result disk "$disk"
result sid1 "$sid"

# ---------------------------------------------------------------------------------------------
step "1. fio with verification across a 10 s portal group outage"
fio --name=recovery --filename="$disk" --direct=1 --ioengine=libaio --iodepth=4 \
	--rw=randwrite --bs=64k --size=48M --rate=4m --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --output-format=json --output=/tmp/fio.json >/tmp/fio.err 2>&1 &
fio_pid=$!
sleep 3
echo 0 >$TPG/enable || fail "cannot disable the portal group"
t_down=$(now_ms)
wait_state $sid FAILED 10 || fail "session $sid not FAILED after the portal group went down ($(state_of $sid))"
result t1_failed_after_ms $(($(now_ms) - t_down))
sleep 10
echo 1 >$TPG/enable || fail "cannot enable the portal group"
t_up=$(now_ms)
wait_state $sid LOGGED_IN 30 || fail "session $sid not back 30 s after the target returned ($(state_of $sid))"
result t1_outage_ms $((t_up - t_down))
result t1_back_after_target_ms $(($(now_ms) - t_up))
for ((i = 0; i < 1200; i++)); do kill -0 $fio_pid 2>/dev/null || break; sleep 0.1; done
kill -0 $fio_pid 2>/dev/null && fail "fio still running 120 s after the recovery"
wait $fio_pid
fio_rc=$?
cp /tmp/fio.json "$VM_OUT/fio-recovery.json" 2>/dev/null
[ $fio_rc = 0 ] || fail "fio exit $fio_rc: $(tail -n 20 /tmp/fio.err)"
read -r fio_err fio_max_ms fio_written fio_verified < <("$PY" - <<'EOF'
import json
job = json.load(open("/tmp/fio.json"))["jobs"][0]
print(job["error"] + job.get("total_err", 0),
      round(job["write"]["clat_ns"]["max"] / 1e6),
      job["write"]["io_bytes"], job["read"]["io_bytes"])
EOF
)
result fio_errors "$fio_err"
result fio_max_clat_ms "$fio_max_ms"
result fio_written_bytes "$fio_written"
result fio_verified_bytes "$fio_verified"
[ "$fio_err" = 0 ] || fail "fio reported $fio_err errors"
[ "$fio_written" = $((48 << 20)) ] || fail "fio wrote $fio_written bytes, not 48 MiB"
[ "$fio_verified" = $((48 << 20)) ] || fail "fio verified $fio_verified bytes, not 48 MiB"
[ "$(sid_of $IQN)" = "$sid" ] || fail "SID changed: $sid -> $(sid_of $IQN)"
[ "$(disk_of $IQN)" = "$disk" ] || fail "disk changed: $disk -> $(disk_of $IQN)"
grep -q "connection$sid:0 is operational after recovery" $STATE/iscsid.log \
	|| fail "iscsid did not log the recovery"
grep "connection$sid:0 is operational after recovery" $STATE/iscsid.log | tail -n1 >"$VM_OUT/recovery-line.txt"
result fio_outage ok

# ---------------------------------------------------------------------------------------------
step "2. an outage longer than a 5 s replacement timeout"
$ADM -m node -T $IQN -p 127.0.0.1:3260 --logout >/tmp/logout.out 2>&1 \
	|| { rc=$?; cat /tmp/logout.out; fail "logout (exit $rc)"; }
$ADM -m node -T $IQN -p 127.0.0.1:3260 -o update -n node.session.timeo.replacement_timeout -v 5 \
	|| fail "cannot set replacement_timeout (exit $?)"
login
result sid2 "$sid"
[ "$(cat /sys/class/iscsi_session/session$sid/recovery_tmo)" = 5 ] \
	|| fail "recovery_tmo is $(cat /sys/class/iscsi_session/session$sid/recovery_tmo), not 5"
echo 0 >$TPG/enable || fail "cannot disable the portal group"
t_down=$(now_ms)
wait_state $sid FAILED 10 || fail "session $sid not FAILED ($(state_of $sid))"
t0=$(now_ms)
dd if=/dev/zero of="$disk" bs=64k count=16 oflag=direct status=none 2>/tmp/dd1.err &
dd_pid=$!
for ((i = 0; i < 300; i++)); do kill -0 $dd_pid 2>/dev/null || break; sleep 0.1; done
kill -0 $dd_pid 2>/dev/null && fail "I/O hangs 30 s into an outage with a 5 s replacement timeout"
wait $dd_pid && fail "I/O succeeded with the target down past the replacement timeout"
result t2_io_failed_after_ms $(($(now_ms) - t0))
wait_state $sid FREE 5 || fail "session not FREE after the replacement timeout ($(state_of $sid))"
t0=$(now_ms)
dd if="$disk" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null \
	&& fail "read succeeded while the session is FREE"
t_fast=$(($(now_ms) - t0))
result t2_new_io_failed_after_ms "$t_fast"
[ $t_fast -lt 3000 ] || fail "new I/O took $t_fast ms to fail: not fast"
[ -b "$disk" ] || fail "the disk $disk went away"
sleep 3
echo 1 >$TPG/enable || fail "cannot enable the portal group"
t_up=$(now_ms)
result t2_outage_ms $((t_up - t_down))
wait_state $sid LOGGED_IN 30 || fail "session $sid not back 30 s after the target returned ($(state_of $sid))"
result t2_back_after_target_ms $(($(now_ms) - t_up))
[ "$(sid_of $IQN)" = "$sid" ] || fail "SID changed after the timeout: $sid -> $(sid_of $IQN)"
[ "$(disk_of $IQN)" = "$disk" ] || fail "disk changed: $disk -> $(disk_of $IQN)"
head -c $((8 << 20)) /dev/urandom >/tmp/rand.bin
dd if=/tmp/rand.bin of="$disk" bs=1M oflag=direct status=none || fail "write after the recovery"
dd if="$disk" of=/tmp/back.bin bs=1M count=8 iflag=direct status=none || fail "read after the recovery"
cmp /tmp/rand.bin /tmp/back.bin || fail "data read back after the recovery differs"
result replacement_timeout ok

$ADM -m node -T $IQN -p 127.0.0.1:3260 --logout >/tmp/logout.out 2>&1 \
	|| { rc=$?; cat /tmp/logout.out; fail "logout after case 2 (exit $rc)"; }

# ---------------------------------------------------------------------------------------------
step "3. a silently stalled target (tgtd SIGSTOP): the NOP-Out ping timeout finds it"
tgt_file $IQN_TGT 16 portal=127.0.0.1:3261
tgtd_pid=$(cat "$VM_TGT_DIR/0/pid")
out=$($ADM -m discovery -t st -p 127.0.0.1:3261) || fail "discovery 3261 (exit $?)"
for kv in node.conn[0].timeo.noop_out_interval=2 node.conn[0].timeo.noop_out_timeout=2; do
	$ADM -m node -T $IQN_TGT -p 127.0.0.1:3261 -o update -n "${kv%=*}" -v "${kv#*=}" \
		|| fail "cannot set $kv (exit $?)"
done
$ADM -m node -T $IQN_TGT -p 127.0.0.1:3261 --login >/tmp/login.out 2>&1 \
	|| { rc=$?; cat /tmp/login.out; fail "login to tgtd (exit $rc)"; }
tdisk=$(disk_of $IQN_TGT) || fail "no tgtd disk"
tsid=$(sid_of $IQN_TGT) || fail "no tgtd session"
[ "$(cat /sys/class/iscsi_connection/connection$tsid:0/recv_tmo)" = 2 ] || fail "recv_tmo not 2"
head -c $((4 << 20)) /tmp/rand.bin >/tmp/rand4.bin
dd if=/tmp/rand4.bin of="$tdisk" bs=1M oflag=direct status=none || fail "write to tgtd"
sleep 5 # a few pings answered
grep -q "connection$tsid:0: ping timeout" $STATE/iscsid.log && fail "ping timeout with tgtd running"
kill -STOP $tgtd_pid
t0=$(now_ms)
for ((i = 0; i < 200; i++)); do
	grep -q "connection$tsid:0: ping timeout" $STATE/iscsid.log && break
	sleep 0.1
done
grep -q "connection$tsid:0: ping timeout" $STATE/iscsid.log || { kill -CONT $tgtd_pid; fail "no ping timeout 20 s after tgtd stopped"; }
result t3_detected_ms $(($(now_ms) - t0))
wait_state $tsid FAILED 5 || { kill -CONT $tgtd_pid; fail "session $tsid not FAILED after the ping timeout ($(state_of $tsid))"; }
kill -CONT $tgtd_pid
wait_state $tsid LOGGED_IN 30 || fail "session $tsid not back after tgtd continued ($(state_of $tsid))"
dd if="$tdisk" of=/tmp/back4.bin bs=1M count=4 iflag=direct status=none || fail "read from tgtd after recovery"
cmp /tmp/rand4.bin /tmp/back4.bin || fail "tgtd data differs after the recovery"
result nop_timeout ok

step "teardown"
$ADM -m node -T $IQN_TGT -p 127.0.0.1:3261 --logout >/tmp/logout.out 2>&1 \
	|| { rc=$?; cat /tmp/logout.out; fail "final logout (exit $rc)"; }
tgt_down
teardown_pyiscsi
result done ok
echo "PASS"

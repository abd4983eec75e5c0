#!/bin/bash
# SCSI error handling through our modules (guest side): a tgtd target stopped with SIGSTOP past
# the disk's 5 s command timeout. The abort gets no answer, the connection is failed, this
# script plays iscsid (reconnects with STOP_CONN(RECOVER) + new login + BIND + START), the
# target reset handler sees the session back and the I/O completes with the right data.
# Then the same without anybody recovering: the replacement timeout fails the I/O, no hang.
#   make -C kernel && tests/vm/run-vm tests/vm/kernel/eh.sh
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh
PY=$VM_WORK/.venv/bin/python
K="$PY tests/vm/kernel/kdrive.py"
RES=$VM_OUT/results.txt
IQN=iqn.2001-04.com.example.vm:keh
PORTAL=portal=127.0.0.1:3261
: >"$RES"
result() { echo "$1=$2" >>"$RES"; vm_log "$1=$2"; }
fail() { echo "FAIL: $*"; echo "fail=$*" >>"$RES"; dmesg | tail -n 60; exit 1; }
pass() { echo "PASS: $*"; }
disk_of_host() {
	local i d
	for ((i = 0; i < 100; i++)); do
		for d in /sys/bus/scsi/devices/$1:*/block/*; do
			[ -e "$d" ] && [ -b "/dev/${d##*/}" ] && { echo "/dev/${d##*/}"; return 0; }
		done
		sleep 0.1
	done
	return 1
}
wait_state() { # SID STATE SECONDS
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		[ "$(cat /sys/class/iscsi_session/session$1/state 2>/dev/null)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

tgt_file $IQN 64 portal=127.0.0.1:3261
tgtd_pid=$(cat "$VM_TGT_DIR/0/pid")
pyiscsi_kmod_up
$K nopd >/tmp/nopd.log 2>&1 &
nopd=$!
# While this script plays iscsid, a 60 s replacement timeout: starting Python for the recovery
# took over 10 s once in CI (TCG on a loaded machine) and the session was FREE before STOP_CONN.
out=$($K up $IQN $PORTAL recovery_tmo=60) || fail "up: $out"
sid=$(sed -n 's/^sid=\([0-9]*\) .*/\1/p' <<<"$out")
host=$(sed -n 's/.* host=\([0-9]*\) .*/\1/p' <<<"$out")
disk=$(disk_of_host "$host") || fail "no disk"
echo 5 >/sys/block/${disk#/dev/}/device/timeout
head -c $((8 << 20)) /dev/urandom >/tmp/data
dd if=/tmp/data of="$disk" bs=1M oflag=direct conv=fsync status=none || fail "write"
pass "session $sid on $disk"

# 1. target stopped, iscsid (this script) recovers the connection
kill -STOP $tgtd_pid
dd if="$disk" of=/tmp/back bs=1M count=8 iflag=direct status=none 2>/tmp/dd.err &
io=$!
wait_state $sid FAILED 40 || fail "session not FAILED after the abort timed out"
pass "abort timed out, connection failed, session FAILED"
kill -CONT $tgtd_pid
$K recover $sid $IQN $PORTAL recovery_tmo=10 || fail "recover"
[ "$(cat /sys/class/iscsi_session/session$sid/recovery_tmo)" = 10 ] || fail "recovery_tmo not 10"
for i in $(seq 600); do kill -0 $io 2>/dev/null || break; sleep 0.1; done
kill -0 $io 2>/dev/null && fail "I/O hangs after recovery"
wait $io || fail "I/O failed across EH + recovery: $(cat /tmp/dd.err)"
cmp /tmp/data /tmp/back || fail "data read across EH differs"
[ "$(cat /sys/block/${disk#/dev/}/device/state)" = running ] || fail "device not running"
pass "EH + recovery: I/O completed, data intact, device running"
dmesg | grep -E "task management|target reset|iscsi_if" | tail -n 8

# 2. nobody recovers: the replacement timeout (10 s) ends it; nothing hangs
kill -STOP $tgtd_pid
dd if="$disk" of=/dev/null bs=1M count=8 iflag=direct status=none 2>/tmp/dd.err &
io=$!
for i in $(seq 900); do kill -0 $io 2>/dev/null || break; sleep 0.1; done
kill -0 $io 2>/dev/null && fail "I/O hangs without recovery"
wait $io && fail "I/O succeeded with the target stopped?"
[ "$(cat /sys/class/iscsi_session/session$sid/state)" = FREE ] || fail "state not FREE"
pass "no recovery: I/O failed after the replacement timeout, no hang"
kill -CONT $tgtd_pid
$K kill $sid || fail "destroy"
kill $nopd; wait $nopd 2>/dev/null
pyiscsi_kmod_down
pass "modules unloaded"
tgt_down
result done 1

#!/bin/bash
# Guest side of tests/vm/test_vm_datapath.py: our modules, our iscsid/iscsiadm, real targets and
# real data. Run by hand: tests/vm/run-vm tests/vm/e2e/datapath.sh [KO_DIR]   (modules built
# beforehand: make -C kernel; KO_DIR, default kernel, is where iscsi_if.ko/iscsi_tcp.ko are).
# Writes key=value lines to $VM_OUT/results.txt (the host test checks them) and stops at the
# first failure with "FAIL: ..." on stdout and a non-zero exit code.
#
# 1. LIO ramdisk target on 127.0.0.1:3260 and a tgtd file target on 127.0.0.1:3261
# 2. insmod iscsi_if.ko iscsi_tcp.ko; our iscsid in the background (state on tmpfs)
# 3. discovery + --login to both; the disks appear
# 4. 40 MiB of random data with O_DIRECT at an unaligned-to-MiB offset: read back, compare, and
#    compare with tgtd's backing file; mkfs.ext4, mount, files, umount, fsck -n; remount, verify
# 5. iscsiadm -m session prints exactly the open-iscsi lines; -P 3 runs
# 6. dd 1 MiB direct write/read MB/s with our modules
# 7. --logout both: disks and sessions gone
# 8. kill -9 iscsid with a session up: I/O still runs, rmmod refused, a small script tears the
#    session down, both modules unload
# 9. the in-kernel initiator (Debian's open-iscsi) on the same LIO target: dd MB/s for comparison
# 10. parity with open-iscsi: `-m session -r SID -P 1/-P 3` and `-s` of both initiators' LIO
#    sessions, after the same login and the same I/O (the host side compares them:
#    {ours,inkernel}-{P1,P3,stats}.txt)
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

IQN_LIO=iqn.2003-01.org.linux-iscsi.vm:e2e-ram
IQN_TGT=iqn.2001-04.com.example.vm:e2e-file
INITIATOR=iqn.2026-11.test:pyiscsi-e2e
VENV=$VM_WORK/.venv
PY=$VENV/bin/python
ADM=$VENV/bin/iscsiadm
SYS_ADM=/usr/sbin/iscsiadm
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
BENCH_MIB=${BENCH_MIB:-64}
KO=${1:-kernel}
DATA_MIB=40
OFFSET=$((3 * 1048576 + 5 * 4096)) # 4 KiB aligned, not MiB aligned
: >"$RES"

. tests/vm/e2e/common.sh
now_ns() { date +%s%N; }
# mbps BYTES START_NS END_NS
mbps() { awk -v b="$1" -v s="$2" -v e="$3" 'BEGIN { printf "%.1f", b / ((e - s) / 1e9) / 1e6 }'; }

# disk_of IQN: /dev/sdX of the first disk of the session to IQN (waits up to 20 s)
disk_of() {
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
# parity_io DISK: the same I/O on either initiator's disk before its counters are compared
parity_io() {
	dd if=/dev/urandom of="$1" bs=64k count=16 oflag=direct status=none || fail "parity write $1"
	dd if="$1" of=/dev/null bs=64k count=16 iflag=direct status=none || fail "parity read $1"
}

# parity_capture ISCSIADM SID DISK LABEL: -P 1, -P 3 and -s of one session into $VM_OUT
parity_capture() {
	local adm=$1 sid=$2 level
	for level in 1 3; do
		"$adm" -m session -r "$sid" -P $level >"$VM_OUT/$4-P$level.txt" 2>&1 \
			|| fail "$4: iscsiadm -m session -r $sid -P $level (exit $?)"
	done
	parity_io "$3"
	"$adm" -m session -r "$sid" -s >"$VM_OUT/$4-stats.txt" 2>&1 \
		|| fail "$4: iscsiadm -m session -r $sid -s (exit $?)"
}

sid_of() {
	local s
	for s in /sys/class/iscsi_session/session*; do
		[ "$(cat "$s/targetname" 2>/dev/null)" = "$1" ] && { echo "${s##*session}"; return 0; }
	done
	return 1
}


# dd_bench DISK LABEL: 1 MiB direct write then read of BENCH_MIB MiB
dd_bench() {
	local t0 t1 bytes=$((BENCH_MIB * 1048576))
	t0=$(now_ns)
	dd if=/dev/zero of="$1" bs=1M count=$BENCH_MIB oflag=direct status=none || fail "$2: dd write"
	t1=$(now_ns)
	result "${2}_write_MBps" "$(mbps $bytes "$t0" "$t1")"
	t0=$(now_ns)
	dd if="$1" of=/dev/null bs=1M count=$BENCH_MIB iflag=direct status=none || fail "$2: dd read"
	t1=$(now_ns)
	result "${2}_read_MBps" "$(mbps $bytes "$t0" "$t1")"
}

# verify_data DISK [BACKING_FILE]
verify_data() {
	local disk=$1 backing=${2:-}
	dd if=/tmp/rand.bin of="$disk" bs=1M oflag=direct,seek_bytes seek=$OFFSET status=none \
		|| fail "write to $disk"
	dd if="$disk" of=/tmp/back.bin bs=1M iflag=direct,skip_bytes,count_bytes skip=$OFFSET \
		count=$((DATA_MIB * 1048576)) status=none || fail "read from $disk"
	cmp /tmp/rand.bin /tmp/back.bin || fail "data read back from $disk differs"
	if [ -n "$backing" ]; then
		cmp -n $((DATA_MIB * 1048576)) /tmp/rand.bin <(tail -c +$((OFFSET + 1)) "$backing") \
			|| fail "tgtd's backing file differs from what was written to $disk"
	fi
	rm -f /tmp/back.bin
}

# fs_check DISK
fs_check() {
	local disk=$1 mnt=/tmp/e2e-mnt
	mkfs.ext4 -q -F "$disk" || fail "mkfs.ext4 $disk"
	mkdir -p $mnt
	mount "$disk" $mnt || fail "mount $disk"
	cp /tmp/rand.bin $mnt/rand.bin
	for i in $(seq 1 50); do echo "file $i $(date +%N)" >$mnt/small-$i.txt; done
	(cd $mnt && md5sum rand.bin small-*.txt) >/tmp/sums
	umount $mnt || fail "umount $disk"
	fsck.ext4 -n -f "$disk" >/tmp/fsck.log 2>&1 || { cat /tmp/fsck.log; fail "fsck -n $disk not clean"; }
	mount -o ro "$disk" $mnt || fail "remount $disk"
	(cd $mnt && md5sum -c --quiet /tmp/sums) || fail "files on $disk differ after remount"
	umount $mnt || fail "umount $disk (2)"
}

session_gone() { # IQN DISK
	local i
	for ((i = 0; i < 100; i++)); do
		! sid_of "$1" >/dev/null && [ ! -e "$2" ] && return 0
		sleep 0.1
	done
	fail "session to $1 or its disk $2 still there after logout"
}

# ---------------------------------------------------------------------------------------------
step "setup"
ip link set lo up
pyiscsi_kmod_up $KO
lio_ramdisk $IQN_LIO 128
tgt_file $IQN_TGT 64 portal=127.0.0.1:3261
head -c $((DATA_MIB * 1048576)) /dev/urandom >/tmp/rand.bin
iscsid_state $INITIATOR
start_iscsid

step "discovery and login"
out=$($ADM -m discovery -t st -p 127.0.0.1:3260) || fail "discovery 3260 (exit $?)"
[ "$out" = "127.0.0.1:3260,1 $IQN_LIO" ] || fail "discovery output: $out"
out=$($ADM -m discovery -t st -p 127.0.0.1:3261) || fail "discovery 3261 (exit $?)"
[ "$out" = "127.0.0.1:3261,1 $IQN_TGT" ] || fail "discovery output: $out"
t0=$(now_ns)
$ADM -m node -T $IQN_LIO -p 127.0.0.1:3260 --login >/tmp/login.out 2>&1 \
	|| { rc=$?; cat /tmp/login.out; fail "login to LIO (exit $rc)"; }
t1=$(now_ns)
result login_seconds "$(awk -v s="$t0" -v e="$t1" 'BEGIN { printf "%.2f", (e - s) / 1e9 }')"
$ADM -m node -T $IQN_TGT -p 127.0.0.1:3261 --login >/tmp/login.out 2>&1 \
	|| { rc=$?; cat /tmp/login.out; fail "login to tgtd (exit $rc)"; }
grep -q "successful" /tmp/login.out || { cat /tmp/login.out; fail "login did not say successful"; }
lio_disk=$(disk_of $IQN_LIO) || fail "no disk for $IQN_LIO"
tgt_disk=$(disk_of $IQN_TGT) || fail "no disk for $IQN_TGT"
result lio_disk "$lio_disk"
result tgt_disk "$tgt_disk"
[ "$(blockdev --getsize64 "$lio_disk")" = $((128 * 1048576)) ] || fail "LIO disk size"
[ "$(blockdev --getsize64 "$tgt_disk")" = $((64 * 1048576)) ] || fail "tgtd disk size"

step "session listing"
sid_lio=$(sid_of $IQN_LIO)
sid_tgt=$(sid_of $IQN_TGT)
expected=$(printf 'tcp: [%s] 127.0.0.1:3260,1 %s (non-flash)\ntcp: [%s] 127.0.0.1:3261,1 %s (non-flash)' \
	"$sid_lio" $IQN_LIO "$sid_tgt" $IQN_TGT)
[ "$sid_lio" -gt "$sid_tgt" ] && expected=$(echo "$expected" | tac)
got=$($ADM -m session) || fail "iscsiadm -m session (exit $?)"
echo "$got" >"$VM_OUT/session.txt"
[ "$got" = "$expected" ] || fail "iscsiadm -m session printed:
$got
expected:
$expected"
result session_listing ok
$ADM -m session -P 3 >"$VM_OUT/session-P3.txt" 2>&1 || fail "iscsiadm -m session -P 3 (exit $?)"
grep -q "Target: $IQN_LIO" "$VM_OUT/session-P3.txt" || fail "-P 3 lacks the LIO target"
parity_capture "$ADM" "$sid_lio" "$lio_disk" ours

step "data: LIO ramdisk"
verify_data "$lio_disk"
fs_check "$lio_disk"
# The kernel's counters through iscsiadm -s: the I/O above shows in them.
$ADM -m session -r "$(sid_of $IQN_LIO)" -s >"$VM_OUT/stats.txt" 2>&1 || fail "iscsiadm -s (exit $?)"
for c in scsicmd_pdus datain_pdus scsirsp_pdus txdata_octets rxdata_octets; do
	grep -Eq "^	$c: [1-9][0-9]*$" "$VM_OUT/stats.txt" || fail "-s: $c not counted: $(cat "$VM_OUT/stats.txt")"
done
result stats ok
step "data: tgtd file"
tgt_img=$(tgtadm -C 0 --lld iscsi --mode target --op show | sed -n 's/^ *Backing store path: \(\/.*\)$/\1/p' | head -n1)
[ -f "$tgt_img" ] || fail "cannot find tgtd's backing file ($tgt_img)"
verify_data "$tgt_disk" "$tgt_img"
fs_check "$tgt_disk"
result data ok

step "benchmark: our modules"
dd_bench "$lio_disk" ours

step "logout"
$ADM -m node -T $IQN_LIO -p 127.0.0.1:3260 --logout >/tmp/logout.out 2>&1 \
	|| { rc=$?; cat /tmp/logout.out; fail "logout LIO (exit $rc)"; }
session_gone $IQN_LIO "$lio_disk"
$ADM -m node -T $IQN_TGT -p 127.0.0.1:3261 --logout >/tmp/logout.out 2>&1 \
	|| { rc=$?; cat /tmp/logout.out; fail "logout tgtd (exit $rc)"; }
session_gone $IQN_TGT "$tgt_disk"
out=$($ADM -m session 2>&1)
rc=$?
[ $rc = 21 ] || fail "iscsiadm -m session with no sessions: exit $rc ($out)"
result logout ok

step "kill -9 iscsid with a session up"
$ADM -m node -T $IQN_LIO -p 127.0.0.1:3260 --login >/tmp/login.out 2>&1 \
	|| { rc=$?; cat /tmp/login.out; fail "second login (exit $rc)"; }
lio_disk=$(disk_of $IQN_LIO) || fail "no disk after the second login"
kill -KILL $ISCSID_PID
wait $ISCSID_PID 2>/dev/null
dd if="$lio_disk" of=/dev/null bs=1M count=4 iflag=direct status=none \
	|| fail "I/O after iscsid died"
rmmod iscsi_tcp 2>/dev/null && fail "rmmod iscsi_tcp succeeded with a session up"
"$PY" - <<'EOF' || fail "tearing down the orphaned session"
from pyiscsid.kernel_session import stop_session
from pyiscsid.sysfs import list_sessions

sessions = list_sessions()
assert len(sessions) == 1, sessions
stop_session(sessions[0].sid, timeout=10)
assert list_sessions() == [], list_sessions()
EOF
session_gone $IQN_LIO "$lio_disk"
rmmod iscsi_tcp || fail "rmmod iscsi_tcp"
rmmod iscsi_if || fail "rmmod iscsi_if"
[ -z "$(ls /sys/class/scsi_host 2>/dev/null)" ] || fail "SCSI hosts left: $(ls /sys/class/scsi_host)"
result orphan_teardown ok

step "benchmark: in-kernel initiator"
openiscsi_up $INITIATOR
$SYS_ADM -m discovery -t st -p 127.0.0.1:3260 >/dev/null || fail "open-iscsi discovery"
$SYS_ADM -m node -T $IQN_LIO -p 127.0.0.1:3260 --login >/dev/null || fail "open-iscsi login"
kdisk=$(disk_of $IQN_LIO) || fail "no disk with the in-kernel initiator"
parity_capture "$SYS_ADM" "$(sid_of $IQN_LIO)" "$kdisk" inkernel
dd_bench "$kdisk" inkernel
openiscsi_down
tgt_down
cp $STATE/iscsid.log "$VM_OUT/"
result done ok
echo "PASS"

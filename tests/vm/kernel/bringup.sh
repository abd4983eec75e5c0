#!/bin/bash
# Kernel bring-up test (guest side): our modules against an LIO ramdisk, driven by
# tests/vm/kernel/kdrive.py (our login + the netlink commands). Run from the host:
#   make -C kernel && tests/vm/run-vm tests/vm/kernel/bringup.sh
#   tests/vm/run-vm tests/vm/kernel/bringup.sh lio:InitialR2T=No login:HeaderDigest=CRC32C ...
# Prints "PASS ..." / "FAIL ..." lines and key=value results into $VM_OUT/results.txt.
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh
PY=$VM_WORK/.venv/bin/python
K="$PY tests/vm/kernel/kdrive.py"
RES=$VM_OUT/results.txt
IQN=iqn.2003-01.org.linux-iscsi.vm:kbringup
: >"$RES"
result() { echo "$1=$2" >>"$RES"; vm_log "$1=$2"; }
fail() { echo "FAIL: $*"; echo "fail=$*" >>"$RES"; dmesg | tail -n 40; exit 1; }
pass() { echo "PASS: $*"; }
mbps() { awk -v b="$1" -v s="$2" -v e="$3" 'BEGIN { printf "%.1f", b / ((e - s) / 1e9) / 1e6 }'; }

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

# Variants: lio:PARAM=VALUE sets an LIO tpgt_1/param, login:Key=Value a key our login proposes.
LIO_PARAMS=(); LOGIN_OPTS=()
for a in "$@"; do
	case "$a" in
	lio:*) LIO_PARAMS+=("${a#lio:}") ;;
	nocompare) COMPARE=0 ;;
	login:*) LOGIN_OPTS+=("${a#login:}") ;;
	*) fail "unknown argument $a" ;;
	esac
done
lio_ramdisk $IQN 96 ${LIO_PARAMS[@]+"${LIO_PARAMS[@]}"} >/dev/null
# A small CmdSN window (MaxCmdSN - ExpCmdSN) so that a deep queue hits it.
echo 16 >/sys/kernel/config/target/iscsi/$IQN/tpgt_1/attrib/default_cmdsn_depth
pyiscsi_kmod_up
$K nopd >/tmp/nopd.log 2>&1 &
nopd=$!
pass "modules loaded"

$K errors || fail "netlink error cases"
pass "netlink error cases"

# 1. login, bind, start, scan -> a disk
out=$($K up $IQN ${LOGIN_OPTS[@]+"${LOGIN_OPTS[@]}"}) || fail "up: $out"
echo "$out"
sid=$(sed -n 's/^sid=\([0-9]*\) .*/\1/p' <<<"$out")
host=$(sed -n 's/.* host=\([0-9]*\) .*/\1/p' <<<"$out")
disk=$(disk_of_host "$host") || fail "no disk for host$host"
pass "session $sid host $host disk $disk"
# sysfs as the in-kernel transport class lays it out
s=/sys/class/iscsi_session/session$sid
[ "$(cat $s/targetname)" = "$IQN" ] || fail "targetname"
[ "$(cat $s/state)" = LOGGED_IN ] || fail "state $(cat $s/state)"
[ "$(cat /sys/class/iscsi_connection/connection$sid:0/persistent_address)" = 127.0.0.1 ] \
	|| fail "persistent_address"
[ "$(cat /sys/class/iscsi_connection/connection$sid:0/state)" = up ] || fail "conn state"
[ "$(cat /sys/class/iscsi_host/host$host/ipaddress)" = 127.0.0.1 ] || fail "iscsi_host ipaddress"
[ "$(cat /sys/class/iscsi_host/host$host/initiatorname)" = iqn.2026-11.test:kdrive ] \
	|| fail "iscsi_host initiatorname"
readlink -f /sys/block/${disk#/dev/} | grep -q "/host$host/session$sid/target$host:0:0/" \
	|| fail "disk not under the session device: $(readlink -f /sys/block/${disk#/dev/})"
[ "$(cat /sys/class/scsi_host/host$host/proc_name)" = iscsi_tcp ] || fail "proc_name"
id_path=$(udevadm test-builtin path_id /sys/block/${disk#/dev/} 2>/dev/null | sed -n 's/^ID_PATH=//p')
[ "$id_path" = "ip-127.0.0.1:3260-iscsi-$IQN-lun-0" ] || fail "udev path_id gives '$id_path'"
pass "sysfs layout (udev path_id: $id_path)"

# 2. 32 MiB random, O_DIRECT, at an offset; read back identical
head -c $((32 << 20)) /dev/urandom >/tmp/data
t0=$(date +%s%N)
dd if=/tmp/data of="$disk" bs=1M seek=8 oflag=direct conv=fsync status=none || fail "dd write"
t1=$(date +%s%N)
dd if="$disk" of=/tmp/back bs=1M skip=8 count=32 iflag=direct status=none || fail "dd read"
t2=$(date +%s%N)
cmp /tmp/data /tmp/back || fail "data read back differs"
result write_mbs "$(mbps $((32 << 20)) $t0 $t1)"
result read_mbs "$(mbps $((32 << 20)) $t1 $t2)"
pass "32 MiB written and read back identical"
# small unaligned-size I/O through the page cache, and a 4 KiB random pattern
dd if=/tmp/data of="$disk" bs=4k count=257 seek=3 status=none conv=fsync || fail "buffered write"
echo 3 >/proc/sys/vm/drop_caches
cmp <(dd if="$disk" bs=4k skip=3 count=257 status=none) <(head -c $((257 * 4096)) /tmp/data) \
	|| fail "buffered read back differs"
pass "buffered I/O"
# A 32-byte CDB (READ(32)) goes out in an extended-CDB AHS: the target parses it and answers
# (data or CHECK CONDITION); the connection stays up. Not with HeaderDigest: LIO (6.1) computes
# the header digest over the BHS only, RFC 7143 11.1 (and we, and open-iscsi) over BHS + AHS.
if grep -q "'HeaderDigest': 'CRC32C'" <<<"$out"; then
	pass "32-byte CDB through the AHS: skipped (LIO digests the BHS without the AHS)"
else
	cdb32="7f 00 00 00 00 00 00 18 00 09 $(printf '00 %.0s' $(seq 18))00 00 00 01"
	sg_raw -r 512 "$disk" $cdb32 >/tmp/sgraw.out 2>&1
	grep -qE "SCSI Status|Received 512 bytes" /tmp/sgraw.out || { cat /tmp/sgraw.out; fail "READ(32)"; }
	[ "$(cat $s/state)" = LOGGED_IN ] || fail "session state after READ(32): $(cat $s/state)"
	dd if="$disk" of=/dev/null bs=4k count=1 iflag=direct status=none || fail "I/O after READ(32)"
	pass "32-byte CDB through the AHS: $(grep -oE 'SCSI Status: [^ ]*( [^ ]*)?|Received 512 bytes' /tmp/sgraw.out | head -n1)"
fi

$K stats $sid >/tmp/stats || fail "stats"
cat /tmp/stats
grep -q '^scsicmd_pdus [1-9]' /tmp/stats || fail "scsicmd_pdus counter"
grep -q '^datain_pdus [1-9]' /tmp/stats || fail "datain_pdus counter"
grep -q '^txdata_octets [1-9]' /tmp/stats || fail "txdata_octets counter"

# Queue depth 64 against a CmdSN window of 16, mixed sizes, verified.
fio --name=verify --filename="$disk" --direct=1 --ioengine=libaio --iodepth=64 --rw=randwrite \
	--bsrange=512-256k --blockalign=4k --offset=40m --size=24m --verify=crc32c --verify_fatal=1 \
	--do_verify=1 --randrepeat=1 --output=/tmp/fio.out >/dev/null 2>&1 || { cat /tmp/fio.out; fail "fio verify"; }
grep -q "err= 0" /tmp/fio.out || { cat /tmp/fio.out; fail "fio reported errors"; }
pass "fio randwrite QD64 (window 16), 512 B-256 KiB, crc32c verified"

# Connection recovery with I/O in flight: STOP_CONN(RECOVER) blocks the queue and keeps the
# commands, a new login + BIND + START re-issues them; the data arrives intact.
dd if=/tmp/data of="$disk" bs=1M seek=40 oflag=direct conv=fsync status=none 2>/tmp/dd.err &
io=$!
sleep 0.5
$K recover $sid $IQN ${LOGIN_OPTS[@]+"${LOGIN_OPTS[@]}"} || fail "recover"
wait $io || fail "I/O across recovery failed: $(cat /tmp/dd.err)"
cmp <(dd if="$disk" bs=1M skip=40 count=32 iflag=direct status=none) /tmp/data \
	|| fail "data written across recovery differs"
[ "$(cat $s/state)" = LOGGED_IN ] || fail "state after recovery $(cat $s/state)"
pass "connection recovery with I/O in flight"

# 3. logout/stop/destroy -> the disk is gone
$K down $sid || fail "down"
[ -e "$disk" ] && fail "$disk still there after logout"
[ -e "$s" ] && fail "session$sid still in sysfs"
pass "logout: disk and session gone"

# 4. STOP(TERM)/destroy with I/O outstanding: the I/O fails, nothing hangs
out=$($K up $IQN ${LOGIN_OPTS[@]+"${LOGIN_OPTS[@]}"}) || fail "up 2: $out"
sid=$(sed -n 's/^sid=\([0-9]*\) .*/\1/p' <<<"$out")
host=$(sed -n 's/.* host=\([0-9]*\) .*/\1/p' <<<"$out")
disk=$(disk_of_host "$host") || fail "no disk (2)"
( for i in 1 2 3 4 5 6 7 8; do dd if="$disk" of=/dev/null bs=1M count=64 iflag=direct status=none; done ) &
io=$!
sleep 1
$K kill $sid || fail "kill with I/O outstanding"
for i in $(seq 600); do kill -0 $io 2>/dev/null || break; sleep 0.1; done
kill -0 $io 2>/dev/null && fail "I/O hangs after the session was destroyed"
wait $io 2>/dev/null
pass "destroy with I/O outstanding"

# 5. the userspace process dies with a session up: the session lives on
$K up $IQN --hold ${LOGIN_OPTS[@]+"${LOGIN_OPTS[@]}"} >/tmp/hold.out 2>&1 &
holder=$!
for i in $(seq 100); do grep -q '^sid=' /tmp/hold.out && break; sleep 0.1; done
sid=$(sed -n 's/^sid=\([0-9]*\) .*/\1/p' /tmp/hold.out)
host=$(sed -n 's/.* host=\([0-9]*\) .*/\1/p' /tmp/hold.out)
[ -n "$sid" ] || fail "hold: $(cat /tmp/hold.out)"
disk=$(disk_of_host "$host") || fail "no disk (3)"
kill -9 $holder
wait $holder 2>/dev/null
dd if=/tmp/data of="$disk" bs=1M oflag=direct status=none || fail "I/O after the process died"
cmp <(dd if="$disk" bs=1M count=32 iflag=direct status=none) /tmp/data || fail "data after kill"
rmmod iscsi_tcp 2>/dev/null && fail "rmmod iscsi_tcp succeeded with a session up"
pass "process killed: session alive, rmmod refused"
$K down $sid || fail "down after kill"
pass "session torn down by another process"

kill $nopd; wait $nopd 2>/dev/null
pyiscsi_kmod_down
grep -qE '^(iscsi_tcp|iscsi_if) ' /proc/modules && fail "modules still loaded"
pass "modules unloaded"

# The in-kernel initiator on the same target in the same boot, for comparison.
if [ "${COMPARE:-1}" = 1 ] && command -v /usr/sbin/iscsiadm >/dev/null; then
	openiscsi_up >/dev/null 2>&1
	/usr/sbin/iscsiadm -m discovery -t st -p 127.0.0.1:3260 >/dev/null
	/usr/sbin/iscsiadm -m node -T $IQN -p 127.0.0.1:3260 --login >/dev/null
	kdisk=$(iscsi_disk $IQN) || fail "in-kernel: no disk"
	t0=$(date +%s%N)
	dd if=/tmp/data of="$kdisk" bs=1M seek=8 oflag=direct conv=fsync status=none
	t1=$(date +%s%N)
	dd if="$kdisk" of=/tmp/back bs=1M skip=8 count=32 iflag=direct status=none
	t2=$(date +%s%N)
	cmp /tmp/data /tmp/back || fail "in-kernel read back differs"
	result inkernel_write_mbs "$(mbps $((32 << 20)) $t0 $t1)"
	result inkernel_read_mbs "$(mbps $((32 << 20)) $t1 $t2)"
	/usr/sbin/iscsiadm -m node -T $IQN -p 127.0.0.1:3260 --logout >/dev/null
	openiscsi_down >/dev/null 2>&1
fi
result done 1

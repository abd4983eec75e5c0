#!/bin/bash
# Guest side of `make bench` (run by bench/bench.py through tests/vm/run-vm, one boot):
# the same targets and fio workloads for the in-kernel Linux initiator (Debian's open-iscsi +
# in-tree iscsi_tcp) and for ours (kernel/iscsi_if.ko + kernel/iscsi_tcp.ko, our iscsid/iscsiadm),
# alternating sides in rounds so drift cancels. The sides ours_mc<N> are ours with
# node.session.iscsi.MaxConnections=N on the node record before login (one session, N
# connections): LIO only, the workloads in MC_WORKLOADS, no login scaling; the session must have
# N connections in sysfs or the side fails. Nothing is summarised here: the host reads
#   $VM_OUT/raw/r<R>-<side>-<target>-<workload>.json   fio's JSON output
#   $VM_OUT/raw/r<R>-<side>-<target>-<workload>.stat   "cpu" lines of /proc/stat before/after
#   $VM_OUT/raw/r<R>-<side>-login.txt                  targets=N login_s=S logout_s=S
#   $VM_OUT/raw/r<R>-<side>-<target>-session.txt       the negotiated session (iscsiadm -P 3)
#   $VM_OUT/raw/r<R>-<side>-<target>-connections.txt   ours_mc<N>: want=N have=N sid=S cids=0,1,..
#   $VM_OUT/raw/r<R>-<side>-<target>-<workload>.conns  ours_mc<N>: GET_STATS of each connection,
#                                                      "before|after cid=C name=value ..." lines
#   $VM_OUT/status.txt    "side_failed SIDE REASON" lines, "done" at the end
# Settings (arguments BENCH_X=VALUE): BENCH_ROUNDS BENCH_RUNTIME BENCH_LOGIN_TARGETS BENCH_SIDES BENCH_TARGETS
# BENCH_WORKLOADS (names from the table below; default all) BENCH_DISK_MB BENCH_PERF (1: each fio run
# under `perf record -a -g`, its report in $VM_OUT/raw/<tag>.perf.txt).
# run-vm starts the guest with an empty environment: the settings come as BENCH_X=V arguments.
set -uo pipefail
for arg in "$@"; do
	case "$arg" in
	BENCH_*=*) export "${arg?}" ;;
	*) echo "bench/guest.sh: unknown argument $arg (want BENCH_X=VALUE)" >&2; exit 2 ;;
	esac
done
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

ROUNDS=${BENCH_ROUNDS:-3}
RUNTIME=${BENCH_RUNTIME:-20}
NLOGIN=${BENCH_LOGIN_TARGETS:-32}
SIDES=${BENCH_SIDES:-inkernel ours ours_mc2 ours_mc4}
TARGETS=${BENCH_TARGETS:-lio tgt}
DISK_MB=${BENCH_DISK_MB:-256}
PERF=${BENCH_PERF:-0}
VERIFY_MIB=16
VERIFY_OFFSET=$((5 * 1048576 + 3 * 4096)) # 4 KiB aligned, not MiB aligned
# name: fio arguments
declare -A WL=(
	[seqread_1m_qd8]="--rw=read --bs=1M --iodepth=8"
	[seqwrite_1m_qd8]="--rw=write --bs=1M --iodepth=8"
	[randread_4k_qd1]="--rw=randread --bs=4k --iodepth=1"
	[randread_4k_qd32]="--rw=randread --bs=4k --iodepth=32"
	[randwrite_4k_qd1]="--rw=randwrite --bs=4k --iodepth=1"
	[randwrite_4k_qd32]="--rw=randwrite --bs=4k --iodepth=32"
	[randrw70_64k_qd16]="--rw=randrw --rwmixread=70 --bs=64k --iodepth=16"
)
WL_ORDER="seqread_1m_qd8 seqwrite_1m_qd8 randread_4k_qd1 randread_4k_qd32 randwrite_4k_qd1
	randwrite_4k_qd32 randrw70_64k_qd16"
WORKLOADS=${BENCH_WORKLOADS:-$WL_ORDER}
# what the multi-connection sides run (bench/report.py MC_WORKLOADS), on LIO only
MC_WORKLOADS="seqread_1m_qd8 seqwrite_1m_qd8 randread_4k_qd32 randwrite_4k_qd32"

INITIATOR=iqn.2026-11.test:bench-initiator
IQN_LIO=iqn.2003-01.org.linux-iscsi.vm:bench-lio
IQN_TGT=iqn.2001-04.com.example.vm:bench-tgt
IQN_LOGIN=iqn.2003-01.org.linux-iscsi.vm:bench-login
PORTAL_LIO=127.0.0.1:3260
PORTAL_TGT=127.0.0.1:3261
PORTAL_LOGIN=127.0.0.1:3262
VENV=$VM_WORK/.venv
OUR_ADM=$VENV/bin/iscsiadm
SYS_ADM=/usr/sbin/iscsiadm
STATE=/run/pyiscsi-bench
RAW=$VM_OUT/raw
STATUS=$VM_OUT/status.txt
mkdir -p "$RAW"
: >"$STATUS"
ISCSID_PID=""

# kind_of SIDE: which initiator runs it (inkernel or ours); conns_of SIDE: connections a session
kind_of() { case $1 in ours_mc[1-9]*) echo ours ;; *) echo "$1" ;; esac; }
conns_of() { case $1 in ours_mc[1-9]*) echo "${1#ours_mc}" ;; *) echo 1 ;; esac; }
valid_side() {
	case $1 in
	inkernel | ours) return 0 ;;
	ours_mc[1-9]*) [[ ${1#ours_mc} =~ ^[0-9]+$ ]] ;;
	*) return 1 ;;
	esac
}
# LIO's MaxConnections (a TPG parameter; default 1): the largest N among the sides. The in-kernel
# initiator and ours propose 1, so raising it changes nothing for them.
LIO_MAXCONN=1
for side in $SIDES; do
	valid_side "$side" && [ "$(conns_of "$side")" -gt $LIO_MAXCONN ] && LIO_MAXCONN=$(conns_of "$side")
done

now_ns() { date +%s%N; }
secs_since() { awk -v s="$1" -v e="$(now_ns)" 'BEGIN { printf "%.3f", (e - s) / 1e9 }'; }

# A side that fails is recorded with its reason and skipped from then on; the host reports it.
declare -A FAILED=()
side_fail() { # SIDE REASON
	FAILED[$1]=1
	echo "side_failed $1 $2" >>"$STATUS"
	vm_log "SIDE FAILED: $1: $2"
	if [ "$(kind_of "$1")" = ours ] && [ -s $STATE/iscsid.log ]; then
		echo "----- our iscsid log (last 30 lines)"
		tail -n 30 $STATE/iscsid.log
		cp $STATE/iscsid.log "$RAW/iscsid-$1.log" 2>/dev/null
	fi
}

# sid_of IQN: the session number of the (one) session to IQN
sid_of() {
	local s
	for s in /sys/class/iscsi_session/session*; do
		[ "$(cat "$s/targetname" 2>/dev/null)" = "$1" ] && { echo "${s##*/session}"; return 0; }
	done
	return 1
}
# cids_of SID: the CIDs of the session's connections in sysfs whose state is "up", one a line
cids_of() {
	local c
	for c in /sys/class/iscsi_connection/connection"$1":*; do
		[ "$(cat "$c/state" 2>/dev/null)" = up ] && echo "${c##*:}"
	done | sort -n
}
# conns_seen SID: every connection device of the session with its state ("connection1:0=up ...")
conns_seen() {
	local c out=""
	for c in /sys/class/iscsi_connection/connection"$1":*; do
		[ -e "$c" ] && out="$out ${c##*/}=$(cat "$c/state" 2>/dev/null)"
	done
	echo "${out# }"
}
# wait_conns SID N TIMEOUT_S: until the session has N connections up (they may come after login)
wait_conns() {
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		[ "$(cids_of "$1" | wc -l)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
# conn_stats SID LABEL FILE: append every connection's GET_STATS counters to FILE
conn_stats() {
	timeout -k 5 60 "$VENV/bin/python" bench/connstats.py "$1" "$2" >>"$3" 2>>"$3.err"
}

# disk_of IQN [TRIES]: /dev/sdX of the session to IQN (the SCSI host of the session, its block devices)
disk_of() {
	local i s host d
	for ((i = 0; i < ${2:-200}; i++)); do
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
# the guest has no other SCSI disks: every sd* is an iSCSI LUN
count_disks() {
	local n=0 d
	for d in /sys/block/sd*; do [ -e "$d" ] && [ -b "/dev/${d##*/}" ] && n=$((n + 1)); done
	echo $n
}
wait_disks() { # N TIMEOUT_S
	local i
	for ((i = 0; i < $2 * 100; i++)); do
		[ "$(count_disks)" -ge "$1" ] && return 0
		sleep 0.01
	done
	return 1
}
wait_no_disks() {
	local i
	for ((i = 0; i < ${1:-30} * 100; i++)); do
		[ "$(count_disks)" = 0 ] && return 0
		sleep 0.01
	done
	return 1
}

# ---- the two initiators: up / adm / down ----------------------------------------------------
# side_up SIDE: runs in this shell (our iscsid's PID must stay known); prints why it failed
side_up() {
	case "$(kind_of "$1")" in
	inkernel)
		(openiscsi_up $INITIATOR) || return 1
		;;
	ours)
		if grep -qE '^(iscsi_tcp|scsi_transport_iscsi) ' /proc/modules; then
			echo "the in-kernel iscsi modules are still loaded"
			return 1
		fi
		modprobe -a scsi_mod sd_mod libcrc32c crc32c 2>/dev/null
		if [ ! -f kernel/iscsi_if.ko ] || [ ! -f kernel/iscsi_tcp.ko ]; then
			echo "kernel/iscsi_if.ko or kernel/iscsi_tcp.ko not built (make -C kernel)"
			return 1
		fi
		insmod kernel/iscsi_if.ko || { echo "insmod kernel/iscsi_if.ko failed"; return 1; }
		insmod kernel/iscsi_tcp.ko || { echo "insmod kernel/iscsi_tcp.ko failed"; return 1; }
		rm -rf $STATE
		mkdir -p $STATE/db
		echo "InitiatorName=$INITIATOR" >$STATE/initiatorname.iscsi
		: >$STATE/iscsid.conf
		"$VENV/bin/iscsid" -f >>$STATE/iscsid.log 2>&1 &
		ISCSID_PID=$!
		local i
		for ((i = 0; i < 300; i++)); do
			[ -S "$ISCSID_SOCKET" ] && return 0
			kill -0 $ISCSID_PID 2>/dev/null || { echo "our iscsid exited at start"; return 1; }
			sleep 0.1
		done
		echo "our iscsid did not open $ISCSID_SOCKET"
		return 1
		;;
	esac
}
export ISCSI_DB_DIR=$STATE/db ISCSID_SOCKET=$STATE/iscsid.sock ISCSID_CONFIG=$STATE/iscsid.conf
export ISCSI_INITIATORNAME_FILE=$STATE/initiatorname.iscsi

adm() { # SIDE ARGS...: the side's iscsiadm
	local side=$1
	shift
	# a hung login or logout must fail the side, not stall the whole run
	if [ "$(kind_of "$side")" = ours ]; then
		timeout -k 5 180 "$OUR_ADM" "$@"
	else
		timeout -k 5 180 "$SYS_ADM" "$@"
	fi
}

# side_down SIDE: log out, stop the daemon, unload the modules; prints what went wrong
side_down() {
	case "$(kind_of "$1")" in
	inkernel)
		(openiscsi_down) 2>&1
		;;
	ours)
		"$OUR_ADM" -m node -U all >/dev/null 2>&1
		if [ -n "$ISCSID_PID" ]; then
			kill -TERM $ISCSID_PID 2>/dev/null
			local i
			for ((i = 0; i < 50; i++)); do kill -0 $ISCSID_PID 2>/dev/null || break; sleep 0.1; done
			kill -KILL $ISCSID_PID 2>/dev/null
			wait $ISCSID_PID 2>/dev/null
			ISCSID_PID=""
		fi
		[ -s $STATE/iscsid.log ] && cat $STATE/iscsid.log >>"$RAW/iscsid-$1.log"
		local m
		for m in iscsi_tcp iscsi_if; do
			if grep -q "^$m " /proc/modules; then rmmod $m 2>&1 || echo "rmmod $m failed"; fi
		done
		;;
	esac
	wait_no_disks 10 || echo "disks left after $1 went down: $(ls /sys/block)"
}

# ---- measurements ---------------------------------------------------------------------------
# run_fio TAG DISK WORKLOAD: fio JSON + /proc/stat around it
run_fio() {
	local tag=$1 disk=$2 wl=$3 perf=()
	# cpu-clock: TCG has no PMU. Samples of the whole guest (initiator, target, fio), call graphs.
	[ "$PERF" = 1 ] && perf=(perf record -q -a -g -e cpu-clock -F 999 -o "/tmp/$tag.perf.data" --)
	grep '^cpu ' /proc/stat >"$RAW/$tag.stat"
	# shellcheck disable=SC2086
	timeout -k 10 $((RUNTIME + 120)) "${perf[@]}" fio --name="$wl" --filename="$disk" --direct=1 --ioengine=libaio ${WL[$wl]} \
		--runtime="$RUNTIME" --time_based --size=$((DISK_MB - 8))M --randrepeat=0 \
		--norandommap --group_reporting --output-format=json --output="$RAW/$tag.json" \
		>"$RAW/$tag.fio.log" 2>&1
	local rc=$?
	grep '^cpu ' /proc/stat >>"$RAW/$tag.stat"
	if [ "$PERF" = 1 ]; then
		{
			echo "# flat: self time by symbol"
			perf report -i "/tmp/$tag.perf.data" --stdio --no-children -g none \
				--sort dso,sym --percent-limit 0.3 2>/dev/null | grep -v '^$'
			echo "# by command"
			perf report -i "/tmp/$tag.perf.data" --stdio --no-children -g none \
				--sort comm --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$'
		} >"$RAW/$tag.perf.txt"
		rm -f "/tmp/$tag.perf.data"
	fi
	return $rc
}

# workloads SIDE ROUND TARGET IQN PORTAL WORKLOAD...
workloads() {
	local side=$1 r=$2 tgt=$3 iqn=$4 portal=$5 out disk wl n sid have tag
	shift 5
	n=$(conns_of "$side")
	out=$(adm "$side" -m discovery -t st -p "$portal" 2>&1) \
		|| { side_fail "$side" "discovery of $portal failed: $out"; return 1; }
	if [ "$n" -gt 1 ]; then
		out=$(adm "$side" -m node -T "$iqn" -p "$portal" -o update \
			-n node.session.iscsi.MaxConnections -v "$n" 2>&1) \
			|| { side_fail "$side" "setting node.session.iscsi.MaxConnections=$n failed: $out"; return 1; }
	fi
	out=$(adm "$side" -m node -T "$iqn" -p "$portal" --login 2>&1) \
		|| { side_fail "$side" "login to $iqn failed: $out"; return 1; }
	disk=$(disk_of "$iqn") || { side_fail "$side" "no disk for the session to $iqn"; return 1; }
	if [ "$n" -gt 1 ]; then
		sid=$(sid_of "$iqn") || { side_fail "$side" "no session to $iqn in sysfs"; return 1; }
		# further connections may still be logging in when --login returns
		wait_conns "$sid" "$n" 30
		have=$(cids_of "$sid" | wc -l)
		echo "want=$n have=$have sid=$sid cids=$(cids_of "$sid" | paste -sd,)" \
			>"$RAW/r$r-$side-$tgt-connections.txt"
	fi
	adm "$side" -m session -P 3 >"$RAW/r$r-$side-$tgt-session.txt" 2>&1
	if [ "$n" -gt 1 ] && [ "$have" != "$n" ]; then
		side_fail "$side" "the session to $iqn has $have connection(s) up in /sys/class/iscsi_connection ($(conns_seen "$sid")), not $n, 30 s after a login with node.session.iscsi.MaxConnections=$n (LIO MaxConnections=$LIO_MAXCONN): its numbers would not be those of $n connections"
		return 1
	fi
	vm_log "round $r $side $tgt: $disk${sid:+ (session $sid, $n connections)}"
	for wl in "$@"; do
		[ -n "${WL[$wl]:-}" ] || { side_fail "$side" "unknown workload $wl"; return 1; }
		tag=r$r-$side-$tgt-$wl
		if [ "$n" -gt 1 ] && ! conn_stats "$sid" before "$RAW/$tag.conns"; then
			side_fail "$side" "GET_STATS of the connections of session $sid before $wl failed: $(tr '\n' ' ' <"$RAW/$tag.conns.err")"
			return 1
		fi
		run_fio "$tag" "$disk" "$wl" || {
			side_fail "$side" "fio $wl on $tgt failed: $(tail -n 3 "$RAW/$tag.fio.log" | tr '\n' ' ')"
			return 1
		}
		if [ "$n" -gt 1 ]; then
			conn_stats "$sid" after "$RAW/$tag.conns" || {
				side_fail "$side" "GET_STATS of the connections of session $sid after $wl failed: $(tr '\n' ' ' <"$RAW/$tag.conns.err")"
				return 1
			}
			rm -f "$RAW/$tag.conns.err"
			have=$(cids_of "$sid" | wc -l)
			[ "$have" = "$n" ] && [ "$(grep -c '^after ' "$RAW/$tag.conns")" = "$n" ] || {
				side_fail "$side" "after $wl on $tgt the session has $have connection(s) up ($(conns_seen "$sid")), not $n: one lost during the run?"
				return 1
			}
		fi
	done
	# numbers from a data path that corrupts data mean nothing: check it once per session
	dd if=/tmp/bench-verify.bin of="$disk" bs=1M oflag=direct,seek_bytes seek=$VERIFY_OFFSET \
		status=none 2>/dev/null && dd if="$disk" of=/tmp/bench-back.bin bs=1M status=none \
		iflag=direct,skip_bytes,count_bytes skip=$VERIFY_OFFSET count=$((VERIFY_MIB << 20)) 2>/dev/null \
		&& cmp -s /tmp/bench-verify.bin /tmp/bench-back.bin \
		|| { side_fail "$side" "$tgt: $VERIFY_MIB MiB written with O_DIRECT read back different (or I/O failed): its numbers are not valid"; return 1; }
	rm -f /tmp/bench-back.bin
	out=$(adm "$side" -m node -T "$iqn" -p "$portal" --logout 2>&1) \
		|| { side_fail "$side" "logout from $iqn failed: $out"; return 1; }
	# login scaling logs in to every node record: this one must not be among them
	out=$(adm "$side" -m node -T "$iqn" -p "$portal" -o delete 2>&1) \
		|| { side_fail "$side" "deleting the node record of $iqn failed: $out"; return 1; }
	return 0
}

# login_scaling SIDE ROUND: discovery of the N login targets, -L all, wall time until N disks
login_scaling() {
	local side=$1 r=$2 out t0 login_s logout_s
	out=$(adm "$side" -m discovery -t st -p $PORTAL_LOGIN 2>&1) \
		|| { side_fail "$side" "discovery of $PORTAL_LOGIN failed: $out"; return 1; }
	[ "$(count_disks)" = 0 ] || { side_fail "$side" "disks left before login scaling: $(ls /sys/block)"; return 1; }
	t0=$(now_ns)
	out=$(adm "$side" -m node -L all 2>&1) \
		|| { side_fail "$side" "-m node -L all failed: $(echo "$out" | tail -n 3)"; return 1; }
	wait_disks "$NLOGIN" 120 || { side_fail "$side" "only $(count_disks) of $NLOGIN disks after -L all"; return 1; }
	login_s=$(secs_since "$t0")
	t0=$(now_ns)
	out=$(adm "$side" -m node -U all 2>&1) \
		|| { side_fail "$side" "-m node -U all failed: $(echo "$out" | tail -n 3)"; return 1; }
	wait_no_disks 60 || { side_fail "$side" "disks left after -U all"; return 1; }
	logout_s=$(secs_since "$t0")
	echo "targets=$NLOGIN login_s=$login_s logout_s=$logout_s" >"$RAW/r$r-$side-login.txt"
	vm_log "round $r $side: $NLOGIN logins in $login_s s, logouts in $logout_s s"
}

run_side() { # SIDE ROUND
	local side=$1 r=$2 t
	valid_side "$side" || { side_fail "$side" "unknown side (want inkernel, ours or ours_mc<N>)"; return; }
	if ! side_up "$side" >/tmp/bench-why 2>&1; then
		side_fail "$side" "cannot start: $(tr '\n' ' ' </tmp/bench-why)"
		side_down "$side" >/dev/null 2>&1
		return
	fi
	local wls=$WORKLOADS tgts=$TARGETS w
	if [ "$(conns_of "$side")" -gt 1 ]; then
		# the multi-connection sides: LIO only (tgtd answers MaxConnections=1), fewer workloads
		tgts="" wls=""
		case " $TARGETS " in *" lio "*) tgts=lio ;; esac
		for w in $WORKLOADS; do
			case " $MC_WORKLOADS " in *" $w "*) wls="$wls $w" ;; esac
		done
		[ -n "$tgts" ] && [ -n "$wls" ] \
			|| side_fail "$side" "nothing to run: it runs only on lio and [$MC_WORKLOADS]"
	fi
	for t in $tgts; do
		[ -n "${FAILED[$side]:-}" ] && break
		case $t in
		# shellcheck disable=SC2086 # word splitting of the workload list
		lio) workloads "$side" "$r" lio $IQN_LIO $PORTAL_LIO $wls || break ;;
		# shellcheck disable=SC2086
		tgt) workloads "$side" "$r" tgt $IQN_TGT $PORTAL_TGT $wls || break ;;
		*) side_fail "$side" "unknown target $t (want lio or tgt)"; break ;;
		esac
	done
	# login scaling: the single-connection sides only
	[ -z "${FAILED[$side]:-}" ] && [ "$NLOGIN" -gt 0 ] && [ "$(conns_of "$side")" = 1 ] \
		&& login_scaling "$side" "$r"
	side_down "$side" >/tmp/bench-why 2>&1
	if [ -s /tmp/bench-why ] && [ -z "${FAILED[$side]:-}" ]; then
		side_fail "$side" "teardown: $(tr '\n' ' ' </tmp/bench-why)"
	fi
	# a failed side must not leave its modules behind for the other one
	[ -n "${FAILED[$side]:-}" ] && side_down "$side" >/dev/null 2>&1
	return 0
}

# ---- setup ----------------------------------------------------------------------------------
if [ "$PERF" = 1 ]; then
	command -v perf >/dev/null || { echo "BENCH_PERF=1: no perf in the guest (linux-perf)"; exit 1; }
	sysctl -qw kernel.perf_event_paranoid=-1 kernel.kptr_restrict=0
fi
vm_log "bench: rounds=$ROUNDS runtime=${RUNTIME}s login_targets=$NLOGIN sides=[$SIDES] targets=[$TARGETS]"
ip link set lo up
modprobe -a scsi_mod sd_mod 2>/dev/null
{
	echo "kernel $(uname -r)"
	echo "cpus $(nproc)"
	echo "fio $(fio --version)"
	echo "open-iscsi $($SYS_ADM --version 2>/dev/null)"
	echo "settings rounds=$ROUNDS runtime=$RUNTIME login_targets=$NLOGIN disk_mb=$DISK_MB lio_maxconnections=$LIO_MAXCONN"
} >"$VM_OUT/env.txt"
lio_params=(portal=$PORTAL_LIO)
[ "$LIO_MAXCONN" -gt 1 ] && lio_params+=("MaxConnections=$LIO_MAXCONN")
case " $TARGETS " in *" lio "*) lio_ramdisk $IQN_LIO "$DISK_MB" "${lio_params[@]}" ;; esac
case " $TARGETS " in *" tgt "*) tgt_file $IQN_TGT "$DISK_MB" portal=$PORTAL_TGT ;; esac
for ((i = 1; i <= NLOGIN; i++)); do
	lio_ramdisk "$IQN_LOGIN-$(printf %02d $i)" 1 portal=$PORTAL_LOGIN
done
# reading a hole of tgtd's sparse backing file costs less than reading data: fill it once
for img in /tmp/tgt-0-*.img; do
	[ -f "$img" ] && dd if=/dev/zero of="$img" bs=1M count="$DISK_MB" conv=notrunc status=none
done
head -c $((VERIFY_MIB << 20)) /dev/urandom >/tmp/bench-verify.bin
vm_log "targets ready"

for ((r = 1; r <= ROUNDS; r++)); do
	for side in $SIDES; do
		[ -n "${FAILED[$side]:-}" ] && continue
		vm_log "== round $r: $side"
		run_side "$side" "$r"
	done
done

tgt_down
echo done >>"$STATUS"
vm_log "bench done"

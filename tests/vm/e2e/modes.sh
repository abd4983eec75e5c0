#!/bin/bash
# Guest side of tests/vm/test_vm_modes.py: issue 4's negotiated-mode matrix through OUR iscsid and
# iscsiadm on our kernel modules, each mode proven with fio --verify=crc32c.
# Run by hand: tests/vm/run-vm --timeout 600 tests/vm/e2e/modes.sh [CASE ...]
# (modules built beforehand: make -C kernel; CASE: r2t immdata unsol digest segment chap tgtd,
# default all).
#
# For each case: an LIO ramdisk target on 127.0.0.1:3260 whose tpgt_1/param is set as the case says
# (tgtd for the last), a node record made with `iscsiadm -m node -o new` and updated with -o update
# where our side must propose the value, --login, the exact "Negotiated iSCSI params" lines of
# `iscsiadm -m session -P 3`, fio random writes with mixed block sizes (512 B - 256 KiB, iodepth 16,
# direct, libaio) then a crc32c verify pass, `iscsiadm -m session -r SID -s` counters, --logout,
# the target torn down.
#
# Output: key=value lines in $VM_OUT/results.txt:
#   <case>=ok | <case>=FAIL: reason         one per case that ran
#   <case>_fio=write W MB/s, verify R MB/s, N ios, 0 errors
#   <case>_negotiated=...                    the negotiated block, one line, "; " separated
#   <case>_stats=r2t_pdus=.. dataout_pdus=.. digest_err=..
#   done=ok                                  the end was reached (exit code: 0 iff all cases ok)
# Files in $VM_OUT: <case>-P3.txt, <case>-stats.txt, <case>-fio.json, iscsid.log.
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

INITIATOR=iqn.2026-11.test:pyiscsi-modes
PORTAL=127.0.0.1:3260
TGT_PORTAL=127.0.0.1:3261
VENV=$VM_WORK/.venv
ADM=$VENV/bin/iscsiadm
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
FIO_SIZE=${FIO_SIZE:-32M}
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(r2t immdata unsol digest segment chap tgtd)
: >"$RES"
ALL_OK=1

. tests/vm/e2e/common.sh

sid_of() {
	local s
	for s in /sys/class/iscsi_session/session*; do
		[ "$(cat "$s/targetname" 2>/dev/null)" = "$1" ] && { echo "${s##*session}"; return 0; }
	done
	return 1
}


# lio_down IQN: remove an LIO target made by lio_ramdisk and its ramdisk
lio_down() {
	local tpg=/sys/kernel/config/target/iscsi/$1/tpgt_1 l a rd
	[ -d "$tpg" ] || return 0
	echo 0 >"$tpg/enable" 2>/dev/null
	for a in "$tpg"/acls/*/; do
		[ -d "$a" ] || continue
		for l in "$a"lun_*/lun_*; do [ -L "$l" ] && rm -f "$l"; done
		for l in "$a"lun_*; do [ -d "$l" ] && rmdir "$l"; done
		rmdir "$a"
	done
	for l in "$tpg"/lun/lun_*/*; do
		[ -L "$l" ] || continue
		rd=$(readlink -f "$l")
		rm -f "$l"
	done
	for l in "$tpg"/lun/lun_*; do [ -d "$l" ] && rmdir "$l"; done
	for l in "$tpg"/np/*; do [ -d "$l" ] && rmdir "$l"; done
	rmdir "$tpg" && rmdir "/sys/kernel/config/target/iscsi/$1" || vm_log "lio_down: $1 not removed"
	[ -n "${rd:-}" ] && [ -d "$rd" ] && { rmdir "$rd" || vm_log "lio_down: $rd not removed"; }
	return 0
}

# adm ARGS...: our iscsiadm; its output in $OUT, its exit code returned
adm() {
	OUT=$("$ADM" "$@" 2>&1)
}

# node_new IQN PORTAL [name=value ...]: a fresh node record, then -o update for each name=value
node_new() {
	local iqn=$1 portal=$2 kv
	shift 2
	adm -m node -o new -T "$iqn" -p "$portal" || { CASE_ERR="node -o new (exit $?): $OUT"; return 1; }
	for kv in "$@"; do
		adm -m node -T "$iqn" -p "$portal" -o update -n "${kv%%=*}" -v "${kv#*=}" \
			|| { CASE_ERR="-o update $kv (exit $?): $OUT"; return 1; }
	done
}

# negotiated CASE SID EXPECTED: the -P 3 "Negotiated iSCSI params" lines must be exactly EXPECTED
# (one "Key: Value" a line, without the leading tabs)
negotiated() {
	local name=$1 sid=$2 want=$3 got
	adm -m session -r "$sid" -P 3 || { CASE_ERR="-m session -r $sid -P 3 (exit $?): $OUT"; return 1; }
	echo "$OUT" >"$VM_OUT/$name-P3.txt"
	got=$(echo "$OUT" | awk '/Negotiated iSCSI params:/ { on = 1; getline; next }
		on && /\*\*\*\*/ { exit } on { sub(/^\t+/, ""); print }')
	result "${name}_negotiated" "$(echo "$got" | paste -sd';' | sed 's/;/; /g')"
	[ "$got" = "$want" ] || {
		CASE_ERR="negotiated params: got [$(echo "$got" | paste -sd';')] want [$(echo "$want" | paste -sd';')]"
		return 1
	}
}

# stat_of NAME: a counter from the last -s output
stat_of() { sed -n "s/^\t$1: \([0-9]*\)$/\1/p" "$STATS_FILE"; }

# stats CASE SID: read the counters (STATS_FILE)
stats() {
	STATS_FILE=$VM_OUT/$1-stats.txt
	adm -m session -r "$2" -s || { CASE_ERR="-m session -r $2 -s (exit $?): $OUT"; return 1; }
	echo "$OUT" >"$STATS_FILE"
	result "${1}_stats" "r2t_pdus=$(stat_of r2t_pdus) dataout_pdus=$(stat_of dataout_pdus) datain_pdus=$(stat_of datain_pdus) scsicmd_pdus=$(stat_of scsicmd_pdus) digest_err=$(stat_of digest_err) timeout_err=$(stat_of timeout_err)"
}

# run_fio CASE DISK: random writes, mixed sizes, then verify; fio's exit code and error count
run_fio() {
	local name=$1 disk=$2 json=$VM_OUT/$1-fio.json rc
	fio --name="$name" --filename="$disk" --rw=randwrite \
		--bssplit=512/10:4k/25:8k/10:64k/20:128k/15:256k/20 --iodepth=16 --direct=1 \
		--ioengine=libaio --size="$FIO_SIZE" --verify=crc32c --do_verify=1 --verify_fatal=1 \
		--verify_dump=0 --output-format=json --output="$json" >/dev/null 2>"$VM_OUT/$name-fio.err"
	rc=$?
	[ $rc = 0 ] || { CASE_ERR="fio exit $rc: $(head -c 600 "$VM_OUT/$name-fio.err")"; return 1; }
	local line
	line=$(jq -r '.jobs[0] | "\(.error) \(.write.bw_bytes) \(.read.bw_bytes) \(.write.total_ios) \(.read.total_ios) \(.write.io_bytes) \(.read.io_bytes)"' "$json") \
		|| { CASE_ERR="fio json unreadable"; return 1; }
	local err wbw rbw wios rios wbytes rbytes
	read -r err wbw rbw wios rios wbytes rbytes <<<"$line"
	result "${name}_fio" "$(awk -v w="$wbw" -v r="$rbw" -v wi="$wios" -v ri="$rios" -v e="$err" \
		'BEGIN { printf "write %.1f MB/s, verify %.1f MB/s, %d writes, %d verify reads, %d errors", w / 1e6, r / 1e6, wi, ri, e }')"
	[ "$err" = 0 ] || { CASE_ERR="fio reported error $err"; return 1; }
	[ "$wbytes" -gt 0 ] && [ "$rbytes" = "$wbytes" ] \
		|| { CASE_ERR="fio wrote $wbytes bytes but verified $rbytes"; return 1; }
}

# logout_gone IQN PORTAL: --logout, and the session is gone
logout_gone() {
	local i
	adm -m node -T "$1" -p "$2" --logout || { CASE_ERR="--logout (exit $?): $OUT"; return 1; }
	for ((i = 0; i < 100; i++)); do
		sid_of "$1" >/dev/null || return 0
		sleep 0.1
	done
	CASE_ERR="session to $1 still there after --logout"
	return 1
}

# login_io CASE IQN PORTAL EXPECTED_NEGOTIATED: login, check, fio, stats (SID, STATS_FILE set)
login_io() {
	local name=$1 iqn=$2 portal=$3 want=$4 disk
	adm -m node -T "$iqn" -p "$portal" --login || { CASE_ERR="--login (exit $?): $OUT"; return 1; }
	SID=$(sid_of "$iqn") || { CASE_ERR="no session after --login"; return 1; }
	disk=$(iscsi_disk "$iqn" 20) || { CASE_ERR="no disk"; return 1; }
	negotiated "$name" "$SID" "$want" || return 1
	run_fio "$name" "$disk" || return 1
	stats "$name" "$SID" || return 1
	[ "$(stat_of digest_err)" = 0 ] || { CASE_ERR="digest_err $(stat_of digest_err)"; return 1; }
	[ "$(stat_of timeout_err)" = 0 ] || { CASE_ERR="timeout_err $(stat_of timeout_err)"; return 1; }
}

# The negotiated block: our defaults are open-iscsi's (MaxRecvDataSegmentLength 262144,
# FirstBurstLength 262144, MaxBurstLength 16776192, InitialR2T No, ImmediateData Yes,
# MaxOutstandingR2T 1, digests None); LIO's: FirstBurstLength 65536, MaxBurstLength 262144,
# InitialR2T Yes, ImmediateData Yes, MaxOutstandingR2T 1. LIO answers our MaxRecvDataSegmentLength
# declaration with min(ours, its MaxXmitDataSegmentLength) as its own MaxRecvDataSegmentLength, not
# its tpgt_1/param/MaxRecvDataSegmentLength (8192): Debian's open-iscsi shows the same
# "MaxXmitDataSegmentLength: 262144" against the same target (checked in this VM).
# neg HD DD MRDSL MXDSL FBL MBL IMM IR2T MOR2T
neg() {
	printf 'HeaderDigest: %s\nDataDigest: %s\nMaxRecvDataSegmentLength: %s\nMaxXmitDataSegmentLength: %s\nFirstBurstLength: %s\nMaxBurstLength: %s\nImmediateData: %s\nInitialR2T: %s\nMaxOutstandingR2T: %s' "$@"
}

# lio_case CASE "LIO params" "node updates" EXPECTED [extra check function]
lio_case() {
	local name=$1 params=$2 updates=$3 want=$4 check=${5:-}
	local iqn=iqn.2003-01.org.linux-iscsi.vm:modes-$name
	step "case $name: LIO $params; ours $updates"
	CASE_ERR=""
	# shellcheck disable=SC2086
	lio_ramdisk "$iqn" 96 $params >/dev/null
	# shellcheck disable=SC2086
	if node_new "$iqn" $PORTAL $updates && login_io "$name" "$iqn" $PORTAL "$want" \
		&& { [ -z "$check" ] || $check; }; then
		logout_gone "$iqn" $PORTAL
	else
		local err=$CASE_ERR
		adm -m node -T "$iqn" -p $PORTAL --logout
		CASE_ERR=$err
	fi
	lio_down "$iqn"
	adm -m node -o delete -T "$iqn" -p $PORTAL
	case_result "$name"
}

case_result() {
	if [ -z "$CASE_ERR" ]; then
		result "$1" ok
	else
		result "$1" "FAIL: $CASE_ERR"
		ALL_OK=0
	fi
}

check_r2t() {
	[ "$(stat_of r2t_pdus)" -gt 0 ] || { CASE_ERR="r2t_pdus is 0 with InitialR2T=Yes"; return 1; }
	[ "$(stat_of dataout_pdus)" -gt 0 ] || { CASE_ERR="dataout_pdus is 0"; return 1; }
}
# InitialR2T=No, ImmediateData=Yes, FirstBurstLength=256 KiB and every write <= 256 KiB: each write's
# data goes unsolicited (immediate data, then Data-Out PDUs past MaxXmitDataSegmentLength), the
# target never needs an R2T.
check_immediate() {
	[ "$(stat_of r2t_pdus)" = 0 ] || { CASE_ERR="r2t_pdus $(stat_of r2t_pdus) with all data unsolicited"; return 1; }
}
check_unsolicited() {
	check_immediate || return 1
	[ "$(stat_of dataout_pdus)" -gt 0 ] || { CASE_ERR="no unsolicited Data-Out"; return 1; }
}

case_r2t() {
	lio_case r2t "InitialR2T=Yes ImmediateData=No MaxOutstandingR2T=4 MaxBurstLength=65536" \
		"node.session.iscsi.MaxOutstandingR2T=4" \
		"$(neg None None 262144 262144 65536 65536 No Yes 4)" check_r2t
}
case_immdata() {
	lio_case immdata "InitialR2T=No ImmediateData=Yes FirstBurstLength=262144" "" \
		"$(neg None None 262144 262144 262144 262144 Yes No 1)" check_immediate
}
# The same with LIO declaring 8 KiB (its MaxXmitDataSegmentLength caps what it declares, see
# above): 8 KiB of immediate data, the rest of the first burst in unsolicited Data-Out PDUs.
case_unsol() {
	lio_case unsol "InitialR2T=No ImmediateData=Yes FirstBurstLength=262144 MaxXmitDataSegmentLength=8192" "" \
		"$(neg None None 262144 8192 262144 262144 Yes No 1)" check_unsolicited
}
case_digest() {
	lio_case digest "HeaderDigest=CRC32C DataDigest=CRC32C" \
		"node.conn[0].iscsi.HeaderDigest=CRC32C node.conn[0].iscsi.DataDigest=CRC32C" \
		"$(neg CRC32C CRC32C 262144 262144 65536 262144 Yes Yes 1)"
}
case_segment() {
	lio_case segment "MaxRecvDataSegmentLength=4096 MaxXmitDataSegmentLength=4096" \
		"node.conn[0].iscsi.MaxRecvDataSegmentLength=4096" \
		"$(neg None None 4096 4096 65536 262144 Yes Yes 1)"
}

# Mutual CHAP through an LIO ACL for our initiator name: right secrets log in and verify; a wrong
# target secret (password_in) makes --login exit 24 and leaves no session.
chap_wrong() {
	local iqn=$CHAP_IQN
	adm -m node -T "$iqn" -p $PORTAL -o update -n node.session.auth.password_in -v wrong-target-secret \
		|| { CASE_ERR="-o update password_in (exit $?): $OUT"; return 1; }
	adm -m node -T "$iqn" -p $PORTAL --login
	local rc=$?
	echo "$OUT" >"$VM_OUT/chap-wrong-login.txt"
	[ $rc = 24 ] || { CASE_ERR="--login with a wrong target secret: exit $rc (want 24): $OUT"; return 1; }
	! sid_of "$iqn" >/dev/null || { CASE_ERR="a session exists after the failed login"; return 1; }
	result chap_wrong_secret_exit 24
}
case_chap() {
	local u=modes-init p=init-secret-12345 mu=modes-target mp=target-secret-6789
	CHAP_IQN=iqn.2003-01.org.linux-iscsi.vm:modes-chap
	step "case chap: mutual CHAP, LIO ACL for $INITIATOR"
	CASE_ERR=""
	lio_ramdisk $CHAP_IQN 96 "auth=$u:$p:$mu:$mp" "initiator=$INITIATOR" >/dev/null
	if node_new $CHAP_IQN $PORTAL node.session.auth.authmethod=CHAP \
		"node.session.auth.username=$u" "node.session.auth.password=$p" \
		"node.session.auth.username_in=$mu" "node.session.auth.password_in=$mp" \
		&& login_io chap $CHAP_IQN $PORTAL "$(neg None None 262144 262144 65536 262144 Yes Yes 1)" \
		&& logout_gone $CHAP_IQN $PORTAL; then
		chap_wrong
	else
		local err=$CASE_ERR
		adm -m node -T $CHAP_IQN -p $PORTAL --logout
		CASE_ERR=$err
	fi
	lio_down $CHAP_IQN
	adm -m node -o delete -T $CHAP_IQN -p $PORTAL
	case_result chap
}

# The same default-mode verification against tgtd (its defaults: MaxRecvDataSegmentLength 8192,
# FirstBurstLength 65536, MaxBurstLength 262144, InitialR2T Yes, ImmediateData Yes).
case_tgtd() {
	local iqn=iqn.2001-04.com.example.vm:modes-tgtd
	step "case tgtd: default mode"
	CASE_ERR=""
	tgt_file $iqn 96 portal=$TGT_PORTAL
	if node_new $iqn $TGT_PORTAL \
		&& login_io tgtd $iqn $TGT_PORTAL "$(neg None None 262144 8192 65536 262144 Yes Yes 1)"; then
		logout_gone $iqn $TGT_PORTAL
	else
		local err=$CASE_ERR
		adm -m node -T $iqn -p $TGT_PORTAL --logout
		CASE_ERR=$err
	fi
	tgt_down
	adm -m node -o delete -T $iqn -p $TGT_PORTAL
	case_result tgtd
}

# ---------------------------------------------------------------------------------------------
step "setup"
ip link set lo up
command -v fio >/dev/null && command -v jq >/dev/null || fail "fio or jq missing in the guest"
pyiscsi_kmod_up
iscsid_state $INITIATOR
start_iscsid
for c in "${CASES[@]}"; do
	declare -F "case_$c" >/dev/null || fail "no such case $c"
	"case_$c"
done

step "teardown"
[ -z "$(ls /sys/class/iscsi_session 2>/dev/null)" ] || fail "sessions left: $(ls /sys/class/iscsi_session)"
kill $ISCSID_PID 2>/dev/null
wait $ISCSID_PID 2>/dev/null
pyiscsi_kmod_down
cp $STATE/iscsid.log "$VM_OUT/"
result done ok
[ $ALL_OK = 1 ] && echo "PASS" || { echo "FAIL: some cases failed (see results above)"; exit 1; }

#!/bin/bash
# Guest side of tests/vm/test_vm_mcs.py: multi-connection sessions (MC/S) against LIO.
# Run by hand: make -C kernel && tests/vm/run-vm --timeout 600 tests/vm/e2e/mcs.sh [KO_DIR]
# Writes key=value lines to $VM_OUT/results.txt; stops at the first failure with "FAIL: ...".
#
# LIO target A: one portal group, portals 127.0.0.1:3260 and 127.0.0.2:3260, MaxConnections=4.
# 1. login with node.session.iscsi.MaxConnections=4: four connections (our sysfs, LIO's
#    sockets), alternating between the two portals; fio (crc32c verify, QD32, mixed sizes,
#    verification reads interleaved with the writes); every connection carried commands
# 2. `-m session -r SID:3 --logout` while fio verify runs: 0 errors, connection 3 gone from
#    sysfs and from LIO, the other three carry on
# 3. LIO's end of the connections to 127.0.0.2 killed (ss -K) while fio verify runs: session
#    recovery at ERL 0, 0 fio errors, the three connections back
# 4. target B with CHAP and mutual CHAP, header and data digests, MaxConnections=2: both
#    connections authenticated and digested; data read back
# 5. tgtd (MaxConnections=1) asked for 4: one connection, no error
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

IQN=iqn.2003-01.org.linux-iscsi.vm:mcs
IQN_B=iqn.2003-01.org.linux-iscsi.vm:mcs-chap
IQN_TGT=iqn.2001-04.com.example.vm:mcs-tgtd
INITIATOR=iqn.2026-12.test:pyiscsi-mcs
VENV=$VM_WORK/.venv
PY=$VENV/bin/python
ADM=$VENV/bin/iscsiadm
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
KO=${1:-kernel}
TPG=/sys/kernel/config/target/iscsi/$IQN/tpgt_1
: >"$RES"
. tests/vm/e2e/common.sh

sid_of() {
	local s
	for s in /sys/class/iscsi_session/session*; do
		[ "$(cat "$s/targetname" 2>/dev/null)" = "$1" ] && { echo "${s##*session}"; return 0; }
	done
	return 1
}
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
state_of() { cat /sys/class/iscsi_session/session$1/state 2>/dev/null; }
wait_state() { # SID STATE SECONDS
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		[ "$(state_of $1)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
# the CIDs of session SID whose connection is up, space-separated
cids_up() {
	local c out=""
	for c in /sys/class/iscsi_connection/connection$1:*; do
		[ -e "$c" ] || continue
		[ "$(cat "$c/state" 2>/dev/null)" = up ] && out="$out ${c##*:}"
	done
	echo $out
}
wait_cids() { # SID "CIDS" SECONDS
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		[ "$(cids_up $1)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
# established connections at LIO's end of PORT (any address)
lio_conns() { ss -Htn state established "( sport = :${1:-3260} )" | wc -l; }
# the per-connection counters of GET_STATS: "CID scsicmd_pdus datain_pdus dataout_pdus" lines
conn_stats() {
	"$PY" - "$1" <<'EOF'
import sys
from pyiscsid import sysfs
from pyiscsid.netlink import IscsiNetlink
from pyiscsid.uapi import Stat
sid = int(sys.argv[1])
with IscsiNetlink() as nl:
    for cid in sysfs.connection_ids(sid):
        s = nl.get_stats(sid, cid)
        print(cid, s[Stat.SCSICMD_PDUS], s[Stat.DATAIN_PDUS], s[Stat.DATAOUT_PDUS])
EOF
}
# fio NAME DISK SIZE_MB RATE: crc32c-verified random writes, verification reads interleaved,
# in the background (FIO_PID); fio_check NAME checks its end and result
fio_start() {
	fio --name="$1" --filename="$2" --direct=1 --ioengine=libaio --iodepth=32 \
		--rw=randwrite --bssplit=4k/50:64k/40:256k/10 --size="$3"M --rate="$4" \
		--verify=crc32c --verify_backlog=64 --do_verify=1 --verify_fatal=1 \
		--output-format=json --output=/tmp/fio-$1.json >/tmp/fio-$1.err 2>&1 &
	FIO_PID=$!
}
fio_check() {
	local i rc
	for ((i = 0; i < 1800; i++)); do kill -0 $FIO_PID 2>/dev/null || break; sleep 0.1; done
	kill -0 $FIO_PID 2>/dev/null && fail "$1: fio still running after 180 s"
	wait $FIO_PID
	rc=$?
	cp /tmp/fio-$1.json "$VM_OUT/" 2>/dev/null
	[ $rc = 0 ] || fail "$1: fio exit $rc: $(tail -n 20 /tmp/fio-$1.err)"
	read -r fio_err fio_w fio_r < <("$PY" - /tmp/fio-$1.json <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
print(job["error"] + job.get("total_err", 0), job["write"]["io_bytes"], job["read"]["io_bytes"])
EOF
)
	result "$1_fio_errors" "$fio_err"
	result "$1_fio_written" "$fio_w"
	result "$1_fio_verified" "$fio_r"
	[ "$fio_err" = 0 ] || fail "$1: fio reported $fio_err errors"
	[ "$fio_r" -gt 0 ] || fail "$1: fio verified nothing"
}
node_set() { # IQN PORTAL NAME VALUE
	$ADM -m node -T "$1" -p "$2" -o update -n "$3" -v "$4" || fail "cannot set $3=$4 on $1 $2 (exit $?)"
}
login() { # IQN PORTAL
	$ADM -m node -T "$1" -p "$2" --login >/tmp/login.out 2>&1 \
		|| { rc=$?; cat /tmp/login.out; fail "login to $1 $2 (exit $rc)"; }
}
logout() { # IQN PORTAL
	$ADM -m node -T "$1" -p "$2" --logout >/tmp/logout.out 2>&1 \
		|| { rc=$?; cat /tmp/logout.out; fail "logout of $1 $2 (exit $rc)"; }
}

# ---------------------------------------------------------------------------------------------
step "setup"
ip link set lo up
pyiscsi_kmod_up $KO
lio_ramdisk $IQN 128 MaxConnections=4
mkdir "$TPG/np/127.0.0.2:3260" || fail "cannot add the second portal"
wait_port 127.0.0.2 3260
iscsid_state $INITIATOR
start_iscsid
$ADM -m discovery -t st -p 127.0.0.1:3260 >/tmp/disc.out || fail "discovery (exit $?)"
sort /tmp/disc.out >"$VM_OUT/discovery.txt"
[ "$(sort /tmp/disc.out | tr '\n' '|')" = "127.0.0.1:3260,1 $IQN|127.0.0.2:3260,1 $IQN|" ] \
	|| fail "discovery output: $(cat /tmp/disc.out)"

# ---------------------------------------------------------------------------------------------
step "1. one session, four connections"
node_set $IQN 127.0.0.1:3260 node.session.iscsi.MaxConnections 4
login $IQN 127.0.0.1:3260
cp /tmp/login.out "$VM_OUT/login-mcs.txt"
sid=$(sid_of $IQN) || fail "no session"
disk=$(disk_of $IQN) || fail "no disk"
result sid "$sid"
[ "$(ls -d /sys/class/iscsi_session/session* | wc -l)" = 1 ] || fail "more than one session"
wait_cids $sid "0 1 2 3" 10 || fail "connections up: $(cids_up $sid), not 0 1 2 3"
result conns_up "$(cids_up $sid)"
for c in 0 1 2 3; do
	result conn${c}_address "$(cat /sys/class/iscsi_connection/connection$sid:$c/address)"
done
result lio_conns_1 "$(lio_conns)"
[ "$(lio_conns)" = 4 ] || fail "LIO has $(lio_conns) connections, not 4"
fio_start mixed "$disk" 96 12m
fio_check mixed
conn_stats $sid >"$VM_OUT/conn-stats-1.txt"
cat "$VM_OUT/conn-stats-1.txt"
while read -r cid cmds din dout; do
	result "c1_conn${cid}_cmds" "$cmds"
	[ "$cmds" -gt 100 ] || fail "connection $cid carried $cmds commands"
	[ "$din" -gt 0 ] || fail "connection $cid carried no Data-In"
done <"$VM_OUT/conn-stats-1.txt"
$ADM -m session -P 3 >"$VM_OUT/session-P3.txt" 2>&1 || fail "-m session -P 3 (exit $?)"
$ADM -m session -r $sid -s >"$VM_OUT/session-stats.txt" 2>&1 || fail "-m session -s (exit $?)"
result mcs_login ok

# ---------------------------------------------------------------------------------------------
step "2. one connection logged out while fio verify runs"
fio_start close "$disk" 64 6m
sleep 3
t0=$(now_ms)
$ADM -m session -r $sid:3 --logout >/tmp/close.out 2>&1 \
	|| { rc=$?; cat /tmp/close.out; fail "logout of connection 3 (exit $rc)"; }
result t2_close_ms $(($(now_ms) - t0))
cp /tmp/close.out "$VM_OUT/close-conn.txt"
[ -e /sys/class/iscsi_connection/connection$sid:3 ] && fail "connection $sid:3 still in sysfs"
[ "$(cids_up $sid)" = "0 1 2" ] || fail "connections up after closing 3: $(cids_up $sid)"
sleep 1
result lio_conns_2 "$(lio_conns)"
[ "$(lio_conns)" = 3 ] || fail "LIO has $(lio_conns) connections after closing one, not 3"
[ "$(state_of $sid)" = LOGGED_IN ] || fail "session $(state_of $sid) after closing a connection"
fio_check close
grep -q "connection$sid:3 error" /var/log/kern.log 2>/dev/null && fail "closing 3 raised an error"
dmesg | grep -q "connection$sid:3: error" && fail "closing connection 3 raised a connection error"
result close_conn ok

# ---------------------------------------------------------------------------------------------
step "3. LIO's end of the connections to 127.0.0.2 killed while fio verify runs"
fio_start kill "$disk" 64 6m
sleep 3
ss -Htn state established "( src 127.0.0.2 and sport = :3260 )" >"$VM_OUT/killed.txt"
[ -s "$VM_OUT/killed.txt" ] || fail "no connection to 127.0.0.2 to kill"
t0=$(now_ms)
ss -K -tn state established "( src 127.0.0.2 and sport = :3260 )" >/dev/null \
	|| fail "ss -K failed (no CONFIG_INET_DIAG_DESTROY?)"
wait_state $sid LOGGED_IN 30 || fail "session $sid not back ($(state_of $sid))"
wait_cids $sid "0 1 2" 30 || fail "connections up after the recovery: $(cids_up $sid)"
result t3_all_back_ms $(($(now_ms) - t0))
grep -q "session $sid\|connection$sid" $STATE/iscsid.log || fail "iscsid logged nothing"
fio_check kill
[ "$(sid_of $IQN)" = "$sid" ] || fail "SID changed: $sid -> $(sid_of $IQN)"
sleep 1
[ "$(lio_conns)" = 3 ] || fail "LIO has $(lio_conns) connections after the recovery, not 3"
result recovery ok

head -c $((16 << 20)) /dev/urandom >/tmp/rand.bin
dd if=/tmp/rand.bin of="$disk" bs=1M oflag=direct status=none || fail "write"
dd if="$disk" of=/tmp/back.bin bs=1M count=16 iflag=direct status=none || fail "read"
cmp /tmp/rand.bin /tmp/back.bin || fail "data read back differs"
logout $IQN 127.0.0.1:3260
[ "$(lio_conns)" = 0 ] || { sleep 1; [ "$(lio_conns)" = 0 ] || fail "LIO keeps $(lio_conns) connections after the logout"; }
result logout_all ok

# ---------------------------------------------------------------------------------------------
step "4. CHAP, mutual CHAP and digests on every connection"
lio_ramdisk $IQN_B 32 portal=127.0.0.1:3262 initiator=$INITIATOR \
	auth=mcsuser:mcs-secret-12:mcstarget:mcs-target-sec MaxConnections=2 \
	HeaderDigest=CRC32C DataDigest=CRC32C
$ADM -m discovery -t st -p 127.0.0.1:3262 >/dev/null || fail "discovery B (exit $?)"
for kv in node.session.auth.authmethod=CHAP node.session.auth.username=mcsuser \
	node.session.auth.password=mcs-secret-12 node.session.auth.username_in=mcstarget \
	node.session.auth.password_in=mcs-target-sec node.session.iscsi.MaxConnections=4 \
	node.conn[0].iscsi.HeaderDigest=CRC32C node.conn[0].iscsi.DataDigest=CRC32C; do
	node_set $IQN_B 127.0.0.1:3262 "${kv%%=*}" "${kv#*=}"
done
login $IQN_B 127.0.0.1:3262
bsid=$(sid_of $IQN_B) || fail "no CHAP session"
bdisk=$(disk_of $IQN_B) || fail "no CHAP disk"
wait_cids $bsid "0 1" 10 || fail "CHAP connections up: $(cids_up $bsid), not 0 1"
for c in 0 1; do
	d=/sys/class/iscsi_connection/connection$bsid:$c
	# sysfs shows 1 for CRC32C, as the in-kernel transport class does
	[ "$(cat $d/header_digest)" = 1 ] || fail "connection $c header digest $(cat $d/header_digest)"
	[ "$(cat $d/data_digest)" = 1 ] || fail "connection $c data digest $(cat $d/data_digest)"
done
head -c $((8 << 20)) /dev/urandom >/tmp/randb.bin
dd if=/tmp/randb.bin of="$bdisk" bs=64k oflag=direct status=none || fail "write B"
dd if="$bdisk" of=/tmp/backb.bin bs=64k count=128 iflag=direct status=none || fail "read B"
cmp /tmp/randb.bin /tmp/backb.bin || fail "CHAP data read back differs"
conn_stats $bsid >"$VM_OUT/conn-stats-4.txt"
while read -r cid cmds din dout; do
	[ "$cmds" -gt 0 ] || fail "CHAP connection $cid carried no command"
done <"$VM_OUT/conn-stats-4.txt"
logout $IQN_B 127.0.0.1:3262
result chap_digests ok

# ---------------------------------------------------------------------------------------------
step "5. tgtd (MaxConnections=1) asked for 4: one connection, no error"
tgt_file $IQN_TGT 16 portal=127.0.0.1:3261
$ADM -m discovery -t st -p 127.0.0.1:3261 >/dev/null || fail "discovery tgtd (exit $?)"
node_set $IQN_TGT 127.0.0.1:3261 node.session.iscsi.MaxConnections 4
login $IQN_TGT 127.0.0.1:3261
tsid=$(sid_of $IQN_TGT) || fail "no tgtd session"
tdisk=$(disk_of $IQN_TGT) || fail "no tgtd disk"
sleep 1
[ "$(cids_up $tsid)" = 0 ] || fail "tgtd connections: $(cids_up $tsid)"
dd if=/tmp/randb.bin of="$tdisk" bs=1M oflag=direct status=none || fail "write tgtd"
dd if="$tdisk" of=/tmp/backt.bin bs=1M count=8 iflag=direct status=none || fail "read tgtd"
cmp /tmp/randb.bin /tmp/backt.bin || fail "tgtd data differs"
logout $IQN_TGT 127.0.0.1:3261
tgt_down
result tgtd_one ok

step "teardown"
teardown_pyiscsi
result done ok
echo "PASS"

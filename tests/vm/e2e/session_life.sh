#!/bin/bash
# Guest side of tests/vm/test_vm_session_life.py: iscsid as a daemon over the sessions' lives.
# Run by hand: make -C kernel && tests/vm/run-vm --timeout 500 tests/vm/e2e/session_life.sh
# Writes key=value lines to $VM_OUT/results.txt; stops at the first failure with "FAIL: ...".
#
# 1. four LIO targets: discovery, `-m node -L all` (parallel logins), every disk written and
#    read back, `--logoutall=all`, the disks gone
# 2. node.session.nr_sessions=2: one --login makes two sessions with different ISIDs; data
#    written through one reads back through the other; a second --login says they exist (15)
# 3. a LUN added to a logged-in target: `-m session -r SID --rescan` makes its disk
# 4. kill -9 iscsid while dd writes: the I/O finishes (the kernel owns the data path); a new
#    iscsid takes the session over, recovers it after a portal group outage, logs it out;
#    `-m session -r SID:0` works
# 5. node.startup=automatic and discovery.startup=automatic: iscsid restarted (SIGTERM keeps
#    sessions up) logs the node in by itself and rediscovers a new target
# 6. a target that asks for a logout (Async Message): iscsid logs out, logs in again with the
#    same ISID, the SID stays
# 7. -u with another uid is refused clearly; iscsid's pid file
# 8. --login to a portal where nothing listens: retried, then exit 8 as open-iscsi ends it
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

BASE=iqn.2003-01.org.linux-iscsi.vm:life
INITIATOR=iqn.2026-11.test:pyiscsi-life
VENV=$VM_WORK/.venv
PY=$VENV/bin/python
ADM=$VENV/bin/iscsiadm
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
PORTAL=127.0.0.1:3260
KO=${1:-kernel}
: >"$RES"
export ISCSID_PIDFILE=$STATE/iscsid.pid
. tests/vm/e2e/common.sh

adm() { timeout -k 5 120 "$ADM" "$@"; }

sids_of() { # IQN: the SIDs of its sessions, one a line; fails if there is none
	local s found=1
	for s in /sys/class/iscsi_session/session*; do
		[ "$(cat "$s/targetname" 2>/dev/null)" = "$1" ] && { echo "${s##*session}"; found=0; }
	done
	return $found
}
disks_of_sid() { # SID: its block devices, one a line (waits up to 20 s for the first)
	local i host d found
	for ((i = 0; i < 200; i++)); do
		host=$(readlink -f /sys/class/iscsi_session/session$1/device | grep -o 'host[0-9]*' | tail -n1)
		found=""
		for d in /sys/bus/scsi/devices/${host#host}:*/block/*; do
			[ -e "$d" ] && [ -b "/dev/${d##*/}" ] && { echo "/dev/${d##*/}"; found=1; }
		done
		[ -n "$found" ] && return 0
		sleep 0.1
	done
	return 1
}
count_sessions() { ls -d /sys/class/iscsi_session/session* 2>/dev/null | wc -l; }
count_disks() { local n=0 d; for d in /sys/block/sd*; do [ -e "$d" ] && n=$((n + 1)); done; echo $n; }
state_of() { cat /sys/class/iscsi_session/session$1/state 2>/dev/null; }
wait_for() { # SECONDS COMMAND...: until COMMAND succeeds
	local i n=$(($1 * 10))
	shift
	for ((i = 0; i < n; i++)); do "$@" && return 0; sleep 0.1; done
	return 1
}
state_is() { [ "$(state_of $1)" = "$2" ]; }
no_sessions() { [ "$(count_sessions)" = 0 ] && [ "$(count_disks)" = 0 ]; }

verify_disk() { # DISK SEED: 4 MiB of random data at a 1 MiB offset, written and read back
	head -c $((4 << 20)) /dev/urandom >/tmp/w-$2.bin
	dd if=/tmp/w-$2.bin of="$1" bs=1M seek=1 oflag=direct status=none || return 1
	dd if="$1" of=/tmp/r-$2.bin bs=1M skip=1 count=4 iflag=direct status=none || return 1
	cmp -s /tmp/w-$2.bin /tmp/r-$2.bin
}

# ---------------------------------------------------------------------------------------------
step "setup"
ip link set lo up
pyiscsi_kmod_up $KO
for i in 1 2 3 4; do lio_ramdisk $BASE-$i 16 portal=$PORTAL; done
iscsid_state $INITIATOR
start_iscsid
[ "$(cat $ISCSID_PIDFILE 2>/dev/null)" = "$ISCSID_PID" ] || fail "pid file $ISCSID_PIDFILE does not hold $ISCSID_PID"
result pidfile ok

# ---------------------------------------------------------------------------------------------
step "1. four targets: -L all, verify, --logoutall=all"
out=$(adm -m discovery -t st -p $PORTAL) || fail "discovery (exit $?)"
[ "$(echo "$out" | wc -l)" = 4 ] || fail "discovery found: $out"
t0=$(now_ms)
adm -m node -L all >/tmp/loginall.out 2>&1 || { cat /tmp/loginall.out; fail "-L all (exit $?)"; }
result t_login_all_ms $(($(now_ms) - t0))
[ "$(grep -c '^Logging in to \[iface: default, target: '"$BASE"'-[1-4], portal: 127.0.0.1,3260\]$' /tmp/loginall.out)" = 4 ] \
	|| { cat /tmp/loginall.out; fail "-L all: not four 'Logging in to' lines"; }
[ "$(grep -c '^Login to \[iface: default, target: '"$BASE"'-[1-4], portal: 127.0.0.1,3260\] successful\.$' /tmp/loginall.out)" = 4 ] \
	|| { cat /tmp/loginall.out; fail "-L all: not four 'successful' lines"; }
[ "$(count_sessions)" = 4 ] || fail "$(count_sessions) sessions after -L all"
for i in 1 2 3 4; do
	sid=$(sids_of $BASE-$i) || fail "no session to $BASE-$i"
	disk=$(disks_of_sid $sid) || fail "no disk for session $sid"
	verify_disk "$disk" $i || fail "data on $disk ($BASE-$i) did not read back"
done
adm -m session >/tmp/sessions.out || fail "-m session (exit $?)"
[ "$(grep -c '^tcp: \[[0-9]*\] 127.0.0.1:3260,1 '"$BASE"'-[1-4] (non-flash)$' /tmp/sessions.out)" = 4 ] \
	|| { cat /tmp/sessions.out; fail "-m session does not list the four sessions"; }
adm -m node --logoutall=all >/tmp/logoutall.out 2>&1 || { cat /tmp/logoutall.out; fail "--logoutall=all (exit $?)"; }
[ "$(grep -c '^Logout of \[sid: [0-9]*, target: '"$BASE"'-[1-4], portal: 127.0.0.1,3260\] successful\.$' /tmp/logoutall.out)" = 4 ] \
	|| { cat /tmp/logoutall.out; fail "--logoutall=all: not four 'Logout of ... successful.' lines"; }
wait_for 20 no_sessions || fail "sessions or disks left after --logoutall=all: $(count_sessions) $(count_disks)"
adm -m session >/dev/null 2>&1
rc=$?
[ $rc = 21 ] || fail "-m session with no sessions: exit $rc, not 21"
result login_all ok

# ---------------------------------------------------------------------------------------------
step "2. nr_sessions=2"
T=$BASE-1
adm -m node -T $T -p $PORTAL -o update -n node.session.nr_sessions -v 2 || fail "update nr_sessions"
adm -m node -T $T -p $PORTAL --login >/tmp/login2.out 2>&1 || { cat /tmp/login2.out; fail "login with nr_sessions=2 (exit $?)"; }
[ "$(grep -c '^Login to .* successful\.$' /tmp/login2.out)" = 2 ] || { cat /tmp/login2.out; fail "not two logins"; }
mapfile -t sids < <(sids_of $T)
[ ${#sids[@]} = 2 ] || fail "${#sids[@]} sessions to $T, not 2"
isids=$(for s in "${sids[@]}"; do cat /sys/class/iscsi_session/session$s/isid; done | sort | xargs)
result nr_sessions_isids "$isids"
[ "$isids" = "00023d000000 00023d000001" ] || fail "ISIDs of the two sessions: $isids"
d1=$(disks_of_sid ${sids[0]}) && d2=$(disks_of_sid ${sids[1]}) || fail "no disks for the two sessions"
head -c $((2 << 20)) /dev/urandom >/tmp/two.bin
dd if=/tmp/two.bin of="$d1" bs=1M oflag=direct status=none || fail "write through $d1"
dd if="$d2" of=/tmp/two-back.bin bs=1M count=2 iflag=direct status=none || fail "read through $d2"
cmp -s /tmp/two.bin /tmp/two-back.bin || fail "data written through session ${sids[0]} differs read through ${sids[1]}"
adm -m node -T $T -p $PORTAL --login >/tmp/login3.out 2>&1
rc=$?
[ $rc = 15 ] || { cat /tmp/login3.out; fail "third login: exit $rc, not 15"; }
grep -q "^iscsiadm: default: 2 sessions requested, but 2 already present\.$" /tmp/login3.out \
	|| { cat /tmp/login3.out; fail "third login: no 'already present' warning"; }
adm -m node -T $T -p $PORTAL --logout >/tmp/logout2.out 2>&1 || { cat /tmp/logout2.out; fail "logout of both (exit $?)"; }
[ "$(grep -c '^Logout of .* successful\.$' /tmp/logout2.out)" = 2 ] || { cat /tmp/logout2.out; fail "not two logouts"; }
wait_for 20 no_sessions || fail "sessions left after logging out of nr_sessions=2"
adm -m node -T $T -p $PORTAL -o update -n node.session.nr_sessions -v 1 || fail "reset nr_sessions"
result nr_sessions ok

# ---------------------------------------------------------------------------------------------
step "3. a new LUN and --rescan"
T=$BASE-2
adm -m node -T $T -p $PORTAL --login >/tmp/login.out 2>&1 || { cat /tmp/login.out; fail "login to $T (exit $?)"; }
sid=$(sids_of $T)
[ "$(disks_of_sid $sid | wc -l)" = 1 ] || fail "session $sid does not have exactly one disk"
cfs=/sys/kernel/config/target
mkdir $cfs/core/rd_mcp_0/rdx && echo rd_pages=2048 >$cfs/core/rd_mcp_0/rdx/control \
	&& echo 1 >$cfs/core/rd_mcp_0/rdx/enable && mkdir $cfs/iscsi/$T/tpgt_1/lun/lun_1 \
	&& ln -s $cfs/core/rd_mcp_0/rdx $cfs/iscsi/$T/tpgt_1/lun/lun_1/rdx || fail "cannot add LUN 1 to $T"
adm -m session -r $sid --rescan >/tmp/rescan.out 2>&1 || { cat /tmp/rescan.out; fail "--rescan (exit $?)"; }
grep -q "^Rescanning session \[sid: $sid, target: $T, portal: 127.0.0.1,3260\]$" /tmp/rescan.out \
	|| { cat /tmp/rescan.out; fail "--rescan output"; }
two_disks() { [ "$(disks_of_sid $sid | wc -l)" = 2 ]; }
wait_for 20 two_disks || fail "no second disk after --rescan: $(disks_of_sid $sid | tr '\n' ' ')"
result rescan ok

# ---------------------------------------------------------------------------------------------
step "4. kill -9 iscsid during I/O, restart, take over, recover, log out"
disk=$(disks_of_sid $sid | head -n1)
head -c $((12 << 20)) /dev/urandom >/tmp/big.bin
dd if=/tmp/big.bin of="$disk" bs=64k oflag=direct status=none &
dd_pid=$!
sleep 0.5
kill -9 $ISCSID_PID
wait $ISCSID_PID 2>/dev/null
wait $dd_pid || fail "dd failed after iscsid was killed"
dd if="$disk" of=/tmp/big-back.bin bs=1M count=12 iflag=direct status=none || fail "read back with iscsid dead"
cmp -s /tmp/big.bin /tmp/big-back.bin || fail "data written while iscsid died differs"
state_is $sid LOGGED_IN || fail "session $sid is $(state_of $sid) with iscsid dead"
adm -m session >/tmp/sessions.out 2>&1 || fail "-m session with iscsid dead (exit $?)"
grep -q "^tcp: \[$sid\] 127.0.0.1:3260,1 $T (non-flash)$" /tmp/sessions.out || fail "-m session lost the session"
start_iscsid
wait_for 30 grep -q "session $sid: taken over" $STATE/iscsid.log || fail "the new iscsid did not take session $sid over"
adm -m session -r $sid:0 -P 1 >/tmp/p1.out 2>&1 || { cat /tmp/p1.out; fail "-m session -r $sid:0 -P 1 (exit $?)"; }
grep -q "iSCSI Session State: LOGGED_IN" /tmp/p1.out || { cat /tmp/p1.out; fail "-r $sid:0 -P 1 shows no LOGGED_IN"; }
TPG=$cfs/iscsi/$T/tpgt_1
echo 0 >$TPG/enable || fail "cannot disable the portal group"
wait_for 15 state_is $sid FAILED || { echo 1 >$TPG/enable; fail "session $sid not FAILED after the outage"; }
sleep 2
echo 1 >$TPG/enable
wait_for 30 state_is $sid LOGGED_IN || fail "the new iscsid did not recover session $sid"
verify_disk "$disk" takeover || fail "data after the recovery by the new iscsid"
adm -m session -r $sid --logout >/tmp/logout.out 2>&1 || { cat /tmp/logout.out; fail "logout by the new iscsid (exit $?)"; }
grep -q "^Logout of \[sid: $sid, target: $T, portal: 127.0.0.1,3260\] successful\.$" /tmp/logout.out \
	|| { cat /tmp/logout.out; fail "logout output"; }
wait_for 20 no_sessions || fail "session left after the takeover logout"
result takeover ok

# ---------------------------------------------------------------------------------------------
step "5. node.startup=automatic and discovery.startup=automatic"
T=$BASE-3
adm -m node -T $T -p $PORTAL -o update -n node.startup -v automatic || fail "update node.startup"
adm -m discoverydb -t st -p $PORTAL -o update -n discovery.startup -v automatic \
	|| fail "update discovery.startup (exit $?)"
lio_ramdisk $BASE-5 16 portal=$PORTAL
adm -m node -T $BASE-4 -p $PORTAL --login >/dev/null 2>&1 || fail "login to $BASE-4"
sid4=$(sids_of $BASE-4)
kill -TERM $ISCSID_PID
wait $ISCSID_PID
[ -e $ISCSID_PIDFILE ] && fail "pid file left after SIGTERM"
state_is $sid4 LOGGED_IN || fail "SIGTERM took session $sid4 down ($(state_of $sid4))"
t0=$(now_ms)
start_iscsid
has_auto() { [ -n "$(sids_of $T)" ] && state_is "$(sids_of $T)" LOGGED_IN; }
wait_for 30 has_auto || fail "no session to $T 30 s after iscsid started"
result t_autologin_ms $(($(now_ms) - t0))
disk=$(disks_of_sid "$(sids_of $T)") || fail "no disk for the automatic session"
verify_disk "$disk" auto || fail "data on the automatic session's disk"
[ -z "$(sids_of $BASE-1)" ] || fail "a manual node was logged in"
adm -m node -T $BASE-5 -p $PORTAL >/dev/null 2>&1 || fail "the new target $BASE-5 was not rediscovered"
[ "$(adm -m node -T $T -p $PORTAL | sed -n 's/^node.startup = //p')" = automatic ] \
	|| fail "rediscovery reset node.startup of $T"
adm -m node -T $T -p $PORTAL -o update -n node.startup -v manual
adm -m node -U all >/dev/null 2>&1 || fail "-U all"
wait_for 20 no_sessions || fail "sessions left after -U all"
result startup ok

# ---------------------------------------------------------------------------------------------
step "6. the target asks for a logout (Async Message)"
: >/tmp/async.log
"$PY" tests/vm/e2e/async_target.py 3270 /tmp/async.log >/tmp/async.out 2>&1 &
async_pid=$!
wait_port 127.0.0.1 3270
AT=iqn.2026-11.test:async
adm -m node -o new -T $AT -p 127.0.0.1:3270 >/dev/null || fail "new node for the async target"
for kv in node.session.scan=manual node.conn[0].timeo.noop_out_interval=0; do
	adm -m node -T $AT -p 127.0.0.1:3270 -o update -n "${kv%=*}" -v "${kv#*=}" || fail "set $kv"
done
adm -m node -T $AT -p 127.0.0.1:3270 --login >/tmp/login.out 2>&1 || { cat /tmp/login.out; cat /tmp/async.out; fail "login to the async target (exit $?)"; }
asid=$(sids_of $AT)
reinstated() { grep -q '^login 1 ' /tmp/async.log; }
wait_for 30 reinstated || { cat /tmp/async.log /tmp/async.out; fail "no second login after the async logout request"; }
wait_for 10 state_is $asid LOGGED_IN || fail "session $asid not LOGGED_IN after the async logout"
cp /tmp/async.log "$VM_OUT/async.log"
grep -q '^logout 0 reason=1 cid=0$' /tmp/async.log || fail "no 'close the connection' logout: $(cat /tmp/async.log)"
isid0=$(sed -n 's/^login 0 isid=\([0-9a-f]*\) .*/\1/p' /tmp/async.log)
isid1=$(sed -n 's/^login 1 isid=\([0-9a-f]*\) tsih=\([0-9]*\)$/\1 \2/p' /tmp/async.log)
[ "$isid1" = "$isid0 0" ] || fail "the re-login was not a reinstatement: '$isid0' then '$isid1'"
[ "$(sids_of $AT)" = "$asid" ] || fail "SID changed after the async logout"
grep -q "target requests logout within 5 seconds" $STATE/iscsid.log || fail "iscsid did not log the request"
grep -q "connection$asid:0 is operational after recovery" $STATE/iscsid.log || fail "no recovery logged"
adm -m session -r $asid --logout >/dev/null 2>&1 || fail "logout from the async target"
wait_for 10 grep -q '^logout 1 reason=0' /tmp/async.log || fail "no final logout at the async target"
kill $async_pid
result async_logout ok

# ---------------------------------------------------------------------------------------------
step "7. -u with another uid"
"$VENV/bin/iscsid" -f -n -u 4242 -p /tmp/x.pid >/tmp/uid.out 2>&1
rc=$?
[ $rc != 0 ] || fail "iscsid -u 4242 started"
grep -q "cannot run as uid 4242: the iscsi_if kernel interface needs CAP_NET_ADMIN" /tmp/uid.out \
	|| { cat /tmp/uid.out; fail "iscsid -u: unclear refusal"; }
kill -0 $ISCSID_PID || fail "the running iscsid died"
result uid_refused ok

# ---------------------------------------------------------------------------------------------
step "8. login to a portal where nothing listens"
DEAD=$BASE-dead
adm -m node -o new -T $DEAD -p 127.0.0.1:3999 >/dev/null || fail "-o new for the dead portal"
for kv in node.session.initial_login_retry_max=1 node.conn[0].timeo.login_timeout=4; do
	adm -m node -T $DEAD -p 127.0.0.1:3999 -o update -n "${kv%%=*}" -v "${kv#*=}" \
		|| fail "-o update $kv"
done
t0=$(date +%s%N)
adm -m node -T $DEAD -p 127.0.0.1:3999 --login >/tmp/dead.out 2>/tmp/dead.err
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
printf '%s\n' "Logging in to [iface: default, target: $DEAD, portal: 127.0.0.1,3999]" >/tmp/dead.want
printf '%s\n' "iscsiadm: Could not login to [iface: default, target: $DEAD, portal: 127.0.0.1,3999]." \
	"iscsiadm: initiator reported error (8 - connection timed out)" \
	"iscsiadm: Could not log into all portals" >/tmp/dead.wanterr
[ $rc = 8 ] || { cat /tmp/dead.out /tmp/dead.err; fail "dead portal: exit $rc, not 8"; }
cmp -s /tmp/dead.out /tmp/dead.want || { cat /tmp/dead.out; fail "dead portal: stdout"; }
cmp -s /tmp/dead.err /tmp/dead.wanterr || { cat /tmp/dead.err; fail "dead portal: stderr"; }
# retried for initial_login_retry_max * login_timeout = 4 s, an attempt every 3 s
[ $ms -ge 2900 ] && [ $ms -lt 15000 ] || fail "dead portal: gave up after $ms ms"
[ "$(grep -c "login to 127.0.0.1:3999 failed (cannot make connection to 127.0.0.1: Connection refused); trying again in 3 s" $STATE/iscsid.log)" = 1 ] \
	|| { tail -n 20 $STATE/iscsid.log; fail "dead portal: the retry is not in iscsid's log"; }
result dead_portal_ms $ms
result dead_portal ok

step "teardown"
teardown_pyiscsi
result done ok
echo "PASS"

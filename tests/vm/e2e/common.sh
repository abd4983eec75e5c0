# Shared by the guest scripts of tests/vm/e2e that drive our iscsid (source after lib.sh).
# Needs RES (results file) set; uses STATE (default /run/pyiscsi) and VENV (default .venv).
#   result KEY VALUE        a key=value line in $RES (and on stdout)
#   fail MSG                "FAIL: MSG", fail=MSG in $RES, iscsid's log tail, exit 1 (the
#                           script's harness broke, or its one case failed)
#   step MSG                a timestamped heading
#   now_ms                  wall clock in milliseconds
#   iscsid_state INITIATOR  an empty database, the initiator name, the env iscsid/iscsiadm read
#   start_iscsid            iscsid -f -d 1 in the background (ISCSID_PID), once its socket exists
#   teardown_pyiscsi        SIGTERM iscsid, its log into $VM_OUT, both modules unloaded
STATE=${STATE:-/run/pyiscsi}
VENV=${VENV:-$VM_WORK/.venv}

result() { echo "$1=$2" >>"$RES"; vm_log "$1=$2"; }
fail() {
	echo "FAIL: $*"
	echo "fail=$*" >>"$RES"
	[ -s $STATE/iscsid.log ] && { echo "----- iscsid log (last 40 lines)"; tail -n 40 $STATE/iscsid.log; }
	cp $STATE/iscsid.log "$VM_OUT/" 2>/dev/null
	exit 1
}
step() { vm_log "== $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

iscsid_state() {
	mkdir -p $STATE/db
	echo "InitiatorName=$1" >$STATE/initiatorname.iscsi
	: >$STATE/iscsid.conf
	export ISCSI_DB_DIR=$STATE/db ISCSID_SOCKET=$STATE/iscsid.sock ISCSID_CONFIG=$STATE/iscsid.conf
	export ISCSI_INITIATORNAME_FILE=$STATE/initiatorname.iscsi
}

start_iscsid() {
	rm -f "$ISCSID_SOCKET"
	"$VENV/bin/iscsid" -f -d 1 >>$STATE/iscsid.log 2>&1 &
	ISCSID_PID=$!
	local i
	for ((i = 0; i < 300; i++)); do
		[ -S "$ISCSID_SOCKET" ] && return 0
		kill -0 $ISCSID_PID 2>/dev/null || fail "iscsid exited at start"
		sleep 0.1
	done
	fail "iscsid did not open $ISCSID_SOCKET"
}

teardown_pyiscsi() {
	kill $ISCSID_PID
	wait $ISCSID_PID 2>/dev/null
	cp $STATE/iscsid.log "$VM_OUT/"
	rmmod iscsi_tcp || fail "rmmod iscsi_tcp"
	rmmod iscsi_if || fail "rmmod iscsi_if"
}

#!/bin/bash
# Guest side of tests/vm/test_vm_hostile.py: the hostile-target cases and a bounded fuzz run.
# Run by hand: tests/vm/run-vm --timeout 1500 tests/vm/e2e/hostile.sh WHO [CASES [FUZZ_S [SEED [KO_DIR]]]]
#   WHO       ours: our modules (KO_DIR, default kernel) and iscsid; exits non-zero when a case
#             or a fuzz session fails; inkernel: Debian's open-iscsi and the in-kernel
#             iscsi_tcp, report only (exits 0)
#   CASES     all (default), none, or a comma-separated list of hostile_target.CASES names
#   FUZZ_S    then the fuzzer for that many seconds (default 0), from seed SEED (default 1)
# Results: $VM_OUT/hostile-WHO.json and $VM_OUT/fuzz-WHO.json, one JSON object per case or
# fuzz session; one line each on stdout.
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

WHO=${1:?ours or inkernel}
WHAT=${2:-all}
FUZZ_S=${3:-0}
SEED=${4:-1}
KO=${5:-kernel}
VENV=$VM_WORK/.venv
PY=$VENV/bin/python
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
: >"$RES"
. tests/vm/e2e/common.sh

# Node defaults for every case's record (the records are made with -o new, which takes them
# from iscsid.conf, as open-iscsi's iscsiadm does): fast recovery, fast failure detection.
NODE_DEFAULTS="node.session.timeo.replacement_timeout = 5
node.conn[0].timeo.noop_out_interval = 2
node.conn[0].timeo.noop_out_timeout = 2
node.conn[0].timeo.login_timeout = 5
node.session.err_timeo.abort_timeout = 3
node.session.err_timeo.lu_reset_timeout = 3
node.session.err_timeo.tgt_reset_timeout = 3
node.session.initial_login_retry_max = 1"

case "$WHO" in
ours)
	iscsid_state iqn.2026-12.test:hostile-initiator
	echo "$NODE_DEFAULTS" >"$ISCSID_CONFIG"
	pyiscsi_kmod_up "$KO"
	start_iscsid
	export ADM=$VENV/bin/iscsiadm ISCSID_PID
	;;
inkernel)
	openiscsi_up iqn.2026-12.test:hostile-initiator
	echo "$NODE_DEFAULTS" >>/etc/iscsi/iscsid.conf
	export ADM=iscsiadm
	;;
*) vm_die "ours or inkernel, not $WHO" ;;
esac

rc=0
if [ "$WHAT" != none ]; then
	"$PY" tests/vm/e2e/hostile_run.py --initiator "$WHO" --out "$VM_OUT/hostile-$WHO.json" \
		--cases "$WHAT" || rc=$?
fi
if [ "$FUZZ_S" != 0 ]; then
	"$PY" tests/vm/e2e/hostile_run.py --initiator "$WHO" --out "$VM_OUT/fuzz-$WHO.json" \
		--fuzz "$FUZZ_S" --seed "$SEED" --port 3700 || rc=$?
fi
result driver_rc $rc

if [ "$WHO" = ours ]; then
	kill -0 "$ISCSID_PID" 2>/dev/null || { echo "iscsid died"; result iscsid dead; rc=1; }
	"$ADM" -m session >/dev/null 2>&1 && { "$ADM" -m session; result sessions_left yes; rc=1; }
	teardown_pyiscsi
	result unload ok
else
	openiscsi_down
fi
result done ok
exit $rc

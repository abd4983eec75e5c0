#!/bin/bash
# Reference output of Debian's open-iscsi 2.1.8 (iscsiadm/iscsid) for our iscsiadm to match.
# Run in the guest: tests/vm/run-vm tests/vm/guest/capture-openiscsi.sh [DEST]
# Writes one file per command to DEST (default tests/data/openiscsi): `$ command`, `--- stdout`,
# `--- stderr`, `--- exit N` (see tests/data/openiscsi/README.md).
set -u
. tests/vm/lib.sh
dest=${1:-tests/data/openiscsi}
mkdir -p "$dest"
rm -f "$dest"/[0-9][0-9]-*.txt "$dest"/[0-9][0-9][0-9]-*.txt
n=0

# cap NAME COMMAND...: run it, save stdout/stderr/exit verbatim
cap() {
	local name=$1 rc
	shift
	n=$((n + 1))
	local f
	f=$(printf '%s/%02d-%s.txt' "$dest" "$n" "$name")
	"$@" >/tmp/cap.out 2>/tmp/cap.err </dev/null
	rc=$?
	{
		printf '$ %s\n' "$*"
		echo '--- stdout'
		_section /tmp/cap.out
		echo '--- stderr'
		_section /tmp/cap.err
		echo "--- exit $rc"
	} >"$f"
	printf '%-40s exit %s\n' "$(basename "$f")" "$rc"
}
# verbatim, plus a marker line when the text does not end in a newline
_section() {
	cat "$1"
	if [ -s "$1" ] && [ "$(tail -c1 "$1" | od -An -c | tr -d ' ')" != '\n' ]; then
		printf '\n\\ No newline at end\n'
	fi
}
q() { "$@" >/dev/null 2>&1; }

P1=127.0.0.1:3260
P2=127.0.0.2:3260
T1=iqn.2026-11.test:t1
TN=iqn.2026-11.test:new
TC=iqn.2026-11.test:chap
PC=127.0.0.1:3262

tgt_file $T1 16 portal=$P1
tgt_file iqn.2026-11.test:t2 16
tgt_file iqn.2026-11.test:t3 16
# t1 also on a second portal, served by a second tgtd (tgtd lists only the portal asked)
tgt_file $T1 16 portal=$P2 control=1
# CHAP-protected target and discovery on LIO (port 3262)
lio_ramdisk $TC 8 portal=$PC auth=chapuser:chapsecret12 initiator=$VM_INITIATOR_DEFAULT
d=/sys/kernel/config/target/iscsi/discovery_auth
echo -n discuser >$d/userid
echo -n discsecret12 >$d/password
echo 1 >$d/enforce_discovery_auth
openiscsi_up

cap discovery-st iscsiadm -m discovery -t st -p $P1
cap discovery-st-p2 iscsiadm -m discovery -t st -p $P2
cap discovery-list iscsiadm -m discovery
cap discovery-list-P1 iscsiadm -m discovery -P 1
cap discovery-show iscsiadm -m discovery -p $P1
cap discoverydb-show iscsiadm -m discoverydb -t st -p $P1 -o show
cap node-list iscsiadm -m node
cap node-P1 iscsiadm -m node -P 1
cap node-show-t1 iscsiadm -m node -T $T1 -p $P1
cap node-show-t1-all iscsiadm -m node -T $T1
cap node-show-all iscsiadm -m node -o show
cap node-new iscsiadm -m node -o new -T $TN -p $P1
cap node-update-startup iscsiadm -m node -T $TN -p $P1 -o update -n node.startup -v automatic
cap node-update-password iscsiadm -m node -T $TN -p $P1 -o update -n node.session.auth.password -v secret
cap node-show-new iscsiadm -m node -T $TN -p $P1
cap node-update-bogus iscsiadm -m node -T $TN -p $P1 -o update -n bogus.name -v 1
cap node-delete iscsiadm -m node -T $TN -p $P1 -o delete
cap node-delete-again iscsiadm -m node -T $TN -p $P1 -o delete
cap node-nosuch iscsiadm -m node -T nosuch -p 127.0.0.1
cap discovery-dead-portal iscsiadm -m discovery -t st -p 127.0.0.1:3999
cap mode-foo iscsiadm -m foo
cap no-args iscsiadm
cap version iscsiadm -V
cap session-none iscsiadm -m session
cap session-none-P3 iscsiadm -m session -P 3
cap login-t1 iscsiadm -m node -T $T1 -p $P1 --login
iscsi_disk $T1 >/dev/null
cap session-list iscsiadm -m session
cap session-P1 iscsiadm -m session -P 1
cap session-P2 iscsiadm -m session -P 2
cap session-P3 iscsiadm -m session -P 3
cap session-stats iscsiadm -m session -r 1 -s
cap session-r1 iscsiadm -m session -r 1
cap login-t1-again iscsiadm -m node -T $T1 -p $P1 --login
cap logout-t1 iscsiadm -m node -T $T1 -p $P1 --logout
cap logout-t1-again iscsiadm -m node -T $T1 -p $P1 --logout
cap login-all iscsiadm -m node -L all
cap session-list-all iscsiadm -m session
cap logout-all iscsiadm -m node -U all
q iscsiadm -m node -L all
cap logoutall iscsiadm -m node --logoutall=all
cap logoutall-none iscsiadm -m node --logoutall=all
# CHAP: a node for the LIO target with the wrong secret, then the right one
q iscsiadm -m node -o new -T $TC -p $PC
q iscsiadm -m node -T $TC -p $PC -o update -n node.session.auth.authmethod -v CHAP
q iscsiadm -m node -T $TC -p $PC -o update -n node.session.auth.username -v chapuser
q iscsiadm -m node -T $TC -p $PC -o update -n node.session.auth.password -v wrongsecret1
cap login-chap-wrong iscsiadm -m node -T $TC -p $PC --login
q iscsiadm -m node -T $TC -p $PC -o update -n node.session.auth.password -v chapsecret12
cap login-chap-ok iscsiadm -m node -T $TC -p $PC --login
cap logout-chap iscsiadm -m node -T $TC -p $PC --logout
cap discovery-chap-none iscsiadm -m discovery -t st -p $PC
q iscsiadm -m discoverydb -t st -p $PC -o new
q iscsiadm -m discoverydb -t st -p $PC -o update -n discovery.sendtargets.auth.authmethod -v CHAP
q iscsiadm -m discoverydb -t st -p $PC -o update -n discovery.sendtargets.auth.username -v discuser
q iscsiadm -m discoverydb -t st -p $PC -o update -n discovery.sendtargets.auth.password -v wrongsecret1
cap discovery-chap-wrong iscsiadm -m discoverydb -t st -p $PC --discover
q iscsiadm -m discoverydb -t st -p $PC -o update -n discovery.sendtargets.auth.password -v discsecret12
cap discovery-chap-ok iscsiadm -m discoverydb -t st -p $PC --discover
cap discoverydb-show-chap iscsiadm -m discoverydb -t st -p $PC -o show
# iscsid stopped
q iscsiadm -k 0
for ((i = 0; i < 50; i++)); do pidof iscsid >/dev/null || break; sleep 0.1; done
cap login-no-iscsid iscsiadm -m node -T $T1 -p $P1 --login
cap session-no-iscsid iscsiadm -m session
cap iscsid-version iscsid -v
# the built-in ifaces, and discovery records that do not exist (as os-brick and
# csi-driver-iscsi call them); no iscsid needed
cap iface-list iscsiadm -m iface
cap iface-show-default iscsiadm -m iface -o show -I default
cap iface-default iscsiadm -m iface -I default
cap iface-show-iser iscsiadm -m iface -I iser -o show
cap iface-nosuch iscsiadm -m iface -I nosuch
cap discoverydb-update-missing iscsiadm -m discoverydb -t sendtargets -I default -p 127.0.0.1:3997 --op update -n discovery.sendtargets.auth.authmethod -v CHAP
cap discoverydb-show-missing iscsiadm -m discoverydb -t st -p 127.0.0.1:3997 -o show
cap discoverydb-delete-missing iscsiadm -m discoverydb -t st -p 127.0.0.1:3997 -o delete
cap discoverydb-new-missing iscsiadm -m discoverydb -t sendtargets -I default -p 127.0.0.1:3997 --op new
cap discoverydb-update-new iscsiadm -m discoverydb -t sendtargets -I default -p 127.0.0.1:3997 --op update -n discovery.sendtargets.auth.authmethod -v CHAP
cap iface-delete-default iscsiadm -m iface -I default -o delete
cap node-list-after-iface-delete iscsiadm -m node
# iface records: iface0 bound to a netdev (lo), iface1 to a hwaddress (lo's), discovery and
# node records through them, sessions through them (iscsid started again), their deletion
LOMAC=00:00:00:00:00:00
iscsid || echo "iscsid did not start again"
for ((i = 0; i < 100; i++)); do
	rc=0
	iscsiadm -m session >/dev/null 2>&1 || rc=$?
	[ "$rc" != 20 ] && break
	sleep 0.1
done
cap iface-new iscsiadm -m iface -I iface0 -o new
cap iface-new-again iscsiadm -m iface -I iface0 -o new
cap iface-update-netdev iscsiadm -m iface -I iface0 -o update -n iface.net_ifacename -v lo
cap iface-update-hw-refused iscsiadm -m iface -I iface0 -o update -n iface.hwaddress -v $LOMAC
cap iface-update-name-refused iscsiadm -m iface -I iface0 -o update -n iface.iscsi_ifacename -v other
cap iface-update-bogus iscsiadm -m iface -I iface0 -o update -n bogus.name -v 1
cap iface-update-noparams iscsiadm -m iface -I iface0 -o update
cap iface-update-default iscsiadm -m iface -I default -o update -n iface.net_ifacename -v lo
cap iface-update-nosuch iscsiadm -m iface -I nosuch -o update -n iface.net_ifacename -v lo
cap iface-show-iface0 iscsiadm -m iface -I iface0
cap iface-new-hw iscsiadm -m iface -I iface1 -o new -n iface.hwaddress -v $LOMAC
cap iface-list-custom iscsiadm -m iface
cap iface-P1 iscsiadm -m iface -P 1
cap iface-P2 iscsiadm -m iface -P 2
cap iface-new-default iscsiadm -m iface -I default -o new
cap iface-new-noname iscsiadm -m iface -o new
cap iface-delete-nosuch iscsiadm -m iface -I nosuch -o delete
cap discovery-iface0 iscsiadm -m discovery -t st -p $P1 -I iface0
cap discovery-iface-nosuch iscsiadm -m discovery -t st -p $P1 -I nosuch
cap discovery-iface1 iscsiadm -m discovery -t st -p $P2 -I iface1
cap node-P1-ifaces iscsiadm -m node -P 1
cap iface-P1-iface0 iscsiadm -m iface -I iface0 -P 1
cap node-show-iface0 iscsiadm -m node -T $T1 -p $P1 -I iface0
cap node-nosuch-iface iscsiadm -m node -T $T1 -p $P1 -I nosuch
cap node-new-iface iscsiadm -m node -o new -T $TN -p $P1 -I iface0
cap iface-update-ip iscsiadm -m iface -I iface0 -o update -n iface.ipaddress -v 127.0.0.1
cap node-show-new-iface iscsiadm -m node -T $TN -p $P1 -I iface0
cap login-iface0 iscsiadm -m node -T $T1 -p $P1 -I iface0 --login
cap login-iface1 iscsiadm -m node -T $T1 -p $P2 -I iface1 --login
cap session-P1-ifaces iscsiadm -m session -P 1
cap iface-update-inuse iscsiadm -m iface -I iface0 -o update -n iface.initiatorname -v $VM_INITIATOR_DEFAULT
cap iface-delete-inuse iscsiadm -m iface -I iface0 -o delete
cap iface-new-inuse iscsiadm -m iface -I iface0 -o new
cap logout-iface0 iscsiadm -m node -T $T1 -p $P1 -I iface0 --logout
cap logout-iface1 iscsiadm -m session -u
cap iface-delete iscsiadm -m iface -I iface0 -o delete
cap iface-delete-hw iscsiadm -m iface -I iface1 -o delete
cap iface-list-after-delete iscsiadm -m iface
cap node-list-after-ifaces iscsiadm -m node
openiscsi_down
tgt_down
echo "captured $n commands into $dest"

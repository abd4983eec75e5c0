#!/bin/bash
# Guest side of tests/vm/test_vm_osbrick.py: OpenStack os-brick, unmodified from PyPI
# (.venv-osbrick, made by `make setup`), attaches and detaches volumes through OUR stack (our
# kernel modules, iscsid and iscsiadm) as Nova runs it: in-process, as root.
# Run by hand: make setup && make -C kernel && tests/vm/run-vm tests/vm/e2e/osbrick.sh [KO_DIR]
#
# Setup here: three LIO targets on 127.0.0.1:3260 (BASE-plain: LUN 0 16 MiB, no auth;
# BASE-chap: LUN 0 12 MiB, the ACL of our initiator name requires CHAP; BASE-two: LUN 0 20 MiB
# and LUN 1 8 MiB; each LUN with a unit serial, hence a WWN), the initiator name in /etc/iscsi/initiatorname.iscsi (where os-brick reads
# it), our iscsi_if.ko/iscsi_tcp.ko, our iscsid with its default paths, our iscsiadm first in
# PATH and bound over /usr/sbin/iscsiadm (Debian's, which os-brick's `grep -F node.session.scan
# /sbin/iscsiadm` probe reads), systemd-udevd for the /dev/disk/by-path and by-id links, and a
# `sudo` that records any call (os-brick must not use its root helper in-process).
# The cases run in tests/vm/e2e/osbrick_attach.py (see there); it appends key=value lines to
# $VM_OUT/results.txt and writes os-brick's log to $VM_OUT/osbrick.log. Afterwards: no session,
# disk or node record left, the sudo never called, our modules unload.
set -euo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

INITIATOR=iqn.2026-11.test:osbrick-host
BASE=iqn.2003-01.org.linux-iscsi.vm:osbrick
VENV=$VM_WORK/.venv
OSB_PY=$VM_WORK/.venv-osbrick/bin/python
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
ISCSID_SOCKET=/run/iscsid.sock # iscsid's default (not exported: everything runs with defaults)
BIN=/run/osbrick-bin
KO=${1:-kernel}
: >"$RES"
. tests/vm/e2e/common.sh

count() { local n=0 f; for f in "$@"; do [ -e "$f" ] && n=$((n + 1)); done; echo $n; }

step "setup"
[ -x "$OSB_PY" ] || fail "no $OSB_PY: make setup (make osbrick-venv) makes it"
mkdir -p $STATE /etc/iscsi
echo "InitiatorName=$INITIATOR" >/etc/iscsi/initiatorname.iscsi
pyiscsi_kmod_up "$KO"
# unit serials as targetcli sets them: VPD page 0x83 (the WWN os-brick returns), udev's by-id links
lio_ramdisk $BASE-plain 16 serial=a1a1a1a1-5eed-4bad-8000-000000000001
lio_ramdisk $BASE-chap 12 serial=c2c2c2c2-5eed-4bad-8000-000000000002 \
	auth=osbrick:osbricksecret1 initiator=$INITIATOR
lio_ramdisk $BASE-two 20 serial=d3d3d3d3-5eed-4bad-8000-000000000003
lio_lun $BASE-two 1 8 serial=e4e4e4e4-5eed-4bad-8000-000000000004

mount --bind "$VENV/bin/iscsiadm" /usr/sbin/iscsiadm
cmp -s /sbin/iscsiadm "$VENV/bin/iscsiadm" || fail "/sbin/iscsiadm is not ours after the bind mount"
mkdir -p $BIN
printf '#!/bin/sh\necho "$*" >>%s/sudo-called\nexit 1\n' "$VM_OUT" >$BIN/sudo
chmod +x $BIN/sudo
export PATH=$VENV/bin:$BIN:$PATH
[ "$(command -v iscsiadm)" = "$VENV/bin/iscsiadm" ] || fail "iscsiadm in PATH: $(command -v iscsiadm)"
[ "$(command -v sudo)" = "$BIN/sudo" ] || fail "sudo in PATH: $(command -v sudo)"

# udevadm (settle, control) ignores requests in a chroot, which the guest's /init runs us in
export SYSTEMD_IGNORE_CHROOT=1
/lib/systemd/systemd-udevd --daemon
udevadm control --ping --timeout=30 || fail "systemd-udevd does not answer"
result udevd ok

start_iscsid
result iscsid "$(tr '\0' ' ' </proc/$ISCSID_PID/cmdline | sed 's/ $//')"

step "os-brick"
rc=0
timeout -k 10 840 "$OSB_PY" tests/vm/e2e/osbrick_attach.py --initiator $INITIATOR --base $BASE \
	--out "$VM_OUT" || rc=$?
result driver_rc $rc

step "after os-brick"
sessions=$(count /sys/class/iscsi_session/session*)
result leftover_sessions "$sessions"
result leftover_disks "$(count /sys/block/sd*)"
result leftover_nodes "$(iscsiadm -m node 2>/dev/null | wc -l)"
result sudo_called "$([ -e "$VM_OUT/sudo-called" ] && tr '\n' ';' <"$VM_OUT/sudo-called" || echo no)"
if [ "$sessions" != 0 ]; then
	iscsiadm -m session || true
	iscsiadm -m node -U all || true
fi
udevadm control --exit || true
umount /usr/sbin/iscsiadm
teardown_pyiscsi || true # its `wait` returns iscsid's status; rmmod failures still fail
[ $rc = 0 ] || fail "os-brick cases failed (exit $rc): $(grep -E '^[a-z0-9]+=FAIL' "$RES" | tr '\n' ' ')"
[ "$sessions" = 0 ] || fail "$sessions sessions left"
result done ok
echo "PASS"

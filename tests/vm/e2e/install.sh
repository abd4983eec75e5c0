#!/bin/bash
# Guest side of tests/vm/test_vm_install.py (booted with run-vm --usr-overlay: /usr writable).
# Arguments: STAGE.tar KFILES.tar DIR...: the tree `make install DESTDIR=STAGE` staged on the
# host (the venv's pip run needs PyPI, which the guest cannot reach), as a tarball; a tarball of
# the guest kernel's header directories and modules (lib.sh files_in_ram: the DKMS build and
# depmod read the same files from RAM instead of over 9p, which cost them minutes under TCG).
# Everything else is done here, on the guest's own root.
#
#   1. file listing of what install, DKMS and depmod touch; the staged tree extracted onto /
#      (what a package of it would do); the installed iscsiadm is the one on PATH
#   2. dkms install pyiscsi/VERSION for the guest's kernel; modinfo: our version, from
#      updates/dkms; modprobe iscsi_tcp loads ours and iscsi_if with it
#   3. an LIO target; iscsid started on demand by socket activation as iscsid.socket and
#      iscsid.service say (systemd-socket-activate, the units' ListenStream= and ExecStart=);
#      discovery, login, data written and read back, session listing, logout: installed commands
#   4. make uninstall refuses while DKMS has the modules; dkms remove; the distribution's
#      iscsi_tcp is modprobe's again; make uninstall; the listing is what it was before
# Writes key=value lines to $VM_OUT/results.txt and the user's commands with their output to
# $VM_OUT/transcript.txt.
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm --usr-overlay}"
. tests/vm/lib.sh
STAGE=${1:?usage: install.sh STAGE.tar KFILES.tar DIR...}
KFILES=${2:?usage: install.sh STAGE.tar KFILES.tar DIR...}
shift 2
RES=$VM_OUT/results.txt
TRANSCRIPT=$VM_OUT/transcript.txt
: >"$RES"
: >"$TRANSCRIPT"
. tests/vm/e2e/common.sh
KVER=$(uname -r)
VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)
IQN=iqn.2003-01.org.linux-iscsi.vm:install
UNITS=/usr/local/lib/systemd/system

# run CMD...: as a user types it; the command and its output go to the transcript and stdout
run() {
	local rc=0
	echo "# $*" | tee -a "$TRANSCRIPT"
	"$@" >"$VM_OUT/last.out" 2>&1 || rc=$?
	tee -a "$TRANSCRIPT" <"$VM_OUT/last.out"
	[ "$rc" = 0 ] || echo "(exit $rc)" | tee -a "$TRANSCRIPT"
	return $rc
}
timed() { # KEY CMD...: run CMD, result KEY=seconds
	local t0 rc=0
	t0=$(now_ms)
	run "${@:2}" || rc=$?
	result "$1" "$((($(now_ms) - t0) / 1000))"
	return $rc
}
listing() { # what install, dkms and depmod may touch (types and paths; not /var/lib/dkms, dkms's)
	{
		find /usr/local /usr/src/pyiscsi-* -printf '%y %p\n' 2>/dev/null
		find /usr/src -maxdepth 1 -printf '%y %p\n'
		find /etc -maxdepth 1 -printf '%y %p\n'
		find "/usr/lib/modules/$KVER" -maxdepth 1 -printf '%y %p\n'
		find "/usr/lib/modules/$KVER/updates" -printf '%y %p\n' 2>/dev/null
	} | sort
}

step "before"
mountpoint -q /usr && grep -q ' /usr overlay ' /proc/mounts || fail "/usr is not writable (run-vm --usr-overlay)"
grep -qE '^(iscsi_tcp|iscsi_if|scsi_transport_iscsi) ' /proc/modules && fail "iSCSI modules loaded already"
tar -tf "$STAGE" usr/local/share/pyiscsi/install-manifest >/dev/null || fail "no install in $STAGE"
listing >"$VM_OUT/listing-before.txt"
[ "$(modinfo -n iscsi_tcp)" = "/lib/modules/$KVER/kernel/drivers/scsi/iscsi_tcp.ko" ] \
	|| fail "iscsi_tcp is not the distribution's before the install: $(modinfo -n iscsi_tcp)"

step "install"
tar -C / --no-overwrite-dir -xf "$STAGE" || fail "extracting the staged install"
missing=$(sed -n 's/^f //p; s/^c [0-9a-f]* //p' /usr/local/share/pyiscsi/install-manifest \
	| while read -r f; do [ -e "$f" ] || echo "$f"; done)
[ -z "$missing" ] || fail "files of the manifest missing: $missing"
[ "$(command -v iscsiadm)" = /usr/local/sbin/iscsiadm ] || fail "iscsiadm on PATH: $(command -v iscsiadm)"
[ "$(command -v iscsid)" = /usr/local/sbin/iscsid ] || fail "iscsid on PATH: $(command -v iscsid)"
run iscsiadm --version || fail "iscsiadm --version"
grep -qF node.session.scan /usr/local/sbin/iscsiadm || fail "os-brick's probe: no node.session.scan"
result installed ok

step "dkms"
t0=$(now_ms)
files_in_ram "$KFILES" "$@"
result t_files_in_ram_ms "$(($(now_ms) - t0))"
timed t_dkms_install_s dkms install "pyiscsi/$VERSION" -k "$KVER" || fail "dkms install"
run dkms status || fail "dkms status"
[[ "$(cat "$VM_OUT/last.out")" == *"pyiscsi/$VERSION, $KVER, "*": installed"* ]] \
	|| fail "dkms status: not installed"
run modinfo -F version iscsi_tcp
[ "$(modinfo -F version iscsi_tcp)" = "$VERSION" ] || fail "modinfo iscsi_tcp: not version $VERSION"
[ "$(modinfo -F version iscsi_if)" = "$VERSION" ] || fail "modinfo iscsi_if: not version $VERSION"
run modinfo -n iscsi_tcp iscsi_if
[ "$(modinfo -n iscsi_tcp)" = "/lib/modules/$KVER/updates/dkms/iscsi_tcp.ko" ] \
	|| fail "modprobe would not load ours: $(modinfo -n iscsi_tcp)"
run modprobe iscsi_tcp || fail "modprobe iscsi_tcp"
run sh -c 'lsmod | grep -E "^(iscsi_tcp|iscsi_if|scsi_transport_iscsi) "'
grep -q '^iscsi_if ' /proc/modules || fail "iscsi_if was not loaded as iscsi_tcp's dependency"
grep -q '^scsi_transport_iscsi ' /proc/modules && fail "the in-kernel transport class was loaded"
[ "$(cat /sys/module/iscsi_tcp/version)" = "$VERSION" ] || fail "the loaded iscsi_tcp is not ours"
[ "$(cat /sys/module/iscsi_if/version)" = "$VERSION" ] || fail "the loaded iscsi_if is not ours"
result dkms ok

step "login with the installed commands"
lio_ramdisk $IQN 32
# iscsid.socket + iscsid.service as systemd would run them: the socket listens, the first
# request starts the unit's ExecStart= with the listening socket as fd 3
listen=$(sed -n 's/^ListenStream=//p' $UNITS/iscsid.socket)
exec_start=$(sed -n 's/^ExecStart=//p' $UNITS/iscsid.service)
[ "$listen" = /run/iscsid.sock ] && [ "$exec_start" = "/usr/local/sbin/iscsid -f" ] \
	|| fail "units: ListenStream=$listen ExecStart=$exec_start"
# shellcheck disable=SC2086 # the unit's command line, split as systemd splits it
systemd-socket-activate -l "$listen" $exec_start >"$VM_OUT/iscsid.log" 2>&1 &
SA_PID=$!
for ((i = 0; i < 100; i++)); do [ -S "$listen" ] && break; sleep 0.1; done
[ -S "$listen" ] || fail "systemd-socket-activate did not listen on $listen"
run iscsiadm -m discovery -t sendtargets -p 127.0.0.1 || fail "discovery"
t0=$(now_ms)
run iscsiadm -m node -T $IQN -p 127.0.0.1 --login || fail "login"
result t_first_login_ms "$(($(now_ms) - t0))" # iscsid's start included
grep -q "iscsid.* ready on $listen" "$VM_OUT/iscsid.log" || fail "iscsid did not serve $listen"
run iscsiadm -m session || fail "-m session"
disk=$(iscsi_disk $IQN)
head -c $((4 << 20)) /dev/urandom >/tmp/w.bin
dd if=/tmp/w.bin of="$disk" bs=1M oflag=direct status=none || fail "write $disk"
dd if="$disk" of=/tmp/r.bin bs=1M count=4 iflag=direct status=none || fail "read $disk"
cmp -s /tmp/w.bin /tmp/r.bin || fail "data read back differs"
result data ok
run sh -c "iscsiadm -m session -P 3 | grep -E 'Target:|SID:|State:|Attached scsi disk'"
run iscsiadm -m node -T $IQN -p 127.0.0.1 --logout || fail "logout"
run iscsiadm -k 0 || fail "iscsiadm -k 0"
wait $SA_PID || fail "iscsid exited with $?"
[ -S "$listen" ] || fail "iscsid removed the socket systemd handed it"
rm -f "$listen"
run modprobe -r iscsi_tcp iscsi_if || fail "modprobe -r"
result login ok

step "uninstall"
run make uninstall && fail "make uninstall did not refuse while DKMS has the modules"
grep -q "dkms remove pyiscsi/$VERSION --all" "$VM_OUT/last.out" || fail "no dkms remove hint"
[ -x /usr/local/sbin/iscsiadm ] || fail "the refused uninstall removed files"
timed t_dkms_remove_s dkms remove "pyiscsi/$VERSION" --all || fail "dkms remove"
run modinfo -n iscsi_tcp
[ "$(modinfo -n iscsi_tcp)" = "/lib/modules/$KVER/kernel/drivers/scsi/iscsi_tcp.ko" ] \
	|| fail "after dkms remove, iscsi_tcp is not the distribution's: $(modinfo -n iscsi_tcp)"
[ -e /var/lib/dkms/pyiscsi ] && fail "dkms remove left /var/lib/dkms/pyiscsi"
run make uninstall || fail "make uninstall"
listing >"$VM_OUT/listing-after.txt"
if ! diff -u "$VM_OUT/listing-before.txt" "$VM_OUT/listing-after.txt" >"$VM_OUT/listing.diff"; then
	head -n 40 "$VM_OUT/listing.diff"
	fail "the listing after uninstall differs from before (listing.diff)"
fi
result uninstalled ok
result done ok

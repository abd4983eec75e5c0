#!/bin/bash
# make demo: build our kernel modules, boot the QEMU guest (Debian's kernel, this machine's root
# read-only), and run tests/vm/e2e/demo-guest.sh in it: LIO target, our iscsid/iscsiadm,
# discovery, login, data written and verified, session shown, logout, modules unloaded.
# Needs `make setup` (qemu, kernel image + headers, tgt, busybox-static) and root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
t0=$(date +%s)

kver=""
for d in $(ls -d /lib/modules/*/ 2>/dev/null | sort -V); do
	v=$(basename "$d")
	[ -f "/boot/vmlinuz-$v" ] && [ -d "$d/build" ] && kver=$v
done
[ -n "$kver" ] || { echo "demo: no kernel image with headers; run make setup" >&2; exit 1; }

echo "demo: building kernel/iscsi_if.ko and kernel/iscsi_tcp.ko for $kver"
make -s -C "$root/kernel" KSRC="/lib/modules/$kver/build" >/dev/null
echo "demo: booting the VM (software emulation, about 10 s) ..."
rc=0
"$here/run-vm" --timeout 240 "$root/tests/vm/e2e/demo-guest.sh" || rc=$?
echo
if [ "$rc" = 0 ]; then
	echo "demo: OK in $(($(date +%s) - t0)) s (dmesg clean)"
else
	echo "demo: FAILED (exit $rc)"
fi
exit "$rc"

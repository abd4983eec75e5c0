#!/bin/bash
# `make demo`, guest side (run by tests/vm/demo.sh): our modules carry a real iSCSI session.
# LIO ramdisk target on 127.0.0.1:3260, our iscsid + iscsiadm: discovery, login, 32 MiB of
# random data written with O_DIRECT and read back, the session shown, logout, modules unloaded.
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

IQN=iqn.2003-01.org.linux-iscsi.vm:demo
KO=${1:-kernel} # where iscsi_if.ko and iscsi_tcp.ko are
ADM=$VM_WORK/.venv/bin/iscsiadm
STATE=/run/pyiscsi
t_start=$(date +%s%N)
say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
die() { echo "demo: FAILED: $*"; [ -s $STATE/iscsid.log ] && tail -n 20 $STATE/iscsid.log; exit 1; }
secs() { awk -v s="$1" -v e="$(date +%s%N)" 'BEGIN { printf "%.2f", (e - s) / 1e9 }'; }

say "Loading our kernel modules"
ip link set lo up
modprobe -a scsi_mod sd_mod libcrc32c crc32c 2>/dev/null
run insmod $KO/iscsi_if.ko || die "insmod iscsi_if.ko"
run insmod $KO/iscsi_tcp.ko || die "insmod iscsi_tcp.ko"

say "Starting an LIO ramdisk target (64 MiB) on 127.0.0.1:3260"
lio_ramdisk $IQN 64

say "Starting iscsid (ours)"
mkdir -p $STATE/db
echo "InitiatorName=iqn.2026-11.test:pyiscsi-demo" >$STATE/initiatorname.iscsi
: >$STATE/iscsid.conf
export ISCSI_DB_DIR=$STATE/db ISCSID_SOCKET=$STATE/iscsid.sock ISCSID_CONFIG=$STATE/iscsid.conf
export ISCSI_INITIATORNAME_FILE=$STATE/initiatorname.iscsi
"$VM_WORK/.venv/bin/iscsid" -f >$STATE/iscsid.log 2>&1 &
for ((i = 0; i < 300; i++)); do [ -S $ISCSID_SOCKET ] && break; sleep 0.1; done
[ -S $ISCSID_SOCKET ] || die "iscsid did not start"

say "Discovery and login"
run $ADM -m discovery -t sendtargets -p 127.0.0.1:3260 || die "discovery"
t0=$(date +%s%N)
run $ADM -m node -T $IQN -p 127.0.0.1:3260 --login || die "login"
t_login=$(secs "$t0")
disk=$(iscsi_disk $IQN 20) || die "no disk"
echo "the new disk: $disk"

say "Writing 32 MiB of random data at offset 4 MiB (O_DIRECT), reading it back"
head -c $((32 << 20)) /dev/urandom >/tmp/demo.bin
t0=$(date +%s%N)
dd if=/tmp/demo.bin of="$disk" bs=1M seek=4 oflag=direct status=none || die "write"
t_write=$(secs "$t0")
t0=$(date +%s%N)
dd if="$disk" of=/tmp/demo.back bs=1M skip=4 count=32 iflag=direct status=none || die "read"
t_read=$(secs "$t0")
if cmp -s /tmp/demo.bin /tmp/demo.back; then verdict="identical"; else die "data differs"; fi
echo "sha256 written: $(sha256sum </tmp/demo.bin | cut -c1-16)...  read back: $(sha256sum </tmp/demo.back | cut -c1-16)...  -> $verdict"

say "The session"
run $ADM -m session
run $ADM -m session -P 3
run lsblk "$disk"

say "Logout and unload"
run $ADM -m node -T $IQN -p 127.0.0.1:3260 --logout || die "logout"
[ -e "$disk" ] && die "$disk still there after logout"
echo "$disk is gone"
kill "$(jobs -p)" 2>/dev/null
run rmmod iscsi_tcp || die "rmmod iscsi_tcp"
run rmmod iscsi_if || die "rmmod iscsi_if"

say "Summary"
printf '  login %s s, 32 MiB write %s s, read %s s, data %s, modules unloaded; guest time %s s\n' \
	"$t_login" "$t_write" "$t_read" "$verdict" "$(secs "$t_start")"

#!/bin/bash
# VM smoke test (guest side): LIO ramdisk + tgtd targets, Debian's open-iscsi with the in-kernel
# iscsi_tcp, 32 MiB of random data written with O_DIRECT at an 8 MiB offset and read back.
# Results go to $VM_OUT/results.txt as `key value` lines for the host to assert on.
set -euo pipefail
. tests/vm/lib.sh
res=$VM_OUT/results.txt
: >"$res"
put() { echo "$1 $2" >>"$res"; }

# "33554432 bytes (34 MB, 32 MiB) copied, 0.52 s, 64.5 MB/s" -> 64.5 (dd prints kB/s, MB/s, GB/s)
dd_rate() {
	awk '/copied/ { v = $(NF - 1); u = $NF;
		if (u == "kB/s") v /= 1000; else if (u == "GB/s") v *= 1000; else if (u == "B/s") v /= 1e6;
		printf "%.1f\n", v }' "$1"
}

LIO=iqn.2026-11.test:lio
TGT=iqn.2026-11.test:tgt
vm_log "targets"
lio_ramdisk $LIO 64
tgt_file $TGT 64 portal=127.0.0.1:3261
vm_log "open-iscsi up"
openiscsi_up
iscsiadm -m discovery -t st -p 127.0.0.1:3260
iscsiadm -m discovery -t st -p 127.0.0.1:3261

head -c $((32 << 20)) /dev/urandom >/tmp/data
put data.sha256 "$(sha256sum </tmp/data | cut -d' ' -f1)"

for t in lio:$LIO:127.0.0.1:3260 tgt:$TGT:127.0.0.1:3261; do
	IFS=: read -r tag iqn1 iqn2 host port <<<"$t"
	iqn=$iqn1:$iqn2
	t0=$(date +%s%N)
	iscsiadm -m node -T "$iqn" -p "$host:$port" --login
	put "$tag.login_ms" $((($(date +%s%N) - t0) / 1000000))
	disk=$(iscsi_disk "$iqn")
	vm_log "$tag: $iqn is $disk"
	put "$tag.size" "$(blockdev --getsize64 "$disk")"
	dd if=/tmp/data of="$disk" bs=1M seek=8 oflag=direct conv=fsync 2>/tmp/dd.w
	dd if="$disk" of=/tmp/back bs=1M skip=8 count=32 iflag=direct 2>/tmp/dd.r
	put "$tag.read.sha256" "$(sha256sum </tmp/back | cut -d' ' -f1)"
	put "$tag.head.sha256" "$(dd if="$disk" bs=1M count=8 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
	put "$tag.write_mbs" "$(dd_rate /tmp/dd.w)"
	put "$tag.read_mbs" "$(dd_rate /tmp/dd.r)"
	echo "BASELINE $tag in-kernel iscsi_tcp: 1 MiB O_DIRECT dd write $(dd_rate /tmp/dd.w) MB/s," \
		"read $(dd_rate /tmp/dd.r) MB/s (32 MiB, TCG guest)"
	iscsiadm -m node -T "$iqn" -p "$host:$port" --logout
	rm -f /tmp/back
done

put sessions_left "$(ls /sys/class/iscsi_session | wc -l)"
vm_log "open-iscsi down"
openiscsi_down
put modules_left "$(grep -cE '^(iscsi_tcp|libiscsi_tcp|libiscsi|scsi_transport_iscsi) ' /proc/modules || true)"
tgt_down
put done 1
vm_log "done"

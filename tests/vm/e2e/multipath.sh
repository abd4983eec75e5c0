#!/bin/bash
# Guest side of tests/vm/test_vm_multipath.py (one boot): iface records binding each session to
# its own network interface, then dm-multipath (Debian's multipath-tools) over the two sessions
# with one path cut and restored under fio.
# Run by hand: make setup && make -C kernel && tests/vm/run-vm tests/vm/e2e/multipath.sh [KO_DIR]
#
# The network (no traffic leaves the guest):
#
#   root namespace (initiator: our modules, iscsid)      namespace "tgt" (target side)
#     vA0 10.1.1.2/24  <------ veth pair ------>  vA1 10.1.1.1/24
#     vB0 10.2.2.2/24  <------ veth pair ------>  vB1 10.2.2.1/24
#     10.9.9.0/24 via 10.1.1.1 dev vA0 metric 10         lo: 10.9.9.1/32 10.9.9.2/32
#     10.9.9.0/24 via 10.2.2.1 dev vB0 metric 20         (LIO's two portals listen here)
#
# (iface1 is bound by vB0's MAC address, iface.hwaddress, which iscsid looks up to vB0.)
# LIO lives in the kernel, but a portal's listening socket is made in the network namespace of
# the process that creates it in configfs: the two portals (10.9.9.1:3260, 10.9.9.2:3260 of one
# target, one LUN with a unit serial, hence one WWID) are made from inside "tgt" (nsenter), so
# they are not local addresses of the initiator's namespace and every byte of a session crosses a
# veth pair. Both portals are reachable through both pairs; the kernel's own choice for either is
# vA0 (the lower metric). So a session to 10.9.9.2 can only go through vB0 if its socket is bound
# there: iface0 has iface.net_ifacename vA0, iface1 iface.hwaddress vB0's MAC (both end in
# SO_BINDTODEVICE), and the proof that
# each session uses its own interface is (a) its TCP connection's local address (ss), (b) the
# interface counters while 8 MiB are written through each session's disk alone, (c) -m session
# -P 1 naming the iface, netdev and address of each.
#
# Then systemd-udevd (the by-path and WWID properties multipath reads), multipathd assembling
# one /dev/mapper/WWID from the two disks, fio (crc32c verify) on it while vA1 (the target's end
# of path A) is down for ~8 s: path A failed in `multipath -ll`, then active again after the
# link returns and iscsid recovers the session; fio without errors.
# Results: key=value lines in $VM_OUT/results.txt; multipath -ll snapshots, ss output, the
# iscsiadm listings and the daemons' logs in $VM_OUT.
set -euo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh

IQN=iqn.2003-01.org.linux-iscsi.vm:multipath
SERIAL=f5f5f5f5-5eed-4bad-8000-000000000005
INITIATOR=iqn.2026-11.test:pyiscsi-multipath
PA=10.9.9.1
PB=10.9.9.2
VENV=$VM_WORK/.venv
PY=$VENV/bin/python
ADM=$VENV/bin/iscsiadm
RES=$VM_OUT/results.txt
STATE=/run/pyiscsi
KO=${1:-kernel}
TPG=/sys/kernel/config/target/iscsi/$IQN/tpgt_1
: >"$RES"
. tests/vm/e2e/common.sh

in_tgt() { nsenter --net=/run/netns/tgt "$@"; }
disk_of_portal() { # ADDRESS: /dev/sdX of the session whose connection goes to ADDRESS
	local i s host d
	for ((i = 0; i < 200; i++)); do
		for s in /sys/class/iscsi_session/session*; do
			[ "$(cat "/sys/class/iscsi_connection/connection${s##*session}:0/address" 2>/dev/null)" = "$1" ] || continue
			host=$(readlink -f "$s/device" | grep -o 'host[0-9]*' | tail -n1)
			for d in /sys/bus/scsi/devices/${host#host}:*/block/*; do
				[ -e "$d" ] && [ -b "/dev/${d##*/}" ] && { echo "/dev/${d##*/}"; return 0; }
			done
		done
		sleep 0.1
	done
	return 1
}
sid_of_portal() {
	local s
	for s in /sys/class/iscsi_session/session*; do
		[ "$(cat "/sys/class/iscsi_connection/connection${s##*session}:0/address" 2>/dev/null)" = "$1" ] \
			&& { echo "${s##*session}"; return 0; }
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
tx() { cat /sys/class/net/$1/statistics/tx_bytes; }
# the established connections to port 3260: "LOCAL PEER" lines
conns() { ss -Htn state established '( dport = :3260 )' | awk '{print $3, $4}' | sort; }
# wait_mp REGEX SECONDS: until `multipath -ll` matches (its last output in /tmp/mp.txt)
wait_mp() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		multipath -ll >/tmp/mp.txt 2>/dev/null || true
		grep -Eq "$1" /tmp/mp.txt && return 0
		sleep 0.1
	done
	return 1
}

# ---------------------------------------------------------------------------------------------
step "network: two veth pairs into namespace tgt"
t0=$(now_ms)
ip link set lo up
ip netns add tgt
ip link add vA0 type veth peer name vA1 netns tgt || fail "no veth (module veth)"
ip link add vB0 type veth peer name vB1 netns tgt
ip addr add 10.1.1.2/24 dev vA0
ip addr add 10.2.2.2/24 dev vB0
ip link set vA0 up
ip link set vB0 up
ip -n tgt addr add 10.1.1.1/24 dev vA1
ip -n tgt addr add 10.2.2.1/24 dev vB1
ip -n tgt addr add $PA/32 dev lo
ip -n tgt addr add $PB/32 dev lo
ip -n tgt link set lo up
ip -n tgt link set vA1 up
ip -n tgt link set vB1 up
ip route add 10.9.9.0/24 via 10.1.1.1 dev vA0 metric 10
ip route add 10.9.9.0/24 via 10.2.2.1 dev vB0 metric 20
# without a binding, the kernel sends to either portal through vA0
route_b=$(ip -o route get $PB)
result route_unbound_pb "$(echo "$route_b" | grep -o 'dev [^ ]*')"
echo "$route_b" | grep -q 'dev vA0' || fail "the unbound route to $PB is not via vA0: $route_b"

step "LIO: one LUN, portals $PA:3260 and $PB:3260 made inside tgt"
pyiscsi_kmod_up "$KO"
# made on a loopback portal, which goes once the two portals in tgt exist
lio_ramdisk $IQN 64 serial=$SERIAL portal=127.0.0.1:3261
in_tgt mkdir "$TPG/np/$PA:3260" || fail "cannot make the portal $PA:3260 in tgt"
in_tgt mkdir "$TPG/np/$PB:3260" || fail "cannot make the portal $PB:3260 in tgt"
rmdir "$TPG/np/127.0.0.1:3261"
in_tgt ss -Hltn >"$VM_OUT/tgt-listen.txt"
grep -q "$PA:3260" "$VM_OUT/tgt-listen.txt" || fail "LIO does not listen on $PA:3260 in tgt"
wait_port $PA 3260
wait_port $PB 3260
result network_ms $(($(now_ms) - t0))

step "ifaces, discovery through each, one session per iface"
iscsid_state $INITIATOR
start_iscsid
$ADM -m iface -I iface0 -o new >/dev/null || fail "iface0 -o new"
$ADM -m iface -I iface0 -o update -n iface.net_ifacename -v vA0 >/dev/null || fail "iface0 update"
$ADM -m iface -I iface1 -o new >/dev/null || fail "iface1 -o new"
# iface1 by vB0's MAC address: looked up to its device at each connection
mac_b=$(cat /sys/class/net/vB0/address)
result mac_b "$mac_b"
$ADM -m iface -I iface1 -o update -n iface.hwaddress -v "$mac_b" >/dev/null || fail "iface1 update"
$ADM -m iface >"$VM_OUT/iface-list.txt" || fail "-m iface"
$ADM -m discovery -t st -p $PA -I iface0 -I iface1 >"$VM_OUT/discovery.txt" \
	|| fail "discovery through iface0 and iface1 (exit $?)"
$ADM -m node -P 1 >"$VM_OUT/node-P1.txt"
# pings every 2 s find a dead connection fast; the replacement timeout stays the record's 120 s:
# multipathd sets it (recovery_tmo) to its fast_io_fail_tmo, 5 s, as with the in-kernel initiator
for kv in node.conn[0].timeo.noop_out_interval=2 node.conn[0].timeo.noop_out_timeout=2; do
	$ADM -m node -T $IQN -o update -n "${kv%%=*}" -v "${kv#*=}" || fail "update $kv"
done
t_login=$(now_ms)
$ADM -m node -T $IQN -p $PA -I iface0 --login >"$VM_OUT/login.txt" 2>&1 || fail "login iface0 $PA"
$ADM -m node -T $IQN -p $PB -I iface1 --login >>"$VM_OUT/login.txt" 2>&1 || fail "login iface1 $PB"
result login_ms $(($(now_ms) - t_login))
disk_a=$(disk_of_portal $PA) || fail "no disk for the session to $PA"
disk_b=$(disk_of_portal $PB) || fail "no disk for the session to $PB"
sid_a=$(sid_of_portal $PA)
sid_b=$(sid_of_portal $PB)
result disks "$disk_a $disk_b"
$ADM -m session -P 1 >"$VM_OUT/session-P1.txt" || fail "-m session -P 1"

step "each session's connection goes through its interface"
conns >"$VM_OUT/ss.txt"
result conn_a "$(grep " $PA:3260" "$VM_OUT/ss.txt" | awk '{print $1}')"
result conn_b "$(grep " $PB:3260" "$VM_OUT/ss.txt" | awk '{print $1}')"
# 8 MiB written through each disk alone: the interface of its session carries it
for path in a b; do
	if [ $path = a ]; then disk=$disk_a; else disk=$disk_b; fi
	a0=$(tx vA0) b0=$(tx vB0)
	dd if=/dev/urandom of=$disk bs=1M count=8 oflag=direct status=none || fail "dd to $disk"
	result tx_${path}_vA0 $(($(tx vA0) - a0))
	result tx_${path}_vB0 $(($(tx vB0) - b0))
done

# ---------------------------------------------------------------------------------------------
step "udev and multipathd"
# before udev runs `multipath -u` on the disks: every path is a multipath path
mkdir -p /etc/multipath
cat >/etc/multipath.conf <<'EOF'
defaults {
	user_friendly_names no
	find_multipaths no
	polling_interval 1
	no_path_retry 30
	fast_io_fail_tmo 5
}
EOF
export SYSTEMD_IGNORE_CHROOT=1 # udevadm ignores requests in a chroot, which the guest's /init is
/lib/systemd/systemd-udevd --daemon
udevadm control --ping --timeout=30 || fail "systemd-udevd does not answer"
udevadm trigger --subsystem-match=block --action=add
udevadm settle --timeout=30 || true
for p in "$PA $disk_a" "$PB $disk_b"; do
	set -- $p
	link=/dev/disk/by-path/ip-$1:3260-iscsi-$IQN-lun-0
	[ "$(readlink -f "$link")" = "$2" ] || fail "$link does not point at $2: $(ls -l /dev/disk/by-path/ 2>&1)"
done
result by_path ok
wwid_a=$(udevadm info -q property -n $disk_a | sed -n 's/^ID_SERIAL=//p')
wwid_b=$(udevadm info -q property -n $disk_b | sed -n 's/^ID_SERIAL=//p')
result wwid "$wwid_a"
[ -n "$wwid_a" ] && [ "$wwid_a" = "$wwid_b" ] || fail "the two disks' WWIDs differ: '$wwid_a' '$wwid_b'"
modprobe -a dm_multipath scsi_dh_alua 2>/dev/null || true
multipathd -d -s -v 3 >"$VM_OUT/multipathd.log" 2>&1 &
MPD_PID=$!
t_mp=$(now_ms)
wait_mp "${disk_b#/dev/} .*active ready" 30 || { cat /tmp/mp.txt; fail "multipathd made no map with both paths"; }
grep -q "${disk_a#/dev/} .*active ready" /tmp/mp.txt || { cat /tmp/mp.txt; fail "path A not in the map"; }
cp /tmp/mp.txt "$VM_OUT/multipath-ll-up.txt"
result map_ms $(($(now_ms) - t_mp))
# multipathd wrote its fast_io_fail_tmo into each session's recovery_tmo
result recovery_tmo "$(cat /sys/class/iscsi_session/session$sid_a/recovery_tmo) $(cat /sys/class/iscsi_session/session$sid_b/recovery_tmo)"
map=/dev/mapper/$wwid_a
[ -b $map ] || fail "no $map"
result map "$map"

step "fio on $map, path A cut and restored"
fio --name=multipath --filename=$map --direct=1 --ioengine=libaio --iodepth=4 \
	--rw=randwrite --bs=64k --size=32M --rate=2m --verify=crc32c --do_verify=1 \
	--verify_fatal=1 --output-format=json --output=/tmp/fio.json >/tmp/fio.err 2>&1 &
fio_pid=$!
sleep 3
ip -n tgt link set vA1 down
t_down=$(now_ms)
wait_mp "${disk_a#/dev/} .*failed" 30 || { cat /tmp/mp.txt; fail "path A not failed 30 s after the cut"; }
result path_failed_after_ms $(($(now_ms) - t_down))
cp /tmp/mp.txt "$VM_OUT/multipath-ll-failed.txt"
grep -q "${disk_b#/dev/} .*active ready" /tmp/mp.txt || fail "path B not active while A is cut"
sleep $((8 - ($(now_ms) - t_down) / 1000 > 0 ? 8 - ($(now_ms) - t_down) / 1000 : 0))
ip -n tgt link set vA1 up
t_up=$(now_ms)
result outage_ms $((t_up - t_down))
wait_state $sid_a LOGGED_IN 40 || fail "session $sid_a not back 40 s after the link ($(state_of $sid_a))"
result session_back_after_ms $(($(now_ms) - t_up))
wait_mp "${disk_a#/dev/} .*active ready" 40 || { cat /tmp/mp.txt; fail "path A not active 40 s after the link returned"; }
result path_active_after_ms $(($(now_ms) - t_up))
cp /tmp/mp.txt "$VM_OUT/multipath-ll-restored.txt"
for ((i = 0; i < 1200; i++)); do kill -0 $fio_pid 2>/dev/null || break; sleep 0.1; done
kill -0 $fio_pid 2>/dev/null && fail "fio still running 120 s after the path returned"
fio_rc=0
wait $fio_pid || fio_rc=$?
cp /tmp/fio.json "$VM_OUT/fio-multipath.json" 2>/dev/null || true
[ $fio_rc = 0 ] || fail "fio exit $fio_rc: $(tail -n 20 /tmp/fio.err)"
read -r fio_err fio_max_ms fio_written fio_verified < <("$PY" - <<'EOF'
import json
job = json.load(open("/tmp/fio.json"))["jobs"][0]
print(job["error"] + job.get("total_err", 0),
      round(job["write"]["clat_ns"]["max"] / 1e6),
      job["write"]["io_bytes"], job["read"]["io_bytes"])
EOF
)
result fio_errors "$fio_err"
result fio_max_clat_ms "$fio_max_ms"
result fio_written_bytes "$fio_written"
result fio_verified_bytes "$fio_verified"
[ "$(sid_of_portal $PA)" = "$sid_a" ] || fail "the session to $PA changed"
conns >"$VM_OUT/ss-after.txt"
result conn_a_after "$(grep " $PA:3260" "$VM_OUT/ss-after.txt" | awk '{print $1}')"

step "teardown"
kill $MPD_PID
wait $MPD_PID 2>/dev/null || true
multipath -F >/dev/null 2>&1 || dmsetup remove "$wwid_a" || fail "cannot remove the map"
$ADM -m node -U all >"$VM_OUT/logout.txt" 2>&1 || fail "logout (exit $?)"
$ADM -m iface -I iface0 -o delete >>"$VM_OUT/logout.txt" 2>&1 || fail "iface0 -o delete"
$ADM -m iface -I iface1 -o delete >>"$VM_OUT/logout.txt" 2>&1 || fail "iface1 -o delete"
result leftover_nodes "$($ADM -m node 2>/dev/null | wc -l)"
udevadm control --exit || true
teardown_pyiscsi
result done ok
